"""Benchmark: validating and planning a large CSV manifest, beside `pandas.read_csv` of the same file.

Run: python bench/bench_plan.py [--rows 10000 100000]

For each size it writes a CSV of distinct prompts, then runs `jimeng-batch plan FILE` (every row checked and expanded,
its key and credits worked out; the summary printed) and `jimeng-batch plan FILE --format jsonl --out ...` (the
same, and every request's draft envelope written, about 2.5 KB a row) in child processes, and reports rows per
second and each child's peak RSS. The yardsticks, measured in the same run:
`pandas.read_csv` of the same file in a child of its own (interpreter start and pandas' import included, like the
plan's own start), and `read_csv` timed in-process (the read alone). `run`'s own planning (the same checks and
expansion, the requests written into a new ledger instead of a file; `run --sim --budget 0`, which plans and sends
nothing, spends much of its time on other things) is timed by itself: the runner's two passes, the checks and then
the requests written into a new ledger, in a child process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_run import machine

MODELS = ("jimeng-4.0", "jimeng-4.5", "jimeng-3.0")
RATIOS = ("1:1", "16:9", "3:4", "4:3")


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write("prompt,model,ratio,resolution\n")
        for i in range(rows):
            handle.write(f"photo number {i} of a lighthouse,{MODELS[i % 3]},{RATIOS[i % 4]},2k\n")


def measure(args: list[str], check: bool = True) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of `python ARGS`, run as the only child of a fresh interpreter."""
    code = (
        "import resource, subprocess, sys, time;"
        "t = time.perf_counter();"
        f"subprocess.run({[sys.executable, *args]!r}, check={check}, stdout=subprocess.DEVNULL);"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    seconds, rss = out.split()
    return float(seconds), float(rss)


def read_csv_in_process(path: Path) -> float:
    """Seconds `pandas.read_csv` takes in a process that has imported pandas already (the best of three)."""
    code = ("import sys, time, pandas\n"
            "def once():\n    t = time.perf_counter(); pandas.read_csv(sys.argv[1]); return time.perf_counter() - t\n"
            "print(min(once() for _ in range(3)))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True).stdout
    return float(out)


# What `run` does to plan into a new folder (engine/runner.py's _prepare, without the run around it).
RUN_PLANNING = """
import sys
from pathlib import Path
from jimeng_batch.engine.ledger import Ledger
from jimeng_batch.engine.runner import _new_requests
from jimeng_batch.intake.manifest import load_manifest
from jimeng_batch.intake.plan import summarize
manifest = load_manifest(Path(sys.argv[1]))
assert not summarize(manifest, counting=False).problems
with Ledger.in_folder(Path(sys.argv[2])) as ledger:
    ledger.begin_run(manifest.display, "", "bench", {})
    with ledger.planning():
        rows = ledger.plan_rows(write=True)
        ledger.add_planned(_new_requests(manifest, None, rows, ledger), distinct=True)
        rows.commit()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    options = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"{'rows':>9} {'summary s':>10} {'rows/s':>8} {'MiB':>5} {'x child':>8} {'plan s':>7} {'rows/s':>8} "
          f"{'plan MiB':>9} {'read_csv s':>11} {'in-proc s':>10} "
          f"{'read_csv MiB':>13} {'x child':>8} {'x in-proc':>10} {'RSS ratio':>10} {'run plan s':>11} "
          f"{'run rows/s':>11} {'run MiB':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for rows in options.rows:
            csv_path = Path(folder) / f"rows{rows}.csv"
            write_csv(csv_path, rows)
            summary_s, summary_rss = measure(["-m", "jimeng_batch", "plan", str(csv_path)])
            seconds, rss = measure(["-m", "jimeng_batch", "plan", str(csv_path), "--format", "jsonl",
                                    "--out", str(Path(folder) / "plan.jsonl")])
            (Path(folder) / "plan.jsonl").unlink()
            pandas_s, pandas_rss = measure(["-c", f"import pandas; pandas.read_csv({str(csv_path)!r})"])
            in_process = read_csv_in_process(csv_path)
            run_s, run_rss = measure(["-c", RUN_PLANNING, str(csv_path), str(Path(folder) / f"run{rows}")])
            print(f"{rows:>9} {summary_s:>10.1f} {rows / summary_s:>8.0f} {summary_rss:>5.0f} "
                  f"{summary_s / pandas_s:>7.1f}x {seconds:>7.1f} {rows / seconds:>8.0f} {rss:>9.0f} "
                  f"{pandas_s:>11.2f} {in_process:>10.3f} "
                  f"{pandas_rss:>13.0f} {seconds / pandas_s:>7.1f}x {seconds / in_process:>9.0f}x "
                  f"{rss / pandas_rss:>9.2f}x {run_s:>11.1f} {rows / run_s:>11.0f} {run_rss:>8.0f}")


if __name__ == "__main__":
    main()
