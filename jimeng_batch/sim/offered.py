"""What the simulated account is offered: the ``get_common_config`` answers, in the live service's shape.

Built from the built-in catalog of the request's region (:mod:`jimeng_batch.protocol.catalog`), changed by the
config's ``catalog:`` (models added, removed, changed), so that a test can make an account whose catalog differs
from the built-in one. The shape follows the protocol reference (2.1, 4.1): ``data.model_list[]`` with
``model_req_key``, ``model_name``, ``resolution_map{<res>: {image_ratio_sizes: [{ratio_type, width, height}]}}``,
``generate_count_options``, ``feats``, ``input_image_limit`` and ``commercial_config`` for images; ``options[{key,
enum_val}]`` (``resolution``, ``video_aspect_ratio``, ``fps``, ``frames``) for video. Pure.
"""

from __future__ import annotations

from typing import Any

from jimeng_batch.protocol import catalog
from jimeng_batch.sim.config import CatalogModel, SimCatalog

__all__ = ["image_config", "video_config"]

_BASE_FEATS = ("t2i", "byte_edit")
_INTELLIGENT_RATIO = "intelligent_ratio"
_ADDED_IMAGE_RESOLUTIONS = catalog.IMAGE_RESOLUTIONS
_ADDED_VIDEO_DURATIONS = (catalog.DEFAULT_VIDEO_DURATION,)
_ADDED_VIDEO_RESOLUTIONS = (catalog.DEFAULT_VIDEO_RESOLUTION,)


def _region(query_region: str | None) -> str:
    """The region code of the query's ``region`` parameter (the document's cn when there is none)."""
    return next((code for code, region in catalog.REGIONS.items() if region.query_region == query_region),
                catalog.DEFAULT_REGION)


def _removed(settings: SimCatalog) -> set[str]:
    keys = set()
    for name in settings.remove:
        model = catalog.find_model(name)
        if model is not None:
            keys.add(model.key)
    return keys


def _change(settings: SimCatalog, model: catalog.Model) -> CatalogModel:
    return settings.change.get(model.key) or settings.change.get(model.name) or CatalogModel()


def _commerce(section: str, benefit_type: str) -> dict[str, Any]:
    # The nesting seen for images ([U:62995989290]); video is assumed to follow it.
    return {section: {"base": {"default": {"benefit_type": benefit_type}}}} if benefit_type else {}


def _image_entry(key: str, name: str, family: str, resolutions: tuple[str, ...], ratios: tuple[str, ...],
                 counts: tuple[int, ...], intelligent: bool) -> dict[str, Any]:
    return {
        "model_req_key": key,
        "model_name": name,
        "resolution_map": {
            res: {"image_ratio_sizes": [
                {"ratio_type": catalog.IMAGE_RATIO_CODES[ratio], "width": catalog.IMAGE_SIZES[(family, res)][ratio][0],
                 "height": catalog.IMAGE_SIZES[(family, res)][ratio][1]} for ratio in ratios]}
            for res in resolutions},
        "generate_count_options": list(counts),
        "feats": [*_BASE_FEATS, *((_INTELLIGENT_RATIO,) if intelligent else ())],
        "input_image_limit": [{"ability_name": "byte_edit", "max_image_num": catalog.MAX_REFERENCES}],
        "commercial_config": {},
    }


def _video_entry(key: str, name: str, resolutions: tuple[str, ...], ratios: tuple[str, ...],
                 durations: tuple[int, ...], benefit_type: str) -> dict[str, Any]:
    fps = catalog.DEFAULT_FPS
    return {
        "model_req_key": key,
        "model_name": name,
        "options": [
            {"key": "resolution", "enum_val": {"string_value": list(resolutions), "default_val_idx": 0}},
            {"key": "video_aspect_ratio", "enum_val": {"string_value": list(ratios), "default_val_idx": 0}},
            {"key": "fps", "enum_val": {"int_value": [fps], "default_val_idx": 0}},
            {"key": "frames", "enum_val": {"int_value": [seconds * fps for seconds in durations],
                                           "default_val_idx": 0}},
        ],
        "commercial_config": _commerce("video_model_commerce_config", benefit_type),
    }


def _malformed() -> dict[str, Any]:
    return {"model_list": "unavailable"}  # a shape the client cannot read: text where a list belongs


def image_config(settings: SimCatalog, query_region: str | None) -> dict[str, Any]:
    """The ``data`` of ``POST /mweb/v1/get_common_config``."""
    if settings.malformed:
        return _malformed()
    region, removed = _region(query_region), _removed(settings)
    entries = []
    for model in catalog.IMAGE_MODELS:
        if region not in model.regions or model.key in removed:
            continue
        change = _change(settings, model)
        entries.append(_image_entry(
            model.key, change.name or model.name, model.size_family, change.resolutions or model.resolutions,
            change.ratios or catalog.IMAGE_RATIOS, change.counts or catalog.count_options(model),
            change.intelligent_ratio if change.intelligent_ratio is not None
            else catalog.offers_intelligent_ratio(model)))
    for added in settings.add:
        if added.kind == "image":
            entries.append(_image_entry(added.key, added.name or added.key, "v4",
                                        added.resolutions or _ADDED_IMAGE_RESOLUTIONS,
                                        added.ratios or catalog.IMAGE_RATIOS,
                                        added.counts or tuple(range(1, catalog.DEFAULT_IMAGES_PER_REQUEST + 1)),
                                        bool(added.intelligent_ratio)))
    return {"model_list": entries}


def video_config(settings: SimCatalog, query_region: str | None) -> dict[str, Any]:
    """The ``data`` of ``POST /mweb/v1/video_generate/get_common_config``."""
    if settings.malformed:
        return _malformed()
    region, removed = _region(query_region), _removed(settings)
    entries = []
    for model in catalog.VIDEO_MODELS:
        if region not in model.regions or model.key in removed:
            continue
        change = _change(settings, model)
        entries.append(_video_entry(model.key, change.name or model.name, change.resolutions or model.resolutions,
                                    change.ratios or catalog.VIDEO_ASPECT_RATIOS,
                                    change.durations or model.durations, model.benefit_type))
    for added in settings.add:
        if added.kind == "video":
            entries.append(_video_entry(added.key, added.name or added.key,
                                        added.resolutions or _ADDED_VIDEO_RESOLUTIONS,
                                        added.ratios or catalog.VIDEO_ASPECT_RATIOS,
                                        added.durations or _ADDED_VIDEO_DURATIONS, ""))
    return {"model_list": entries}
