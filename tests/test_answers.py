"""Arbitrary JSON as every answer the client reads (submit, poll, credit, upload token, ImageX): nothing escapes but
the classified errors, and a well-formed answer still reads as before."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jimeng_batch.errors import APIError
from jimeng_batch.protocol import answers, catalog
from jimeng_batch.protocol.client import JimengClient, parse_item, parse_record
from jimeng_batch.protocol.drafts import DraftRequest
from jimeng_batch.protocol.imagex import Uploader
from jimeng_batch.protocol.tokens import Token

TOKEN = Token("tokA0123456789abcdef0123456789ab")
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=20))
JSON = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=5)), max_leaves=25)
KEYS = ["status", "task", "item_list", "forecast_cost_time", "queue_info", "history_record_id", "fail_code",
        "total_image_count", "finished_image_count", "image", "video", "common_attr", "large_images",
        "image_url", "transcoded_video", "origin", "video_url", "width", "height", "aigc_data", "credit",
        "gift_credit", "expiring_credits", "Result", "UploadAddress", "StoreInfos", "UploadHosts", "SessionKey",
        "Results", "Uri", "PluginResult", "ResponseMetadata", "Error", "ret", "data", "errmsg"]
# Objects whose keys are the protocol's own, so the generator reaches the fields the reader looks at.
PROTOCOL_JSON = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=3), st.dictionaries(st.sampled_from(KEYS), children, max_size=6)), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(raw=st.one_of(JSON, PROTOCOL_JSON))
def test_a_record_is_read_or_refused_with_its_path(raw: Any) -> None:
    try:
        record = parse_record(raw, "data.1")
    except answers.Malformed as exc:
        assert exc.path.startswith("data.1")
        return
    assert isinstance(record.status, int) and isinstance(record.items, tuple)
    json.dumps(record.history_record_id)  # plain data only


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(JSON, PROTOCOL_JSON))
def test_an_item_is_read_or_refused(raw: Any) -> None:
    try:
        item = parse_item(raw, "item")
    except answers.Malformed:
        return
    assert item is None or (isinstance(item.url, str) and item.url)


def _client_with(answer: Any, status: int = 200) -> JimengClient:
    content = json.dumps(answer, allow_nan=True).encode()
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=content))
    return JimengClient(region=catalog.REGIONS["cn"], versions=catalog.PROTOCOL_PROFILES["live"], web_id="1",
                        base_url="http://127.0.0.1:9", transport=transport)


ENVELOPES = st.one_of(PROTOCOL_JSON, st.builds(lambda data: {"ret": "0", "data": data}, PROTOCOL_JSON))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=ENVELOPES, call=st.sampled_from(["submit", "history", "credit", "upload"]))
def test_no_answer_escapes_the_client_unclassified(answer: Any, call: str) -> None:
    async def main() -> None:
        async with _client_with(answer) as client:
            if call == "submit":
                await client.submit(DraftRequest("POST", "/mweb/v1/aigc_draft/generate", {}, {"submit_id": "s"}),
                                    TOKEN)
            elif call == "history":
                await client.history(TOKEN, history_ids=["1", "2"])
            elif call == "credit":
                await client.user_credit(TOKEN)
            else:
                await Uploader(client, catalog.REGIONS["cn"], "http://127.0.0.1:9").upload(TOKEN, b"\x89PNG")

    try:
        asyncio.run(main())
    except APIError:
        pass  # classified: the run knows what to do with it


@pytest.mark.parametrize(("value", "reader", "expected"), [
    pytest.param("12", answers.integer, 12, id="an-int-as-text"),
    pytest.param(12.0, answers.integer, 12, id="an-integral-float"),
    pytest.param(None, answers.integer, 0, id="null-int"),
    pytest.param(None, answers.mapping, {}, id="null-object"),
    pytest.param(7, answers.text, "7", id="an-id-as-number"),
    pytest.param("2.5", answers.number, 2.5, id="a-number-as-text"),
])
def test_lenient_where_the_service_is(value: Any, reader: Any, expected: Any) -> None:
    assert reader(value, "x") == expected


@pytest.mark.parametrize(("value", "reader", "message"), [
    pytest.param(True, answers.integer, "a boolean, not a number", id="bool"),
    pytest.param(float("nan"), answers.number, "not a finite number", id="nan"),
    pytest.param("x" * 70_000, answers.text, "more than 65536", id="huge-text"),
    pytest.param([1], answers.mapping, "a list of 1, not an object", id="list-for-object"),
])
def test_strict_where_it_must_be(value: Any, reader: Any, message: str) -> None:
    with pytest.raises(answers.Malformed, match=message):
        reader(value, "x")
