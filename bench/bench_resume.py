"""Benchmark: resuming a 100,000-request ledger that is 99% done, in seconds until the first new submit.

    python bench/bench_resume.py [--requests 100000] [--done 0.99]

Setup (not timed): a CSV manifest of that many rows is run once with `--budget 0`, which plans every request into
the ledger and sends nothing; then 99% of the requests are marked downloaded, each with an asset file on disk, as a
nearly finished run leaves them, and the folder is copied twice (its asset files as hard links). Timed:
`jimeng-batch resume OUT` against the simulator (its own process), from the moment the command starts to the first
`submitting` event the ledger records, in three cases:

- the manifest unchanged (nothing is planned again);
- one row of the spreadsheet edited (its prompt), the ledger's memo of rows in place: only that row is planned;
- the same edit with the memo emptied (`DELETE FROM plan_rows`): every row is planned again, as before rows were
  remembered. This is the yardstick.
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def edit_row(rows: Path, number: int) -> None:
    """Change the prompt of data row ``number`` (1 is the first row below the header)."""
    lines = rows.read_text().splitlines(keepends=True)
    prompt, rest = lines[number].split(",", 1)
    lines[number] = f"{prompt} at dusk,{rest}"
    rows.write_text("".join(lines))


def _copy(source: str, target: str) -> None:
    """A copy of the ledger; a hard link to each asset file (99,000 of them, never written again)."""
    if Path(source).parent.name == "assets":
        os.link(source, target)
    else:
        shutil.copy2(source, target)


def to_first_submit(command: list[str], out: Path) -> float | None:
    """Seconds from starting ``command`` to the first submit it records in ``out``'s ledger (then it is stopped)."""
    started = time.time()
    process = subprocess.Popen(command, cwd=ROOT.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = None
    while first is None and process.poll() is None:
        time.sleep(0.02)  # a benchmark, not a test: watching the ledger for the first submit
        first = first_submit(out)
    first = first or first_submit(out)
    if process.poll() is None:
        process.terminate()  # what is left to do is not what is measured
    process.wait()
    return None if first is None else first - started


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
            edited, full = folder / "edited", folder / "full"
            for copy in (edited, full):
                shutil.copytree(out, copy, copy_function=_copy)
            db = sqlite3.connect(full / "ledger.sqlite")
            db.execute("DELETE FROM plan_rows")
            db.commit()
            db.close()
            setup = time.perf_counter() - setup
            unchanged = to_first_submit([*base, "resume", str(out), *resume_options], out)
            edit_row(rows, args.requests // 2)
            one_row = to_first_submit([*base, "resume", str(edited), *resume_options], edited)
            replanned = to_first_submit([*base, "resume", str(full), *resume_options], full)
    print(f"machine: {machine()}")
    print(f"ledger of {args.requests} requests, {marked} already downloaded (setup {setup:.0f} s)")
    if None in (unchanged, one_row, replanned):
        print(f"a submit was not recorded: {unchanged}, {one_row}, {replanned}")
        return
    assert unchanged is not None and one_row is not None and replanned is not None
    print("seconds from `jimeng-batch resume` to the first new submit:")
    print(f"  manifest unchanged:                      {unchanged:6.2f}")
    print(f"  one row edited (rows recalled):          {one_row:6.2f}  ({one_row / unchanged:.1f}x unchanged)")
    print(f"  one row edited, every row planned again: {replanned:6.2f}  ({one_row / replanned:.2f}x of this)")


if __name__ == "__main__":
    main()
