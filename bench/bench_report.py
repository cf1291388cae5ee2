"""Benchmark of `jimeng-batch report` over a synthetic ledger: its time and peak RSS beside yardsticks measured in
the same run.

    python bench/bench_report.py [--requests 100000 1000000] [--keep DIR]

For each size: a ledger in the tool's own schema (engine/ledger.py's migrations) with that many requests, each
with its events (submitting, submitted, running, succeeded, downloaded; a few percent end failed or blocked), 2-4
attempts and one asset (a small PNG on disk for the requests report.html shows, none for the others), across
three models and resolutions. Then, each in a child process of its own (peak RSS: the child's ru_maxrss):

- report: `python -m jimeng_batch report DIR --no-summary`;
- imports: a bare interpreter importing what the report imports (pyarrow, matplotlib, jinja2, PIL): the
  floor any report process starts from; and the same with pandas (what it cost before reports did without it);
- read_sql: `pandas.read_sql_query("SELECT * FROM requests", ...)` of the same ledger: the requests table alone as
  one frame (what a whole-table report starts with, before events, attempts and assets);
- before (with `--before TREE`, a source tree of an earlier jimeng-batch, e.g. `git archive <commit>` unpacked): that
  version's `report` of the same ledger, run first (its thumbnails removed before the report measured above).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_run import machine  # noqa: E402

from jimeng_batch.engine.ledger import Ledger  # noqa: E402
from jimeng_batch.outputs.report import HTML_ROWS  # noqa: E402

CHUNK = 20_000
MODELS = (("image", "jimeng-4.0", "high_aes_general_v40", "2k"), ("image", "jimeng-3.1", "high_aes_general_v31", "1k"),
          ("video", "jimeng-video-3.0", "dreamina_ic_generate_video_model_vgfm_3.0", "720p"))
START = 1_790_000_000.0


def _png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 64), (30, 90, 160)).save(path, format="PNG")


def generate(folder: Path, count: int, seed: int = 15) -> float:
    """A ledger of ``count`` requests in ``folder``; returns the seconds it took."""
    began = time.perf_counter()
    rng = random.Random(seed)
    (folder / "assets").mkdir(parents=True, exist_ok=True)
    with Ledger.in_folder(folder) as ledger:
        db = ledger.db
        columns = [row[1] for row in db.execute("PRAGMA table_info(requests)")]
        db.execute("INSERT INTO runs (id, started_at, finished_at, manifest, manifest_sha256, tool_version, options, "
                   "status, exit_code, origin) VALUES (1, ?, ?, 'bench.csv', ?, '0.1.0', ?, 'finished', 1, "
                   "'jimeng.jianying.com')", (START, START + count * 0.05, "0" * 64,
                                             json.dumps({"manifest": str(folder / "bench.csv"), "tokens": ["abcd…(33)"],
                                                         "config": {"fail_on": ["failed", "blocked"]}})))
        event_id = attempt_id = 0
        for first in range(0, count, CHUNK):
            requests, events, attempts, assets = [], [], [], []
            for ord_ in range(first, min(first + CHUNK, count)):
                kind, model, model_key, resolution = MODELS[ord_ % len(MODELS)]
                key = f"{ord_:032x}"
                sent = START + ord_ * 0.05
                submitted = sent + rng.uniform(0.1, 0.5)
                running = submitted + rng.uniform(0, 4)
                done = running + (rng.uniform(60, 120) if kind == "video" else rng.uniform(8, 16))
                downloaded = done + rng.uniform(0.2, 2)
                roll = rng.random()
                state = "blocked" if roll < 0.02 else "failed" if roll < 0.04 else "downloaded"
                params = {"type": kind, "region": "cn", "model": model, "model_key": model_key,
                          "prompt": f"a lighthouse at dusk, take {ord_}", "seed": rng.randrange(2**32),
                          "seed_given": False, "resolution": resolution}
                if kind == "video":
                    params.update(duration=5, aspect_ratio="16:9", fps=24)
                else:
                    params.update(ratio="1:1", sample_strength=0.5, negative_prompt="", images=1)
                code = {"blocked": "2038", "failed": "1180"}.get(state)
                row = {"key": key, "submit_id": f"sub-{key}", "ord": ord_, "job": f"job{ord_ % 7}",
                       "source_file": "bench.csv", "source_row": ord_ + 2, "sample": 0, "type": kind, "model": model,
                       "resolution": resolution, "params": json.dumps(params), "estimated_credits": 1.0,
                       "state": state, "token": "abcd…(33)", "history_record_id": f"h{ord_}", "task_id": f"t{ord_}",
                       "submits": 1, "polls": 3, "retries": int(roll > 0.9), "code": code,
                       "reason": {"2038": "content filtered", "1180": "generation failed"}.get(code or ""),
                       "message": "the service said no" if code else None, "created_at": START,
                       "updated_at": downloaded, "submitted_at": submitted,
                       "finished_at": done, "downloaded_at": downloaded if state == "downloaded" else None,
                       "run_id": 1, "origin": "jimeng.jianying.com", "first_queue_position": float(rng.randrange(9)),
                       "first_forecast_queue_seconds": rng.uniform(0, 5)}
                requests.append(tuple(row.get(name) for name in columns))
                final = done if state != "downloaded" else downloaded
                path = [("submitting", sent), ("submitted", submitted), ("running", running)]
                path += [("succeeded", done), ("downloaded", downloaded)] if state == "downloaded" else [(state, final)]
                for name, at in path:
                    event_id += 1
                    events.append((event_id, key, 1, name, at, None))
                calls = [("submit", sent, submitted - sent)] + [("poll", running, 0.05)] * rng.randint(0, 2)
                if state == "downloaded":
                    calls.append(("download", done, downloaded - done))
                while len(calls) < 2:
                    calls.append(("poll", done, 0.05))
                for call, at, seconds in calls:
                    attempt_id += 1
                    outcome = "error" if call == "poll" and rng.random() < 0.05 else "ok"
                    attempts.append((attempt_id, key, 1, call, at, seconds, outcome,
                                     "500" if outcome == "error" else None, 500 if outcome == "error" else None))
                if state == "downloaded":
                    name = f"assets/{key}-0.{'mp4' if kind == 'video' else 'png'}"
                    if ord_ < HTML_ROWS and kind == "image":
                        _png(folder / name)
                    assets.append((key, 0, kind, name, "0" * 64, 24_000, 64, 64, "mp4" if kind == "video" else "png",
                                   f"i{ord_}", None, downloaded, "high" if kind == "video" else None, None))
            db.executemany(f"INSERT INTO requests ({', '.join(columns)}) VALUES "
                           f"({', '.join('?' * len(columns))})", requests)
            db.executemany("INSERT INTO events (id, key, run_id, state, at, detail) VALUES (?, ?, ?, ?, ?, ?)", events)
            db.executemany("INSERT INTO attempts (id, key, run_id, kind, started_at, seconds, outcome, code, "
                           "http_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", attempts)
            db.executemany("INSERT INTO assets (key, idx, kind, path, sha256, size, width, height, format, item_id, "
                           "url_expires, downloaded_at, variant, fallback_reason) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", assets)
            db.commit()
    return time.perf_counter() - began


def measured(code: list[str], cwd: Path = ROOT) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of ``code`` run as a child of a fresh process (in ``cwd``: `-m` imports from
    there first)."""
    measure = ("import json, resource, subprocess, time; t = time.perf_counter();"
               f"subprocess.run({code!r}, check=True, stdout=subprocess.DEVNULL);"
               "print(json.dumps([time.perf_counter() - t, "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))")
    out = subprocess.run([sys.executable, "-c", measure], check=True, capture_output=True, text=True,
                         cwd=cwd).stdout
    seconds, peak = json.loads(out.strip().splitlines()[-1])
    return float(seconds), float(peak)


