"""Running manifests against the simulator over real HTTP: every job type, every action class, tokens, budget,
cache, drain, and never a credit spent twice."""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import pytest
from run_helpers import (
    IMAGES,
    TOKEN,
    TOKEN_B,
    drive,
    fast_options,
    sha256_of,
    simulator,
    write_manifest,
)

from jimeng_batch.engine.cache import ResultCache
from jimeng_batch.engine.executor import Executor
from jimeng_batch.engine.states import State as states


def charged_once(stats: dict) -> None:  # type: ignore[type-arg]
    assert stats["charges_by_submit_id"], "nothing was charged"
    assert set(stats["charges_by_submit_id"].values()) == {1}


def test_image_job_end_to_end(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(images_per_request=2) as server:
        run = drive(manifest, server, out=tmp_path / "out")
        stats = server.stats()
    assert run.exit_code == 0
    assert set(run.states().values()) == {states.DOWNLOADED}
    charged_once(stats)
    assert len(stats["charges_by_submit_id"]) == 5
    assets = run.ledger.db.execute("SELECT key, idx, path, sha256, size, width, height, format FROM assets").fetchall()
    assert len(assets) == 10
    for key, idx, path, sha, size, width, height, fmt in assets:
        file = run.out / path
        assert file.name == f"{key}-{idx}.png"
        assert sha256_of(file) == sha and file.stat().st_size == size
        assert (width, height, fmt) == (1024, 1024, "png")
    assert not list((run.out / "assets").glob(".*.part"))
    # every step of the lifecycle is recorded, in order
    key = assets[0][0]
    steps = [r[0] for r in run.ledger.db.execute("SELECT state FROM events WHERE key = ? ORDER BY id", (key,))]
    assert steps == ["submitting", "submitted", "succeeded", "downloaded"]


def test_in_flight_cap_per_token_is_respected(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(latency={"generation": 0.05}) as server:
        run = drive(manifest, server, out=tmp_path / "out", options=fast_options(concurrency=2, poll_interval=0.01))
        stats = server.stats()
    assert run.exit_code == 0
    assert max(stats["in_flight_high_water"].values()) == 2
    assert max(run.result.in_flight_high_water.values()) == 2


def test_video_with_frames_end_to_end(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, """
        jobs:
          - type: video
            model: jimeng-video-3.0
            prompt: a slow pan
            first_frame: uri:image_uri_1
            end_frame: uri:image_uri_2
            duration: 5
    """)
    with simulator() as server:
        run = drive(manifest, server, out=tmp_path / "out")
    assert run.exit_code == 0
    (path,) = [row[0] for row in run.ledger.db.execute("SELECT path FROM assets")]
    data = (run.out / path).read_bytes()
    assert path.endswith(".mp4") and data[4:8] == b"ftyp"


def test_image_to_image_with_a_uri_reference(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, """
        jobs:
          - type: image_to_image
            prompt: [make it winter, make it spring]
            resolution: 1k
            references: [uri:image_uri_1]
    """)
    with simulator() as server:
        run = drive(manifest, server, out=tmp_path / "out")
    assert run.exit_code == 0 and run.result.counts == {"downloaded": 2}


def test_busy_is_retried_with_backoff(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(seed=3, faults={"busy_probability": 0.5}) as server:
        run = drive(manifest, server, out=tmp_path / "out", options=fast_options(max_retries=20))
        stats = server.stats()
    assert run.exit_code == 0
    assert stats["errors"].get("2004", 0) > 0
    assert sum(run.column("retries").values()) == stats["errors"]["2004"]
    charged_once(stats)


def test_5xx_and_dropped_connections_are_retried_without_double_charges(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    faults = {"http_error_probability": 0.2, "drop_probability": 0.1, "lost_response_probability": 0.3}
    with simulator(seed=11, faults=faults) as server:
        run = drive(manifest, server, out=tmp_path / "out", options=fast_options(max_retries=30))
        stats = server.stats()
    assert run.exit_code == 0, run.result
    charged_once(stats)
    assert len(stats["charges_by_submit_id"]) == 5


def test_lost_submit_answers_are_reconciled_not_resent(tmp_path: Path) -> None:
    """The service accepted and charged, then the answer was lost: ask by submit_id, never pay twice."""
    manifest = write_manifest(tmp_path, """
        jobs:
          - {type: image, resolution: 1k, prompt: "p {n}", vars: {n: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}
    """)
    with simulator(seed=2, faults={"lost_response_probability": 0.6}) as server:
        run = drive(manifest, server, out=tmp_path / "out", options=fast_options(max_retries=30))
        stats = server.stats()
    assert run.result.counts == {"downloaded": 10}
    lost = stats["errors"].get("lost_response", 0)
    assert lost > 0  # at 0.6 per submit, ten submits without one loss is a 1-in-10,000 chance
    charged_once(stats)
    assert len(stats["charges_by_submit_id"]) == 10
    details = [row[0] for row in run.ledger.db.execute("SELECT detail FROM events WHERE state = 'submitted'")]
    assert sum("lost answer" in (d or "") for d in details) + sum(stats["repeats_by_submit_id"].values()) >= lost


def test_risk_control_waits_the_tables_delay(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(profile="live", seed=5, faults={"busy_probability": 0.7}) as server:
        run = drive(manifest, server, out=tmp_path / "out", options=fast_options(max_retries=20))
    assert run.exit_code == 0
    assert 60.0 in run.sleeps  # 4013 is retried after the table's delay, not the (zero) backoff


def test_content_filter_blocks_the_request(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, """
        jobs:
          - {type: image, resolution: 1k, prompt: [a calm lake, a forbidden thing]}
    """)
    with simulator() as server:
        run = drive(manifest, server, out=tmp_path / "out")
    assert run.result.counts == {"blocked": 1, "downloaded": 1}
    assert run.exit_code == 1
    assert set(run.column("code").values()) == {None, "2038"}


def test_parameter_errors_are_invalid(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image, resolution: 1k, prompt: a, model: jimeng-3.0}\n")
    with simulator(profile="live", unavailable_models=["high_aes_general_v30l:general_v3.0_18b"]) as server:
        run = drive(manifest, server, out=tmp_path / "out")
    assert run.result.counts == {"invalid": 1}
    assert list(run.column("code").values()) == ["1002"]


def test_credits_run_out_then_submitting_stops(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(accounts={TOKEN: 2}) as server:
        run = drive(manifest, server, out=tmp_path / "out", options=fast_options(concurrency=1))
    assert run.result.counts == {"downloaded": 2, "skipped": 3}
    assert run.result.stop_reason == "credits" and run.exit_code == 3
    assert set(run.column("reason").values()) == {None, "credits"}
    assert "exhausted" in next(iter(run.result.token_states.values()))


def test_a_token_pool_goes_on_without_a_broken_token(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(strict_accounts=True, accounts={TOKEN: 100}) as server:
        run = drive(manifest, server, out=tmp_path / "out", tokens=[TOKEN_B, TOKEN])
        stats = server.stats()
    assert run.exit_code == 0 and run.result.counts == {"downloaded": 5}
    states_by_label = run.result.token_states
    assert any(state.startswith("quarantined") for state in states_by_label.values())
    assert list(stats["credits_charged"].values()) == [5]
    assert all(TOKEN not in label and TOKEN_B not in label for label in states_by_label)


def test_exhausted_token_hands_over_to_the_next(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(accounts={TOKEN: 2, TOKEN_B: 100}) as server:
        run = drive(manifest, server, out=tmp_path / "out", tokens=[TOKEN, TOKEN_B],
                    options=fast_options(concurrency=1))
        stats = server.stats()
    assert run.result.counts == {"downloaded": 5} and run.exit_code == 0
    assert sorted(stats["credits_charged"].values()) == [2, 3]
    charged_once(stats)


def test_permission_errors_stop_everything(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(min_app_version="99.0.0") as server:
        run = drive(manifest, server, out=tmp_path / "out")
    assert run.result.stop_reason == "permission" and run.exit_code == 3
    assert run.result.counts == {"skipped": 5}


def test_budget_stops_admitting(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator() as server:
        run = drive(manifest, server, out=tmp_path / "out", options=fast_options(budget=2.5))
        stats = server.stats()
    assert run.result.counts == {"downloaded": 2, "skipped": 3}
    assert run.result.stop_reason == "budget" and run.exit_code == 3
    assert len(stats["charges_by_submit_id"]) == 2


def test_drain_on_interrupt_finishes_what_is_in_flight(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)

    def interrupt_once_submitted(executor: Executor, counts: Counter[str]) -> None:
        if counts[states.SUBMITTED] and not executor.interrupted:
            executor.interrupt()

    with simulator() as server:
        run = drive(manifest, server, out=tmp_path / "out", on_change=interrupt_once_submitted,
                    options=fast_options(concurrency=3))
    assert run.result.interrupted and run.exit_code == 130
    counts = run.result.counts
    assert counts["downloaded"] >= 1 and counts["skipped"] >= 1
    assert counts["downloaded"] + counts["skipped"] == 5
    assert set(run.column("reason").values()) == {None, "interrupted"}


def test_rerun_continues_and_skipped_requests_are_planned_again(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator() as server:
        first = drive(manifest, server, out=tmp_path / "out", options=fast_options(budget=2))
        first.ledger.close()
        second = drive(manifest, server, out=tmp_path / "out")
        stats = server.stats()
    assert first.result.counts == {"downloaded": 2, "skipped": 3}
    assert second.result.counts == {"downloaded": 5} and second.exit_code == 0
    charged_once(stats)
    assert len(stats["charges_by_submit_id"]) == 5


def test_requests_left_submitting_are_reconciled_before_resending(tmp_path: Path) -> None:
    """A crash between sending a submit and recording its answer: the next run asks, and does not pay again."""
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator() as server:
        first = drive(manifest, server, out=tmp_path / "out")
        # Pretend the answers of two accepted submits were never recorded.
        keys = list(first.states())[:2]
        for key in keys:
            first.ledger.set_state(key, states.SUBMITTING, history_record_id=None)
        first.ledger.db.execute("DELETE FROM assets WHERE key IN (?, ?)", keys)
        first.ledger.close()
        second = drive(manifest, server, out=tmp_path / "out")
        stats = server.stats()
    assert second.result.counts == {"downloaded": 5}
    charged_once(stats)
    details = [r[0] for r in second.ledger.db.execute("SELECT detail FROM events WHERE key = ? ORDER BY id",
                                                      (keys[0],))]
    assert "reconciled: the service had it" in details


def test_cache_shares_results_across_manifests(tmp_path: Path) -> None:
    first = write_manifest(tmp_path, "jobs:\n  - {name: a, type: image, resolution: 1k, prompt: [x, y]}\n", "a.yaml")
    second = write_manifest(tmp_path, "jobs:\n  - {name: b, type: image, prompt: y, resolution: 1k}\n", "b.yaml")
    cache = ResultCache(tmp_path / "cache.sqlite", math.inf)
    with simulator() as server:
        one = drive(first, server, out=tmp_path / "one", cache=cache)
        before = server.stats()["requests"]
        two = drive(second, server, out=tmp_path / "two", cache=cache)
        after = server.stats()["requests"]
    assert one.result.counts == {"downloaded": 2} and two.result.counts == {"downloaded": 1}
    assert after == before  # not one call for the cached request
    assert list(two.column("shared_from").values()) == ["cache"]
    ((path, sha),) = two.ledger.db.execute("SELECT path, sha256 FROM assets").fetchall()
    assert sha256_of(two.out / path) == sha


def test_cache_entries_expire(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image, resolution: 1k, prompt: x}\n")
    clock = [1000.0]
    cache = ResultCache(tmp_path / "cache.sqlite", 300, clock=lambda: clock[0])
    with simulator() as server:
        drive(manifest, server, out=tmp_path / "one", cache=cache)
        clock[0] += 301
        late = drive(manifest, server, out=tmp_path / "two", cache=cache)
    assert list(late.column("shared_from").values()) == [None]


def test_samples_are_not_one_cached_result(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image, resolution: 1k, prompt: x, count: 3}\n")
    cache = ResultCache(tmp_path / "cache.sqlite", math.inf)
    with simulator() as server:
        run = drive(manifest, server, out=tmp_path / "one", cache=cache)
        assert len(server.stats()["charges_by_submit_id"]) == 3
    assert set(run.column("shared_from").values()) == {None}


def test_no_token_ever_reaches_the_output_folder(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(strict_accounts=True, accounts={TOKEN: 100}) as server:
        run = drive(manifest, server, out=tmp_path / "out", tokens=[TOKEN_B, TOKEN])
    run.ledger.close()
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert TOKEN.encode() not in data and TOKEN_B.encode() not in data, path


@pytest.mark.parametrize("kind", ["image", "video"])
def test_record_not_found_shortly_after_submit_is_pending(tmp_path: Path, kind: str) -> None:
    job = ("{type: video, prompt: a, duration: 5}" if kind == "video"
           else "{type: image, resolution: 1k, prompt: a}")
    manifest = write_manifest(tmp_path, f"jobs:\n  - {job}\n")
    with simulator(faults={"not_found_after_submit_s": 0.05}) as server:
        run = drive(manifest, server, out=tmp_path / "out", options=fast_options(poll_interval=0.02))
    assert run.result.counts == {"downloaded": 1}
    assert next(iter(run.column("polls").values())) > 1  # the first polls found nothing, and that was not an error


def test_a_truncated_or_missing_asset_is_downloaded_again(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator() as server:
        first = drive(manifest, server, out=tmp_path / "out")
        paths = [row[0] for row in first.ledger.db.execute("SELECT path FROM assets ORDER BY key")]
        first.ledger.close()
        (tmp_path / "out" / paths[0]).write_bytes(b"cut short")
        (tmp_path / "out" / paths[1]).unlink()
        second = drive(manifest, server, out=tmp_path / "out")
        stats = server.stats()
    assert second.result.counts == {"downloaded": 5}
    charged_once(stats)
    for path, sha in second.ledger.db.execute("SELECT path, sha256 FROM assets"):
        assert sha256_of(tmp_path / "out" / path) == sha


def test_an_output_folder_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    from jimeng_batch.engine.ledger import Ledger
    from jimeng_batch.errors import ConfigError

    (tmp_path / "blocker").write_text("a file where the folder should be")
    with pytest.raises(ConfigError, match=r"cannot create a folder here .*Not a directory.*choose a folder you can "
                                          "write"):
        Ledger.in_folder(tmp_path / "blocker" / "out")
    with pytest.raises(ConfigError, match="is a file; --out must name a folder"):
        Ledger.in_folder(tmp_path / "blocker")


def test_a_corrupted_ledger_is_a_clear_error(tmp_path: Path) -> None:
    from jimeng_batch.engine.ledger import Ledger
    from jimeng_batch.errors import LedgerError

    (tmp_path / "ledger.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="not a usable ledger"):
        Ledger(tmp_path / "ledger.sqlite")


def test_an_expired_url_that_cannot_be_fetched_is_never_recorded_as_downloaded(tmp_path: Path) -> None:
    """URLs that expire at once, a run that leaves its jobs `succeeded`, then a resume with no retries: the refresh of
    the expired URL used to be the loop's last step, so the request was recorded `downloaded` with no file."""
    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image, resolution: 1k, prompt: a}\n")
    with simulator(asset_ttl_s=0) as server:
        first = drive(manifest, server, out=tmp_path / "out", options=fast_options(download=False))
        assert first.result.counts == {"succeeded": 1}
        first.ledger.close()
        second = drive(manifest, server, out=tmp_path / "out", options=fast_options(max_retries=0))
    assert second.ledger.db.execute("SELECT COUNT(*) FROM assets").fetchone()[0] == 0
    assert not list((tmp_path / "out").rglob("*.png"))
    (row,) = second.ledger.db.execute("SELECT state, reason, code FROM requests").fetchall()
    # Every fresh URL expired too and no retry was allowed: not downloaded, and left (paid for) for the next run.
    assert row == (states.SUCCEEDED, "expired", "403")
    assert second.exit_code == 1


def test_a_url_that_expired_before_its_download_is_refreshed_and_fetched(tmp_path: Path) -> None:
    """The poll that finds the job finished gives URLs that have expired by the time the download starts: the next
    attempt lists the job again for fresh ones, and the file arrives."""
    from jimeng_batch.sim import FakeClock, config_from_mapping, running_simulator

    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image, resolution: 1k, prompt: a}\n")
    clock = FakeClock(time.time())  # the client's Device-Time must agree with the simulator's clock

    def expire_on_success(executor: Executor, counts: Counter[str]) -> None:
        if counts[states.SUCCEEDED]:
            clock.advance(60)  # past the URLs' 10 s

    config = config_from_mapping({"images_per_request": 2, "asset_ttl_s": 10})
    with running_simulator(config, clock=clock) as server:
        run = drive(manifest, server, out=tmp_path / "out", on_change=expire_on_success)
        stats = server.stats()
    assert run.result.counts == {"downloaded": 1}
    assert stats["errors"]["asset_expired"] >= 1
    kinds = [row[0] for row in run.ledger.db.execute("SELECT kind || ':' || outcome FROM attempts ORDER BY id")]
    assert "download:retry" in kinds and kinds.count("poll:ok") >= 2
    for path, sha in run.ledger.db.execute("SELECT path, sha256 FROM assets"):
        assert sha256_of(tmp_path / "out" / path) == sha
