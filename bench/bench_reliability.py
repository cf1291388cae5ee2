"""The reliability scenario of paid work, run several times, with its figures (for BENCHMARKS.md).

    python bench/bench_reliability.py [--runs 3] [--kills 10] [--outage 30]

Each run: 24 requests against the simulator in its own process, with faults, killed with SIGKILL at random moments,
the manifest shrunk to 16 requests, the token pool changed, and the asset host answering 503 for the outage; then a
final resume and `run --verify` (see tests/paid_scenario.py, which tests/test_reliability_paid.py asserts on). There
is no yardstick to compare with: the figures are counts, and the ones that matter must be zero.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench_run import machine  # noqa: E402
from paid_scenario import run_scenario  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--outage", type=float, default=30.0)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print("| run | seed | seconds | attempts | kills (in flight) | ended by themselves | faults the simulator served "
          "| submit_ids charged | charged twice | charged after being dropped | downloaded | removed | failed | "
          "--verify |")
    print("|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|")
    for run in range(args.runs):
        seed = 11 + run
        with tempfile.TemporaryDirectory() as tmp:
            f = run_scenario(Path(tmp), kills=args.kills, outage_s=args.outage, seed=seed)
        charges = f.stats["charges_by_submit_id"]
        key_of = {submit_id: key for key, (_, submit_id) in f.requests.items()}
        dropped = ({key_of[s] for s in charges} - f.final_keys) - f.sent_before_shrink
        states = Counter(state for state, _ in f.requests.values())
        ended = ", ".join(f"exit {code} x{n}" for code, n in sorted(Counter(f.ended_by_themselves).items())) or "-"
        faults = ", ".join(f"{name} {n}" for name, n in sorted(f.stats["errors"].items()))
        verify = "ok" if f.verify_code == 0 and "every file matches" in f.verify_stderr else f"exit {f.verify_code}"
        print(f"| {run + 1} | {seed} | {f.seconds:.0f} | {f.attempts} | {f.kills} ({f.in_flight_kills}) | {ended} | "
              f"{faults} | {len(charges)} | {sum(1 for n in charges.values() if n > 1)} | {len(dropped)} | "
              f"{states['downloaded']} | {states['removed']} | {states['failed']} | {verify} |")


if __name__ == "__main__":
    main()
