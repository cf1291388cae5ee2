"""Requests to the exact envelopes of the API document: body, ``draft_content`` tree and query. Pure.

Shapes follow the document's three examples (text-to-image ``generate``, image-to-image ``blend`` with
``byte_edit``, video ``gen_video``) field for field. Every node carries ``type`` and ``id``; ids derive from the
request key and the node's role, so building the same request twice gives byte-identical output. The only value
that is not derived from the request is ``created_time_in_ms``, which the caller passes (a plan passes 0; the
executor passes the send time).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.catalog import ProtocolVersions, Region
from jimeng_batch.protocol.ids import uuid5_text, uuid5_texts
from jimeng_batch.protocol.request_spec import ImageInput, RequestSpec

GENERATE_PATH = "/mweb/v1/aigc_draft/generate"
NODE_ID_NAMESPACE = uuid.UUID("0b6c1c52-59d4-5d3e-8f3a-6a696d656e67")
PENDING_UPLOAD_PREFIX = "pending-upload:"  # stands for a local file's image_uri until it is uploaded


@dataclass(frozen=True, slots=True)
class DraftRequest:
    """One HTTP request to send: the query parameters and the JSON body."""

    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any]


def to_json(data: Any) -> str:
    """JSON as the web app's JSON.stringify writes it: compact, non-ASCII kept as it is."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def encode_uri_component(text: str) -> str:
    """JavaScript's encodeURIComponent, which the web app applies to babi_param."""
    return quote(text, safe="-_.!~*'()")


def default_web_id(seed_text: str) -> str:
    """A 19-digit webId like the web app's, stable for a given text (it must stay fixed for a session)."""
    digest = hashlib.sha256(f"jimeng-batch webId {seed_text}".encode()).hexdigest()
    return str(7 * 10**18 + int(digest[:16], 16) % 10**18)


NodeIds = Callable[[str], str]  # a node's role in the tree -> its id


def node_id(key: str, role: str) -> str:
    """The id of the node with ``role`` in the draft of the request ``key``."""
    return uuid5_text(NODE_ID_NAMESPACE, f"{key}/{role}")


def node_ids(key: str, roles: list[str]) -> list[str]:
    """``[node_id(key, role) for role in roles]``, faster."""
    return uuid5_texts(NODE_ID_NAMESPACE, f"{key}/", roles)


class _Ids:
    """Node ids derived from the request key and each node's role in the tree."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, role: str) -> str:
        return node_id(self.key, role)


def image_uri(image: ImageInput, uploaded: Mapping[str, str]) -> str:
    """The image_uri to send: the uri itself, the uploaded file's uri, or a placeholder until it is uploaded."""
    if image.kind == "uri":
        return image.ref
    assert image.sha256 is not None
    return uploaded.get(image.sha256, f"{PENDING_UPLOAD_PREFIX}sha256:{image.sha256}")


def image_object(image: ImageInput, node_id: str, uploaded: Mapping[str, str]) -> dict[str, Any]:
    """The document's image object (reference images and video frames share it)."""
    uri = image_uri(image, uploaded)
    return {
        "type": "image", "id": node_id, "source_from": "upload", "platform_type": 1, "name": "",
        "image_uri": uri, "width": image.width, "height": image.height, "format": image.format, "uri": uri,
    }


def _metadata(ids: NodeIds, created_ms: int, *, as_text: bool) -> dict[str, Any]:
    # The document's image drafts carry the time as a string, its video drafts as a number.
    return {
        "type": "", "id": ids("metadata"), "created_platform": catalog.CREATED_PLATFORM,
        "created_platform_version": "", "created_time_in_ms": str(created_ms) if as_text else created_ms,
        "created_did": "",
    }


def _large_image_info(spec: RequestSpec, ids: NodeIds) -> dict[str, Any]:
    model = catalog.find_model(spec.model_key)
    assert isinstance(model, catalog.ImageModel) and spec.ratio is not None
    width, height = catalog.image_size(model, spec.resolution, spec.ratio)
    return {"type": "", "id": ids("large_image_info"), "height": height, "width": width,
            "resolution_type": spec.resolution}


