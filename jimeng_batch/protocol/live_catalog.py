"""An account's own catalog: what the service offers this account, read from ``get_common_config``. Pure.

The built-in catalog (:mod:`jimeng_batch.protocol.catalog`) is what clients have seen; the service tells each
account which models, resolutions, ratios, output counts and durations it offers (protocol reference 2.1, 4.1):
``POST /mweb/v1/get_common_config`` for images, ``POST /mweb/v1/video_generate/get_common_config`` for video, each
answering ``data.model_list[]``. This module reads those answers (every field untrusted, through
:mod:`jimeng_batch.protocol.answers`; a shape that cannot be used is :class:`~answers.Malformed` with its path) into
a typed :class:`AccountCatalog`, gives the built-in catalog in the same form, compares the two, and stores a
catalog as plain JSON (the output folder's cached copy). Nothing here does I/O.

An image entry: ``model_req_key``, ``model_name`` (the UI name, shown as it is: the key says nothing reliable about
it), ``resolution_map{<res>: {image_ratio_sizes: [{ratio_type, width, height}]}}``, ``generate_count_options``,
``feats``, ``input_image_limit[{ability_name, max_image_num}]``, ``commercial_config…benefit_type``. A video entry:
``model_req_key``, ``model_name``, ``options[{key, enum_val: {string_value | int_value: [...]}}]`` with the keys
``resolution``, ``video_aspect_ratio``, ``fps`` and ``frames`` (durations are frames / fps, section 4.4).
A field the answer leaves out reads as "not said" (empty), which the check and the comparison leave alone: only
what the account does say can refuse a manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jimeng_batch.protocol import answers, catalog

IMAGE_CONFIG_PATH = "/mweb/v1/get_common_config"
VIDEO_CONFIG_PATH = "/mweb/v1/video_generate/get_common_config"
IMAGE_CONFIG_BODY: Mapping[str, Any] = {"is_client_filter": False, "need_beta_model": True}
VIDEO_CONFIG_BODY: Mapping[str, Any] = {"scene": "generate_video", "params": {"needCache": True}}

# The feat that says a model's drafts may leave the ratio to it (`intelligent_ratio: true`, section 2.2).
INTELLIGENT_RATIO_FEAT = "intelligent_ratio"
MAX_MODELS = 1000  # per answer: the web app lists a few dozen; more is not a catalog
MAX_OPTIONS = 1000  # per list inside an entry
_BENEFIT_DEPTH = 4  # how deep under commercial_config a benefit_type is looked for
CACHE_VERSION = 1

RATIO_NAMES: Mapping[int, str] = {code: ratio for ratio, code in catalog.IMAGE_RATIO_CODES.items()}


def ratio_name(code: int) -> str:
    """``3`` as ``16:9``; a code the catalog does not know as ``code 9`` (still offered, still compared)."""
    return RATIO_NAMES.get(code, f"code {code}")


@dataclass(frozen=True, slots=True)
class RatioSize:
    """One ratio an image resolution offers, with its exact pixels."""

    ratio_type: int
    width: int = 0
    height: int = 0

    @property
    def ratio(self) -> str:
        return ratio_name(self.ratio_type)


@dataclass(frozen=True, slots=True)
class OfferedResolution:
    """One entry of an image model's ``resolution_map``."""

    name: str  # "1k", "2k", "4k", as the service names it
    sizes: tuple[RatioSize, ...] = ()

    @property
    def ratios(self) -> tuple[str, ...]:
        return tuple(size.ratio for size in self.sizes)


@dataclass(frozen=True, slots=True)
class OfferedImageModel:
    """An image model as the account's catalog describes it."""

    key: str  # model_req_key: what drafts send
    name: str  # model_name: the UI name
    resolutions: tuple[OfferedResolution, ...] = ()
    counts: tuple[int, ...] = ()  # generate_count_options: outputs per request
    feats: tuple[str, ...] = ()
    input_image_limits: tuple[tuple[str, int], ...] = ()  # (ability_name, max_image_num)
    benefit_type: str = ""
    kind: Literal["image"] = "image"

    @property
    def resolution_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.resolutions)

    def ratios_at(self, resolution: str) -> tuple[str, ...]:
        return next((r.ratios for r in self.resolutions if r.name == resolution), ())

    @property
    def intelligent_ratio(self) -> bool:
        return INTELLIGENT_RATIO_FEAT in self.feats


