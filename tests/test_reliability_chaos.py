"""Reliability: a faulted run killed with SIGKILL at 20 random moments and resumed each time ends exactly like an
unfaulted run, pays for every submit_id once, and never loses or damages a finished file.

The simulator answers 5% of submits "busy", 2% of calls with a 5xx, drops 1% of connections, loses 2% of accepted
submits' answers, and makes some polls slow; generations take a few tenths of a second, so that kills land while
requests are in every state (submitting, in flight, downloading). Kill moments are drawn from a seeded
``random.Random``: either a random time after the start (often before the run has done anything), or a random
time after a random number of new ledger events (somewhere in the middle of the work), which bounds the progress
each attempt makes so that all 20 kills land before the work is done on any machine.
"""

from __future__ import annotations

import random
import signal
import subprocess
from pathlib import Path

import pytest
from reliability_helpers import (
    assets,
    check_recorded_files,
    cli,
    cli_env,
    count,
    query,
    run_cli_process,
    states,
    wait_for_events,
    wait_process,
)
from run_helpers import TOKEN, drive, sha256_of, simulator, write_manifest

from jimeng_batch.engine.states import IN_FLIGHT_STATES

pytestmark = pytest.mark.slow

KILLS = 20
IMAGES = 44  # image requests, of 2 images each; plus one filtered image request and one video
MANIFEST = """
    jobs:
      - name: pictures
        type: image
        resolution: 1k
        prompt: "chaos picture {n}"
        vars:
          n: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27,
              28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44]
      - name: filtered
        type: image
        resolution: 1k
        prompt: a forbidden picture
      - name: clip
        type: video
        model: jimeng-video-3.0
        prompt: a slow pan over a harbour
        duration: 5
"""
FAULTS = {"busy_probability": 0.05, "http_error_probability": 0.02, "drop_probability": 0.01,
          "lost_response_probability": 0.02, "slow_poll_probability": 0.1, "slow_poll_delay": 0.3}
LATENCY = {"submit": {"uniform": [0.0, 0.02]}, "poll": {"uniform": [0.0, 0.01]},
           "generation": {"uniform": [0.2, 0.6]}}


def final_results(out: Path) -> dict[str, tuple[str, dict[int, str]]]:
    """Per request key: its final state and its files' sha256 by index."""
    found = assets(out / "ledger.sqlite")
    return {key: (state, found.get(key, {})) for key, state in states(out / "ledger.sqlite").items()}


def test_a_faulted_run_killed_20_times_ends_like_an_unfaulted_run(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, MANIFEST)

    # The reference: the same manifest, no faults, no kills, in this process.
    with simulator(seed=5, images_per_request=2) as server:
        reference = drive(manifest, server, out=tmp_path / "reference")
        reference.ledger.close()
    expected = final_results(tmp_path / "reference")
    assert {state for state, _ in expected.values()} == {"downloaded", "blocked"}
    assert sum(len(files) for _, files in expected.values()) == IMAGES * 2 + 1

    tokens = tmp_path / "tokens.txt"
    tokens.write_text(TOKEN + "\n")
    out = tmp_path / "out"
    ledger = out / "ledger.sqlite"
    env = cli_env()
    chooser = random.Random(20240611)
    with simulator(seed=5, images_per_request=2, faults=FAULTS, latency=LATENCY) as server:
        common = ["--base-url", server.base_url, "--token-file", str(tokens), "--poll-interval", "0.02",
                  "--concurrency", "2", "--max-retries", "10", "--quiet", "--preflight", "off", "--no-cache",
                  "--no-report"]
        kills = 0
        attempts = 0
        moments: list[str] = []
        in_flight_kills = 0  # kills that left requests submitted or running (or being submitted)
        recorded: dict[str, dict[int, str]] = {}  # the files recorded so far, by key and index
        while kills < KILLS:
            attempts += 1
            assert attempts <= 3 * KILLS, "the run keeps ending before it can be killed"
            resume = chooser.random() < 0.5 and count(ledger, "SELECT COUNT(*) FROM runs") > 0
            args = ["resume", str(out), *common] if resume else ["run", str(manifest), "--out", str(out), *common]
            before = count(ledger, "SELECT COUNT(*) FROM events")
            process = subprocess.Popen(cli(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       text=True)
            if chooser.random() < 0.25:
                moment = f"{chooser.uniform(0.05, 0.8):.2f} s after the start"
                finished = wait_process(process, float(moment.split()[0]))
            else:
                events = chooser.randint(1, 4)
                extra = chooser.uniform(0.0, 0.15)
                moment = f"{extra:.2f} s after {events} new event(s)"
                finished = wait_for_events(process, ledger, before + events) or wait_process(process, extra)
            if finished:
                _, stderr = process.communicate()
                pytest.fail(f"attempt {attempts} ended (exit {process.returncode}) before kill {kills + 1} "
                            f"({moment}): {stderr}")
            process.send_signal(signal.SIGKILL)
            process.communicate()
            kills += 1
            snapshot = dict(query(ledger, "SELECT state, COUNT(*) FROM requests GROUP BY state"))
            moments.append(f"{moment}: {snapshot}")
            in_flight_kills += any(state in IN_FLIGHT_STATES for state in snapshot)
            # Whatever the moment, every file the ledger records is whole and is what the ledger says, and no file
            # recorded before this attempt was lost or changed.
            check_recorded_files(out)
            now = assets(ledger)
            for key, files in recorded.items():
                assert now.get(key, {}) | files == now.get(key, {}), f"{key}: finished files changed or went"
            recorded = now

        final = run_cli_process(["resume", str(out), *common], env)
        stats = server.stats()

    assert kills == KILLS, moments
    # Most kills landed while jobs were in flight, not only between requests.
    assert in_flight_kills >= KILLS // 2, moments
    assert final.returncode == 1, final.stderr  # 1: the filtered request is blocked, as in the reference
    assert "Traceback" not in final.stderr
    assert final_results(out) == expected

    # No submit_id was charged twice, and every request that the service accepted was charged exactly once.
    charges = stats["charges_by_submit_id"]
    assert set(charges.values()) == {1}, {k: v for k, v in charges.items() if v != 1}
    submit_ids = dict(query(ledger, "SELECT key, submit_id FROM requests"))
    assert set(charges) == set(submit_ids.values())
    # The faults did happen (which ones, and how often, depends on the order requests arrive in).
    assert sum(stats["errors"].values()) > 0, stats["errors"]

    # Every file is there, whole, with the reference's content; nothing half-written is left behind.
    assert check_recorded_files(out) == IMAGES * 2 + 1
    reference_files = {path.name: sha256_of(path) for path in (tmp_path / "reference" / "assets").iterdir()}
    files = {path.name: sha256_of(path) for path in (out / "assets").iterdir()}
    assert files == reference_files
    assert dict(query(ledger, "SELECT state, COUNT(*) FROM requests GROUP BY state")) == {"downloaded": IMAGES + 1,
                                                                                        "blocked": 1}
