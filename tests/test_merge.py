"""Sharded runs merged into one folder give the report of the unsharded run; merges refuse what does not fit."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import run_main
from run_helpers import write_manifest

import jimeng_batch as jb
from jimeng_batch.engine.result import exit_code
from jimeng_batch.intake.sharding import Shard
from jimeng_batch.outputs.metrics import comparable
from jimeng_batch.outputs.report import read_results, write_report
from jimeng_batch.outputs.results import comparable_rows

MANIFEST = """
    jobs:
      - name: pics
        type: image
        model: [jimeng-4.0, jimeng-3.1]
        resolution: 1k
        ratio: ["1:1", "16:9"]
        prompt: [a red kite, a blue boat, a forbidden cat]
      - name: clip
        type: video
        model: jimeng-video-3.0
        prompt: a slow pan
        first_frame: uri:image_uri_1
        duration: 5
"""


@pytest.fixture(scope="module")
def shard_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manifest run unsharded into `full` and as three shards into s1, s2, s3 (each its own simulator)."""
    base = tmp_path_factory.mktemp("runs")
    path = write_manifest(base, MANIFEST)
    common: dict[str, Any] = {"sim": True, "poll_interval": 0.01, "quiet": True, "use_cache": False, "report": False}
    full = jb.run(path, out=base / "full", **common)
    assert exit_code(full) == 1  # the forbidden prompts are blocked
    write_report(base / "full", step_summary=False)
    for k in (1, 2, 3):
        shard = jb.run(path, out=base / f"s{k}", shard=Shard(k, 3), **common)
        assert exit_code(shard) in (0, 1)
    return base


