"""The simulator's settings: frozen dataclasses, built in code or loaded from YAML with located errors.

Every knob has a default that gives a well-behaved, instant server (zero latency, no faults), so a test only names
what it wants to break. ``load_config("sim.yaml")`` reports an unknown key or a wrong type as
``sim.yaml:12:3: faults.busy_probabilty: unknown key; allowed: ...`` instead of silently ignoring it.
"""

from __future__ import annotations

import math
import random
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from jimeng_batch.errors import ConfigError, Location
from jimeng_batch.protocol import catalog
from jimeng_batch.sim.codes import CLAIM_REFUSALS, CONCEPTS, PROFILES, Profile
from jimeng_batch.yaml_bounds import BoundedLoader, YamlTooBig, check_bounds

__all__ = [
    "CatalogModel",
    "ContentFilter",
    "Distribution",
    "Faults",
    "Latency",
    "RateLimit",
    "SimCatalog",
    "SimConfig",
    "config_from_mapping",
    "load_config",
]

# Per profile, the oldest `da_version` accepted. The document's examples send 3.3.2; the live service started
# answering 3018 to anything older than 3.3.8 (protocol reference, section 1.3).
DEFAULT_MIN_DA_VERSION: Mapping[Profile, str] = types.MappingProxyType({"document": "3.3.2", "live": "3.3.8"})


@dataclass(frozen=True, slots=True)
class Distribution:
    """A latency in seconds: ``fixed`` (a), ``uniform`` between a and b, or ``lognormal`` with median a, sigma b.

    ``cap`` bounds a lognormal's long tail. YAML forms: ``2.5``, ``{fixed: 2.5}``, ``{uniform: [1, 3]}``,
    ``{lognormal: {median: 10, sigma: 0.5, cap: 60}}``.
    """

    kind: Literal["fixed", "uniform", "lognormal"] = "fixed"
    a: float = 0.0
    b: float = 0.0
    cap: float | None = None

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        value = rng.lognormvariate(math.log(self.a), self.b) if self.a > 0 else 0.0
        return min(value, self.cap) if self.cap is not None else value

    @property
    def typical(self) -> float:
        """A representative value (for ``forecast_cost_time``): the fixed value, the midpoint or the median."""
        return self.a if self.kind != "uniform" else (self.a + self.b) / 2

    @property
    def is_zero(self) -> bool:
        return self.kind == "fixed" and self.a == 0


def fixed(seconds: float) -> Distribution:
    return Distribution("fixed", float(seconds))


@dataclass(frozen=True, slots=True)
class Latency:
    """How long things take. ``submit`` and ``poll`` delay the HTTP answer (the server sleeps); ``queue`` and
    ``generation`` are modelled by timestamps, so a record's status follows the clock without any sleeping."""

    submit: Distribution = field(default_factory=Distribution)
    poll: Distribution = field(default_factory=Distribution)
    queue: Distribution = field(default_factory=Distribution)
    generation: Distribution = field(default_factory=Distribution)
    video_generation: Distribution | None = None  # None: same as `generation`