def _image_component(spec: RequestSpec, ids: NodeIds, created_ms: int, uploaded: Mapping[str, str],
                     versions: ProtocolVersions) -> dict[str, Any]:
    assert spec.ratio is not None
    core: dict[str, Any] = {"type": "", "id": ids("core_param"), "model": spec.model_key}
    if spec.type == "image":
        core |= {"prompt": spec.prompt, "negative_prompt": spec.negative_prompt or "", "seed": spec.seed}
    else:
        core["prompt"] = catalog.BLEND_PROMPT_MARK * (len(spec.references) + 1) + spec.prompt
    core["sample_strength"] = spec.sample_strength
    # With intelligent_ratio the model picks the ratio: a text-to-image draft leaves image_ratio out (iptag
    # buildCoreParam); a blend keeps it (iptag: "图生图: image_ratio 始终保留"). large_image_info still carries the
    # size of the job's ratio at its resolution, as iptag sends it: the pixel budget the model works within.
    if not (spec.intelligent_ratio and spec.type == "image"):
        core["image_ratio"] = catalog.IMAGE_RATIO_CODES[spec.ratio]
    core |= {"large_image_info": _large_image_info(spec, ids), "intelligent_ratio": spec.intelligent_ratio}
    if spec.type == "image":
        ability: dict[str, Any] = {
            "type": "", "id": ids("generate"), "core_param": core,
            "history_option": {"type": "", "id": ids("history_option")},
        }
        generate_type, ability_name = "generate", "generate"
    else:
        ability = {
            "type": "", "id": ids("blend"),
            # The draft version is at least the version several references need (3.2.9).
            "min_version": max(versions.draft_version, catalog.BLEND_MULTI_IMAGE_MIN_VERSION, key=_version_tuple),
            "min_features": [], "core_param": core,
            "ability_list": [
                {
                    "type": "", "id": ids(f"ability/{i}"), "name": "byte_edit",
                    "image_uri_list": [image_uri(ref, uploaded)],
                    "image_list": [image_object(ref, ids(f"ability/{i}/image"), uploaded)],
                    "strength": ref.strength if ref.strength is not None else catalog.DEFAULT_REFERENCE_STRENGTH,
                }
                for i, ref in enumerate(spec.references)
            ],
            "prompt_placeholder_info_list": [
                {"type": "", "id": ids(f"placeholder/{i}"), "ability_index": i} for i in range(len(spec.references))
            ],
            "postedit_param": {"type": "", "id": ids("postedit_param"), "generate_type": 0},
        }
        generate_type, ability_name = "blend", "blend"
    abilities: dict[str, Any] = {"type": "", "id": ids("abilities"), ability_name: ability}
    if spec.image_count is not None:
        # A sibling of generate/blend: inside them the live service answers "permission denied" (2.2). Sent only
        # when the manifest asks, so that other drafts stay as they were (the service's default: 4 images).
        abilities["gen_option"] = {"type": "", "id": ids("gen_option"), "generate_all": False,
                                   "gen_count": spec.image_count}
    return {
        "type": "image_base_component", "id": ids("component"), "min_version": catalog.IMAGE_DRAFT_MIN_VERSION,
        "aigc_mode": "workbench", "metadata": _metadata(ids, created_ms, as_text=True),
        "generate_type": generate_type, "abilities": abilities,
    }


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in text.split("."))


def _video_component(spec: RequestSpec, ids: NodeIds, created_ms: int, uploaded: Mapping[str, str],
                     task_extra: str) -> dict[str, Any]:
    video_input: dict[str, Any] = {"duration_ms": int(spec.duration or 0) * 1000}
    if spec.first_frame is not None:
        video_input["first_frame_image"] = image_object(spec.first_frame, ids("first_frame_image"), uploaded)
    if spec.end_frame is not None:
        video_input["end_frame_image"] = image_object(spec.end_frame, ids("end_frame_image"), uploaded)
    video_input |= {
        "fps": spec.fps, "id": ids("video_gen_input"), "min_version": catalog.VIDEO_INPUT_MIN_VERSION,
        "prompt": spec.prompt, "resolution": spec.resolution, "type": "", "video_mode": catalog.VIDEO_MODE_NORMAL,
    }
    return {
        "type": "video_base_component", "id": ids("component"), "min_version": catalog.VIDEO_COMPONENT_MIN_VERSION,
        "metadata": _metadata(ids, created_ms, as_text=False), "generate_type": "gen_video",
        "aigc_mode": "workbench",
        "abilities": {
            "type": "", "id": ids("abilities"),
            "gen_video": {
                "type": "", "id": ids("gen_video"),
                "text_to_video_params": {
                    "type": "", "id": ids("text_to_video_params"), "model_req_key": spec.model_key, "priority": 0,
                    "seed": spec.seed, "video_aspect_ratio": spec.aspect_ratio, "video_gen_inputs": [video_input],
                },
                "video_task_extra": task_extra,
            },
        },
    }