@dataclass(frozen=True, slots=True)
class OfferedVideoModel:
    """A video model as the account's catalog describes it."""

    key: str
    name: str
    resolutions: tuple[str, ...] = ()
    ratios: tuple[str, ...] = ()  # video_aspect_ratio values
    fps: tuple[int, ...] = ()
    frames: tuple[int, ...] = ()
    benefit_type: str = ""
    kind: Literal["video"] = "video"

    @property
    def durations(self) -> tuple[int, ...]:
        """Whole seconds, frames / fps at the first frame rate offered (24 everywhere so far)."""
        if not self.fps or self.fps[0] <= 0:
            return ()
        rate = self.fps[0]
        return tuple(sorted({frames // rate for frames in self.frames if frames > 0 and frames % rate == 0}))


OfferedModel = OfferedImageModel | OfferedVideoModel


@dataclass(frozen=True, slots=True)
class AccountCatalog:
    """Every model one account is offered, image and video."""

    images: tuple[OfferedImageModel, ...] = ()
    videos: tuple[OfferedVideoModel, ...] = ()

    @property
    def models(self) -> tuple[OfferedModel, ...]:
        return (*self.images, *self.videos)

    def find(self, key: str) -> OfferedModel | None:
        return next((m for m in self.models if m.key == key), None)


# -- reading the answers -------------------------------------------------------------------------------------------


def _listed(value: Any, path: str, limit: int = MAX_OPTIONS) -> list[Any]:
    listed = answers.items(value, path)
    if len(listed) > limit:
        raise answers.Malformed(path, f"a list of {len(listed)}, more than the {limit} a catalog has")
    return listed


def _texts(value: Any, path: str) -> tuple[str, ...]:
    return tuple(answers.text(item, f"{path}[{i}]") for i, item in enumerate(_listed(value, path)))


def _integers(value: Any, path: str) -> tuple[int, ...]:
    return tuple(answers.integer(item, f"{path}[{i}]") for i, item in enumerate(_listed(value, path)))


def _entries(data: Any, path: str) -> list[tuple[str, Mapping[str, Any]]]:
    """The ``model_list`` entries of an answer's ``data``, each with its path, and its key checked."""
    listed = _listed(answers.mapping(data, path).get("model_list"), f"{path}.model_list", MAX_MODELS)
    found = []
    for index, raw in enumerate(listed):
        where = f"{path}.model_list[{index}]"
        entry = answers.mapping(raw, where)
        if not answers.text(entry.get("model_req_key"), f"{where}.model_req_key"):
            raise answers.Malformed(f"{where}.model_req_key", "missing: every model needs its key")
        found.append((where, entry))
    return found


def _benefit_type(value: Any, path: str, depth: int = 0) -> str:
    """The first ``benefit_type`` under ``commercial_config`` (its nesting differs between models)."""
    config = answers.mapping(value, path)
    own = config.get("benefit_type")
    if own is not None:
        return answers.text(own, f"{path}.benefit_type")
    if depth >= _BENEFIT_DEPTH:
        return ""
    for key, child in config.items():
        if isinstance(child, Mapping):
            found = _benefit_type(child, f"{path}.{key}", depth + 1)
            if found:
                return found
    return ""


def read_image_models(data: Any, path: str = "data") -> tuple[OfferedImageModel, ...]:
    """The image models of a ``get_common_config`` answer's ``data``."""
    models = []
    for where, entry in _entries(data, path):
        resolutions = []
        resolution_map = answers.mapping(entry.get("resolution_map"), f"{where}.resolution_map")
        if len(resolution_map) > MAX_OPTIONS:
            raise answers.Malformed(f"{where}.resolution_map", f"{len(resolution_map)} resolutions")
        for name, raw in resolution_map.items():
            at = f"{where}.resolution_map.{name}"
            sizes = []
            listed = _listed(answers.mapping(raw, at).get("image_ratio_sizes"), f"{at}.image_ratio_sizes")
            for index, size in enumerate(listed):
                size_at = f"{at}.image_ratio_sizes[{index}]"
                item = answers.mapping(size, size_at)
                sizes.append(RatioSize(answers.integer(item.get("ratio_type"), f"{size_at}.ratio_type"),
                                       answers.integer(item.get("width"), f"{size_at}.width"),
                                       answers.integer(item.get("height"), f"{size_at}.height")))
            resolutions.append(OfferedResolution(answers.text(name, at), tuple(sizes)))
        limits = []
        for index, raw in enumerate(_listed(entry.get("input_image_limit"), f"{where}.input_image_limit")):
            at = f"{where}.input_image_limit[{index}]"
            item = answers.mapping(raw, at)
            limits.append((answers.text(item.get("ability_name"), f"{at}.ability_name"),
                           answers.integer(item.get("max_image_num"), f"{at}.max_image_num")))
        key = answers.text(entry.get("model_req_key"), f"{where}.model_req_key")
        models.append(OfferedImageModel(
            key=key, name=answers.text(entry.get("model_name"), f"{where}.model_name") or key,
            resolutions=tuple(resolutions),
            counts=_integers(entry.get("generate_count_options"), f"{where}.generate_count_options"),
            feats=_texts(entry.get("feats"), f"{where}.feats"), input_image_limits=tuple(limits),
            benefit_type=_benefit_type(entry.get("commercial_config"), f"{where}.commercial_config")))
    return tuple(models)


def _option_values(entry: Mapping[str, Any], where: str) -> dict[str, tuple[Any, str]]:
    """A video entry's ``options`` by key: the values of each one's ``enum_val``, with their path."""
    found: dict[str, tuple[Any, str]] = {}
    for index, raw in enumerate(_listed(entry.get("options"), f"{where}.options")):
        at = f"{where}.options[{index}]"
        option = answers.mapping(raw, at)
        key = answers.text(option.get("key"), f"{at}.key")
        enum = answers.mapping(option.get("enum_val"), f"{at}.enum_val")
        for kind in ("string_value", "int_value", "double_value"):
            if enum.get(kind) is not None:
                found[key] = (enum.get(kind), f"{at}.enum_val.{kind}")
                break
    return found


def read_video_models(data: Any, path: str = "data") -> tuple[OfferedVideoModel, ...]:
    """The video models of a ``video_generate/get_common_config`` answer's ``data``."""
    models = []
    for where, entry in _entries(data, path):
        options = _option_values(entry, where)
        missing = (None, f"{where}.options")
        key = answers.text(entry.get("model_req_key"), f"{where}.model_req_key")
        models.append(OfferedVideoModel(
            key=key, name=answers.text(entry.get("model_name"), f"{where}.model_name") or key,
            resolutions=_texts(*options.get("resolution", missing)),
            ratios=_texts(*options.get("video_aspect_ratio", missing)),
            fps=_integers(*options.get("fps", missing)), frames=_integers(*options.get("frames", missing)),
            benefit_type=_benefit_type(entry.get("commercial_config"), f"{where}.commercial_config")))
    return tuple(models)


# -- the built-in catalog in the same form -------------------------------------------------------------------------


def builtin_image_model(model: catalog.ImageModel) -> OfferedImageModel:
    resolutions = tuple(
        OfferedResolution(res, tuple(RatioSize(catalog.IMAGE_RATIO_CODES[ratio], *catalog.image_size(model, res, ratio))
                                     for ratio in catalog.IMAGE_RATIOS))
        for res in model.resolutions)
    feats = (INTELLIGENT_RATIO_FEAT,) if catalog.offers_intelligent_ratio(model) else ()
    return OfferedImageModel(model.key, model.name, resolutions, catalog.count_options(model), feats)


def builtin_video_model(model: catalog.VideoModel) -> OfferedVideoModel:
    rate = catalog.DEFAULT_FPS
    return OfferedVideoModel(model.key, model.name, model.resolutions, catalog.VIDEO_ASPECT_RATIOS, catalog.VIDEO_FPS,
                             tuple(seconds * rate for seconds in model.durations), model.benefit_type)


def builtin_catalog(region: str) -> AccountCatalog:
    """The built-in catalog of a region, as an account's would read."""
    return AccountCatalog(tuple(builtin_image_model(m) for m in catalog.IMAGE_MODELS if region in m.regions),
                          tuple(builtin_video_model(m) for m in catalog.VIDEO_MODELS if region in m.regions))


# -- comparing -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One thing an account offers differently from the built-in catalog."""

    field: str  # "resolutions", "ratios (2k)", "counts", "durations", "intelligent_ratio", ...
    builtin: tuple[str, ...]
    account: tuple[str, ...]

    @property
    def added(self) -> tuple[str, ...]:
        return tuple(v for v in self.account if v not in self.builtin)

    @property
    def removed(self) -> tuple[str, ...]:
        return tuple(v for v in self.builtin if v not in self.account)


@dataclass(frozen=True, slots=True)
class ModelChange:
    key: str
    builtin_name: str
    account_name: str
    changes: tuple[FieldChange, ...]


@dataclass(frozen=True, slots=True)
class CatalogDiff:
    """The account's catalog beside the built-in one."""

    new: tuple[OfferedModel, ...]  # offered, unknown to the built-in catalog
    missing: tuple[OfferedModel, ...]  # built in, not offered (retired, or not for this account)
    changed: tuple[ModelChange, ...]
    same: tuple[str, ...]  # keys of the models offered as built in


def _strings(values: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def _fields(model: OfferedModel, *, built_in: bool = False) -> dict[str, tuple[str, ...]]:
    """What is compared of a model, each as strings; a field the account leaves out is not said and not listed
    (the built-in catalog says every one)."""
    if isinstance(model, OfferedVideoModel):
        return {"resolutions": model.resolutions, "ratios": model.ratios, "durations": _strings(model.durations)}
    fields = {"resolutions": model.resolution_names}
    fields |= {f"ratios ({r.name})": r.ratios for r in model.resolutions}
    fields["counts"] = _strings(model.counts)
    if model.feats or built_in:  # an answer with no feats at all says nothing about this one
        fields["intelligent_ratio"] = (str(model.intelligent_ratio).lower(),)
    return fields


def compare(builtin: AccountCatalog, account: AccountCatalog) -> CatalogDiff:
    """New, missing and changed models (by key, the only name both sides share)."""
    known = {m.key: m for m in builtin.models}
    offered = {m.key: m for m in account.models}
    changed, same = [], []
    for key, theirs in offered.items():
        ours = known.get(key)
        if ours is None or ours.kind != theirs.kind:
            continue
        mine, their_fields = _fields(ours, built_in=True), _fields(theirs)
        changes = tuple(FieldChange(name, mine.get(name, ()), values) for name, values in their_fields.items()
                        if values and mine.get(name, ()) != values)
        if changes:
            changed.append(ModelChange(key, ours.name, theirs.name, changes))
        else:
            same.append(key)
    return CatalogDiff(
        new=tuple(m for m in account.models if m.key not in known or known[m.key].kind != m.kind),
        missing=tuple(m for m in builtin.models if m.key not in offered),
        changed=tuple(changed), same=tuple(same))


# -- the cached copy -----------------------------------------------------------------------------------------------


def to_json(offered: AccountCatalog) -> dict[str, Any]:
    """Plain JSON data, in the answers' own shape, so that :func:`from_json` reads it with the same readers."""
    images = [{"model_req_key": m.key, "model_name": m.name,
               "resolution_map": {r.name: {"image_ratio_sizes": [{"ratio_type": s.ratio_type, "width": s.width,
                                                                  "height": s.height} for s in r.sizes]}
                                  for r in m.resolutions},
               "generate_count_options": list(m.counts), "feats": list(m.feats),
               "input_image_limit": [{"ability_name": a, "max_image_num": n} for a, n in m.input_image_limits],
               "commercial_config": {"benefit_type": m.benefit_type}} for m in offered.images]
    videos = [{"model_req_key": m.key, "model_name": m.name,
               "options": [{"key": key, "enum_val": {kind: list(values)}} for key, kind, values in (
                   ("resolution", "string_value", m.resolutions), ("video_aspect_ratio", "string_value", m.ratios),
                   ("fps", "int_value", m.fps), ("frames", "int_value", m.frames))],
               "commercial_config": {"benefit_type": m.benefit_type}} for m in offered.videos]
    return {"images": {"model_list": images}, "videos": {"model_list": videos}}


def from_json(data: Any, path: str = "catalog") -> AccountCatalog:
    """The inverse of :func:`to_json`; :class:`answers.Malformed` for anything else."""
    top = answers.mapping(data, path)
    return AccountCatalog(read_image_models(top.get("images"), f"{path}.images"),
                          read_video_models(top.get("videos"), f"{path}.videos"))
