"""The gate every API call passes: versions, Sign, Device-Time, cookie; and the document's examples as they are."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import pytest
from sim_helpers import (
    OTHER_TOKEN,
    Caller,
    Harness,
    document,
    envelope,
    image_envelope,
    simulator,
)

from jimeng_batch.protocol.signing import web_sign
from jimeng_batch.sim import SimConfig

GENERATE = "/mweb/v1/aigc_draft/generate"


@pytest.fixture(params=["document", "live"])
def sim(request: pytest.FixtureRequest) -> Iterator[Harness]:
    with simulator(SimConfig(profile=request.param)) as harness:
        yield harness


PERMISSION = {"document": "2005", "live": "3018"}


def flip(text: str) -> str:
    """The same text with its last character changed."""
    return text[:-1] + ("0" if text[-1] != "0" else "1")


GATE_CASES = [
    pytest.param({"headers_override": {"Sign": None}}, "Sign header is missing", id="sign-missing"),
    pytest.param({"headers_override": {"Appvr": None}}, "Appvr header is missing", id="appvr-missing"),
    pytest.param({"headers_override": {"Appvr": "5.8.0"}}, "Appvr 5.8.0 is not supported", id="appvr-stale"),
    pytest.param({"headers_override": {"Pf": None}}, "Pf header is missing", id="pf-missing"),
    pytest.param({"headers_override": {"Device-Time": None}}, "Device-Time header is missing",
                 id="device-time-missing"),
    pytest.param({"query_override": {"da_version": None}}, "da_version query parameter is missing",
                 id="da-version-missing"),
    pytest.param({"query_override": {"da_version": "3.3.1"}}, "da_version 3.3.1 is not supported",
                 id="da-version-stale"),
    pytest.param({"query_override": {"da_version": "three"}}, "da_version three is not supported",
                 id="da-version-garbage"),
]


@pytest.mark.parametrize(("overrides", "message"), GATE_CASES)
def test_protocol_problems_get_the_permission_error(sim: Harness, overrides: dict[str, Any], message: str) -> None:
    caller = sim.as_account(sim.caller.token, **overrides)
    answer = caller.submit(image_envelope())
    assert answer["ret"] == PERMISSION[sim.server.state.config.profile]
    assert message in answer["errmsg"]
    assert answer["data"] is None
    assert set(answer) == set(document("error_response.json"))
    assert sim.server.stats()["charges_by_submit_id"] == {}


def test_sign_one_character_changed_is_rejected(sim: Harness) -> None:
    good = sim.caller.headers(GENERATE)["Sign"]
    answer = sim.as_account(sim.caller.token, headers_override={"Sign": flip(good)}).submit(image_envelope())
    assert answer["ret"] == PERMISSION[sim.server.state.config.profile]
    assert answer["errmsg"].endswith("Sign does not match")
    assert sim.as_account(sim.caller.token, headers_override={"Sign": good.upper()}).submit(image_envelope())["ret"] \
        == PERMISSION[sim.server.state.config.profile]
    assert sim.caller.submit(image_envelope())["ret"] == "0"


@pytest.mark.parametrize(
    "sign_for",
    [
        pytest.param({"path": "/mweb/v1/get_history_by_ids"}, id="other-path"),
        pytest.param({"device_time": 1}, id="other-time"),
        pytest.param({"tdid": "x"}, id="other-tdid"),
        pytest.param({"app_version": "8.4.1"}, id="other-appvr"),
    ],
)
def test_sign_covers_path_time_tdid_and_version(sim: Harness, sign_for: dict[str, Any]) -> None:
    device_time = str(int(sim.clock()))
    parts = {"path": GENERATE, "platform": "7", "app_version": "8.4.0", "device_time": device_time, "tdid": "",
             **sign_for}
    path = parts.pop("path")
    sign = web_sign(path, **parts)
    answer = sim.as_account(sim.caller.token, headers_override={"Sign": sign}).submit(image_envelope())
    assert answer["ret"] == PERMISSION[sim.server.state.config.profile]


def test_device_time_far_from_the_server_clock(sim: Harness) -> None:
    stale = str(int(sim.clock()) - 3600)
    sign = web_sign(GENERATE, platform="7", app_version="8.4.0", device_time=stale)
    caller = sim.as_account(sim.caller.token, headers_override={"Device-Time": stale, "Sign": sign})
    answer = caller.submit(image_envelope())
    assert answer["errmsg"].endswith("Device-Time is too far from the server time")


def test_missing_cookie_is_a_login_error(sim: Harness) -> None:
    answer = sim.as_account(None).submit(image_envelope())
    assert answer == {"ret": "1015", "errmsg": "login error: sessionid cookie missing", "data": None}


def test_os_is_required_only_in_the_live_profile(sim: Harness) -> None:
    answer = sim.as_account(sim.caller.token, query_override={"os": None}).submit(image_envelope())
    if sim.server.state.config.profile == "live":
        assert answer["ret"] == "3018" and "os query parameter" in answer["errmsg"]
    else:
        assert answer["ret"] == "0"


def test_live_profile_wants_a_newer_da_version() -> None:
    with simulator(SimConfig(profile="live")) as sim:
        answer = sim.as_account(sim.caller.token, query_override={"da_version": "3.3.2"}).submit(image_envelope())
        assert answer["ret"] == "3018"
        assert sim.as_account(sim.caller.token, query_override={"da_version": "3.3.20"}).submit(
            image_envelope())["ret"] == "0"


def test_strict_accounts_reject_unknown_tokens() -> None:
    config = SimConfig(strict_accounts=True, accounts={OTHER_TOKEN: 5})
    with simulator(config) as sim:
        assert sim.caller.submit(image_envelope()) == {"ret": "1015", "errmsg": "login error: unknown sessionid",
                                                       "data": None}
        assert sim.as_account(OTHER_TOKEN).credits()["data"]["credit"]["purchase_credit"] == 5


def test_every_api_endpoint_is_gated(sim: Harness) -> None:
    caller = sim.as_account(sim.caller.token, headers_override={"Sign": "0" * 32})
    code = PERMISSION[sim.server.state.config.profile]
    assert caller.poll(["1"])["ret"] == code
    assert caller.api("/mweb/v1/get_upload_token", {"scene": 2})["ret"] == code
    assert caller.api("/commerce/v1/benefits/user_credit", {}, mweb=False)["ret"] == code
    assert caller.api("/commerce/v1/benefits/credit_receive", {}, mweb=False)["ret"] == code
    assert sim.server.stats()["errors"] == {code: 4}


def test_commerce_calls_need_no_default_query(sim: Harness) -> None:
    response = sim.caller.client.post("/commerce/v1/benefits/user_credit", json={},
                                      headers=sim.caller.headers("/commerce/v1/benefits/user_credit"))
    assert response.json()["ret"] == "0"


def test_wrong_method_is_405(sim: Harness) -> None:
    assert sim.client.get(GENERATE).status_code == 405


# -- the document's examples, as they are ---------------------------------------------------------------------------


def _document_query(name: str) -> dict[str, str]:
    query: dict[str, Any] = dict(document(name)["query"])
    if isinstance(query.get("babi_param"), dict):
        query["babi_param"] = quote(json.dumps(query["babi_param"], separators=(",", ":")))
    return query


def _document_body(request_name: str, draft_name: str) -> dict[str, Any]:
    body = dict(document(request_name)["body"])
    body["metrics_extra"] = json.dumps(body["metrics_extra"])
    body["draft_content"] = json.dumps(document(draft_name), ensure_ascii=False)
    return body


@pytest.mark.parametrize(
    ("request_name", "draft_name", "generate_type"),
    [
        pytest.param("image_request.json", "image_draft.json", 1, id="image"),
        pytest.param("image_request.json", "blend_draft.json", 12, id="blend"),
        pytest.param("video_request.json", "video_draft.json", 10, id="video"),
    ],
)
def test_document_examples_are_accepted_as_they_are(request_name: str, draft_name: str, generate_type: int) -> None:
    with simulator(SimConfig(profile="document")) as sim:
        caller = sim.caller
        body = _document_body(request_name, draft_name)
        response = caller.client.post(GENERATE, params=_document_query(request_name),
                                      headers=caller.headers(GENERATE), json=body)
        answer = response.json()
        assert response.status_code == 200 and answer["ret"] == "0", answer
        expected = document("generate_success_response.json")
        assert set(expected) <= set(answer)
        assert set(expected["data"]["aigc_data"]) <= set(answer["data"]["aigc_data"])
        assert answer["data"]["aigc_data"]["submit_id"] == "submit_id_string"
        assert answer["data"]["aigc_data"]["generate_type"] == generate_type
        assert answer["data"]["extend"]["root_model"] == body["extend"]["root_model"]
        assert answer["data"]["extend"]["template_id"] == body["extend"].get("template_id", "")
        history_id = answer["data"]["aigc_data"]["history_record_id"]
        assert history_id.isdigit() and len(history_id) == 13


def test_document_envelope_template_with_example_draft() -> None:
    """envelope.json (the document's core structure) with a real draft_content in place of its placeholder."""
    body = document("envelope.json")
    body["draft_content"] = json.dumps(document("image_draft.json"))
    with simulator() as sim:
        assert sim.caller.submit(body)["ret"] == "0"


@pytest.mark.parametrize("profile", ["document", "live"])
def test_param_errors_name_the_field(profile: str) -> None:
    code = {"document": "2002", "live": "1002"}[profile]
    with simulator(SimConfig(profile=profile)) as sim:
        body = image_envelope()
        draft = json.loads(body["draft_content"])
        draft["component_list"][0]["abilities"]["generate"]["core_param"]["image_ratio"] = 42
        body["draft_content"] = json.dumps(draft)
        answer = sim.caller.submit(body)
        assert answer["ret"] == code and answer["data"] is None
        assert "core_param.image_ratio" in answer["errmsg"]
        bad_json = sim.caller.client.post(GENERATE, params=sim.caller.query(), headers=sim.caller.headers(GENERATE),
                                          content=b"{oops")
        assert bad_json.json()["ret"] == code and "body" in bad_json.json()["errmsg"]
        assert sim.caller.submit({"draft_content": "{}"})["errmsg"].endswith("submit_id: is required and must be a "
                                                                             "non-empty string")
        assert sim.caller.poll()["ret"] == code
        assert sim.caller.api("/mweb/v1/get_history_by_ids", {"history_ids": "1"})["ret"] == code


def test_unavailable_model() -> None:
    with simulator(replace(SimConfig(), unavailable_models=("jimeng-4.0",))) as sim:
        answer = sim.caller.submit(image_envelope())
        assert answer["ret"] == "2003" and "high_aes_general_v40" in answer["errmsg"]


def test_error_code_override() -> None:
    with simulator(SimConfig(error_codes={"permission": "4031"})) as sim:
        assert sim.as_account(sim.caller.token, headers_override={"Sign": None}).submit(image_envelope())["ret"] \
            == "4031"


def test_caller_helper_defaults_are_valid() -> None:
    """Guards the helper itself: with no overrides every call succeeds."""
    with simulator() as sim:
        caller: Caller = sim.caller
        assert caller.submit(image_envelope())["ret"] == "0"
        assert caller.credits()["ret"] == "0"


def test_document_shaped_envelope_helper() -> None:
    body = envelope(document("image_draft.json"), "x", "high_aes_general_v40")
    assert json.loads(body["draft_content"]) == document("image_draft.json")
