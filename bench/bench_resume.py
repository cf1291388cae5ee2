"""Benchmark: resuming a 100,000-request ledger that is 99% done, in seconds until the first new submit.

    python bench/bench_resume.py [--requests 100000] [--done 0.99]

Setup (not timed): a CSV manifest of that many rows is run once with `--budget 0`, which plans every request into
the ledger and sends nothing; then 99% of the requests are marked downloaded, each with an asset file on disk, as a
nearly finished run leaves them. Timed: `jimeng-batch resume OUT` against the simulator (its own process), from the
moment the command starts to the first `submitting` event the ledger records.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from bench_run import TOKEN, machine, sim_config, simulator, write_rows  # noqa: E402


def mark_done(out: Path, fraction: float) -> int:
    """Mark the first `fraction` of the requests downloaded, with one small asset file each."""
    db = sqlite3.connect(out / "ledger.sqlite")
    keys = [row[0] for row in db.execute("SELECT key FROM requests ORDER BY ord")]
    done = keys[: int(len(keys) * fraction)]
    assets = out / "assets"
    assets.mkdir(exist_ok=True)
    now = time.time()
    for key in done:
        (assets / f"{key}-0.png").write_bytes(b"x")
    db.execute("BEGIN")
    db.executemany("UPDATE requests SET state = 'downloaded', reason = NULL WHERE key = ?", ((k,) for k in done))
    db.executemany("INSERT INTO assets (key, idx, kind, path, sha256, size, downloaded_at) VALUES "
                   "(?, 0, 'image', ?, 'x', 1, ?)", ((k, f"assets/{k}-0.png", now) for k in done))
    db.execute("COMMIT")
    db.close()
    return len(done)


def first_submit(out: Path) -> float | None:
    try:
        db = sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT MIN(at) FROM events WHERE state = 'submitting' AND run_id = "
                             "(SELECT MAX(id) FROM runs)").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return row[0] if row and row[0] is not None else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--done", type=float, default=0.99)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = write_rows(folder, args.requests)
        tokens = folder / "tokens"
        tokens.write_text(TOKEN)
        out = folder / "out"
        with simulator(folder, sim_config()) as url:
            base = [sys.executable, "-m", "jimeng_batch"]
            options = ["--base-url", url, "--token-file", str(tokens), "--quiet", "--preflight", "off",
                       "--no-cache", "--poll-interval", "0.05"]
            resume_options = [*options, "--budget", "1000000000"]  # the setup run recorded a budget of 0
            setup = time.perf_counter()
            subprocess.run([*base, "run", str(rows), "--out", str(out), "--budget", "0", *options],
                           check=False, capture_output=True, cwd=ROOT.parent)
            marked = mark_done(out, args.done)
            setup = time.perf_counter() - setup
            started = time.time()
            process = subprocess.Popen([*base, "resume", str(out), *resume_options], cwd=ROOT.parent,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            first = None
            while first is None and process.poll() is None:
                time.sleep(0.02)  # a benchmark, not a test: watching the ledger for the first submit
                first = first_submit(out)
            process.wait()
            first = first or first_submit(out)
    print(f"machine: {machine()}")
    print(f"ledger of {args.requests} requests, {marked} already downloaded (setup {setup:.0f} s)")
    if first is None:
        print("no submit was recorded")
        return
    print(f"seconds from `jimeng-batch resume` to the first new submit: {first - started:.2f}")


if __name__ == "__main__":
    main()
