"""How busy polling keeps each slot: the run's time against the bound, today's policy beside the earlier one.

    python bench/bench_polling.py [--images 24] [--videos 6] [--concurrency 3] [--polls-per-second R]

Two latency profiles on the simulator (served in this process, so that the true time of every job can be read):
images (submit 0.3 s, queue 0-4 s, generation 8-16 s) and video (submit 0.3 s, queue 0-30 s, generation 60-120 s).
Each is run by `jimeng-batch run` twice, at the same time, against two simulators with the same seed (so the same
true times): with the polls timed to completion at the default poll budget, and with the earlier policy (2 s, then
backing off by 1.5x to 5 s for images, 5 s to 15 s for video, no budget, no ids riding along).

The bound is jobs x mean true service time / slots, where a job's true service time is the simulator's own: its
submit latency plus its queue and generation time. The fraction of the bound is the bound over the run's span
(first submit to the last job seen finished, from the ledger's events). Beside it, the ideal span: the same true
times taken in plan order by the first free slot, every end seen at once (what no polling can beat: the bound
also assumes the slots end together). Poll calls are the simulator's count of
`get_history_by_ids` calls, per job and per 2 s per token. Real time, not virtual: the whole benchmark takes about
the longest run (about 4 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_run import TOKEN, machine  # noqa: E402

from jimeng_batch.sim import config_from_mapping  # noqa: E402
from jimeng_batch.sim.server import SimServer, running_simulator  # noqa: E402

SUBMIT = 0.3
PROFILES = {
    "images": {"queue": {"uniform": [0, 4]}, "generation": {"uniform": [8, 16]}},
    "video": {"queue": {"uniform": [0, 30]}, "video_generation": {"uniform": [60, 120]}},
}
# The earlier policy, for the yardstick: the back-off alone from 2 s (images), no expected end, no budget, no riders.
EARLIER = (
    "import sys; import jimeng_batch.engine.executor as e; from jimeng_batch.engine import poll_schedule as s; "
    "e.next_interval = lambda sight: min(s.POLL_MAX[sight.kind], sight.last_interval * s.POLL_GROWTH); "
    "e.RunConfig.poll_budget = lambda self: None; e.RunConfig.timed_polls = False; s.POLL_FIRST['image'] = 2.0; "
    "from jimeng_batch.cli import main; main(sys.argv[1:])"
)


def manifest(folder: Path, profile: str, count: int) -> Path:
    path = folder / f"{profile}.yaml"
    numbers = ", ".join(str(n) for n in range(1, count + 1))
    if profile == "images":
        job = f"{{type: image, resolution: 1k, prompt: 'bench picture {{n}}', vars: {{n: [{numbers}]}}}}"
    else:
        job = (f"{{type: video, model: jimeng-video-3.0, prompt: 'bench clip {{n}}', "
               f"vars: {{n: [{numbers}]}}}}")
    path.write_text(f"jobs:\n  - {job}\n")
    return path


@dataclass
class Run:
    profile: str
    policy: str
    jobs: int
    span: float
    bound: float
    polls: int
    ideal: float  # the span with every end seen at once: the true times, admitted FIFO into the slots
    tokens: int = 1

    @property
    def fraction(self) -> float:
        return self.bound / self.span

    @property
    def calls_per_2s(self) -> float:
        return self.polls / self.tokens / (self.span / 2)


def _start(stack: ExitStack, profile: str) -> SimServer:
    config = config_from_mapping({"images_per_request": 1, "max_in_flight": None, "default_credits": 10_000_000,
                                  "seed": 15, "latency": {"submit": SUBMIT, **PROFILES[profile]}})
    return stack.enter_context(running_simulator(config))


def _command(policy: str, path: Path, out: Path, url: str, tokens: Path, concurrency: int,
             budget: float | None) -> list[str]:
    head = [sys.executable, "-m", "jimeng_batch"] if policy == "timed" else [sys.executable, "-c", EARLIER]
    extra = ["--polls-per-second", str(budget)] if policy == "timed" and budget is not None else []
    return [*head, "run", str(path), "--out", str(out), "--base-url", url, "--token-file", str(tokens),
            "--concurrency", str(concurrency), "--quiet", "--preflight", "off", "--no-cache", "--no-report",
            "--account-catalog", "off", *extra]


def _span(out: Path) -> float:
    db = sqlite3.connect(out / "ledger.sqlite")
    try:
        first = db.execute("SELECT MIN(at) FROM events WHERE state = 'submitting'").fetchone()[0]
        last = db.execute("SELECT MAX(at) FROM events WHERE state = 'succeeded'").fetchone()[0]
    finally:
        db.close()
    return float(last - first)


def fifo_span(times: list[float], slots: int) -> float:
    """The span of jobs of these service times taken in order by the first free slot, each end seen at once."""
    free = [0.0] * slots
    for seconds in times:
        slot = free.index(min(free))
        free[slot] += seconds
    return max(free)


def runs(args: argparse.Namespace) -> Iterator[Run]:
    counts = {name: count for name, count in (("images", args.images), ("video", args.videos)) if count}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        tokens = folder / "tokens"
        tokens.write_text(TOKEN)
        started = []
        for profile, count in counts.items():
            path = manifest(folder, profile, count)
            for policy in ("timed", "earlier"):
                server = _start(stack, profile)
                out = folder / f"{profile}-{policy}"
                process = subprocess.Popen(_command(policy, path, out, server.base_url, tokens, args.concurrency,
                                                    args.polls_per_second),
                                           cwd=ROOT)
                started.append((profile, policy, count, server, out, process))
        for profile, policy, count, server, out, process in started:
            if process.wait() != 0:
                raise SystemExit(f"{profile}/{policy}: the run ended with {process.returncode}")
            records = sorted(server.state._records.values(), key=lambda r: r.submitted_at)  # plan order
            times = [SUBMIT + r.queue_s + r.generation_s for r in records]  # the simulator's own true times
            yield Run(profile, policy, count, _span(out), count * statistics.fmean(times) / args.concurrency,
                      server.stats()["polls"], fifo_span(times, args.concurrency))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--polls-per-second", type=float, default=None,
                        help="the timed run's poll budget per token (default: the run's default)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"concurrency {args.concurrency}, one token; submit {SUBMIT} s; images: queue 0-4 s, generation 8-16 s; "
          "video: queue 0-30 s, generation 60-120 s")
    print(f"{'profile':8} {'policy':8} {'jobs':>4} {'span s':>7} {'bound s':>7} {'of bound':>8} {'polls':>5} "
          f"{'polls/job':>9} {'calls/2s/token':>14} {'ideal s':>7} {'of ideal':>8}")
    for run in runs(args):
        print(f"{run.profile:8} {run.policy:8} {run.jobs:4d} {run.span:7.1f} {run.bound:7.1f} {run.fraction:8.1%} "
              f"{run.polls:5d} {run.polls / run.jobs:9.1f} {run.calls_per_2s:14.2f} "
              f"{run.ideal:7.1f} {run.ideal / run.span:8.1%}")


if __name__ == "__main__":
    main()
