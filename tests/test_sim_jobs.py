"""Jobs over HTTP with a fake clock: status timeline, results, credits, idempotency, caps, stats, determinism."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from typing import Any

import pytest
from PIL import Image
from sim_helpers import (
    OTHER_TOKEN,
    TOKEN,
    Harness,
    image_envelope,
    simulator,
    video_envelope,
)

from jimeng_batch.sim import SimConfig, mask_token
from jimeng_batch.sim.assets import asset_signature, mp4_boxes
from jimeng_batch.sim.config import Distribution, Faults, Latency, fixed

LABEL = mask_token(TOKEN)
TIMED = Latency(queue=fixed(10), generation=fixed(20))


def history_id(answer: dict[str, Any]) -> str:
    assert answer["ret"] == "0", answer
    return str(answer["data"]["aigc_data"]["history_record_id"])


def entry(sim: Harness, hid: str) -> dict[str, Any]:
    answer = sim.caller.poll([hid])
    assert answer["ret"] == "0"
    return answer["data"][hid]  # type: ignore[no-any-return]


def test_image_job_moves_20_42_45_50_with_the_clock() -> None:
    with simulator(SimConfig(latency=TIMED)) as sim:
        hid = history_id(sim.caller.submit(image_envelope()))
        timeline = []
        for step in (0, 9.9, 0.1, 15, 1, 2.9, 1.1):
            sim.clock.advance(step)
            record = entry(sim, hid)
            timeline.append(record["status"])
            if record["status"] != 50:
                assert record["item_list"] == [] and record["finished_image_count"] == 0
        assert timeline == [20, 20, 42, 42, 45, 45, 50]
        done = entry(sim, hid)
        assert done["total_image_count"] == done["finished_image_count"] == 4
        assert done["task"]["status"] == 50 and done["task"]["finish_time"] > 0
        assert done["fail_code"] == ""
        assert done["queue_info"]["queue_status"] == 0
        assert len(done["item_list"]) == 4
        ids = {item["common_attr"]["id"] for item in done["item_list"]}
        assert len(ids) == 4
        large = done["item_list"][2]["image"]["large_images"][0]
        assert (large["width"], large["height"], large["format"]) == (1024, 1024, "png")
        png = sim.client.get(large["image_url"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == (1024, 1024)


def test_queue_info_and_forecast_while_queued() -> None:
    with simulator(SimConfig(latency=TIMED)) as sim:
        hid = history_id(sim.caller.submit(image_envelope()))
        sim.clock.advance(4)
        record = entry(sim, hid)
        assert record["queue_info"] == {"queue_idx": 6, "queue_length": 10, "queue_status": 1}
        assert record["forecast_cost_time"] == {"forecast_queue_cost": 6, "forecast_generate_cost": 20}
        sim.clock.advance(8)
        assert entry(sim, hid)["queue_info"]["queue_status"] == 2


def test_poll_by_submit_ids_is_keyed_by_submit_id() -> None:
    with simulator() as sim:
        hid = history_id(sim.caller.submit(image_envelope("alpha")))
        answer = sim.caller.poll(submit_ids=["alpha", "unknown"])
        assert list(answer["data"]) == ["alpha"]
        assert answer["data"]["alpha"]["history_record_id"] == hid
        both = sim.caller.poll(history_ids=[hid, "123"], submit_ids=["alpha"])
        assert sorted(both["data"]) == sorted([hid, "alpha"])


def test_records_are_private_to_their_account() -> None:
    with simulator() as sim:
        hid = history_id(sim.caller.submit(image_envelope("mine")))
        other = sim.as_account(OTHER_TOKEN)
        assert other.poll([hid])["data"] == {}
        assert other.poll(submit_ids=["mine"])["data"] == {}


def test_video_job_gives_an_mp4() -> None:
    config = SimConfig(latency=replace(TIMED, video_generation=fixed(60)))
    with simulator(config) as sim:
        hid = history_id(sim.caller.submit(video_envelope(duration_ms=5000)))
        sim.clock.advance(69)
        assert entry(sim, hid)["status"] == 45
        sim.clock.advance(1)
        record = entry(sim, hid)
        assert record["status"] == 50 and record["generate_type"] == 10
        origin = record["item_list"][0]["video"]["transcoded_video"]["origin"]
        assert (origin["width"], origin["height"]) == (1280, 720)
        video = sim.client.get(origin["video_url"])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        assert [kind for kind, _, _ in mp4_boxes(video.content)] == [b"ftyp", b"mdat", b"moov"]


@pytest.mark.parametrize("profile", ["document", "live"])
def test_content_filter_ends_in_status_30_with_2038(profile: str) -> None:
    with simulator(SimConfig(profile=profile, latency=TIMED)) as sim:
        hid = history_id(sim.caller.submit(image_envelope(prompt="something FORBIDDEN here")))
        assert entry(sim, hid)["status"] == 20
        sim.clock.advance(10)
        record = entry(sim, hid)
        assert record["status"] == 30 and record["fail_code"] == "2038" and record["item_list"] == []
        assert record["task"]["status"] == 30


def test_resubmitting_a_submit_id_returns_the_record_and_charges_nothing() -> None:
    with simulator(SimConfig(latency=TIMED)) as sim:
        first = sim.caller.submit(image_envelope("same"))
        balance = sim.caller.credits()["data"]["credit"]["purchase_credit"]
        again = sim.caller.submit(image_envelope("same", prompt="even with a different prompt"))
        assert history_id(again) == history_id(first)
        assert sim.caller.credits()["data"]["credit"]["purchase_credit"] == balance == 999
        stats = sim.server.stats()
        assert stats["submits_by_submit_id"] == {"same": 2}
        assert stats["repeats_by_submit_id"] == {"same": 1}
        assert stats["charges_by_submit_id"] == {"same": 1}
        assert stats["credits_charged"] == {LABEL: 1}
        assert stats["records"] == 1


@pytest.mark.parametrize(("profile", "code"), [("document", "2001"), ("live", "1006")])
def test_running_out_of_credits(profile: str, code: str) -> None:
    with simulator(SimConfig(profile=profile, accounts={TOKEN: 3})) as sim:
        for i in range(3):
            assert sim.caller.submit(image_envelope(f"s{i}"))["ret"] == "0"
        answer = sim.caller.submit(image_envelope("s3"))
        assert answer["ret"] == code and "costs 1, the balance is 0" in answer["errmsg"]
        stats = sim.server.stats()
        assert "s3" not in stats["charges_by_submit_id"]
        assert stats["credits_balance"] == {LABEL: 0}
        assert stats["errors"] == {code: 1}


def test_costs_follow_the_catalog_and_overrides() -> None:
    config = SimConfig(cost_overrides={"jimeng-video-3.0": {"720p": 3}})
    with simulator(config) as sim:
        history_id(sim.caller.submit(image_envelope("i", large_image_info={"resolution_type": "4k",
                                                                             "width": 4096, "height": 4096})))
        history_id(sim.caller.submit(video_envelope("v", duration_ms=10000)))
        assert sim.server.stats()["credits_charged"] == {LABEL: 2 + 30}


def test_credit_endpoints() -> None:
    with simulator(SimConfig(accounts={TOKEN: 10}, daily_credits=50)) as sim:
        credit = sim.caller.credits()["data"]
        assert credit["credit"] == {"gift_credit": 0, "purchase_credit": 10, "vip_credit": 0}
        receive = "/commerce/v1/benefits/credit_receive"
        first = sim.caller.api(receive, {"time_zone": "Asia/Shanghai"}, mweb=False)["data"]
        assert first == {"is_first_receive": True, "receive_quota": 50, "has_popup": True, "receive_inter_days": 1}
        second = sim.caller.api(receive, {"time_zone": "Asia/Shanghai"}, mweb=False)["data"]
        assert second == {"is_first_receive": False, "receive_quota": 0, "has_popup": False, "receive_inter_days": 1}
        credit = sim.caller.credits()["data"]
        assert credit["credit"]["gift_credit"] == 50
        assert credit["expiring_credits"][0]["credit_amount"] == 50
        assert credit["credits_detail"]["gift_credits"][0]["residual_credits"] == 50
        history_id(sim.caller.submit(image_envelope()))  # gift credits are spent first
        assert sim.caller.credits()["data"]["credit"]["gift_credit"] == 49
        sim.clock.advance(86400)
        assert sim.caller.api(receive, {"time_zone": "Asia/Shanghai"}, mweb=False)["data"]["receive_quota"] == 50


@pytest.mark.parametrize(("profile", "code"), [("document", "2004"), ("live", "4013")])
def test_in_flight_cap_and_high_water(profile: str, code: str) -> None:
    with simulator(SimConfig(profile=profile, latency=TIMED, max_in_flight=2)) as sim:
        history_id(sim.caller.submit(image_envelope("a")))
        history_id(sim.caller.submit(image_envelope("b")))
        refused = sim.caller.submit(image_envelope("c"))
        assert refused["ret"] == code and "并行任务已达上限" in refused["errmsg"]
        history_id(sim.as_account(OTHER_TOKEN).submit(image_envelope("c")))  # the cap is per account
        assert sim.caller.submit(image_envelope("a"))["ret"] == "0"  # a known submit_id is not a new job
        sim.clock.advance(30)
        history_id(sim.caller.submit(image_envelope("c")))
        stats = sim.server.stats()
        assert stats["in_flight_high_water"] == {LABEL: 2, mask_token(OTHER_TOKEN): 1}
        assert stats["in_flight"] == {LABEL: 1, mask_token(OTHER_TOKEN): 0}
        assert stats["charges_by_submit_id"] == {"a": 1, "b": 1, "c": 2}  # "c" once per account


def test_high_water_without_a_cap() -> None:
    with simulator(SimConfig(latency=TIMED, max_in_flight=None)) as sim:
        for i in range(5):
            history_id(sim.caller.submit(image_envelope(f"s{i}")))
        sim.clock.advance(30)
        history_id(sim.caller.submit(image_envelope("late")))
        assert sim.server.stats()["in_flight_high_water"] == {LABEL: 5}


def test_record_not_found_for_a_while_after_submit() -> None:
    with simulator(SimConfig(faults=Faults(not_found_after_submit_s=5))) as sim:
        hid = history_id(sim.caller.submit(image_envelope("slow")))
        assert sim.caller.poll([hid]) == {"ret": "0", "errmsg": "success", "data": {}}
        assert sim.caller.poll(submit_ids=["slow"])["data"] == {}
        sim.clock.advance(5)
        assert sim.caller.poll([hid])["data"][hid]["status"] == 50


@pytest.mark.parametrize(("profile", "code"), [("document", "2004"), ("live", "4013")])
def test_rate_limit_per_account(profile: str, code: str) -> None:
    config = SimConfig(profile=profile, rate_limit=replace(SimConfig().rate_limit, requests=3, window_s=1.0))
    with simulator(config) as sim:
        assert [sim.caller.credits()["ret"] for _ in range(4)] == ["0", "0", "0", code]
        assert sim.as_account(OTHER_TOKEN).credits()["ret"] == "0"
        sim.clock.advance(1.0)
        assert sim.caller.credits()["ret"] == "0"


@pytest.mark.parametrize(("profile", "code"), [("document", "2004"), ("live", "4013")])
def test_busy(profile: str, code: str) -> None:
    with simulator(SimConfig(profile=profile, faults=Faults(busy_probability=1.0))) as sim:
        answer = sim.caller.submit(image_envelope())
        assert answer["ret"] == code and answer["data"] is None
        assert sim.server.stats()["charges_by_submit_id"] == {}


def test_http_5xx() -> None:
    with simulator(SimConfig(faults=Faults(http_error_probability=1.0, http_error_statuses=(503,)))) as sim:
        response = sim.caller.post("/mweb/v1/aigc_draft/generate", image_envelope())
        assert response.status_code == 503
        assert sim.server.stats()["errors"] == {"http_503": 1}


def test_dropped_connection_is_a_transport_error() -> None:
    import httpx

    with simulator(SimConfig(faults=Faults(drop_probability=1.0))) as sim:
        with pytest.raises(httpx.TransportError):
            sim.caller.post("/mweb/v1/get_history_by_ids", {"history_ids": ["1"]})
        assert sim.server.stats()["errors"] == {"dropped": 1}


def test_lost_submit_response_is_charged_and_found_by_submit_id() -> None:
    """The dangerous case: the job was accepted but the answer never arrived; a client must reconcile."""
    import httpx

    with simulator(SimConfig(faults=Faults(lost_response_probability=1.0))) as sim:
        with pytest.raises(httpx.TransportError):
            sim.caller.post("/mweb/v1/aigc_draft/generate", image_envelope("lost"))
        found = sim.caller.poll(submit_ids=["lost"])["data"]
        assert found["lost"]["status"] == 50
        assert sim.server.stats()["charges_by_submit_id"] == {"lost": 1}


def test_submit_latency_and_slow_polls_sleep_on_the_server() -> None:
    faults = Faults(slow_poll_probability=1.0, slow_poll_delay=fixed(2.5))
    config = SimConfig(latency=Latency(submit=fixed(0.3), poll=fixed(0.1)), faults=faults)
    with simulator(config) as sim:
        hid = history_id(sim.caller.submit(image_envelope()))
        sim.caller.poll([hid])
        assert sim.sleep.calls == [0.3, 0.1, 2.5]


def test_asset_urls_expire_and_cannot_be_forged() -> None:
    with simulator(SimConfig(asset_ttl_s=100)) as sim:
        hid = history_id(sim.caller.submit(image_envelope()))
        url = entry(sim, hid)["item_list"][0]["image"]["large_images"][0]["image_url"]
        assert re.search(r"/_sim/assets/\d+-0\.png\?x-expires=\d+&x-signature=[0-9a-f]{32}$", url)
        assert sim.client.get(url).status_code == 200
        tampered = url[:-1] + ("0" if url[-1] != "0" else "1")
        assert sim.client.get(tampered).status_code == 403
        assert sim.client.get(url.replace("-0.png", "-1.png")).status_code == 403
        expires = int(re.search(r"x-expires=(\d+)", url).group(1))  # type: ignore[union-attr]
        later = url.replace(f"x-expires={expires}", f"x-expires={expires + 1000}")
        assert sim.client.get(later).status_code == 403
        sim.clock.advance(101)
        assert sim.client.get(url).status_code == 403
        secret = sim.server.state.asset_secret
        ghost_expiry = int(sim.clock()) + 10
        ghost = f"/_sim/assets/999-0.png?x-expires={ghost_expiry}&x-signature=" \
                f"{asset_signature(secret, '999-0.png', ghost_expiry)}"
        assert sim.client.get(ghost).status_code == 404
        stats = sim.server.stats()
        assert stats["downloads"] == 1 and stats["download_bytes"] > 0


def test_unfinished_assets_are_not_served() -> None:
    """Even a correctly signed URL gives 404 until the record has finished."""
    with simulator(SimConfig(latency=TIMED)) as sim:
        hid = history_id(sim.caller.submit(image_envelope()))
        expires = int(sim.clock()) + 1000
        name = f"{hid}-0.png"
        url = f"/_sim/assets/{name}?x-expires={expires}&x-signature=" \
              f"{asset_signature(sim.server.state.asset_secret, name, expires)}"
        assert sim.client.get(url).status_code == 404
        sim.clock.advance(30)
        assert sim.client.get(url).status_code == 200
        assert sim.client.get(url.replace(".png", ".mp4")).status_code == 403  # the signature covers the name


def test_stats_over_http_match_the_accessor_and_hide_tokens() -> None:
    with simulator() as sim:
        hid = history_id(sim.caller.submit(image_envelope()))
        sim.caller.poll([hid])
        sim.caller.poll([hid, "1"])
        over_http = sim.client.get("/_sim/stats").json()
        direct = sim.server.stats()
        assert over_http["polls"] == direct["polls"] == 2
        assert over_http["polled_ids"] == 3
        assert over_http["submits_by_submit_id"] == direct["submits_by_submit_id"] == {"submit-1": 1}
        assert over_http["requests"]["generate"] == 1
        assert TOKEN not in json.dumps(over_http) and TOKEN[:8] not in json.dumps(over_http)
        assert LABEL == "sess…(32)"


def test_labels_of_similar_tokens_stay_distinct() -> None:
    with simulator() as sim:
        a, b = "same" + "a" * 28, "same" + "b" * 28
        history_id(sim.as_account(a).submit(image_envelope("x")))
        history_id(sim.as_account(b).submit(image_envelope("x")))
        assert sorted(sim.server.stats()["credits_charged"]) == ["same…(32)", "same…(32)#2"]


def _scenario(seed: int) -> list[Any]:
    """A fixed sequence of calls under random latencies and faults; what it observed, minus the port."""
    config = SimConfig(
        seed=seed,
        latency=Latency(queue=Distribution("uniform", 1, 30), generation=Distribution("lognormal", 20, 0.5)),
        faults=Faults(busy_probability=0.3),
        max_in_flight=None,
    )
    seen: list[Any] = []
    with simulator(config) as sim:
        for i in range(12):
            seen.append(sim.caller.submit(image_envelope(f"s{i}", prompt=f"prompt {i}")))
            sim.clock.advance(3)
        hids = [a["data"]["aigc_data"]["history_record_id"] for a in seen if a["ret"] == "0"]
        for _ in range(4):
            seen.append(sim.caller.poll(hids))
            sim.clock.advance(10)
        urls = [item["image"]["large_images"][0]["image_url"] for record in seen[-1]["data"].values()
                for item in record["item_list"]]
        assert urls, "some jobs finish within the scenario"
        seen.append([sim.client.get(url).content for url in urls[:2]])
        stats = sim.server.stats()
        seen.append({k: v for k, v in stats.items() if k != "requests"})
    return json.loads(re.sub(r"127\.0\.0\.1:\d+", "HOST", json.dumps(seen, default=lambda b: b.hex())))


def test_same_seed_same_behaviour() -> None:
    assert _scenario(42) == _scenario(42)


def test_different_seed_different_behaviour() -> None:
    assert _scenario(1) != _scenario(2)