@pytest.fixture
def folders(shard_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the runs for one test, as the working directory."""
    work = tmp_path / "work"
    shutil.copytree(shard_runs, work)
    monkeypatch.chdir(work)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    return work


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_merged_shards_report_what_the_unsharded_run_reports(folders: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["merge", "s1", "s2", "s3", "--into", "merged"], capsys)
    assert code == 0, err
    assert "merged: 13 request(s)" in out and "3 run(s) from 3 folder(s)" in out
    full, merged = folders / "full", folders / "merged"
    full_rows, merged_rows = comparable_rows(read_results(full)), comparable_rows(read_results(merged))
    assert len(full_rows) == 13
    assert merged_rows == full_rows
    full_metrics = json.loads((full / "metrics.json").read_text(encoding="utf-8"))
    merged_metrics = json.loads((merged / "metrics.json").read_text(encoding="utf-8"))
    assert comparable(merged_metrics) == comparable(full_metrics)
    assert merged_metrics["failedRequests"] == 4 and merged_metrics["modelUsage"]["jimeng-video-3.0"] == 1
    # every file is in the merged folder, as the ledger says
    db = sqlite3.connect(merged / "ledger.sqlite")
    try:
        assets = db.execute("SELECT path, sha256 FROM assets").fetchall()
        runs = db.execute("SELECT options FROM runs ORDER BY id").fetchall()
        event_runs = db.execute("SELECT COUNT(DISTINCT run_id) FROM events").fetchone()[0]
    finally:
        db.close()
    assert len(assets) == 8 * 4 + 1
    for path, sha in assets:
        assert _sha(merged / path) == sha
    assert [json.loads(options)["config"]["shard"] for (options,) in runs] == ["1/3", "2/3", "3/3"]
    assert event_runs == 3  # every event points at its (renumbered) run
    for name in ("results.parquet", "results.csv", "results.jsonl", "report.md", "report.html"):
        assert (merged / name).is_file()
    # titled with the manifest's name (m.yaml), not with the folder it was merged into
    markdown = (merged / "report.md").read_text(encoding="utf-8")
    assert "## jimeng-batch: m " in markdown and "jimeng-batch: merged" not in markdown
    assert "<title>jimeng-batch report: m</title>" in (merged / "report.html").read_text(encoding="utf-8")


def test_a_request_in_several_inputs_keeps_its_furthest_state(folders: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(folders / "s1", folders / "s1-early")
    db = sqlite3.connect(folders / "s1-early" / "ledger.sqlite")
    with db:
        key = db.execute("SELECT key FROM requests WHERE state = 'downloaded' ORDER BY ord LIMIT 1").fetchone()[0]
        db.execute("UPDATE requests SET state = 'skipped', history_record_id = NULL WHERE key = ?", (key,))
        db.execute("DELETE FROM assets WHERE key = ?", (key,))
    db.close()
    code, out, err = run_main(["merge", "s1-early", "s1", "s2", "s3", "--into", "merged", "--no-report"], capsys)
    assert code == 0, err
    assert "were in more than one" in out
    db = sqlite3.connect(folders / "merged" / "ledger.sqlite")
    try:
        assert db.execute("SELECT state FROM requests WHERE key = ?", (key,)).fetchone()[0] == "downloaded"
        assert db.execute("SELECT COUNT(*) FROM assets WHERE key = ?", (key,)).fetchone()[0] == 4
        assert db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 13
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 4
    finally:
        db.close()
    assert not (folders / "merged" / "metrics.json").exists()


def test_inputs_that_disagree_are_refused(folders: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(folders / "s1", folders / "other")
    db = sqlite3.connect(folders / "other" / "ledger.sqlite")
    with db:
        key = db.execute("SELECT key FROM requests ORDER BY ord LIMIT 1").fetchone()[0]
        db.execute("UPDATE requests SET submit_id = 'not-the-same' WHERE key = ?", (key,))
    db.close()
    code, _, err = run_main(["merge", "s1", "other", "--into", "merged"], capsys)
    assert code == 2 and f"request {key}: s1 and other disagree on its submit_id" in err
    assert not (folders / "merged").exists()


def test_folders_of_different_manifests_are_refused(folders: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Another manifest's folder (here: s1's ledger as if its runs were of other.yaml, whose content differs)."""
    shutil.copytree(folders / "s1", folders / "other")
    db = sqlite3.connect(folders / "other" / "ledger.sqlite")
    with db:
        db.execute("UPDATE runs SET manifest = 'other.yaml', manifest_sha256 = ?", ("ab" * 32,))
    db.close()
    code, _, err = run_main(["merge", "s2", "other", "--into", "merged"], capsys)
    assert code == 2, err
    assert "the folders hold runs of 2 different manifests" in err and "other (sha256 abababababab…, in other)" in err
    assert "m (sha256 " in err and "--allow-different" in err
    assert not (folders / "merged").exists()
    code, _, err = run_main(["merge", "s2", "other", "--into", "merged", "--allow-different"], capsys)
    assert code == 0, err
    assert "## jimeng-batch: m + other " in (folders / "merged" / "report.md").read_text(encoding="utf-8")
    # the same file planned with other spreadsheet options (a CSV's --region, --model, ...) is another plan
    shutil.copytree(folders / "s1", folders / "elsewhere")
    db = sqlite3.connect(folders / "elsewhere" / "ledger.sqlite")
    with db:
        db.execute("UPDATE runs SET options = json_set(options, '$.config.sheet.region', 'us')")
    db.close()
    code, _, err = run_main(["merge", "s2", "elsewhere", "--into", "merged2"], capsys)
    assert code == 2 and "one manifest planned with different spreadsheet options" in err, err
    assert '"region": "us"' in err and "--allow-different" in err


def test_a_changed_file_stops_the_merge(folders: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim = next((folders / "s2" / "assets").iterdir())
    victim.write_bytes(b"not what was downloaded")
    code, _, err = run_main(["merge", "s1", "s2", "--into", "merged"], capsys)
    assert code == 1 and "no longer matches the sha256" in err
    assert not (folders / "merged").exists()  # half a merge is not left behind


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["s1", "s1"], "named twice", id="same-folder-twice"),
    pytest.param(["s1", "nowhere"], "no ledger here", id="not-an-output-folder"),
    pytest.param(["s1", "full"], "already holds a ledger", id="into-an-existing-ledger"),
])
def test_merge_usage_errors(folders: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                            message: str) -> None:
    into = "full" if "full" in args else "merged"
    code, _, err = run_main(["merge", *[a for a in args if a != "full"], "--into", into], capsys)
    assert code == 2 and message in err