def bench(folder: Path, count: int, before: Path | None = None) -> None:
    made = generate(folder, count)
    size = (folder / "ledger.sqlite").stat().st_size / 2**20
    earlier = None
    if before is not None:
        earlier = measured(["env", f"PYTHONPATH={before}", sys.executable, "-m", "jimeng_batch", "report",
                            str(folder), "--no-summary"], cwd=before)
        shutil.rmtree(folder / "report_files", ignore_errors=True)
    report = measured([sys.executable, "-m", "jimeng_batch", "report", str(folder), "--no-summary"])
    imports = measured([sys.executable, "-c", "import pyarrow.parquet, matplotlib.figure, jinja2, PIL.Image; "
                        "import jimeng_batch.outputs.report"])
    with_pandas = measured([sys.executable, "-c", "import pandas, pyarrow.parquet, matplotlib.figure, jinja2, "
                            "PIL.Image; import jimeng_batch.outputs.report"])
    read_sql = measured([sys.executable, "-c", "import sqlite3, sys, pandas; "
                         "db = sqlite3.connect(sys.argv[1]); "
                         "frame = pandas.read_sql_query('SELECT * FROM requests', db); print(len(frame))",
                         str(folder / "ledger.sqlite")])
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["totalRequests"] == count
    print(f"{count:,} requests (ledger {size:.0f} MiB, generated in {made:.0f} s):")
    print(f"  report:   {report[0]:6.1f} s, peak RSS {report[1]:5.0f} MiB")
    print(f"  imports:  {imports[0]:6.1f} s, peak RSS {imports[1]:5.0f} MiB   "
          f"(report / imports: {report[1] / imports[1]:.2f}x RSS)")
    print(f"  + pandas: {with_pandas[0]:6.1f} s, peak RSS {with_pandas[1]:5.0f} MiB   "
          f"(the same imports and pandas, which the report no longer loads)")
    print(f"  read_sql: {read_sql[0]:6.1f} s, peak RSS {read_sql[1]:5.0f} MiB   "
          f"(report / read_sql: {report[1] / read_sql[1]:.2f}x RSS, {report[0] / read_sql[0]:.1f}x time)")
    if earlier is not None:
        print(f"  before:   {earlier[0]:6.1f} s, peak RSS {earlier[1]:5.0f} MiB   "
              f"(report / before: {report[1] / earlier[1]:.2f}x RSS, {report[0] / earlier[0]:.2f}x time)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--keep", type=Path, help="build the ledgers under this folder and keep them")
    parser.add_argument("--before", type=Path, help="a source tree of an earlier version whose report to run too")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for count in args.requests:
        if args.keep:
            bench(args.keep / f"report-{count}", count, args.before)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                bench(Path(tmp) / "out", count, args.before)


if __name__ == "__main__":
    main()
