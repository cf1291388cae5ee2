"""Kill a run with SIGKILL at random moments, resume it each time: every request finishes, none is paid twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from run_helpers import TOKEN, sha256_of, simulator, write_manifest

from jimeng_batch.engine.ledger import Ledger

MANIFEST = """
    jobs:
      - name: many
        type: image
        resolution: 1k
        prompt: "picture {n}"
        vars:
          n: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]
"""


def run_command(manifest: Path, out: Path, base_url: str, tokens: Path, concurrency: int = 3) -> list[str]:
    """The run, in a subprocess; no report (these tests check the ledger, the files and the charges)."""
    return [sys.executable, "-m", "jimeng_batch", "run", str(manifest), "--out", str(out), "--base-url", base_url,
            "--token-file", str(tokens), "--poll-interval", "0.02", "--quiet", "--preflight", "off", "--no-cache",
            "--no-report", "--concurrency", str(concurrency)]


# The resuming runs finish quickly: every remaining job at once, on a simulator with no in-flight cap.
ALL_AT_ONCE = 24


def kill_and_resume(tmp_path: Path, kills: int, seed: int) -> None:
    manifest = write_manifest(tmp_path, MANIFEST)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(TOKEN + "\n")
    out = tmp_path / "out"
    chooser = random.Random(seed)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    latency = {"submit": {"uniform": [0.0, 0.05]}, "generation": {"uniform": [0.05, 0.2]}}
    with simulator(seed=seed, latency=latency, images_per_request=2, max_in_flight=None) as server:
        killed = 0
        for _ in range(kills):
            process = subprocess.Popen(run_command(manifest, out, server.base_url, tokens, concurrency=6), env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                process.wait(timeout=chooser.uniform(0.3, 1.2))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed += 1
            else:
                break  # it finished before this kill came
        final = subprocess.run(run_command(manifest, out, server.base_url, tokens, ALL_AT_ONCE), env=env,
                               capture_output=True, text=True, timeout=120)
        stats = server.stats()
    assert final.returncode == 0, final.stderr
    assert killed >= kills // 2, f"only {killed} kill(s) landed mid-run"
    assert set(stats["charges_by_submit_id"].values()) == {1}
    assert len(stats["charges_by_submit_id"]) == 24
    ledger = Ledger(out / "ledger.sqlite")
    try:
        assert ledger.counts() == {"downloaded": 24}
        assets = ledger.db.execute("SELECT path, sha256, size FROM assets").fetchall()
    finally:
        ledger.close()
    assert len(assets) == 48
    for path, sha, size in assets:
        file = out / path
        assert file.stat().st_size == size and sha256_of(file) == sha
    assert not list((out / "assets").glob(".*.part"))
    assert TOKEN not in (out / "run.log").read_text()


def test_killed_runs_resume_without_double_charges(tmp_path: Path) -> None:
    kill_and_resume(tmp_path, kills=5, seed=7)


def test_interrupt_drains_then_a_second_one_quits(tmp_path: Path) -> None:
    """SIGINT: no new submits, in-flight jobs finish, exit 130; the ledger stays consistent for a resume."""
    manifest = write_manifest(tmp_path, MANIFEST)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(TOKEN + "\n")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    latency = {"submit": 0.05, "generation": 0.3}
    with simulator(latency=latency, max_in_flight=None) as server:
        process = subprocess.Popen(run_command(manifest, out, server.base_url, tokens), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ledger_file = out / "ledger.sqlite"
        wait_for_a_submit(process, ledger_file)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert "stopping: no new submits" in stderr
        counts = dict(_rows(ledger_file, "SELECT state, COUNT(*) FROM requests GROUP BY state"))
        assert counts.get("skipped", 0) > 0 and counts.get("downloaded", 0) > 0
        assert set(counts) <= {"skipped", "downloaded"}, counts  # drained: nothing left half-way
        resumed = subprocess.run(run_command(manifest, out, server.base_url, tokens, ALL_AT_ONCE), env=env,
                                 capture_output=True, text=True, timeout=120)
        stats = server.stats()
    assert resumed.returncode == 0, resumed.stderr
    assert set(stats["charges_by_submit_id"].values()) == {1} and len(stats["charges_by_submit_id"]) == 24


def wait_for_a_submit(process: subprocess.Popen[str], ledger_file: Path) -> None:
    """Until the run has recorded an accepted submit (bounded: at most 30 s), waiting on the process itself."""
    for _ in range(600):
        if ledger_file.exists() and _count(ledger_file, "SELECT COUNT(*) FROM events WHERE state = 'submitted'"):
            return
        try:
            process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue


def _rows(path: Path, query: str) -> list[tuple[object, ...]]:
    import sqlite3

    db = sqlite3.connect(path)
    try:
        return db.execute(query).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def _count(path: Path, query: str) -> int:
    rows = _rows(path, query)
    return int(rows[0][0]) if rows else 0


def test_a_second_interrupt_quits_at_once_and_the_ledger_stays_consistent(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, MANIFEST)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(TOKEN + "\n")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with simulator(latency={"submit": 0.05, "generation": 5.0}, max_in_flight=None) as server:
        process = subprocess.Popen(run_command(manifest, out, server.base_url, tokens), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ledger_file = out / "ledger.sqlite"
        wait_for_a_submit(process, ledger_file)
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        # Signals of one kind do not queue: wait until the first is handled before sending the second.
        for line in process.stderr:  # ends at EOF if the run died instead
            if "stopping" in line:
                break
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)  # generations take 5 s: only quitting at once gets here first
        assert process.returncode == 130
        in_flight = _count(ledger_file, "SELECT COUNT(*) FROM requests WHERE state IN ('submitted', 'running')")
        assert in_flight > 0, _rows(ledger_file, "SELECT state, COUNT(*) FROM requests GROUP BY state")
        resumed = subprocess.run(run_command(manifest, out, server.base_url, tokens, ALL_AT_ONCE), env=env,
                                 capture_output=True, text=True, timeout=180)
        stats = server.stats()
    assert resumed.returncode == 0, resumed.stderr
    assert set(stats["charges_by_submit_id"].values()) == {1} and len(stats["charges_by_submit_id"]) == 24
