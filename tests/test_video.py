"""Video done right, over real HTTP against the simulator: the high-bitrate download version (and the preview as a
recorded fallback), the Asia international item shape, the service's queue as polls see it, and honesty about the
models the live service refuses to plain HTTP clients (Seedance 2.0: ret 1019)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import run_main
from run_helpers import TOKEN, TOKEN_B, Driven, NoWait, drive, write_manifest

from jimeng_batch.engine import progress
from jimeng_batch.engine.executor import Executor
from jimeng_batch.engine.runner import configure_resume
from jimeng_batch.outputs.report import write_report
from jimeng_batch.outputs.results import results_table
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.client import HISTORY_PATH, JimengClient
from jimeng_batch.protocol.tokens import Token
from jimeng_batch.sim import FakeClock, SimServer, config_from_mapping, running_simulator
from jimeng_batch.sim import assets as sim_assets

QUEUE_S, GENERATION_S = 30.0, 20.0


def video_manifest(folder: Path, region: str = "hk", model: str = "jimeng-video-3.0") -> Path:
    return write_manifest(folder, f"""
        region: {region}
        jobs:
          - {{type: video, model: {model}, prompt: a kite over the sea, duration: 5, resolution: 720p}}
    """)


def faked(profile: str, clock: FakeClock, **faults: Any) -> SimServer:
    config = config_from_mapping({"profile": profile, "latency": {"queue": QUEUE_S, "generation": GENERATION_S},
                                  "faults": faults})
    return running_simulator(config, clock=clock)  # type: ignore[return-value]


def run_faked(tmp_path: Path, server: SimServer, clock: FakeClock, region: str = "hk",
              seen_queue: list[str] | None = None) -> Driven:
    """A run whose waits move the fake clock (shared with the simulator) instead of taking time."""
    watched: list[Executor] = []

    def advance(seconds: float) -> None:
        if seen_queue is not None and watched:
            shown = progress.describe_queue(watched[0].queued.values())
            if shown:
                seen_queue.append(shown)
        clock.advance(seconds)

    def watch(executor: Executor, counts: Counter[str]) -> None:
        if not watched:
            watched.append(executor)

    return drive(video_manifest(tmp_path, region), server, out=tmp_path / "out", clock=clock,
                 sleep=NoWait(advance), on_change=watch)


def assets_of(run: Driven) -> list[tuple[str, str | None, str | None]]:
    return [tuple(row) for row in run.ledger.db.execute("SELECT path, variant, fallback_reason FROM assets")]


@pytest.mark.parametrize(("profile", "region"), [("live", "hk"), ("live", "cn"), ("document", "cn")])
def test_a_finished_video_is_downloaded_at_the_high_bitrate(tmp_path: Path, profile: str, region: str) -> None:
    """The poll lists the preview; get_local_item_list names the download version, which is what is fetched. An
    Asia international record (the live profile, hk) carries its URL only under common_attr and still finishes at
    once, instead of being polled for the whole 60 minutes."""
    clock = FakeClock(time.time())  # the client's Device-Time must agree with the simulator's clock
    with faked(profile, clock) as server:
        run = run_faked(tmp_path, server, clock, region)
        stats = server.stats()
    assert run.result.counts == {"downloaded": 1}
    assert sum(run.sleeps) < QUEUE_S + GENERATION_S + 60  # followed to its end, not to the poll timeout
    assert stats["requests"]["get_local_item_list"] == 1
    ((path, variant, reason),) = assets_of(run)
    assert (variant, reason) == ("high", None)
    assert sim_assets.mp4_bitrate((tmp_path / "out" / path).read_bytes()) == sim_assets.HIGH_KBPS * 1000


def test_the_live_profile_answers_asia_international_requests_in_their_shape(tmp_path: Path) -> None:
    """hk in the live profile: the video URL only under common_attr.transcoded_video; cn keeps the China shape."""
    clock = FakeClock(time.time())
    with faked("live", clock) as server:
        run = run_faked(tmp_path, server, clock, "hk")
        history_id = run.column("history_record_id")
        (hid,) = history_id.values()

        async def raw(region: str) -> Any:
            async with JimengClient(region=catalog.REGIONS[region], versions=catalog.PROTOCOL_PROFILES["live"],
                                    web_id="7000000000000000001", base_url=server.base_url, clock=clock) as client:
                return await client.call(HISTORY_PATH, {"history_ids": [hid]}, Token(TOKEN))

        international = asyncio.run(raw("hk"))[hid]["item_list"][0]
        china = asyncio.run(raw("cn"))[hid]["item_list"][0]

        async def download_version(token: str) -> str:
            async with JimengClient(region=catalog.REGIONS["hk"], versions=catalog.PROTOCOL_PROFILES["live"],
                                    web_id="7000000000000000001", base_url=server.base_url, clock=clock) as client:
                return await client.high_bitrate_url(Token(token), international["common_attr"]["id"])

        assert "-0-hq.mp4?" in asyncio.run(download_version(TOKEN))
        assert asyncio.run(download_version(TOKEN_B)) == ""  # another account's item is not listed
    assert "transcoded_video" not in international["video"]
    assert international["common_attr"]["transcoded_video"]["origin"]["video_url"]
    assert china["video"]["transcoded_video"]["origin"]["video_url"]
    assert "transcoded_video" not in china["common_attr"]


@pytest.mark.parametrize(("fault", "why"), [("error", "get_local_item_list failed: "),
                                            ("no_url", "get_local_item_list named no download URL")])
def test_without_the_download_version_the_preview_is_fetched_and_the_reason_kept(tmp_path: Path, fault: str,
                                                                                 why: str) -> None:
    clock = FakeClock(time.time())
    with faked("live", clock, local_item_list=fault) as server:
        run = run_faked(tmp_path, server, clock)
    assert run.result.counts == {"downloaded": 1}
    ((path, variant, reason),) = assets_of(run)
    assert variant == "preview" and reason is not None and reason.startswith(why)
    if fault == "error":
        assert "ret 1002" in reason  # what the service said, kept
    assert sim_assets.mp4_bitrate((tmp_path / "out" / path).read_bytes()) == sim_assets.PREVIEW_KBPS * 1000
    results = results_table(tmp_path / "out")
    assert results["asset_variants"][0] == ["preview"] and results["asset_fallback_reasons"][0] == [reason]


def test_the_service_queue_is_shown_recorded_and_reported(tmp_path: Path) -> None:
    clock = FakeClock(time.time())
    shown: list[str] = []
    with faked("live", clock) as server:
        run = run_faked(tmp_path, server, clock, seen_queue=shown)
    assert run.result.counts == {"downloaded": 1}
    # The simulator's queue: its place counts down with the seconds left; the forecast adds the generation time.
    assert shown and shown[0].startswith("queued ") and shown[0].endswith(" s")
    place, length = shown[0].split()[1].rstrip(",").split("/")
    assert 0 < int(place) <= int(length) == QUEUE_S
    (row,) = run.ledger.db.execute("SELECT first_queue_position, queue_length, first_forecast_queue_seconds, "
                                   "forecast_seconds FROM requests").fetchall()
    assert row[0] == int(place) and row[1] == QUEUE_S and 0 < row[2] <= QUEUE_S and row[3] > row[2]
    metrics = write_report(tmp_path / "out", step_summary=False).metrics
    queue = metrics["overall"]["queue"]
    assert queue["requestsSeenQueued"] == 1 and queue["firstPosition"]["p50"] == row[0]
    # A poll saw it queued and a later one saw it leave the queue: the report has its queue stage.
    assert queue["queueSeconds"]["count"] == 1
    assert metrics["videoVersions"] == {"high": 1}
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "Service queue: 1 request(s) seen queued" in report and "Videos downloaded: 1 high" in report
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Service queue: 1 request(s) seen queued" in page and "Videos downloaded: 1 high" in page


# -- Seedance 2.0: what a plain HTTP client cannot do on the live service --------------------------------------------

SEEDANCE = "jimeng-video-seedance-2.0"


def test_models_flag_what_needs_a_browser_made_a_bogus(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["models", "--type", "video", "--json"], capsys)
    flagged = {row["name"]: row["needs_a_bogus"] for row in json.loads(out)}
    assert code == 0
    assert flagged[SEEDANCE] and flagged["jimeng-video-seedance-2.0-fast"]
    assert not flagged["jimeng-video-3.0"] and not flagged["jimeng-video-3.5-pro"]
    code, out, _ = run_main(["models", "--type", "video"], capsys)
    assert code == 0 and out.count("needs a_bogus") == 3  # two models, and the line that says what it means
    assert "1019" in out


def test_validate_and_plan_warn_about_seedance_and_still_pass(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    manifest = video_manifest(tmp_path, "cn", SEEDANCE)
    for args in (["validate", str(manifest)], ["plan", str(manifest)], ["plan", str(manifest), "--format", "json"]):
        code, _, err = run_main(args, capsys)
        assert code == 0, err
        assert f"warning: {SEEDANCE}: " in err and "1019" in err and "a_bogus" in err
    code, _, err = run_main(["validate", str(video_manifest(tmp_path, "cn"))], capsys)
    assert code == 0 and "warning" not in err


def test_a_live_run_refuses_seedance_before_anything_is_sent(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIMENG_SESSIONID", TOKEN)
    manifest = video_manifest(tmp_path, "cn", SEEDANCE)
    with running_simulator(config_from_mapping({"profile": "live"})) as server:
        code, _, err = run_main(["run", str(manifest), "--base-url", server.base_url, "--out", str(tmp_path / "out"),
                                 "--quiet", "--no-cache", "--preflight", "off"], capsys)
        stats = server.stats()
    assert code == 2, err
    assert SEEDANCE in err and "1019" in err and "--allow-unsupported" in err
    assert TOKEN not in err
    assert stats["requests"].get("generate", 0) == 0
    assert not (tmp_path / "out").exists()  # refused before the output folder was made


def test_with_allow_unsupported_the_live_profile_answers_1019_and_the_request_fails_unretried(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIMENG_SESSIONID", TOKEN)
    manifest = video_manifest(tmp_path, "cn", SEEDANCE)
    out = tmp_path / "out"
    with running_simulator(config_from_mapping({"profile": "live"})) as server:
        command = ["run", str(manifest), "--base-url", server.base_url, "--out", str(out), "--quiet", "--no-cache",
                   "--preflight", "off"]
        code, _, err = run_main([*command, "--allow-unsupported"], capsys)
        sent = server.stats()
        results = results_table(out)
        _, config = configure_resume(out, {})
        # The same command without the flag, asked to plan the failed request again: the ledger's unsent request
        # is refused before it is sent (the manifest is unchanged, so the ledger says what would be sent).
        again, _, refused = run_main([*command, "--retry-failed"], capsys)
        after = server.stats()
    assert code == 1, err
    assert sent["requests"]["generate"] == 1  # a final outcome: not retried, nothing charged
    assert sent["credits_charged"] == {}
    (row,) = results.to_dict(orient="records")
    assert (row["state"], row["code"], row["reason"]) == ("failed", "1019", "anti-bot")
    assert "a_bogus" in row["meaning"] and "shark not pass" in row["message"]
    assert row["submits"] == 1 and row["credits_spent"] == 0
    assert config.allow_unsupported  # the setting is the run's: a resume keeps it without the flag
    assert again == 2 and SEEDANCE in refused and "1 request(s) not sent" in refused
    assert after["requests"]["generate"] == 1


def test_a_simulator_run_is_not_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["run", str(video_manifest(tmp_path, "cn", SEEDANCE)), "--sim", "--out", "out",
                             "--poll-interval", "0.01", "--quiet", "--no-cache"], capsys)
    assert code == 0, err
