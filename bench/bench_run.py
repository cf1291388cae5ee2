"""Benchmarks of `jimeng-batch run` against the simulator (served by its own process, so it costs the client nothing).

    python bench/bench_run.py throughput [--requests 5000] [--concurrency 50] [--submit-latency 0.05] [--generation 0.2]
    python bench/bench_run.py cpu [--requests 1000] [--concurrency 20]
    python bench/bench_run.py rss [--requests 100000] [--concurrency 100]

throughput: requests finished per second, as a fraction of the bound that concurrency and latency allow
  (concurrency / (submit latency + generation time)); measured from the ledger's events, first submit to last
  finished generation.
cpu: the client's CPU time per request (submit, poll, download, with the ledger) against a bare httpx loop making
  the same calls at the same concurrency, in the same process, one after the other; the ratio of the two.
rss: the peak resident memory of a whole `jimeng-batch run` process with that many requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKEN = "bench0123456789abcdef0123456789ab"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}, "
            f"Python {platform.python_version()}")


@contextmanager
def simulator(folder: Path, config: dict[str, object]) -> Iterator[str]:
    """`jimeng-batch sim serve` in its own process; yields its base URL."""
    path = folder / "sim.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen([sys.executable, "-m", "jimeng_batch", "sim", "serve", "--config", str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
                               preexec_fn=lambda: _pin(SIM_CPU))
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait()
        if process.stdout:
            process.stdout.close()


def write_rows(folder: Path, count: int) -> Path:
    path = folder / "rows.csv"
    with path.open("w") as handle:
        handle.write("prompt,resolution,model\n")
        for i in range(count):
            handle.write(f"bench picture {i},1k,jimeng-4.0\n")
    return path


# On a machine with two or more cores the simulator gets the first and the client the others, so that the two do
# not take turns on one core (which shows up as latency in the client's event loop).
SIM_CPU = 0


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


def _client_cpus() -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)) - {SIM_CPU})


def sim_config(submit: float = 0.0, generation: float = 0.0) -> dict[str, object]:
    return {"images_per_request": 1, "max_in_flight": None, "default_credits": 10_000_000,
            "latency": {"submit": submit, "generation": generation}}


def throughput(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = write_rows(folder, args.requests)
        (folder / "tokens").write_text(TOKEN)
        with simulator(folder, sim_config(args.submit_latency, args.generation)) as url:
            command = [sys.executable, "-m", "jimeng_batch", "run", str(rows), "--out", str(folder / "out"),
                       "--base-url", url, "--token-file", str(folder / "tokens"), "--concurrency",
                       str(args.concurrency), "--poll-interval", str(args.poll_interval), "--quiet", "--preflight",
                       "off", "--no-cache"]
            started = time.perf_counter()
            subprocess.run(command, check=True, cwd=ROOT, preexec_fn=_client_cpus)
            wall = time.perf_counter() - started
        db = sqlite3.connect(folder / "out" / "ledger.sqlite")
        first = db.execute("SELECT MIN(at) FROM events WHERE state = 'submitting'").fetchone()[0]
        last = db.execute("SELECT MAX(at) FROM events WHERE state = 'succeeded'").fetchone()[0]
        done = db.execute("SELECT COUNT(*) FROM requests WHERE state = 'downloaded'").fetchone()[0]
        db.close()
    span = last - first
    rate = done / span
    bound = args.concurrency / (args.submit_latency + args.generation)
    print(f"machine: {machine()}")
    print(f"requests {args.requests}, concurrency {args.concurrency}, submit latency {args.submit_latency} s, "
          f"generation {args.generation} s, first poll after {args.poll_interval} s, no rate limit")
    print(f"downloaded {done}; first submit to last finished generation {span:.1f} s; whole command {wall:.1f} s")
    print(f"throughput {rate:.1f} requests/s; bound {bound:.1f}/s; fraction of bound {rate / bound:.1%}")


async def bare_loop(url: str, count: int, concurrency: int) -> None:
    """The same calls with httpx and nothing else: submit, poll until done, download each item."""
    import httpx

    from jimeng_batch.protocol import catalog
    from jimeng_batch.protocol.client import JimengClient
    from jimeng_batch.protocol.drafts import build_request
    from jimeng_batch.protocol.tokens import Token

    region, versions = catalog.REGIONS["cn"], catalog.PROTOCOL_PROFILES["live"]
    helper = JimengClient(region=region, versions=versions, web_id="7000000000000000000")
    token = Token(TOKEN)
    semaphore = asyncio.Semaphore(concurrency)
    specs = [item for item in _bare_specs(count)]
    async with httpx.AsyncClient(timeout=60) as http:
        async def one(spec: object) -> None:
            request = build_request(spec, region, versions, web_id="7000000000000000000")  # type: ignore[arg-type]
            async with semaphore:
                answer = await http.post(url + request.path, params=request.query, json=request.body,
                                         headers=helper.headers(request.path, token))
                history = answer.json()["data"]["aigc_data"]["history_record_id"]
                while True:
                    polled = await http.post(url + "/mweb/v1/get_history_by_ids", params=request.query,
                                             json={"history_ids": [history]},
                                             headers=helper.headers("/mweb/v1/get_history_by_ids", token))
                    record = polled.json()["data"][history]
                    if record["status"] == 50:
                        break
                for item in record["item_list"]:
                    got = await http.get(item["image"]["large_images"][0]["image_url"])
                    assert got.status_code == 200

        await asyncio.gather(*(one(spec) for spec in specs))
    await helper.close()


def _bare_specs(count: int) -> Iterator[object]:
    from jimeng_batch.intake.manifest import SpreadsheetOptions, load_manifest
    from jimeng_batch.intake.plan import iter_distinct

    folder = Path(tempfile.mkdtemp())
    manifest = load_manifest(write_rows(folder, count), SpreadsheetOptions())
    yield from iter_distinct(manifest)


def cpu(args: argparse.Namespace) -> None:
    import jimeng_batch as jb
    from jimeng_batch.engine.result import exit_code

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = write_rows(folder, args.requests)
        (folder / "tokens").write_text(TOKEN)
        with simulator(folder, sim_config()) as url:
            started = time.process_time()
            asyncio.run(bare_loop(url, args.requests, args.concurrency))
            bare = time.process_time() - started
            started = time.process_time()
            result = jb.run(rows, out=folder / "out", base_url=url, token_file=folder / "tokens", quiet=True,
                            preflight="off", use_cache=False, report=False, concurrency=args.concurrency,
                            poll_interval=0.001)
            ours = time.process_time() - started
        assert exit_code(result) == 0, result
    print(f"machine: {machine()}")
    print(f"requests {args.requests} (1 image each), concurrency {args.concurrency}, zero latency")
    print(f"bare httpx loop: {bare / args.requests * 1000:.2f} ms CPU per request (submit, poll, download)")
    print(f"jimeng-batch run: {ours / args.requests * 1000:.2f} ms CPU per request (the same, plus planning, "
          f"ledger, checks; the end-of-run report is left out, as the bare loop writes none)")
    print(f"ratio: {ours / bare:.2f}x")


def rss(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = write_rows(folder, args.requests)
        (folder / "tokens").write_text(TOKEN)
        with simulator(folder, sim_config()) as url:
            command = [sys.executable, "-m", "jimeng_batch", "run", str(rows), "--out", str(folder / "out"),
                       "--base-url", url, "--token-file", str(folder / "tokens"), "--concurrency",
                       str(args.concurrency), "--poll-interval", "0.001", "--quiet", "--preflight", "off",
                       "--no-cache", "--no-report"]
            measure = ("import resource, subprocess, sys, time; t = time.perf_counter();"
                       f"subprocess.run({command!r}, check=True);"
                       "print(json.dumps([time.perf_counter() - t, "
                       "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))")
            out = subprocess.run([sys.executable, "-c", "import json;" + measure], check=True, capture_output=True,
                                 text=True, cwd=ROOT).stdout
            seconds, peak = json.loads(out.strip().splitlines()[-1])
            # The report, which `run` writes at its end unless --no-report, as the separate step it also is.
            report = [sys.executable, "-m", "jimeng_batch", "report", str(folder / "out")]
            measure_report = measure.replace(repr(command), repr(report))
            out = subprocess.run([sys.executable, "-c", "import json;" + measure_report], check=True,
                                 capture_output=True, text=True, cwd=ROOT).stdout
            report_seconds, report_peak = json.loads(out.strip().splitlines()[-1])
            # The yardsticks: interpreters that only import what each command imports, measured the same way.
            baselines = []
            for modules in ("jimeng_batch.cli, jimeng_batch.engine.runner",
                            "jimeng_batch.cli, jimeng_batch.outputs.report, jinja2, PIL.Image, matplotlib.figure, "
                            "matplotlib.backends.backend_agg"):
                imports = [sys.executable, "-c", f"import {modules}"]
                out = subprocess.run([sys.executable, "-c", "import json;" + measure.replace(repr(command),
                                                                                         repr(imports))],
                                     check=True, capture_output=True, text=True, cwd=ROOT).stdout
                baselines.append(json.loads(out.strip().splitlines()[-1])[1])
        db = sqlite3.connect(folder / "out" / "ledger.sqlite")
        done = db.execute("SELECT COUNT(*) FROM requests WHERE state = 'downloaded'").fetchone()[0]
        db.close()
    print(f"machine: {machine()}")
    print(f"requests {args.requests}, concurrency {args.concurrency}, zero latency: {done} downloaded in "
          f"{seconds:.0f} s")
    run_base, report_base = baselines
    print(f"peak RSS of the run process (--no-report): {peak:.0f} MiB; yardstick, an interpreter importing the "
          f"same modules: {run_base:.0f} MiB; ratio {peak / run_base:.2f}x")
    print(f"`jimeng-batch report` of that folder: {report_seconds:.0f} s, peak RSS {report_peak:.0f} MiB; "
          f"yardstick, an interpreter importing the same modules: {report_base:.0f} MiB; "
          f"ratio {report_peak / report_base:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("throughput")
    one.add_argument("--requests", type=int, default=5000)
    one.add_argument("--concurrency", type=int, default=50)
    one.add_argument("--submit-latency", type=float, default=0.05)
    one.add_argument("--generation", type=float, default=0.2)
    one.add_argument("--poll-interval", type=float, default=0.2)
    two = commands.add_parser("cpu")
    two.add_argument("--requests", type=int, default=1000)
    two.add_argument("--concurrency", type=int, default=20)
    three = commands.add_parser("rss")
    three.add_argument("--requests", type=int, default=100_000)
    three.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    {"throughput": throughput, "cpu": cpu, "rss": rss}[args.command](args)


if __name__ == "__main__":
    main()
