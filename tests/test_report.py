"""The report of an output folder: results files, metrics.json, report.md (and the CI step summary), report.html;
stage timings from the ledger's events; exit codes and `--fail-on`."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_main
from PIL import Image
from run_helpers import drive, fast_options, simulator, write_manifest

from jimeng_batch.engine.result import RunResult, exit_code
from jimeng_batch.engine.states import State
from jimeng_batch.outputs.results import COMPARABLE_COLUMNS, meaning_of, stage_times

SECRET = "sess0123456789abcdefSECRETtoken99"
MANIFEST = """
    jobs:
      - name: pics
        type: image
        model: [jimeng-4.0, jimeng-3.1]
        resolution: 1k
        prompt: [a red kite, a blue boat, a forbidden cat]
"""


@pytest.fixture
def sim_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    """`jimeng-batch run` of a manifest on the simulator, fast, into tmp_path/out (extra arguments appended)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)

    def run(text: str = MANIFEST, *extra: str, out: str = "out") -> tuple[int, str, str]:
        path = write_manifest(tmp_path, text)
        return run_main(["run", str(path), "--sim", "--out", out, "--poll-interval", "0.01", "--quiet",
                         "--no-cache", *extra], capsys)

    return run


class _Page(HTMLParser):
    """Collects the tags and image sources of a page, failing on tags closed that were never opened."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_a_run_writes_every_report_file(sim_run: Callable[..., tuple[int, str, str]], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("JIMENG_SESSIONID", SECRET)
    code, _, err = sim_run()
    assert code == 1, err  # two requests are content-filtered
    out = tmp_path / "out"

    parquet = pd.read_parquet(out / "results.parquet")
    csv = pd.read_csv(out / "results.csv")
    jsonl = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(parquet) == len(csv) == len(jsonl) == 6
    assert list(parquet.columns) == list(csv.columns) == list(jsonl[0])
    assert set(COMPARABLE_COLUMNS) <= set(parquet.columns)
    for column in ("manifest", "job", "row", "prompt", "seed", "ratio", "state", "code", "meaning", "submit_id",
                   "history_record_id", "asset_paths", "asset_sha256", "asset_sizes", "end_to_end_seconds",
                   "queue_seconds", "attempts", "retries", "estimated_credits", "credits_spent", "token"):
        assert column in parquet.columns, column
    blocked = parquet[parquet["state"] == "blocked"]
    assert len(blocked) == 2 and set(blocked["code"]) == {"2038"} and set(blocked["meaning"]) == {"content filtered"}
    done = parquet[parquet["state"] == "downloaded"].iloc[0]
    assert done["manifest"] == "m.yaml" and done["job"] == "pics" and done["asset_count"] == len(done["asset_paths"])
    assert done["end_to_end_seconds"] > 0 and done["credits_spent"] == done["estimated_credits"] == 1.0
    for path, size in zip(done["asset_paths"], done["asset_sizes"], strict=True):
        assert (out / path).stat().st_size == size
    assert json.loads(csv.iloc[0]["asset_sha256"]) == list(parquet.iloc[0]["asset_sha256"])

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert (metrics["totalRequests"], metrics["successRequests"], metrics["failedRequests"]) == (6, 4, 2)
    assert metrics["modelUsage"] == {"jimeng-3.1": 3, "jimeng-4.0": 3}
    assert metrics["avgResponseTime"] > 0
    assert metrics["byState"] == {"downloaded": 4, "blocked": 2}
    assert metrics["errors"] == [{"code": "2038", "reason": "content", "meaning": "content filtered",
                                  "state": "blocked", "count": 2}]
    assert metrics["credits"]["spent"] == 6.0 and metrics["credits"]["estimated"] == 6.0
    assert set(metrics["byModel"]) == {"jimeng-3.1", "jimeng-4.0"} and set(metrics["byType"]) == {"image"}
    assert set(metrics["byResolution"]) == {"1k"}
    overall = metrics["overall"]
    assert overall["successRate"] == pytest.approx(4 / 6)
    assert set(overall["latencySeconds"]) == {"submit", "queue", "generation", "download", "end_to_end"}
    assert overall["latencySeconds"]["end_to_end"]["count"] == 6
    assert {"p50", "p90", "p99"} <= set(overall["latencySeconds"]["download"])
    assert sum(b["succeeded"] + b["failed"] for b in metrics["throughput"]["buckets"]) == 6
    assert metrics["calls"]["submit"]["calls"] == 6 and metrics["runs"][0]["exitCode"] == 1

    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "**4** of **6** requests succeeded" in markdown and "`2038`" in markdown
    # blocked requests are not called failed: the document's failedRequests counts all three
    assert "**2** failed, blocked or invalid" in markdown
    assert len(markdown.splitlines()) < 60  # short enough for a CI job summary (header and failures included)
    assert summary.read_text(encoding="utf-8") == "earlier step\n" + markdown + "\n"

    page = _Page()
    html_text = (out / "report.html").read_text(encoding="utf-8")
    page.feed(html_text)
    page.close()
    assert page.tags[0] == "html" and "table" in page.tags
    assert "http://" not in html_text and "https://" not in html_text  # self-contained: nothing fetched
    kinds = []
    for image in page.images:
        source = image["src"] or ""
        if source.startswith("data:"):  # the plots, inline
            header, data = source.split(",", 1)
            decoded = Image.open(io.BytesIO(base64.b64decode(data)))
        else:  # the thumbnails, files beside the page
            header, decoded = source.split("/")[0], Image.open(out / source)
        decoded.load()
        kinds.append(header)
    assert kinds.count("data:image/png;base64") == 3  # latency per stage, throughput, outcomes by model
    assert kinds.count("report_files") == 4 * 4  # the gallery: 4 requests x 4 images

    for name in ("results.csv", "results.jsonl", "metrics.json", "report.md", "report.html", "run.log"):
        assert SECRET not in (out / name).read_text(encoding="utf-8"), name
    assert SECRET.encode() not in (out / "results.parquet").read_bytes()


def test_report_command_rewrites_the_files(sim_run: Callable[..., tuple[int, str, str]], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = sim_run("jobs:\n  - {type: image, resolution: 1k, prompt: [a, b]}\n", "--no-report")
    assert code == 0
    assert not (tmp_path / "out" / "metrics.json").exists()
    code, out, _ = run_main(["report", "out"], capsys)
    assert code == 0 and "2 of 2 succeeded" in out
    for name in ("results.parquet", "results.csv", "results.jsonl", "metrics.json", "report.md", "report.html"):
        assert (tmp_path / "out" / name).is_file(), name
    code, _, err = run_main(["report", "nowhere"], capsys)
    assert code == 2 and "no ledger here" in err


def test_a_report_failure_does_not_change_the_exit_code(sim_run: Callable[..., tuple[int, str, str]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("jimeng_batch.outputs.report.write_report", broken)
    code, _, err = sim_run("jobs:\n  - {type: image, resolution: 1k, prompt: a}\n")
    assert code == 0
    assert "warning: the report could not be written (OSError: disk full)" in err


def test_video_runs_show_no_image_thumbnails(sim_run: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    code, _, err = sim_run("""
        jobs:
          - {type: video, model: jimeng-video-3.0, prompt: a slow pan, first_frame: uri:image_uri_1, duration: 5}
    """)
    assert code == 0, err
    page = _Page()
    page.feed((tmp_path / "out" / "report.html").read_text(encoding="utf-8"))
    assert all((i["src"] or "").startswith(("data:image/png", "report_files/video-poster")) for i in page.images)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["byType"]["video"]["creditsSpent"] == 10.0 and metrics["byResolution"].keys() == {"720p"}


def test_running_is_recorded_only_once_the_job_leaves_the_queue(tmp_path: Path) -> None:
    """The simulator queues, then generates; the events tell the two apart, and so do the results."""
    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image, resolution: 1k, prompt: a}\n")
    with simulator(latency={"queue": 0.03, "generation": 0.03}) as server:
        run = drive(manifest, server, out=tmp_path / "out", options=fast_options())
    assert run.exit_code == 0
    steps = [r[0] for r in run.ledger.db.execute("SELECT state FROM events ORDER BY id")]
    assert steps == ["submitting", "submitted", "running", "succeeded", "downloaded"]
    details = [r[0] for r in run.ledger.db.execute("SELECT detail FROM events WHERE state = 'running'")]
    assert details != ["status 20"]
    (timing,) = stage_times(run.ledger.db).values()
    assert timing["queue_seconds"] is not None and timing["queue_seconds"] >= 0.02
    assert timing["generation_seconds"] is not None and timing["generation_seconds"] > 0


def test_stage_times_follow_the_definitions() -> None:
    events = [
        ("a", "submitting", 10.0), ("a", "planned", 11.0), ("a", "submitting", 12.0), ("a", "submitted", 12.5),
        ("a", "running", 14.5), ("a", "succeeded", 20.5), ("a", "downloaded", 21.0),
        ("b", "submitting", 0.0), ("b", "submitted", 1.0), ("b", "succeeded", 4.0), ("b", "downloaded", 4.25),
        ("c", "submitting", 0.0), ("c", "submitted", 2.0), ("c", "blocked", 3.0),
        ("d", "downloaded", 5.0),  # a cache hit: no submit
    ]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, key TEXT, state TEXT, at REAL)")
    db.execute("CREATE TABLE attempts (key TEXT, outcome TEXT)")
    db.executemany("INSERT INTO events (key, state, at) VALUES (?, ?, ?)", events)
    times = stage_times(db)
    assert times["a"] == {"submit_seconds": 0.5, "queue_seconds": 2.0, "generation_seconds": 6.0,
                          "download_seconds": 0.5, "end_to_end_seconds": 11.0}
    b = times["b"]
    assert b["queue_seconds"] is None and b["generation_seconds"] == 3.0 and b["end_to_end_seconds"] == 4.25
    c = times["c"]
    assert c["submit_seconds"] == 2.0 and c["download_seconds"] is None and c["end_to_end_seconds"] == 3.0
    assert set(times["d"].values()) == {None}


@pytest.mark.parametrize(("code", "reason", "meaning"), [
    pytest.param("2038", "content", "content filtered", id="document-code"),
    pytest.param("1006", "credits", "not enough credits left", id="live-code"),
    pytest.param("503", "server", "server error", id="http-5xx"),
    pytest.param("9999", "generation", "generation failed", id="unknown-fail-code"),
    pytest.param("timeout", "network", "the job did not finish in time (poll timeout)", id="local-code"),
    pytest.param(None, None, None, id="no-code"),
])
def test_codes_get_their_meaning(code: str | None, reason: str | None, meaning: str | None) -> None:
    assert meaning_of(code, reason) == meaning


@pytest.mark.parametrize(("counts", "stop", "interrupted", "fail_on", "code"), [
    pytest.param({"downloaded": 3}, None, False, None, 0, id="all-succeeded"),
    pytest.param({"downloaded": 2, "failed": 1}, None, False, None, 1, id="failed"),
    pytest.param({"downloaded": 2, "blocked": 1}, None, False, None, 1, id="blocked"),
    pytest.param({"downloaded": 2, "invalid": 1}, None, False, None, 1, id="invalid"),
    pytest.param({"downloaded": 2, "blocked": 1}, None, False, {"failed"}, 0, id="blocked-allowed"),
    pytest.param({"downloaded": 2, "failed": 1}, None, False, {"failed"}, 1, id="failed-chosen"),
    pytest.param({"downloaded": 2, "skipped": 1}, None, False, None, 1, id="skipped"),
    pytest.param({"downloaded": 2, "skipped": 1}, None, False, {"failed"}, 0, id="skipped-allowed"),
    pytest.param({"downloaded": 2, "running": 1}, None, False, set(), 1, id="unfinished-always-fails"),
    pytest.param({"downloaded": 2, "failed": 1}, None, False, set(), 0, id="fail-on-none"),
    pytest.param({"downloaded": 1, "skipped": 2}, "credits", False, {"failed"}, 3, id="stopped-for-credits"),
    pytest.param({"downloaded": 1, "skipped": 2}, "budget", False, None, 3, id="stopped-for-budget"),
    pytest.param({"downloaded": 1, "skipped": 2}, "interrupted", True, None, 130, id="interrupted"),
])
def test_exit_codes(counts: dict[str, int], stop: str | None, interrupted: bool, fail_on: set[str] | None,
                    code: int) -> None:
    result = RunResult(Path("out"), counts, stop, interrupted)  # type: ignore[arg-type]
    assert exit_code(result, *([] if fail_on is None else [frozenset(State(s) for s in fail_on)])) == code


def test_fail_on_from_the_command_line(sim_run: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    text = "jobs:\n  - {type: image, resolution: 1k, prompt: [a calm lake, a forbidden thing]}\n"
    code, _, _ = sim_run(text, "--no-report", out="o1")
    assert code == 1
    code, _, err = sim_run(text, "--no-report", "--fail-on", "failed,invalid", out="o2")
    assert code == 0, err
    code, _, err = sim_run(text, "--no-report", "--fail-on", "failed,exploded", out="o3")
    assert code == 2 and "--fail-on" in err and "exploded" in err
    code, _, err = sim_run(text, "--no-report", "--budget", "1", "--fail-on", "none", out="o4")
    assert code == 3, err  # a stop is not a final state: --fail-on does not hide it



def test_a_ledger_of_the_first_schema_version_is_reported(tmp_path: Path) -> None:
    """Reports open ledgers read-only, unmigrated: one from the first schema version (no origin, queue or
    shared-asset columns, assets without variants) still gives every results column, None where it had nothing."""
    from jimeng_batch.engine.ledger import MIGRATIONS
    from jimeng_batch.outputs.report import write_report

    out = tmp_path / "old"
    out.mkdir()
    db = sqlite3.connect(out / "ledger.sqlite")
    db.executescript(MIGRATIONS[0].sql)
    assert "origin" not in [row[1] for row in db.execute("PRAGMA table_info(requests)")]
    db.execute("INSERT INTO runs (id, started_at, finished_at, manifest, manifest_sha256, tool_version, options, "
               "status, exit_code) VALUES (1, 1.7e9, 1.7e9, 'm.yaml', 'ab', '0.0.1', '{}', 'finished', 0)")
    params = json.dumps({"type": "image", "region": "cn", "model": "jimeng-4.0", "prompt": "p", "resolution": "2k",
                         "ratio": "1:1", "sample_strength": 0.5})
    db.execute("INSERT INTO requests (key, submit_id, ord, job, source_file, sample, type, model, resolution, params, "
               "estimated_credits, state, created_at, updated_at, history_record_id) VALUES ('k1', 's1', 0, 'j', "
               "'m.yaml', 0, 'image', 'jimeng-4.0', '2k', ?, 1.0, 'downloaded', 1.7e9, 1.7e9, 'h1')", (params,))
    db.execute("INSERT INTO assets (key, idx, kind, path, sha256, size, downloaded_at) "
               "VALUES ('k1', 0, 'image', 'a.png', 'ff', 3, 1.7e9)")
    db.executemany("INSERT INTO events (key, state, at) VALUES ('k1', ?, ?)",
                   [("submitting", 1.7e9), ("submitted", 1.7e9 + 1), ("succeeded", 1.7e9 + 5),
                    ("downloaded", 1.7e9 + 6)])
    db.commit()
    db.close()
    report = write_report(out, step_summary=False)
    assert report.metrics["totalRequests"] == 1 and report.metrics["credits"]["spent"] == 1.0
    (row,) = pd.read_parquet(out / "results.parquet").to_dict(orient="records")
    assert row["end_to_end_seconds"] == 6.0 and row["submit_seconds"] == 1.0 and row["asset_bytes"] == 3
    assert pd.isna(row["origin"]) and pd.isna(row["queue_position"]) and list(row["asset_variants"]) == [None]
