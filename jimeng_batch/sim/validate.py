"""Checks a submit envelope and its ``draft_content`` the way the service does, and extracts what a job needs.

The live service rejects a draft whose nodes lack ``type``/``id`` with a parameter error (1002); the document calls
the same thing 2002. Here every problem raises :class:`DraftError` carrying the dotted path of the offending field,
so that the error message names it (``draft_content.component_list[0]...core_param.model``), which is what makes a
client's mistakes debuggable against the simulator. The one draft mistake the live service answers with "permission
denied" instead (a ``gen_option`` inside ``generate``/``blend``, protocol reference 2.2) raises :class:`DraftDenied`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jimeng_batch.protocol import catalog

__all__ = ["DraftDenied", "DraftError", "DraftSpec", "parse_submission", "submit_id_of", "video_size"]

GENERATE_TYPES: tuple[str, ...] = ("generate", "blend", "gen_video")
# The record's `generate_type` number per draft kind (protocol reference 2.2: 1 text-to-image, 12 blend, 10 video).
RECORD_GENERATE_TYPE: Mapping[str, int] = {"generate": 1, "blend": 12, "gen_video": 10}

# Keys whose dict value is a draft node (must carry `type` and `id`), and keys whose list items are nodes.
NODE_KEYS = frozenset(
    {
        "metadata", "abilities", "generate", "blend", "gen_video", "core_param", "large_image_info",
        "history_option", "gen_option", "postedit_param", "text_to_video_params", "first_frame_image",
        "end_frame_image", "unified_edit_input",
    }
)
NODE_LIST_KEYS = frozenset(
    {
        "component_list", "ability_list", "image_list", "prompt_placeholder_info_list", "video_gen_inputs",
        "material_list", "multi_frames",
    }
)

# Video frame sizes at 720p by aspect ratio (protocol reference 4.4); 1080p is 1.5 times larger.
_VIDEO_720P: Mapping[str, tuple[int, int]] = {
    "1:1": (720, 720), "4:3": (960, 720), "3:4": (720, 960), "16:9": (1280, 720), "9:16": (720, 1280),
    "21:9": (1680, 720),
}
_MIN_SIDE, _MAX_SIDE = 64, 8192
_MAX_SUBMIT_ID = 128


class DraftError(Exception):
    """A submit the service would refuse with its parameter error; ``field`` is the dotted path of the culprit."""

    concept: Literal["param", "permission"] = "param"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DraftDenied(DraftError):
    """A draft the live service answers with "permission denied" rather than a parameter error (a misplaced
    ``gen_option``, protocol reference 2.2 and the 3018 row of the error table)."""

    concept = "permission"


@dataclass(frozen=True, slots=True)
class DraftSpec:
    """What the simulator needs from a valid submit to run the job."""

    generate_type: Literal["generate", "blend", "gen_video"]
    model: catalog.ImageModel | catalog.VideoModel
    prompt: str
    seed: int
    width: int
    height: int
    resolution: str  # "1k"/"2k"/"4k" for images, "720p"/"1080p" for video
    duration_s: int | None  # video only
    image_uris: tuple[str, ...]  # references the draft uses (blend images, frame images)
    image_count: int | None  # gen_option.gen_count when the draft asks for a number of images
    root_model: str
    template_id: str

    @property
    def kind(self) -> Literal["image", "video"]:
        return "video" if self.generate_type == "gen_video" else "image"

    @property
    def record_generate_type(self) -> int:
        return RECORD_GENERATE_TYPE[self.generate_type]


def video_size(aspect_ratio: str, resolution: str) -> tuple[int, int]:
    width, height = _VIDEO_720P[aspect_ratio]
    if resolution == "1080p":
        return width * 3 // 2, height * 3 // 2
    return width, height


def submit_id_of(body: Any) -> str:
    """The envelope's ``submit_id``, checked first so that a resubmission is recognised before anything else."""
    if not isinstance(body, Mapping):
        raise DraftError("body", "must be a JSON object")
    submit_id = body.get("submit_id")
    if not isinstance(submit_id, str) or not submit_id.strip():
        raise DraftError("submit_id", "is required and must be a non-empty string")
    if len(submit_id) > _MAX_SUBMIT_ID:
        raise DraftError("submit_id", f"must be at most {_MAX_SUBMIT_ID} characters")
    return submit_id


