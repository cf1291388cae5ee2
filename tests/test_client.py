"""The HTTP client against httpx.MockTransport: what it sends, and how it reads every kind of answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from jimeng_batch.errors import RequestFailedError, RetryableAPIError, StopSubmittingError
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.client import HistoryRecord, JimengClient, parse_record
from jimeng_batch.protocol.outcomes import TokenEffect
from jimeng_batch.protocol.signing import web_sign
from jimeng_batch.protocol.tokens import Token, load_tokens, mask, parse_tokens

SECRET = "abcd0123456789abcdef0123456789ef"
TOKEN = Token(SECRET)


def call(handler: Callable[[httpx.Request], httpx.Response], work: Callable[[JimengClient], Any],
         region: str = "cn") -> Any:
    async def main() -> Any:
        async with JimengClient(region=catalog.REGIONS[region], versions=catalog.PROTOCOL_PROFILES["live"],
                                web_id="7000000000000000001", transport=httpx.MockTransport(handler),
                                clock=lambda: 1771893826.0) as client:
            return await work(client)

    return asyncio.run(main())


def ok(data: Any) -> httpx.Response:
    return httpx.Response(200, json={"ret": "0", "errmsg": "success", "data": data})


def test_headers_query_and_cookie() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok({})

    call(handler, lambda c: c.call("/mweb/v1/get_history_by_ids", {"history_ids": []}, TOKEN))
    request = seen[0]
    assert request.url.host == "jimeng.jianying.com"
    headers = request.headers
    assert headers["sign"] == web_sign("/mweb/v1/get_history_by_ids", platform="7", app_version="8.4.0",
                                       device_time=1771893826)
    assert (headers["device-time"], headers["sign-ver"], headers["appid"], headers["appvr"], headers["pf"]) == (
        "1771893826", "1", "513695", "8.4.0", "7")
    assert (headers["lan"], headers["loc"]) == ("zh-Hans", "cn")
    assert f"sessionid={SECRET}" in headers["cookie"] and "_tea_web_id=7000000000000000001" in headers["cookie"]
    params = dict(request.url.params)
    assert params["aid"] == "513695" and params["os"] == "windows"
    assert params["da_version"] == catalog.PROTOCOL_PROFILES["live"].da_version
    assert params["webId"] == "7000000000000000001"


def test_credit_calls_go_to_the_commerce_host_without_the_default_query() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok({"credit": {"gift_credit": 3, "purchase_credit": 10, "vip_credit": 0},
                   "expiring_credits": [{"credit_amount": 50}]})

    balance = call(handler, lambda c: c.user_credit(TOKEN), region="us")
    assert seen[0].url.host == "commerce.us.capcut.com" and not seen[0].url.params
    assert balance.total == 60  # the day's grant shows in expiring_credits while gift_credit lags


@pytest.mark.parametrize(
    ("response", "error", "check"),
    [
        pytest.param(httpx.Response(429, headers={"Retry-After": "7"}), RetryableAPIError,
                     lambda e: e.retry_after == 7.0, id="429-retry-after"),
        pytest.param(httpx.Response(503), RetryableAPIError, lambda e: e.rule.reason == "server", id="503"),
        pytest.param(httpx.Response(200, text="<html>"), RetryableAPIError, lambda e: True, id="not-json"),
        pytest.param(httpx.Response(200, json={"ret": "1015", "errmsg": "login error", "data": None}),
                     StopSubmittingError, lambda e: e.rule.token is TokenEffect.QUARANTINE, id="login"),
        pytest.param(httpx.Response(200, json={"ret": "1006", "errmsg": "积分不足",
                                               "data": {"fail_code": "1006"}}),
                     StopSubmittingError, lambda e: e.rule.token is TokenEffect.EXHAUSTED, id="credits"),
        pytest.param(httpx.Response(200, json={"ret": "2002", "errmsg": "参数错误", "data": None}),
                     RequestFailedError, lambda e: e.rule.reason == "params", id="params"),
    ],
)
def test_answers_are_classified(response: httpx.Response, error: type, check: Callable[[Any], bool]) -> None:
    with pytest.raises(error) as raised:
        call(lambda request: response, lambda c: c.call("/mweb/v1/aigc_draft/generate", {}, TOKEN))
    assert check(raised.value)
    assert SECRET not in str(raised.value)


def test_transport_failures_are_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(RetryableAPIError) as raised:
        call(handler, lambda c: c.call("/mweb/v1/get_history_by_ids", {}, TOKEN))
    assert raised.value.rule.reason == "network"


def test_history_is_keyed_by_the_ids_asked() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body == {"submit_ids": ["s1", "s2"]}
        return ok({"s1": {"history_record_id": "h1", "status": 20, "task": {"finish_time": 0}}})

    found = call(handler, lambda c: c.history(TOKEN, submit_ids=["s1", "s2"]))
    assert found["s2"] is None
    assert found["s1"] == HistoryRecord("h1", 20)


IMAGE_ITEM = {"common_attr": {"id": "i1"}, "image": {"large_images": [
    {"image_url": "https://x/a.png?x-expires=10\\u0026y=1", "image_uri": "tos/1", "width": 8, "height": 8,
     "format": "png"}]}}


@pytest.mark.parametrize(
    ("raw", "complete"),
    [
        pytest.param({"status": 50, "total_image_count": 1, "finished_image_count": 1, "task": {"finish_time": 5},
                      "item_list": [IMAGE_ITEM]}, True, id="done"),
        pytest.param({"status": 45, "total_image_count": 1, "finished_image_count": 1, "task": {"finish_time": 0},
                      "item_list": [IMAGE_ITEM]}, False, id="no-finish-time"),
        pytest.param({"status": 50, "total_image_count": 2, "finished_image_count": 2, "task": {"finish_time": 5},
                      "item_list": [IMAGE_ITEM]}, False, id="fewer-items-than-total"),
        pytest.param({"status": 30, "fail_code": "2038", "total_image_count": 1, "finished_image_count": 1,
                      "task": {"finish_time": 5}, "item_list": [IMAGE_ITEM]}, False, id="failed"),
    ],
)
def test_the_completion_rule_for_images(raw: dict[str, Any], complete: bool) -> None:
    record = parse_record(raw)
    assert record.complete("image") is complete
    if complete:
        assert record.items[0].url == "https://x/a.png?x-expires=10&y=1"


def test_video_completion_needs_status_50_and_a_url() -> None:
    item = {"video": {"transcoded_video": {"origin": {"video_url": "https://v/1.mp4"}}}}
    assert parse_record({"status": 50, "item_list": [item]}).complete("video")
    assert not parse_record({"status": 45, "item_list": [item]}).complete("video")
    assert not parse_record({"status": 50, "item_list": []}).complete("video")


@pytest.mark.parametrize("item", [
    pytest.param({"common_attr": {"id": "7", "transcoded_video": {"origin": {"video_url": "https://v/intl.mp4"}}}},
                 id="asia-international-without-video"),
    pytest.param({"common_attr": {"id": "7", "transcoded_video": {"origin": {"video_url": "https://v/intl.mp4"}}},
                  "video": {"duration": 5}}, id="asia-international"),
    pytest.param({"common_attr": {"id": "7"}, "video": {"transcoded_video": {"origin": {
        "video_url": "https://v/intl.mp4"}}}}, id="china"),
    pytest.param({"common_attr": {"id": "7"}, "video": {"download_url": "https://v/intl.mp4"}}, id="download-url"),
])
def test_a_video_url_is_found_where_each_site_puts_it(item: dict[str, Any]) -> None:
    record = parse_record({"status": 50, "item_list": [item]})
    assert record.complete("video")
    assert (record.items[0].url, record.items[0].kind, record.items[0].item_id) == ("https://v/intl.mp4", "video",
                                                                                    "7")


def test_a_video_cover_alone_does_not_finish_a_video() -> None:
    cover = {"common_attr": {"id": "7", "cover_url": "https://p/cover.jpg"}, "image": {}}
    assert not parse_record({"status": 50, "item_list": [cover]}).complete("video")


def test_an_image_falls_back_to_its_covers_largest_first() -> None:
    item = {"common_attr": {"cover_url_map": {"720": "https://p/720", "4096": "https://p/4096", "1080": ""}},
            "image": {"large_images": []}}
    assert parse_record({"status": 50, "item_list": [item]}).items[0].url == "https://p/4096"


def test_queue_info_and_forecast_are_read() -> None:
    record = parse_record({"status": 20, "queue_info": {"queue_idx": 3, "queue_length": 12, "queue_status": 1},
                           "forecast_cost_time": {"forecast_queue_cost": 30, "forecast_generate_cost": 10}})
    assert (record.queue_position, record.queue_length, record.forecast_seconds, record.forecast_queue_seconds) == (
        3, 12, 40.0, 30.0)
    assert record.in_queue
    processing = parse_record({"status": 20, "queue_info": {"queue_idx": 0, "queue_status": 2}})
    assert not processing.in_queue  # status 20 still, but the service says it is being processed


HIGH = "https://v26-dreamnia.jimeng.com/obj/high.mp4?a=1&b=2"


@pytest.mark.parametrize(("data", "url"), [
    pytest.param({"item_list": [{"common_attr": {"id": "7", "transcoded_video": {"origin": {"video_url": HIGH}}}}]},
                 HIGH, id="fields"),
    pytest.param({"local_item_list": [{"video": {"download_url": HIGH}}]}, HIGH, id="local-item-list"),
    pytest.param({"item_list": [], "extra": {"x": f"see https://v3-other.jimeng.com/o.mp4 or {HIGH}"}}, HIGH,
                 id="pattern-prefers-dreamnia"),
    pytest.param({"extra": "https://v9-web.jimeng.com/o.mp4"}, "https://v9-web.jimeng.com/o.mp4", id="pattern"),
    pytest.param({"extra": "https://v1-default.vlabvod.com/preview.mp4"}, "", id="only-the-preview-host"),
    pytest.param({"item_list": []}, "", id="none"),
])
def test_the_high_bitrate_url_comes_from_fields_then_a_pattern(data: Any, url: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/mweb/v1/get_local_item_list"
        assert json.loads(request.content) == {"item_id_list": ["7"], "pack_item_opt": {
            "scene": 1, "need_data_integrity": True}, "is_for_video_download": True}
        return ok(data)

    assert call(handler, lambda c: c.high_bitrate_url(TOKEN, "7")) == url


def test_a_high_bitrate_answer_of_the_wrong_shape_is_malformed() -> None:
    with pytest.raises(RetryableAPIError) as raised:
        call(lambda request: ok({"item_list": {"not": "a list"}}), lambda c: c.high_bitrate_url(TOKEN, "7"))
    assert raised.value.code == "malformed" and "data.item_list" in str(raised.value)


def test_tokens_are_masked_and_parsed(tmp_path: Any) -> None:
    assert mask(SECRET) == "abcd…(32)"
    assert str(TOKEN) == "abcd…(32)" and SECRET not in repr(TOKEN)
    assert [t.value for t in parse_tokens(" a1 , b2,a1 ,, ")] == ["a1", "b2"]
    file = tmp_path / "tokens"
    file.write_text("# mine\nfirst\n\nsecond\n")
    assert [t.value for t in load_tokens(file)] == ["first", "second"]
    assert [t.value for t in load_tokens(None, {"JIMENG_SESSIONID": "x,y"})] == ["x", "y"]
