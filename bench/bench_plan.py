"""Benchmark: validating and planning a large CSV manifest streams, so peak memory stays flat as the file grows.

Run: python bench/bench_plan.py [--rows 10000 100000]

For each size it writes a CSV of distinct prompts, then runs `jimeng-batch plan FILE --format jsonl --out ...` in a
child process and reports rows per second and the child's peak RSS. `pandas.read_csv` of the same file, in a child
of its own, is the yardstick for memory (a reader that holds the whole file).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_run import machine  # noqa: E402

MODELS = ("jimeng-4.0", "jimeng-4.5", "jimeng-3.0")
RATIOS = ("1:1", "16:9", "3:4", "4:3")


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write("prompt,model,ratio,resolution\n")
        for i in range(rows):
            handle.write(f"photo number {i} of a lighthouse,{MODELS[i % 3]},{RATIOS[i % 4]},2k\n")


def measure(args: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of `python ARGS`, run as the only child of a fresh interpreter."""
    code = (
        "import resource, subprocess, sys, time;"
        "t = time.perf_counter();"
        f"subprocess.run({[sys.executable, *args]!r}, check=True, stdout=subprocess.DEVNULL);"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    seconds, rss = out.split()
    return float(seconds), float(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    options = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"{'rows':>9} {'plan s':>8} {'rows/s':>9} {'plan MiB':>9} {'read_csv s':>11} {'read_csv MiB':>13} "
          f"{'time ratio':>11} {'RSS ratio':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for rows in options.rows:
            csv_path = Path(folder) / f"rows{rows}.csv"
            write_csv(csv_path, rows)
            seconds, rss = measure(["-m", "jimeng_batch", "plan", str(csv_path), "--format", "jsonl",
                                    "--out", str(Path(folder) / "plan.jsonl")])
            pandas_s, pandas_rss = measure(["-c", f"import pandas; pandas.read_csv({str(csv_path)!r})"])
            print(f"{rows:>9} {seconds:>8.1f} {rows / seconds:>9.0f} {rss:>9.0f} {pandas_s:>11.1f} {pandas_rss:>13.0f} "
                  f"{seconds / pandas_s:>10.1f}x {rss / pandas_rss:>9.2f}x")


if __name__ == "__main__":
    main()