def parse_submission(body: Mapping[str, Any], *, known_uri: Callable[[str], bool]) -> DraftSpec:
    """Validate an envelope (already known to have a submit_id) and return the job it describes."""
    extend = body.get("extend")
    if not isinstance(extend, Mapping):
        raise DraftError("extend", "is required and must be an object")
    root_model = extend.get("root_model")
    if not isinstance(root_model, str) or not root_model:
        raise DraftError("extend.root_model", "is required")
    if catalog.find_model(root_model) is None or root_model not in catalog.MODEL_KEYS:
        raise DraftError("extend.root_model", f"unknown model {root_model!r}")
    template_id = extend.get("template_id", "")
    common = body.get("http_common_info")
    if common is not None and (not isinstance(common, Mapping) or not isinstance(common.get("aid"), int)):
        raise DraftError("http_common_info.aid", "must be an integer app id")
    raw = body.get("draft_content")
    if not isinstance(raw, str):
        raise DraftError("draft_content", "is required and must be a JSON string")
    try:
        draft = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DraftError("draft_content", f"is not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(draft, dict):
        raise DraftError("draft_content", "must encode a JSON object")
    _check_nodes(draft, "draft_content")
    component, cpath = _main_component(draft)
    generate_type = component.get("generate_type")
    if generate_type not in GENERATE_TYPES:
        raise DraftError(f"{cpath}.generate_type",
                         f"unknown generate_type {generate_type!r}; allowed: {', '.join(GENERATE_TYPES)}")
    abilities = _mapping(component, "abilities", cpath)
    apath = f"{cpath}.abilities"
    ability = _mapping(abilities, generate_type, apath)
    if "gen_option" in ability:
        raise DraftDenied(f"{apath}.{generate_type}.gen_option",
                          f"gen_option must be a sibling of {generate_type} inside abilities, not inside it")
    if generate_type == "gen_video":
        spec = _video(ability, f"{apath}.gen_video", known_uri)
    else:
        spec = _image(ability, f"{apath}.{generate_type}", generate_type, known_uri)
    model = spec["model"]
    image_count = _gen_count(abilities, apath, model.max_images if isinstance(model, catalog.ImageModel)
                             else catalog.MAX_IMAGES_PER_REQUEST)
    if root_model != spec["model"].key:
        raise DraftError("extend.root_model", f"{root_model!r} does not match the draft's model {spec['model'].key!r}")
    return DraftSpec(
        generate_type=generate_type,
        root_model=root_model,
        template_id=template_id if isinstance(template_id, str) else "",
        image_count=image_count,
        **spec,
    )


# ----------------------------------------------------------------------------------------------------------------


def _check_nodes(value: Any, path: str, *, is_node: bool = True) -> None:
    """Every draft node must carry `type` and `id`, at any depth.

    A path-free pass runs first because it is several times cheaper (submits are the hot path); only a draft that
    fails it is walked again to name the offending field.
    """
    if not _nodes_ok(value, is_node):
        _find_bad_node(value, path, is_node=is_node)


def _nodes_ok(value: Any, is_node: bool) -> bool:
    if type(value) is dict:
        if is_node:
            node_id = value.get("id")
            if type(value.get("type")) is not str or type(node_id) is not str or not node_id:
                return False
        for key, child in value.items():
            kind = type(child)
            if kind is dict:
                if not _nodes_ok(child, key in NODE_KEYS):
                    return False
            elif kind is list:
                child_is_node = key in NODE_LIST_KEYS
                for item in child:
                    if type(item) in (dict, list) and not _nodes_ok(item, child_is_node):
                        return False
        return True
    if type(value) is list:
        return all(_nodes_ok(item, False) for item in value if type(item) in (dict, list))
    return True


def _find_bad_node(value: Any, path: str, *, is_node: bool) -> None:
    if isinstance(value, dict):
        if is_node:
            if not isinstance(value.get("type"), str):
                raise DraftError(f"{path}.type", "is required on every draft node")
            node_id = value.get("id")
            if not isinstance(node_id, str) or not node_id:
                raise DraftError(f"{path}.id", "is required on every draft node")
        for key, child in value.items():
            child_path = f"{path}.{key}"
            if isinstance(child, dict):
                _find_bad_node(child, child_path, is_node=key in NODE_KEYS)
            elif isinstance(child, list):
                for i, item in enumerate(child):
                    _find_bad_node(item, f"{child_path}[{i}]", is_node=key in NODE_LIST_KEYS)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _find_bad_node(item, f"{path}[{i}]", is_node=False)


def _mapping(parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if not isinstance(value, Mapping):
        raise DraftError(f"{path}.{key}", "is required and must be an object")
    return value


def _main_component(draft: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    components = draft.get("component_list")
    if not isinstance(components, list) or not components:
        raise DraftError("draft_content.component_list", "is required and must not be empty")
    main_id = draft.get("main_component_id")
    for i, component in enumerate(components):
        if isinstance(component, Mapping) and component.get("id") == main_id:
            return component, f"draft_content.component_list[{i}]"
    raise DraftError("draft_content.main_component_id", f"{main_id!r} names no component in component_list")


def _gen_count(abilities: Mapping[str, Any], path: str, most: int) -> int | None:
    """The images the draft asks for, up to the model's most (8 on 5.0 Lite, else 4); None when it names none."""
    option = abilities.get("gen_option")
    if not isinstance(option, Mapping) or "gen_count" not in option:
        return None
    count = option["gen_count"]
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= most:
        raise DraftError(f"{path}.gen_option.gen_count", f"must be a whole number from 1 to {most} for this model")
    return count


def _int(parent: Mapping[str, Any], key: str, path: str, *, default: int | None = None) -> int:
    value = parent.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DraftError(f"{path}.{key}", "must be a whole number")
    return value


def _prompt(parent: Mapping[str, Any], path: str) -> str:
    prompt = parent.get("prompt", "")
    if not isinstance(prompt, str):
        raise DraftError(f"{path}.prompt", "must be a string")
    return prompt


def _uri(image: Any, path: str, known_uri: Callable[[str], bool]) -> str:
    if not isinstance(image, Mapping):
        raise DraftError(path, "must be an image object")
    uri = image.get("image_uri") or image.get("uri")
    if not isinstance(uri, str) or not uri:
        raise DraftError(f"{path}.image_uri", "is required")
    if not known_uri(uri):
        raise DraftError(f"{path}.image_uri", f"{uri!r} was not uploaded by this account")
    return uri


def _image(
    ability: Mapping[str, Any], path: str, generate_type: str, known_uri: Callable[[str], bool]
) -> dict[str, Any]:
    core = _mapping(ability, "core_param", path)
    cpath = f"{path}.core_param"
    model_key = core.get("model")
    model = catalog.find_model(model_key) if isinstance(model_key, str) else None
    if model is None or model_key not in catalog.MODEL_KEYS:
        raise DraftError(f"{cpath}.model", f"unknown model {model_key!r}")
    if not isinstance(model, catalog.ImageModel):
        raise DraftError(f"{cpath}.model", f"{model_key!r} is a video model; {generate_type} needs an image model")
    intelligent = core.get("intelligent_ratio") is True
    if intelligent and not model.intelligent_ratio:
        raise DraftError(f"{cpath}.intelligent_ratio", f"{model_key} does not offer intelligent_ratio")
    if not (intelligent and "image_ratio" not in core):
        ratio = core.get("image_ratio")
        if isinstance(ratio, bool) or ratio not in catalog.IMAGE_RATIO_CODES.values():
            allowed = ", ".join(str(v) for v in catalog.IMAGE_RATIO_CODES.values())
            raise DraftError(f"{cpath}.image_ratio", f"unknown image_ratio {ratio!r}; allowed: {allowed}")
    info = _mapping(core, "large_image_info", cpath)
    ipath = f"{cpath}.large_image_info"
    resolution = info.get("resolution_type")
    if resolution not in catalog.IMAGE_RESOLUTIONS:
        raise DraftError(f"{ipath}.resolution_type",
                         f"unknown resolution {resolution!r}; allowed: {', '.join(catalog.IMAGE_RESOLUTIONS)}")
    if resolution not in model.resolutions:
        raise DraftError(f"{ipath}.resolution_type",
                         f"{model.key} offers {', '.join(model.resolutions)}, not {resolution}")
    width, height = _int(info, "width", ipath), _int(info, "height", ipath)
    for name, side in (("width", width), ("height", height)):
        if not _MIN_SIDE <= side <= _MAX_SIDE:
            raise DraftError(f"{ipath}.{name}", f"must be between {_MIN_SIDE} and {_MAX_SIDE}")
    uris: list[str] = []
    if generate_type == "blend":
        abilities = ability.get("ability_list")
        if not isinstance(abilities, list) or not abilities:
            raise DraftError(f"{path}.ability_list", "blend needs at least one reference image")
        for i, item in enumerate(abilities):
            ipath_i = f"{path}.ability_list[{i}]"
            images = item.get("image_list") if isinstance(item, Mapping) else None
            if not isinstance(images, list) or not images:
                raise DraftError(f"{ipath_i}.image_list", "must list the reference image")
            uris.extend(_uri(image, f"{ipath_i}.image_list[{j}]", known_uri) for j, image in enumerate(images))
            for j, uri in enumerate(item.get("image_uri_list") or ()):
                if not isinstance(uri, str) or not known_uri(uri):
                    raise DraftError(f"{ipath_i}.image_uri_list[{j}]", f"{uri!r} was not uploaded by this account")
    return {
        "model": model,
        "prompt": _prompt(core, cpath),
        "seed": _int(core, "seed", cpath, default=0),
        "width": width,
        "height": height,
        "resolution": resolution,
        "duration_s": None,
        "image_uris": tuple(uris),
    }


def _video(ability: Mapping[str, Any], path: str, known_uri: Callable[[str], bool]) -> dict[str, Any]:
    params = _mapping(ability, "text_to_video_params", path)
    ppath = f"{path}.text_to_video_params"
    model_key = params.get("model_req_key")
    model = catalog.find_model(model_key) if isinstance(model_key, str) else None
    if model is None or model_key not in catalog.MODEL_KEYS:
        raise DraftError(f"{ppath}.model_req_key", f"unknown model {model_key!r}")
    if not isinstance(model, catalog.VideoModel):
        raise DraftError(f"{ppath}.model_req_key", f"{model_key!r} is an image model; gen_video needs a video model")
    aspect = params.get("video_aspect_ratio")
    if aspect not in catalog.VIDEO_ASPECT_RATIOS:
        raise DraftError(f"{ppath}.video_aspect_ratio",
                         f"unknown aspect ratio {aspect!r}; allowed: {', '.join(catalog.VIDEO_ASPECT_RATIOS)}")
    inputs = params.get("video_gen_inputs")
    if not isinstance(inputs, list) or not inputs or not isinstance(inputs[0], Mapping):
        raise DraftError(f"{ppath}.video_gen_inputs", "must hold one input")
    first = inputs[0]
    fpath = f"{ppath}.video_gen_inputs[0]"
    duration_ms = _int(first, "duration_ms", fpath)
    allowed = ", ".join(f"{d * 1000}" for d in model.durations)
    if duration_ms % 1000 or duration_ms // 1000 not in model.durations:
        raise DraftError(f"{fpath}.duration_ms", f"{model.key} allows {allowed}, not {duration_ms}")
    resolution = first.get("resolution", catalog.DEFAULT_VIDEO_RESOLUTION)
    if resolution not in model.resolutions:
        raise DraftError(f"{fpath}.resolution",
                         f"{model.key} offers {', '.join(model.resolutions)}, not {resolution!r}")
    fps = first.get("fps", catalog.DEFAULT_FPS)
    if fps not in catalog.VIDEO_FPS:
        raise DraftError(f"{fpath}.fps", f"must be one of {', '.join(map(str, catalog.VIDEO_FPS))}")
    uris = [
        _uri(first[key], f"{fpath}.{key}", known_uri)
        for key in ("first_frame_image", "end_frame_image")
        if first.get(key) is not None
    ]
    width, height = video_size(aspect, resolution)
    return {
        "model": model,
        "prompt": _prompt(first, fpath),
        "seed": _int(params, "seed", ppath, default=0),
        "width": width,
        "height": height,
        "resolution": resolution,
        "duration_s": duration_ms // 1000,
        "image_uris": tuple(uris),
    }
