"""Golden tests: built drafts against the API document's three examples, field by field.

Ids, times and seeds differ by design (ids derive from the request key, seeds from the manifest); everything else,
names, nesting, value types and values, must match the document exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.drafts import (
    build_draft_content,
    build_request,
    default_web_id,
)
from jimeng_batch.protocol.request_spec import ImageInput, RequestSpec, Source

DOC = Path(__file__).parent / "data" / "document"
VERSIONS = catalog.PROTOCOL_PROFILES["document"]
CN = catalog.REGIONS["cn"]
IGNORED = {"id", "main_component_id", "created_time_in_ms", "seed"}


def load(name: str) -> Any:
    return json.loads((DOC / name).read_text(encoding="utf-8"))


def normalise(node: Any) -> Any:
    """The tree with ignored values replaced by their type name (so types are still compared)."""
    if isinstance(node, dict):
        return {k: (type(v).__name__ if k in IGNORED else normalise(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [normalise(v) for v in node]
    return node


def doc_image(uri: str) -> ImageInput:
    # The document's examples use 1024x1024 images with an empty format.
    return ImageInput("uri", uri, width=1024, height=1024, format="", strength=0.5)


def spec(**overrides: Any) -> RequestSpec:
    base: dict[str, Any] = dict(
        key="0" * 32, submit_id="00000000-0000-0000-0000-000000000000", sample=0, type="image", region="cn",
        model="jimeng-4.0", model_key="high_aes_general_v40", prompt="生成提示词", seed=2500000001,
        seed_given=False, resolution="2k", source=Source("m.yaml", "job", 0), estimated_credits=1.0,
        negative_prompt="负面提示词", ratio="1:1", sample_strength=0.5,
    )
    return RequestSpec(**(base | overrides))


IMAGE = spec()
BLEND = spec(type="image_to_image", negative_prompt=None, seed=None, references=(doc_image("image_uri_1"),))
VIDEO = spec(type="video", model="jimeng-video-3.0", model_key="dreamina_ic_generate_video_model_vgfm_3.0",
             prompt="视频生成提示词", resolution="720p", negative_prompt=None, ratio=None, sample_strength=None,
             duration=5, aspect_ratio="16:9", fps=24, first_frame=doc_image("image_uri_1"),
             end_frame=doc_image("image_uri_2"))


@pytest.mark.parametrize(
    ("request_spec", "fixture"),
    [
        pytest.param(IMAGE, "image_draft.json", id="text-to-image"),
        pytest.param(BLEND, "blend_draft.json", id="image-to-image"),
        pytest.param(VIDEO, "video_draft.json", id="video-first-last-frame"),
    ],
)
def test_draft_content_matches_the_document(request_spec: RequestSpec, fixture: str) -> None:
    built = build_draft_content(request_spec, VERSIONS, created_ms=1640995200000)
    expected = load(fixture)
    if request_spec.type == "video":
        # The document shows video_task_extra as a placeholder string; ours is the metrics JSON (checked below).
        params = expected["component_list"][0]["abilities"]["gen_video"]
        built_params = built["component_list"][0]["abilities"]["gen_video"]
        assert isinstance(built_params["video_task_extra"], str)
        params["video_task_extra"] = built_params["video_task_extra"]
    assert normalise(built) == normalise(expected)


@pytest.mark.parametrize(
    ("request_spec", "kind"),
    [pytest.param(IMAGE, str, id="image-time-is-text"), pytest.param(VIDEO, int, id="video-time-is-a-number")],
)
def test_created_time_has_the_documents_type(request_spec: RequestSpec, kind: type) -> None:
    built = build_draft_content(request_spec, VERSIONS, created_ms=1640995200000)
    value = built["component_list"][0]["metadata"]["created_time_in_ms"]
    assert isinstance(value, kind) and int(value) == 1640995200000


def walk_nodes(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += walk_nodes(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += walk_nodes(value, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("request_spec", [IMAGE, BLEND, VIDEO], ids=["image", "blend", "video"])
def test_every_node_carries_type_and_id(request_spec: RequestSpec) -> None:
    built = build_draft_content(request_spec, VERSIONS)
    for path, node in walk_nodes(built):
        assert "type" in node and "id" in node, f"node {path or 'root'} lacks type/id"


def test_node_ids_derive_from_the_key_and_are_unique() -> None:
    first = build_draft_content(IMAGE, VERSIONS)
    again = build_draft_content(IMAGE, VERSIONS)
    other = build_draft_content(spec(key="1" * 32), VERSIONS)
    ids = [node["id"] for _, node in walk_nodes(first)]
    assert first == again
    assert len(ids) == len(set(ids))
    assert not set(ids) & {node["id"] for _, node in walk_nodes(other)}


def test_image_envelope_and_query_match_the_document() -> None:
    expected = load("image_request.json")
    request = build_request(IMAGE, CN, VERSIONS, web_id="7000000000000000000")
    body = request.body
    assert body["extend"] == expected["body"]["extend"]
    assert body["http_common_info"] == expected["body"]["http_common_info"]
    assert body["submit_id"] == IMAGE.submit_id
    metrics = json.loads(body["metrics_extra"])
    assert set(metrics) == set(expected["body"]["metrics_extra"])
    assert metrics["generateId"] == IMAGE.submit_id
    assert json.loads(body["draft_content"]) == build_draft_content(IMAGE, VERSIONS)
    expected_query = dict(expected["query"])
    babi = expected_query.pop("babi_param")
    query = dict(request.query)
    assert json.loads(unquote(query.pop("babi_param"))) == babi
    assert query.pop("os") == "windows"  # the live service answers 3018 without it
    assert query == expected_query


def test_video_envelope_and_query_match_the_document() -> None:
    expected = load("video_request.json")
    request = build_request(VIDEO, CN, VERSIONS, web_id="7000000000000000000")
    assert request.body["extend"] == expected["body"]["extend"]
    assert request.body["http_common_info"] == {"aid": 513695}
    metrics = json.loads(request.body["metrics_extra"])
    assert metrics == expected["body"]["metrics_extra"] | {"originSubmitId": VIDEO.submit_id}
    assert "babi_param" not in request.query
    query = dict(request.query)
    query.pop("os")
    assert query == expected["query"]


def test_blend_with_several_references_follows_the_protocol() -> None:
    refs = (doc_image("tos-a"), ImageInput("uri", "tos-b", strength=0.8))
    built = build_draft_content(spec(type="image_to_image", negative_prompt=None, seed=None, references=refs),
                                catalog.PROTOCOL_PROFILES["live"])
    blend = built["component_list"][0]["abilities"]["blend"]
    assert blend["core_param"]["prompt"] == "######生成提示词"
    assert [a["image_uri_list"] for a in blend["ability_list"]] == [["tos-a"], ["tos-b"]]
    assert [a["strength"] for a in blend["ability_list"]] == [0.5, 0.8]
    assert [p["ability_index"] for p in blend["prompt_placeholder_info_list"]] == [0, 1]
    assert blend["min_version"] == "3.3.9"  # at least the 3.2.9 several images need


def test_local_files_get_a_placeholder_uri_until_uploaded() -> None:
    local = ImageInput("file", "photo.png", sha256="ab" * 32, width=640, height=480, format="png", strength=0.5)
    blend = spec(type="image_to_image", negative_prompt=None, seed=None, references=(local,))
    pending = build_draft_content(blend, VERSIONS)["component_list"][0]["abilities"]["blend"]["ability_list"][0]
    assert pending["image_uri_list"] == ["pending-upload:sha256:" + "ab" * 32]
    assert pending["image_list"][0]["width"] == 640 and pending["image_list"][0]["format"] == "png"
    done = build_draft_content(blend, VERSIONS, uploaded={"ab" * 32: "tos-cn-i-x/1"})
    assert done["component_list"][0]["abilities"]["blend"]["ability_list"][0]["image_uri_list"] == ["tos-cn-i-x/1"]


@pytest.mark.parametrize(
    ("region", "aid", "query_region", "has_web_id"),
    [("cn", 513695, "cn", True), ("us", 513641, "US", False), ("sg", 513641, "SG", False)],
)
def test_regions_set_aid_and_query(region: str, aid: int, query_region: str, has_web_id: bool) -> None:
    request = build_request(IMAGE, catalog.REGIONS[region], VERSIONS, web_id=default_web_id(region))
    assert request.body["http_common_info"] == {"aid": aid}
    assert request.query["aid"] == str(aid) and request.query["region"] == query_region
    assert ("webId" in request.query) is has_web_id


@pytest.mark.parametrize(
    ("model", "resolution", "ratio", "size"),
    [
        ("jimeng-4.0", "2k", "16:9", (2560, 1440)),  # the capture
        ("jimeng-4.0", "1k", "4:3", (1024, 768)),
        ("jimeng-3.0", "1k", "1:1", (1328, 1328)),
        ("jimeng-4.0", "4k", "21:9", (6197, 2656)),
    ],
)
def test_large_image_info_uses_the_size_table(model: str, resolution: str, ratio: str,
                                              size: tuple[int, int]) -> None:
    found = catalog.find_model(model)
    assert found is not None
    built = build_draft_content(spec(model=model, model_key=found.key, resolution=resolution, ratio=ratio), VERSIONS)
    core = built["component_list"][0]["abilities"]["generate"]["core_param"]
    info = core["large_image_info"]
    assert (info["width"], info["height"]) == size
    assert info["resolution_type"] == resolution
    assert core["image_ratio"] == catalog.IMAGE_RATIO_CODES[ratio]