@dataclass(frozen=True, slots=True)
class Faults:
    """Injected misbehaviour. Probabilities are drawn from one ``random.Random(seed)``, per request."""

    busy_probability: float = 0.0  # a submit answered with the profile's busy code
    http_error_probability: float = 0.0  # an API call answered with an HTTP 5xx
    http_error_statuses: tuple[int, ...] = (500, 502, 503)
    drop_probability: float = 0.0  # an API call whose connection is closed without any response
    lost_response_probability: float = 0.0  # a submit that is accepted and charged, then its connection dropped
    slow_poll_probability: float = 0.0  # a poll that takes `slow_poll_delay` extra seconds to answer
    slow_poll_delay: Distribution = field(default_factory=lambda: fixed(1.0))
    not_found_after_submit_s: float = 0.0  # a new record is absent from poll answers for this long
    asset_error_probability: float = 0.0  # an asset download answered with a status from asset_error_statuses
    asset_error_statuses: tuple[int, ...] = (503,)
    truncated_asset_probability: float = 0.0  # an asset whose body stops half-way (the connection closes)
    asset_redirect: bool = False  # asset URLs answer 302 to where the file is, as CDNs do
    echo_session: bool = False  # error answers quote the request's Cookie header in errmsg (a hostile server)
    # get_local_item_list (a video's download version): "serve" its URL, answer with an "error" (the profile's
    # param code), or list the items with "no_url" at all; the client then falls back to the preview.
    local_item_list: Literal["serve", "error", "no_url"] = "serve"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``requests`` authenticated API calls per account in any ``window_s`` seconds; None switches it off."""

    requests: int | None = None
    window_s: float = 1.0


@dataclass(frozen=True, slots=True)
class ContentFilter:
    """Prompts containing any of ``words`` (case-insensitive) end at status 30 with ``fail_code``."""

    words: tuple[str, ...] = ("forbidden",)
    fail_code: str = "2038"


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """A model of the account's catalog (``get_common_config``): one to add, or what changes of a built-in one.

    A field left out (None) keeps the built-in value (an added model: the built-in defaults: 1k/2k/4k and every
    ratio for images, 720p, every ratio and 5 s for video).
    """

    key: str = ""  # model_req_key (required to add a model)
    name: str | None = None  # model_name, the UI name
    kind: Literal["image", "video"] = "image"
    resolutions: tuple[str, ...] | None = None
    ratios: tuple[str, ...] | None = None  # image_ratio_sizes (images) or video_aspect_ratio (video)
    counts: tuple[int, ...] | None = None  # generate_count_options (images)
    durations: tuple[int, ...] | None = None  # seconds, served as frames at 24 fps (video)
    intelligent_ratio: bool | None = None  # the `intelligent_ratio` feat (images)


@dataclass(frozen=True, slots=True)
class SimCatalog:
    """The catalog the account is offered: the built-in one of the request's region, changed by these."""

    add: tuple[CatalogModel, ...] = ()
    remove: tuple[str, ...] = ()  # built-in models (name or key) the account is not offered
    change: Mapping[str, CatalogModel] = field(default_factory=dict)  # built-in model (name or key) -> new values
    malformed: bool = False  # answer both catalogue calls with a `model_list` the client cannot read


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything the simulator can be told. See docs/simulator.md for each key."""

    profile: Profile = "document"
    seed: int = 0
    # Protocol strictness
    min_app_version: str = catalog.PROTOCOL_PROFILES["live"].app_version
    min_da_version: str | None = None  # None: per profile (DEFAULT_MIN_DA_VERSION)
    require_os: bool | None = None  # None: only in the live profile
    max_clock_skew_s: float | None = 300.0  # Device-Time tolerance; None: not checked
    # Accounts and credits
    strict_accounts: bool = False  # unknown sessionid -> login error instead of a fresh account
    default_credits: int = 1000
    accounts: Mapping[str, int] = field(default_factory=dict)  # sessionid -> starting credits
    daily_credits: int = 50  # what credit_receive grants once per day (the Asia/Shanghai day)
    claim_errors: Mapping[str, str] = field(default_factory=dict)  # sessionid -> "34010100" or "-4" for its claims
    passport_not_found: bool = False  # /passport/account/info/v2 answers HTTP 404, as on the SG host
    cost_overrides: Mapping[str, Any] = field(default_factory=dict)  # catalog.CostTable overrides
    # Jobs
    max_in_flight: int | None = 3  # unfinished jobs per account; None: no cap
    images_per_request: int = 4
    unavailable_models: tuple[str, ...] = ()
    known_image_uris: tuple[str, ...] = ("image_uri_1", "image_uri_2")
    # Assets and uploads
    asset_ttl_s: float = 7200.0
    upload_token_ttl_s: float = 3600.0
    max_upload_bytes: int = 20 * 1024 * 1024
    # Behaviour
    latency: Latency = field(default_factory=Latency)
    faults: Faults = field(default_factory=Faults)
    rate_limit: RateLimit = field(default_factory=RateLimit)
    content_filter: ContentFilter = field(default_factory=ContentFilter)
    error_codes: Mapping[str, str] = field(default_factory=dict)  # concept -> ret override
    catalog: SimCatalog = field(default_factory=SimCatalog)  # what get_common_config offers
    access_log: bool = False

    def __post_init__(self) -> None:
        problems = _check(self)
        if problems:
            raise ConfigError("invalid simulator config: " + "; ".join(problems))

    @property
    def effective_min_da_version(self) -> str:
        return self.min_da_version or DEFAULT_MIN_DA_VERSION[self.profile]

    @property
    def effective_require_os(self) -> bool:
        return self.require_os if self.require_os is not None else self.profile == "live"

    def with_profile(self, profile: str) -> SimConfig:
        return replace(self, profile=profile)  # type: ignore[arg-type]  # checked in __post_init__

    def __repr__(self) -> str:  # account tokens are secrets
        return f"SimConfig(profile={self.profile!r}, seed={self.seed}, accounts={len(self.accounts)}, ...)"


def _check(config: SimConfig) -> list[str]:
    problems: list[str] = []
    if config.profile not in PROFILES:
        problems.append(f"profile must be one of {', '.join(PROFILES)}, not {config.profile!r}")
    f = config.faults
    for name in ("busy_probability", "http_error_probability", "drop_probability", "lost_response_probability",
                 "slow_poll_probability", "asset_error_probability", "truncated_asset_probability"):
        value = getattr(f, name)
        if not 0.0 <= value <= 1.0:
            problems.append(f"faults.{name} must be between 0 and 1, not {value}")
    for name in ("http_error_statuses", "asset_error_statuses"):
        statuses = getattr(f, name)
        for status in statuses:
            if not 400 <= status <= 599:
                problems.append(f"faults.{name} must be 4xx or 5xx codes, not {status}")
        if not statuses:
            problems.append(f"faults.{name} must not be empty")
    for concept in config.error_codes:
        if concept not in CONCEPTS:
            problems.append(f"error_codes.{concept}: unknown outcome; allowed: {', '.join(CONCEPTS)}")
    if config.daily_credits < 0:
        problems.append(f"daily_credits must be 0 or more, not {config.daily_credits}")
    for code in config.claim_errors.values():
        if code not in CLAIM_REFUSALS:
            problems.append(f"claim_errors: {code!r} is not a claim refusal; allowed: {', '.join(CLAIM_REFUSALS)}")
    if config.max_in_flight is not None and config.max_in_flight < 1:
        problems.append("max_in_flight must be at least 1 (or null for no cap)")
    if not 1 <= config.images_per_request <= 8:
        problems.append("images_per_request must be between 1 and 8")
    if config.rate_limit.requests is not None and config.rate_limit.requests < 1:
        problems.append("rate_limit.requests must be at least 1 (or null)")
    if config.rate_limit.window_s <= 0:
        problems.append("rate_limit.window_s must be positive")
    for name in ("submit", "poll", "queue", "generation", "video_generation"):
        dist = getattr(config.latency, name)
        if dist is not None:
            problems.extend(f"latency.{name}: {p}" for p in _check_distribution(dist))
    problems.extend(f"faults.slow_poll_delay: {p}" for p in _check_distribution(f.slow_poll_delay))
    problems.extend(_check_catalog(config.catalog))
    return problems


def _check_catalog(settings: SimCatalog) -> list[str]:
    problems: list[str] = []
    for name in (*settings.remove, *settings.change):
        if catalog.find_model(name) is None:
            problems.append(f"catalog: {name!r} is not a built-in model (name or key)")
    for index, model in enumerate(settings.add):
        if not model.key:
            problems.append(f"catalog.add[{index}].key: a model to add needs its model_req_key")
    for where, model in [*((f"catalog.add[{i}]", m) for i, m in enumerate(settings.add)),
                         *((f"catalog.change.{k}", m) for k, m in settings.change.items())]:
        built_in = catalog.find_model(model.key) if where.startswith("catalog.add") else None
        if built_in is not None:
            problems.append(f"{where}.key: {model.key!r} is built in already; change it under catalog.change")
        kind = model.kind
        if where.startswith("catalog.change"):
            found = catalog.find_model(where.removeprefix("catalog.change."))
            kind = found.kind if found is not None else kind
        if kind == "image":
            allowed_resolutions, allowed_ratios = catalog.IMAGE_RESOLUTIONS, catalog.IMAGE_RATIOS
        else:
            allowed_resolutions, allowed_ratios = catalog.VIDEO_RESOLUTIONS, catalog.VIDEO_ASPECT_RATIOS
        for name, values, allowed in (("resolutions", model.resolutions, allowed_resolutions),
                                      ("ratios", model.ratios, allowed_ratios)):
            wrong = [v for v in values or () if v not in allowed]
            if wrong:
                problems.append(f"{where}.{name}: {', '.join(wrong)} not allowed; allowed: {', '.join(allowed)}")
        for name, numbers in (("counts", model.counts), ("durations", model.durations)):
            if any(v < 1 for v in numbers or ()):
                problems.append(f"{where}.{name}: must be whole numbers, 1 or more")
    return problems


def _check_distribution(dist: Distribution) -> list[str]:
    if dist.kind not in ("fixed", "uniform", "lognormal"):
        return [f"unknown distribution {dist.kind!r}"]
    if dist.a < 0 or dist.b < 0:
        return ["values must not be negative"]
    if dist.kind == "uniform" and dist.b < dist.a:
        return ["uniform needs [low, high] with low <= high"]
    return []


# ----------------------------------------------------------------------------------------------------------------
# Loading from YAML / plain mappings
# ----------------------------------------------------------------------------------------------------------------

_Locate = Callable[[str], str]


def load_config(path: str | Path) -> SimConfig:
    """Read a YAML config file; every problem is a ConfigError that says where it is."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read simulator config: {exc.strerror}") from exc
    loader = BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            check_bounds(node)  # aliases are expanded below: a few hundred bytes could ask for gigabytes
    except YamlTooBig as exc:
        raise ConfigError(f"{Location(str(path), exc.line, exc.column)}: {exc.message}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    marks: dict[str, tuple[int, int]] = {}
    data = _from_node(node, "", marks) if node is not None else {}

    def locate(dotted: str) -> str:
        line, column = marks.get(dotted, (None, None)) if dotted in marks else _nearest(marks, dotted)
        return str(Location(str(path), line, column))

    return config_from_mapping(data, locate=locate)


def _nearest(marks: Mapping[str, tuple[int, int]], dotted: str) -> tuple[int | None, int | None]:
    while dotted:
        dotted = dotted.rpartition(".")[0]
        if dotted in marks:
            return marks[dotted]
    return (None, None)


def _from_node(node: yaml.Node, where: str, marks: dict[str, tuple[int, int]]) -> Any:
    marks[where] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(yaml.safe_load(yaml.serialize(key_node)))
            child = f"{where}.{key}" if where else key
            marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _from_node(value_node, child, marks)
            marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_from_node(item, f"{where}[{i}]", marks) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def config_from_mapping(data: Mapping[str, Any], *, locate: _Locate | None = None) -> SimConfig:
    """Build a SimConfig from plain data (parsed YAML, JSON, a dict in a test); unknown keys are errors."""
    where = locate or (lambda dotted: "simulator config")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where('')}: the simulator config must be a mapping")
    result = _build(SimConfig, data, "", where)
    assert isinstance(result, SimConfig)
    return result