def build_draft_content(spec: RequestSpec, versions: ProtocolVersions, *, created_ms: int = 0,
                        uploaded: Mapping[str, str] | None = None, node_ids: NodeIds | None = None) -> dict[str, Any]:
    """The ``draft_content`` tree (before it is serialised into the envelope's string). ``node_ids``: how node ids
    are made (default: from the request key; a plan's envelope template puts a slot in each)."""
    ids: NodeIds = node_ids or _Ids(spec.key)
    uploaded = uploaded or {}
    if spec.type == "video":
        component = _video_component(spec, ids, created_ms, uploaded, to_json(_video_metrics(spec)))
        head: dict[str, Any] = {"type": "draft", "id": ids("draft"), "min_version": catalog.VIDEO_DRAFT_MIN_VERSION}
    else:
        component = _image_component(spec, ids, created_ms, uploaded, versions)
        head = {"type": "draft", "id": ids("draft"), "min_version": catalog.IMAGE_DRAFT_MIN_VERSION,
                "min_features": []}
    return head | {
        "is_from_tsn": True, "version": versions.draft_version, "main_component_id": component["id"],
        "component_list": [component],
    }


def _image_metrics(spec: RequestSpec) -> dict[str, Any]:
    # generateCount stays 1 whatever gen_count asks: it is telemetry only (2.2), and the captured web app sends 1
    # for a submit that makes 4 images (it counts the click, not the images).
    return {"promptSource": "custom", "generateCount": 1, "enterFrom": "click", "generateId": spec.submit_id,
            "isRegenerate": False}


def _video_metrics(spec: RequestSpec) -> dict[str, Any]:
    return {"enterFrom": "click", "isDefaultSeed": 0 if spec.seed_given else 1, "promptSource": "custom",
            "isRegenerate": False, "originSubmitId": spec.submit_id}


def _commerce_info(benefit_type: str) -> dict[str, str]:
    return {"benefit_type": benefit_type, "resource_id": "generate_video", "resource_id_type": "str",
            "resource_sub_type": "aigc"}


def build_body(spec: RequestSpec, region: Region, versions: ProtocolVersions, *, created_ms: int = 0,
               uploaded: Mapping[str, str] | None = None, node_ids: NodeIds | None = None) -> dict[str, Any]:
    """The JSON body of ``POST /mweb/v1/aigc_draft/generate``."""
    draft = build_draft_content(spec, versions, created_ms=created_ms, uploaded=uploaded, node_ids=node_ids)
    if spec.type == "video":
        model = catalog.find_model(spec.model_key)
        assert isinstance(model, catalog.VideoModel)
        extend: dict[str, Any] = {
            "root_model": spec.model_key,
            "m_video_commerce_info": _commerce_info(model.benefit_type),
            "m_video_commerce_info_list": [_commerce_info(model.benefit_type)],
        }
        metrics = _video_metrics(spec)
    else:
        extend = {"root_model": spec.model_key, "template_id": ""}
        metrics = _image_metrics(spec)
    return {
        "extend": extend, "submit_id": spec.submit_id, "metrics_extra": to_json(metrics),
        "draft_content": to_json(draft), "http_common_info": {"aid": region.aid},
    }


def common_query(region: Region, versions: ProtocolVersions, web_id: str) -> dict[str, str]:
    """The query parameters every mweb call carries."""
    query = {"aid": str(region.aid), "device_platform": "web", "region": region.query_region}
    if region.sends_web_id:
        query["webId"] = web_id
    query |= {
        "da_version": versions.da_version, "web_version": versions.web_version,
        "aigc_features": versions.aigc_features, "web_component_open_flag": "1", "os": versions.os,
    }
    return query


def babi_param(spec: RequestSpec) -> dict[str, str]:
    """The feature descriptor image submits carry (the document's example; crick's for reference images)."""
    if spec.type == "image_to_image":
        return {"scenario": catalog.BABI_SCENARIO, "feature_key": "to_image_referenceimage_generate",
                "feature_entrance": "to_image", "feature_entrance_detail": "to_image-referenceimage-byte_edit"}
    return {"scenario": catalog.BABI_SCENARIO, "feature_key": "aigc_to_image", "feature_entrance": "to_image",
            "feature_entrance_detail": f"to_image-{spec.model_key}"}


def build_request(spec: RequestSpec, region: Region, versions: ProtocolVersions, *, web_id: str,
                  created_ms: int = 0, uploaded: Mapping[str, str] | None = None,
                  node_ids: NodeIds | None = None) -> DraftRequest:
    """The whole submit: method, path, query and body, exactly as they are sent."""
    query = common_query(region, versions, web_id)
    if spec.type != "video":
        # encodeURIComponent'd JSON, as the web app sends it (the HTTP layer then encodes the query as usual).
        query["babi_param"] = encode_uri_component(to_json(babi_param(spec)))
    body = build_body(spec, region, versions, created_ms=created_ms, uploaded=uploaded, node_ids=node_ids)
    return DraftRequest("POST", GENERATE_PATH, query, body)
