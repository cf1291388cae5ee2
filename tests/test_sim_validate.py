"""Draft checks, without HTTP: the document's drafts pass, and each malformation names its field."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from sim_helpers import (
    blend_envelope,
    document,
    envelope,
    image_envelope,
    video_envelope,
)

from jimeng_batch.sim.validate import DraftError, parse_submission, submit_id_of

KNOWN = {"image_uri_1", "image_uri_2"}.__contains__

Mutation = Callable[[dict[str, Any]], None]


def core(draft: dict[str, Any]) -> dict[str, Any]:
    return draft["component_list"][0]["abilities"]["generate"]["core_param"]  # type: ignore[no-any-return]


def video_input(draft: dict[str, Any]) -> dict[str, Any]:
    return draft["component_list"][0]["abilities"]["gen_video"]["text_to_video_params"]["video_gen_inputs"][0]  # type: ignore[no-any-return]


def t2v(draft: dict[str, Any]) -> dict[str, Any]:
    return draft["component_list"][0]["abilities"]["gen_video"]["text_to_video_params"]  # type: ignore[no-any-return]


def mutated(body: dict[str, Any], mutate: Mutation) -> dict[str, Any]:
    body = copy.deepcopy(body)
    draft = json.loads(body["draft_content"])
    mutate(draft)
    body["draft_content"] = json.dumps(draft)
    return body


@pytest.mark.parametrize(
    ("name", "kind", "size"),
    [
        pytest.param("image_draft.json", "image", (2048, 2048), id="image"),
        pytest.param("blend_draft.json", "image", (2048, 2048), id="blend"),
        pytest.param("video_draft.json", "video", (1280, 720), id="video"),
    ],
)
def test_document_drafts_are_valid(name: str, kind: str, size: tuple[int, int]) -> None:
    draft = document(name)
    model = "dreamina_ic_generate_video_model_vgfm_3.0" if kind == "video" else "high_aes_general_v40"
    spec = parse_submission(envelope(draft, "submit_id_string", model), known_uri=KNOWN)
    assert spec.kind == kind
    assert (spec.width, spec.height) == size
    assert spec.model.key == model


def test_video_spec() -> None:
    spec = parse_submission(video_envelope(duration_ms=10000, resolution="1080p"), known_uri=KNOWN)
    assert spec.duration_s == 10 and spec.resolution == "1080p" and (spec.width, spec.height) == (1920, 1080)
    assert spec.image_uris == ("image_uri_1", "image_uri_2")
    assert spec.record_generate_type == 10


IMAGE_CASES = [
    pytest.param(lambda d: d.pop("type"), "draft_content.type", id="root-without-type"),
    pytest.param(lambda d: d["component_list"][0].pop("id"), "draft_content.component_list[0].id",
                 id="component-without-id"),
    pytest.param(lambda d: core(d)["large_image_info"].pop("type"),
                 "draft_content.component_list[0].abilities.generate.core_param.large_image_info.type",
                 id="large-image-info-without-type"),
    pytest.param(lambda d: d["component_list"][0]["metadata"].update(id=""),
                 "draft_content.component_list[0].metadata.id", id="empty-id"),
    pytest.param(lambda d: d["component_list"][0]["abilities"]["generate"]["history_option"].pop("id"),
                 "draft_content.component_list[0].abilities.generate.history_option.id", id="history-option"),
    pytest.param(lambda d: d["component_list"][0].update(generate_type="paint"),
                 "draft_content.component_list[0].generate_type", id="unknown-generate-type"),
    pytest.param(lambda d: core(d).update(model="high_aes_general_v99"),
                 "draft_content.component_list[0].abilities.generate.core_param.model", id="model-not-in-catalog"),
    pytest.param(lambda d: core(d).update(model="dreamina_ic_generate_video_model_vgfm_3.0"),
                 "draft_content.component_list[0].abilities.generate.core_param.model", id="video-model-for-image"),
    pytest.param(lambda d: core(d).update(image_ratio=9),
                 "draft_content.component_list[0].abilities.generate.core_param.image_ratio", id="bad-ratio"),
    pytest.param(lambda d: core(d)["large_image_info"].update(resolution_type="8k"),
                 "draft_content.component_list[0].abilities.generate.core_param.large_image_info.resolution_type",
                 id="bad-resolution"),
    pytest.param(lambda d: core(d)["large_image_info"].update(width=10),
                 "draft_content.component_list[0].abilities.generate.core_param.large_image_info.width",
                 id="tiny-width"),
    pytest.param(lambda d: d.update(main_component_id="nope"), "draft_content.main_component_id",
                 id="main-component"),
    pytest.param(lambda d: d.update(component_list=[]), "draft_content.component_list", id="no-components"),
    pytest.param(lambda d: d["component_list"][0]["abilities"].pop("generate"),
                 "draft_content.component_list[0].abilities.generate", id="ability-missing"),
    pytest.param(lambda d: core(d).update(prompt=5),
                 "draft_content.component_list[0].abilities.generate.core_param.prompt", id="prompt-type"),
    pytest.param(lambda d: d["component_list"][0]["abilities"].update(
        gen_option={"type": "", "id": "g", "gen_count": 9}),
                 "draft_content.component_list[0].abilities.gen_option.gen_count", id="gen-count"),
]


@pytest.mark.parametrize(("mutate", "field"), IMAGE_CASES)
def test_image_draft_errors_name_the_field(mutate: Mutation, field: str) -> None:
    with pytest.raises(DraftError) as caught:
        parse_submission(mutated(image_envelope(), mutate), known_uri=KNOWN)
    assert caught.value.field == field


VIDEO_CASES = [
    pytest.param(lambda d: video_input(d).update(duration_ms=7000),
                 "draft_content.component_list[0].abilities.gen_video.text_to_video_params.video_gen_inputs[0]"
                 ".duration_ms", id="duration-not-allowed"),
    pytest.param(lambda d: video_input(d).update(duration_ms=5500),
                 "draft_content.component_list[0].abilities.gen_video.text_to_video_params.video_gen_inputs[0]"
                 ".duration_ms", id="duration-not-whole-seconds"),
    pytest.param(lambda d: t2v(d).update(video_aspect_ratio="5:4"),
                 "draft_content.component_list[0].abilities.gen_video.text_to_video_params.video_aspect_ratio",
                 id="aspect-ratio"),
    pytest.param(lambda d: t2v(d).update(model_req_key="high_aes_general_v40"),
                 "draft_content.component_list[0].abilities.gen_video.text_to_video_params.model_req_key",
                 id="image-model-for-video"),
    pytest.param(lambda d: video_input(d).pop("type"),
                 "draft_content.component_list[0].abilities.gen_video.text_to_video_params.video_gen_inputs[0]"
                 ".type", id="video-input-without-type"),
    pytest.param(lambda d: video_input(d)["first_frame_image"].update(image_uri="elsewhere", uri="elsewhere"),
                 "draft_content.component_list[0].abilities.gen_video.text_to_video_params.video_gen_inputs[0]"
                 ".first_frame_image.image_uri", id="unknown-frame-uri"),
    pytest.param(lambda d: video_input(d).update(resolution="4k"),
                 "draft_content.component_list[0].abilities.gen_video.text_to_video_params.video_gen_inputs[0]"
                 ".resolution", id="video-resolution"),
]


@pytest.mark.parametrize(("mutate", "field"), VIDEO_CASES)
def test_video_draft_errors_name_the_field(mutate: Mutation, field: str) -> None:
    with pytest.raises(DraftError) as caught:
        parse_submission(mutated(video_envelope(), mutate), known_uri=KNOWN)
    assert caught.value.field == field


def test_blend_needs_known_uris() -> None:
    with pytest.raises(DraftError, match="was not uploaded") as caught:
        parse_submission(blend_envelope(uri="tos-cn-i-x/unknown"), known_uri=KNOWN)
    assert caught.value.field.endswith("ability_list[0].image_list[0].image_uri")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param(lambda b: b.pop("extend"), "extend", id="no-extend"),
        pytest.param(lambda b: b["extend"].update(root_model="nope"), "extend.root_model", id="root-model-unknown"),
        pytest.param(lambda b: b["extend"].update(root_model="high_aes_general_v42"), "extend.root_model",
                     id="root-model-mismatch"),
        pytest.param(lambda b: b.update(draft_content="{not json"), "draft_content", id="draft-not-json"),
        pytest.param(lambda b: b.update(draft_content={"type": "draft"}), "draft_content", id="draft-not-string"),
        pytest.param(lambda b: b.update(draft_content="[]"), "draft_content", id="draft-not-object"),
        pytest.param(lambda b: b.update(http_common_info={"aid": "x"}), "http_common_info.aid", id="aid"),
    ],
)
def test_envelope_errors(change: Callable[[dict[str, Any]], None], field: str) -> None:
    body = image_envelope()
    change(body)
    with pytest.raises(DraftError) as caught:
        parse_submission(body, known_uri=KNOWN)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([], id="not-an-object"),
        pytest.param({}, id="missing"),
        pytest.param({"submit_id": ""}, id="empty"),
        pytest.param({"submit_id": 5}, id="number"),
        pytest.param({"submit_id": "x" * 129}, id="too-long"),
    ],
)
def test_submit_id_errors(body: Any) -> None:
    with pytest.raises(DraftError):
        submit_id_of(body)