def _fail(where: _Locate, dotted: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{where(dotted)}: {dotted or 'config'}: {message}")


def _build(cls: type, data: Any, prefix: str, where: _Locate) -> Any:
    if not isinstance(data, Mapping):
        _fail(where, prefix, "must be a mapping")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in known:
            _fail(where, dotted, f"unknown key; allowed: {', '.join(sorted(known))}")
        kwargs[key] = _convert(hints[key], value, dotted, where)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where(prefix)}: {exc}") from None


def _convert(hint: Any, value: Any, dotted: str, where: _Locate) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            if type(None) in get_args(hint):
                return None
            _fail(where, dotted, "must not be empty")
        return _convert(options[0], value, dotted, where)
    if hint is Distribution:
        return _distribution(value, dotted, where)
    if is_dataclass(hint):
        return _build(hint, value if value is not None else {}, dotted, where)  # type: ignore[arg-type]
    if origin is Literal:
        if value not in get_args(hint):
            _fail(where, dotted, f"must be one of {', '.join(map(str, get_args(hint)))}, not {value!r}")
        return value
    if origin is tuple:
        item_type = get_args(hint)[0]
        if not isinstance(value, list):
            _fail(where, dotted, "must be a list")
        return tuple(_convert(item_type, v, f"{dotted}[{i}]", where) for i, v in enumerate(value))
    if origin is Mapping or hint is Mapping:
        if not isinstance(value, Mapping):
            _fail(where, dotted, "must be a mapping")
        value_type = get_args(hint)[1] if get_args(hint) else Any
        return {str(k): _convert(value_type, v, f"{dotted}.{k}", where) for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            _fail(where, dotted, f"must be true or false, not {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, dotted, f"must be a whole number, not {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(where, dotted, f"must be a number, not {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            _fail(where, dotted, "must be a string")
        return str(value)
    raise TypeError(f"no converter for {hint!r}")  # a programming error, not a config error


def _distribution(value: Any, dotted: str, where: _Locate) -> Distribution:
    if isinstance(value, bool):
        _fail(where, dotted, "must be a number of seconds or a distribution")
    if isinstance(value, (int, float)):
        return fixed(float(value))
    if not isinstance(value, Mapping) or len(value) != 1:
        _fail(where, dotted, "must be seconds, {fixed: s}, {uniform: [a, b]} or {lognormal: {median, sigma, cap}}")
    kind, spec = next(iter(value.items()))
    try:
        if kind == "fixed":
            dist = fixed(float(spec))
        elif kind == "uniform":
            low, high = (float(x) for x in spec)
            dist = Distribution("uniform", low, high)
        elif kind == "lognormal":
            if isinstance(spec, Mapping):
                extra = set(spec) - {"median", "sigma", "cap"}
                if extra:
                    _fail(where, f"{dotted}.lognormal", f"unknown key {min(extra)!r}; allowed: cap, median, sigma")
                cap = spec.get("cap")
                dist = Distribution("lognormal", float(spec["median"]), float(spec["sigma"]),
                                    float(cap) if cap is not None else None)
            else:
                median, sigma = (float(x) for x in spec)
                dist = Distribution("lognormal", median, sigma)
        else:
            _fail(where, dotted, f"unknown distribution {kind!r}; allowed: fixed, uniform, lognormal")
    except (TypeError, ValueError, KeyError) as exc:
        _fail(where, dotted, f"bad {kind} distribution: {exc}")
    problems = _check_distribution(dist)
    if problems:
        _fail(where, dotted, problems[0])
    return dist

