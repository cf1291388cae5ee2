"""One run configuration: how a run sends, paces, retries, caches, and judges its result, as one frozen value.

Precedence, field by field: a command-line flag (or a keyword of the Python API) > the environment > the manifest >
the default. :func:`resolve_config` is the one place that applies it. The value is stored whole in the ledger when a
run starts (:meth:`RunConfig.to_json`) and loaded whole by ``resume`` (:meth:`RunConfig.from_json`), where a flag
given again replaces that field only; the environment of the shell that resumes does not change a stored run.

It never holds a token: only where the tokens come from (``token_file``; otherwise the ``JIMENG_SESSIONID``
variable, read again by each run). Display choices (``--quiet``) belong to the terminal, not to the run, and are
not part of it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from jimeng_batch.engine.cache import DEFAULT_TTL, default_cache_path
from jimeng_batch.engine.poll_schedule import DEFAULT_POLLS_PER_SECOND, POLL_FIRST, POLL_MAX
from jimeng_batch.engine.retry import RetryPolicy
from jimeng_batch.engine.run_log import LOG_FORMATS, LogFormat
from jimeng_batch.engine.states import FAIL_ON_STATES, State
from jimeng_batch.errors import ConfigError, describe
from jimeng_batch.intake.bounds import MAX_REQUESTS_PER_JOB
from jimeng_batch.intake.manifest import Manifest, Settings, SpreadsheetOptions
from jimeng_batch.intake.sharding import Shard, parse_shard
from jimeng_batch.protocol.catalog import REGIONS
from jimeng_batch.protocol.constants import ProtocolChoice, from_environment
from jimeng_batch.protocol.constants import environment_name as protocol_environment_name
from jimeng_batch.protocol.limits import DEFAULT_LIMITS, CallLimits

if TYPE_CHECKING:
    from jimeng_batch.sim import SimConfig

Preflight = Literal["warn", "stop", "off"]
PREFLIGHT_MODES: tuple[Preflight, ...] = get_args(Preflight)
# The account's own catalog: checked against when it can be read (warn when not), required, or not read at all.
CatalogMode = Literal["warn", "require", "off"]
CATALOG_MODES: tuple[CatalogMode, ...] = get_args(CatalogMode)

BASE_URL_ENV = "JIMENG_BASE_URL"
IMAGEX_URL_ENV = "JIMENG_IMAGEX_URL"

# Polling (when, engine/poll_schedule.py): a job not finished by the timeout is left for the next run.
POLL_TIMEOUT = {"image": 1800.0, "video": 3600.0}
# A record still missing this long after its charged submit is `lost` (checked again by every later run; sent again
# only with --resubmit-lost). Until then a missing record is asked for with the polls' back-off.
LOST_AFTER = 1800.0
MAX_CONCURRENCY = 1000
MAX_RETRIES = 100


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything about how a run goes, besides the manifest it runs and the folder it writes."""

    sheet: SpreadsheetOptions = field(default_factory=SpreadsheetOptions)  # settings of a CSV/XLSX manifest
    # The protocol constants asked for by flags and the environment (over the manifest's `protocol:`).
    protocol: ProtocolChoice = field(default_factory=ProtocolChoice)
    # Where requests go, and with which tokens.
    sim: bool = False  # the built-in simulator
    sim_config: Path | None = None
    # Instead of the region's hosts (`JIMENG_BASE_URL`): one URL for every region, or `us=URL,cn=URL` (see
    # base_urls), so that one setting serves manifests of several regions.
    base_url: str | None = None
    imagex_url: str | None = None  # where uploads go when not the base URL (`JIMENG_IMAGEX_URL`)
    token_file: Path | None = None  # else `JIMENG_SESSIONID`
    # Pace.
    concurrency: int = 3  # jobs in flight per token (the document's rule)
    submits_per_second: float | None = None
    polls_per_second: float | None = None  # per token; None: DEFAULT_POLLS_PER_SECOND (see poll_budget)
    downloads_per_second: float | None = None
    uploads_per_second: float | None = None
    max_unfinished: int | None = None  # admitted but not final, downloads included; None: 4 x cap x tokens + 32
    # Retries and polling.
    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    retry_after_cap: float = 300.0
    jitter_seed: int | None = None  # a fixed seed makes the jitter repeatable (tests)
    poll_interval: float | None = None  # a fixed interval instead of polls timed to completion (poll_schedule)
    lost_after: float = LOST_AFTER
    # The bounds on every call (protocol/limits.py says what each means).
    call_deadline: float = DEFAULT_LIMITS.call_deadline
    max_answer_bytes: int = DEFAULT_LIMITS.max_answer_bytes
    download_floor: float = DEFAULT_LIMITS.download_floor
    download_rate: int = DEFAULT_LIMITS.download_rate
    max_asset_bytes: int = DEFAULT_LIMITS.max_asset_bytes
    max_requests: int = MAX_REQUESTS_PER_JOB  # the requests one job may expand to (intake/bounds.py)
    # Money.
    budget: float | None = None  # credits this run may admit
    claim_daily: bool = False  # make each token's daily credit claim before the pre-flight credit check
    preflight: Preflight = "warn"
    # The account's catalog (engine/account_catalog.py): read before anything is sent when a token is given.
    account_catalog: CatalogMode = "warn"
    fresh_catalog: bool = False  # read it again even when the plan is unchanged (else the folder's copy is used)
    # The result cache shared between runs.
    use_cache: bool = True
    cache_path: Path | None = None  # resolved by resolve_config: the manifest's, else the user's cache folder
    cache_ttl: float = DEFAULT_TTL  # seconds; math.inf: forever
    # What is run and how its end is judged.
    shard: Shard | None = None
    fail_on: frozenset[State] = frozenset(FAIL_ON_STATES)
    report: bool = True
    download: bool = True
    log_format: LogFormat = "text"  # run.log's lines (engine/run_log.py): text for people, json for machines
    allow_mixed_origins: bool = False  # results of another origin may share the output folder
    # Send models the live service refuses to plain HTTP clients (catalog.needs_a_bogus) anyway; kept by resume.
    allow_unsupported: bool = False
    # Actions of one run (resume does not repeat them; see ONE_SHOT).
    retry_failed: bool = False  # plan again what ended `failed` (paid again)
    retry_blocked: bool = False
    retry_invalid: bool = False
    resubmit_lost: bool = False  # send again what the service never showed (paid again)
    reassign_orphans: bool = False  # give up on accounts missing from the pool: look elsewhere, else send again
    verify: bool = False  # compare every file's sha256 with the ledger, and download again what differs

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ConfigError("; ".join(problems))

    # -- derived values ------------------------------------------------------------------------------------------

    def call_limits(self) -> CallLimits:
        return CallLimits(call_deadline=self.call_deadline, max_answer_bytes=self.max_answer_bytes,
                          download_floor=self.download_floor, download_rate=self.download_rate,
                          max_asset_bytes=self.max_asset_bytes)

    def region_base_url(self, region: str) -> str | None:
        """Where a run of ``region`` sends its calls: the base URL, or its entry for ``region``; None: the
        region's own hosts."""
        if self.base_url is None:
            return None
        urls = base_urls(self.base_url)
        return urls.get(ANY_REGION, urls.get(region))

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.max_retries, backoff_base=self.backoff_base,
                           backoff_max=self.backoff_max, retry_after_cap=self.retry_after_cap)

    def simulator_settings(self) -> SimConfig:
        """The built-in simulator's settings for ``sim``: ``sim_config``'s file, else the defaults."""
        from jimeng_batch.sim import SimConfig, load_config

        return load_config(self.sim_config) if self.sim_config else SimConfig()

    def poll_first(self, kind: str) -> float:
        return self.poll_interval if self.poll_interval is not None else POLL_FIRST[kind]

    def poll_max(self, kind: str) -> float:
        return self.poll_interval if self.poll_interval is not None else POLL_MAX[kind]

    def poll_budget(self) -> float | None:
        """Poll calls per second per token (None: no bound): the one given; else the web app's pace, unless a fixed
        interval was asked for (then that interval is the pace)."""
        if self.polls_per_second is not None:
            return self.polls_per_second
        return None if self.poll_interval is not None else DEFAULT_POLLS_PER_SECOND

    @property
    def timed_polls(self) -> bool:
        """Polls timed to each job's expected end (engine/poll_schedule.py), not at a fixed interval."""
        return self.poll_interval is None

    @staticmethod
    def poll_timeout(kind: str) -> float:
        return POLL_TIMEOUT[kind]

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` (checked like any other value)."""
        unknown = sorted(set(changes) - FIELD_NAMES)
        if unknown:
            raise ConfigError(f"unknown run option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(FIELD_NAMES))}")
        return dataclasses.replace(self, **changes)

    # -- the ledger's copy ---------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data: paths as text, sets as sorted lists, an infinite TTL as ``forever``."""
        data: dict[str, Any] = {}
        for name in FIELD_NAMES:
            value = getattr(self, name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, Shard):
                value = str(value)
            elif isinstance(value, frozenset):
                value = sorted(str(item) for item in value)
            elif isinstance(value, ProtocolChoice):
                value = value.to_json()
            elif isinstance(value, SpreadsheetOptions):
                value = {"region": value.region, "type": value.type, "defaults": dict(value.defaults),
                         "protocol_profile": value.protocol_profile}
            elif isinstance(value, float) and math.isinf(value):
                value = "forever"
            data[name] = value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunConfig:
        """The inverse of :meth:`to_json`; fields it lacks (an older ledger's) take their defaults."""
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name not in FIELD_NAMES or value is None:
                continue
            if name in _PATH_FIELDS:
                value = Path(value)
            elif name == "shard":
                value = parse_shard(value)
            elif name == "fail_on":
                value = frozenset(State(item) for item in value)
            elif name == "sheet":
                value = SpreadsheetOptions(**value)
            elif name == "protocol":
                value = ProtocolChoice.from_json(value)
            elif name == "cache_ttl":
                value = math.inf if value == "forever" else float(value)
            values[name] = value
        return cls(**values)


FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(RunConfig))
# What a flag asks of one run: stored with the run that was given it, never carried on by `resume` (a resume that
# re-planned every failed request again, say, would pay for them again each time).
ONE_SHOT = frozenset({"retry_failed", "retry_blocked", "retry_invalid", "resubmit_lost", "reassign_orphans",
                      "verify", "fresh_catalog"})
_PATH_FIELDS = frozenset({"sim_config", "token_file", "cache_path"})
_RATES = ("submits_per_second", "polls_per_second", "downloads_per_second", "uploads_per_second")


def _problems(config: RunConfig) -> list[str]:
    """What is wrong with a configuration (the command line checks its flags too; the Python API relies on this)."""
    found = []
    if not 1 <= config.concurrency <= MAX_CONCURRENCY:
        found.append(f"concurrency must be between 1 and {MAX_CONCURRENCY}, not {config.concurrency}")
    for name in _RATES:
        rate = getattr(config, name)
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            found.append(f"{name} must be a positive number, not {rate}")
    if not 0 <= config.max_retries <= MAX_RETRIES:
        found.append(f"max_retries must be between 0 and {MAX_RETRIES}, not {config.max_retries}")
    if config.poll_interval is not None and not (config.poll_interval > 0 and math.isfinite(config.poll_interval)):
        found.append(f"poll_interval must be a positive number of seconds, not {config.poll_interval}")
    if config.budget is not None and not config.budget >= 0:  # NaN fails this too
        found.append(f"budget must be a number of credits (0 or more), not {config.budget}")
    if config.preflight not in PREFLIGHT_MODES:
        found.append(f"preflight must be one of {', '.join(PREFLIGHT_MODES)}, not {config.preflight!r}")
    if config.log_format not in LOG_FORMATS:
        found.append(f"log_format must be one of {', '.join(LOG_FORMATS)}, not {config.log_format!r}")
    if config.account_catalog not in CATALOG_MODES:
        found.append(f"account_catalog must be one of {', '.join(CATALOG_MODES)}, not {config.account_catalog!r}")
    for name in ("lost_after", "call_deadline", "download_floor"):
        value = getattr(config, name)
        if not (value > 0 and math.isfinite(value)):
            found.append(f"{name} must be a positive number of seconds, not {value}")
    for name in ("max_answer_bytes", "download_rate", "max_asset_bytes"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            found.append(f"{name} must be a whole number of bytes, 1 or more, not {value}")
    if isinstance(config.max_requests, bool) or not isinstance(config.max_requests, int) or config.max_requests < 1:
        found.append(f"max_requests must be a whole number, 1 or more, not {config.max_requests}")
    for name, variable in _FROM_ENVIRONMENT.items():
        value = getattr(config, name)
        if value is None:
            continue
        setting = f"{name} (--{name.replace('_', '-')} or {variable})"
        try:
            urls = base_urls(value) if name == "base_url" else {ANY_REGION: value}
        except ConfigError as exc:
            found.append(f"{setting}: {exc}")
            continue
        for region, url in urls.items():
            wrong = url_problem(url)
            if wrong:
                entry = "" if region == ANY_REGION else f" entry {region}="
                found.append(f"{setting}{entry} {describe(url, 80)} is not a usable address: {wrong}")
    if not config.cache_ttl >= 0:
        found.append(f"cache_ttl must be 0 or more seconds (or forever), not {config.cache_ttl}")
    unknown = sorted(str(state) for state in config.fail_on if state not in FAIL_ON_STATES)
    if unknown:
        found.append(f"fail_on may name {', '.join(FAIL_ON_STATES)}, not {', '.join(unknown)}")
    return found


ANY_REGION = "*"  # a base URL given as one URL: every region's
_REGION_ENTRY = re.compile(r"\s*([A-Za-z]{2})\s*=(.*)", re.DOTALL)


def base_urls(value: str) -> dict[str, str]:
    """A base-URL setting by region: ``URL`` (every region: ``{"*": URL}``) or ``REGION=URL[,REGION=URL...]``
    (a region it does not name goes to its own hosts). ConfigError when an entry is not ``REGION=URL`` or names
    an unknown region or one region twice."""
    if not _REGION_ENTRY.match(value):
        return {ANY_REGION: value.strip()}
    urls: dict[str, str] = {}
    for number, entry in enumerate(value.split(","), 1):
        matched = _REGION_ENTRY.fullmatch(entry)
        if not matched:
            raise ConfigError(f"entry {number} {describe(entry, 80)} is not REGION=URL (like us=http://gateway:8080)"
                              "; give one URL for every region, or REGION=URL entries separated by commas")
        region, url = matched.group(1).lower(), matched.group(2).strip()
        if region not in REGIONS:
            raise ConfigError(f"entry {number} names the region {describe(region)}; regions: "
                              f"{', '.join(REGIONS)}")
        if region in urls:
            raise ConfigError(f"entry {number} names the region {region} a second time")
        urls[region] = url
    return urls


def url_problem(url: str) -> str | None:
    """What is wrong with a service address (None: nothing): it must be an http(s) URL with a host."""
    import httpx  # here: most commands name no address, and httpx is a tenth of a second of a start

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        return str(exc) or "it cannot be read as a URL"
    if parsed.scheme not in ("http", "https"):
        return "it must start with http:// or https://"
    if not parsed.host:
        return "it names no host"
    return None


def parse_ttl(text: str) -> float:
    """A cache TTL as text: seconds, or ``forever``."""
    if text == "forever":
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--cache-ttl: '{text}' is not a number of seconds or 'forever'") from None
    if not value >= 0:
        raise ConfigError("--cache-ttl: must be 0 or more seconds")
    return value


_FROM_ENVIRONMENT = {"base_url": BASE_URL_ENV, "imagex_url": IMAGEX_URL_ENV}
_FROM_LIMITS = frozenset({"concurrency", *_RATES, "max_retries"})


def _from_manifest(name: str, settings: Settings) -> Any:
    """The manifest's value of a field (``limits:``, ``budget:``, ``cache:``), or None where it holds none."""
    if name in _FROM_LIMITS:
        return settings.limits.get(name)
    if name == "budget":
        return settings.budget
    if name == "cache_ttl":
        return settings.cache.get("ttl")
    return None


def protocol_choice(given: ProtocolChoice | None, environ: Mapping[str, str]) -> ProtocolChoice:
    """The protocol constants asked of a new run: the flags' (``given``) with the environment's under them.

    Resolved before the manifest is loaded (the manifest's constants depend on it) and stored with the run.
    """
    given = given or ProtocolChoice()
    environment = from_environment(environ)
    return dataclasses.replace(given, environment=environment,
                               environment_names={key: protocol_environment_name(key, environ)
                                                  for key in environment})


def resolve_config(manifest: Manifest | None, given: Mapping[str, Any], environ: Mapping[str, str]) -> RunConfig:
    """The run configuration of ``manifest``: ``given`` (flags, or the API's keywords; None means not given) over
    the environment, over the manifest's settings, over the defaults. Relative paths become absolute, so that a
    resume from another folder finds the same files. Without a manifest (the account commands) its layer is
    skipped."""
    values: dict[str, Any] = {}
    for name in FIELD_NAMES:
        value = given.get(name)
        if value is None and name in _FROM_ENVIRONMENT:
            value = environ.get(_FROM_ENVIRONMENT[name]) or None
        if value is None and manifest is not None:
            value = _from_manifest(name, manifest.settings)
        if value is not None:
            values[name] = value
    unknown = sorted(name for name, value in given.items() if name not in FIELD_NAMES and value is not None)
    if unknown:
        raise ConfigError(f"unknown run option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(FIELD_NAMES))}")
    for name in _PATH_FIELDS & set(values):
        values[name] = Path(values[name]).expanduser().resolve()
    if "cache_path" not in values:
        in_manifest = manifest.settings.cache.get("path") if manifest is not None else None
        default = default_cache_path(simulated=bool(values.get("sim")))
        values["cache_path"] = (manifest.path.parent / in_manifest).resolve() if manifest and in_manifest else default
    return RunConfig(**values)
