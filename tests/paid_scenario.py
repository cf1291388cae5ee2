"""The reliability scenario of paid work: everything that has cost users money or results, in one run.

A manifest of 24 requests runs against the simulator served as its own process (``jimeng-batch sim serve``), with
faults (busy answers, HTTP errors, dropped connections, lost submit answers, records shown late), and is killed with
SIGKILL at random moments ``kills`` times. Along the way the manifest is shrunk to 16 requests, the token pool is
changed (the first account leaves it for a while, then both are there), and the asset host answers every download
with 503 for ``outage_s`` seconds. A final resume with both tokens, then ``run --verify``.

Used by ``tests/test_reliability_paid.py`` (the assertions) and ``bench/bench_reliability.py`` (the figures in
BENCHMARKS.md).
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from reliability_helpers import cli, cli_env, count, query, wait_for_events, wait_process

TOKEN_A = "acctA" + "a" * 27
TOKEN_B = "acctB" + "b" * 27
VALUES = list(range(1, 25))
KEPT = [n for n in VALUES if n % 3]  # the 16 the shrunk manifest keeps
MANIFEST = """jobs:
  - name: many
    type: image
    resolution: 1k
    prompt: "picture {n}"
    vars:
      n: %s
"""
SIM_CONFIG = """seed: %d
images_per_request: 2
max_in_flight: null
latency: {submit: {uniform: [0, 0.03]}, generation: {uniform: [0.1, 0.4]}}
faults:
  busy_probability: 0.05
  http_error_probability: 0.05
  http_error_statuses: [500, 503, 404]
  drop_probability: 0.03
  lost_response_probability: 0.05
  not_found_after_submit_s: 0.2
"""


@dataclass
class Figures:
    """What happened, for assertions and for BENCHMARKS.md."""

    seconds: float = 0.0
    attempts: int = 0
    kills: int = 0
    in_flight_kills: int = 0  # kills that left requests submitting, submitted or running
    ended_by_themselves: list[int] = field(default_factory=list)  # exit codes of attempts that were not killed
    sent_before_shrink: set[str] = field(default_factory=set)  # keys sent (or maybe sent) when the manifest shrank
    outage_attempts: int = 0
    final_code: int = -1
    final_stderr: str = ""
    verify_code: int = -1
    verify_stderr: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    requests: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (state, submit_id)
    final_keys: set[str] = field(default_factory=set)


class Simulator:
    """``jimeng-batch sim serve`` in its own process."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(cli("sim", "serve", "--config", str(config), "--port", "0"), env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        self.base_url = self.process.stdout.readline().strip()
        assert self.base_url.startswith("http://"), self.base_url
        self.http = httpx.Client(base_url=self.base_url, timeout=10)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.http.get("/_sim/stats").json()
        return result

    def faults(self, **changes: Any) -> None:
        self.http.post("/_sim/faults", json=changes).raise_for_status()

    def close(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.communicate(timeout=10)


def run_scenario(folder: Path, *, kills: int = 10, outage_s: float = 30.0, seed: int = 11) -> Figures:
    figures = Figures()
    started = time.monotonic()
    manifest = folder / "m.yaml"
    manifest.write_text(MANIFEST % json.dumps(VALUES))
    config = folder / "sim.yaml"
    config.write_text(SIM_CONFIG % seed)
    out = folder / "out"
    ledger = out / "ledger.sqlite"
    chooser = random.Random(seed)
    sim = Simulator(config, cli_env())
    try:
        common = ["--base-url", sim.base_url, "--poll-interval", "0.02", "--concurrency", "3", "--max-retries", "10",
                  "--quiet", "--preflight", "off", "--no-cache", "--no-report"]
        pool = TOKEN_A
        shrunk = False
        outage, outage_end = "pending", 0.0
        while figures.kills < kills or outage == "on":
            figures.attempts += 1
            assert figures.attempts <= 6 * kills + 200, "the scenario does not get anywhere"
            # The twists, each once, between kills.
            if figures.kills == 3 and not shrunk:
                figures.sent_before_shrink = {key for (key,) in query(
                    ledger, "SELECT key FROM requests WHERE state NOT IN ('planned', 'skipped')")}
                manifest.write_text(MANIFEST % json.dumps(KEPT))
                shrunk = True
            if figures.kills == 5:
                pool = TOKEN_B  # the first account leaves the pool; its work waits for it
            if figures.kills == 6 and outage == "pending":
                sim.faults(asset_error_probability=1.0, asset_error_statuses=[503])
                outage, outage_end = "on", time.monotonic() + outage_s
            if figures.kills == 8:
                pool = f"{TOKEN_A},{TOKEN_B}"
            if outage == "on" and time.monotonic() >= outage_end:
                sim.faults(asset_error_probability=0.0)
                outage = "over"
                if figures.kills >= kills:
                    break
            figures.outage_attempts += outage == "on"
            resume = chooser.random() < 0.5 and count(ledger, "SELECT COUNT(*) FROM runs") > 0
            args = ["resume", str(out), *common] if resume else ["run", str(manifest), "--out", str(out), *common]
            before = count(ledger, "SELECT COUNT(*) FROM events")
            process = subprocess.Popen(cli(*args), env=cli_env(JIMENG_SESSIONID=pool), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True)
            if figures.kills >= kills:
                ended = wait_process(process, 120)  # the outage goes on: let runs end by themselves
            elif chooser.random() < 0.25:
                ended = wait_process(process, chooser.uniform(0.05, 0.8))
            else:
                ended = wait_for_events(process, ledger, before + chooser.randint(1, 4)) or \
                    wait_process(process, chooser.uniform(0.0, 0.15))
            if ended:
                process.communicate()
                figures.ended_by_themselves.append(process.returncode)
                continue
            process.kill()
            process.communicate()
            figures.kills += 1
            states = {state for (state,) in query(ledger, "SELECT DISTINCT state FROM requests")}
            figures.in_flight_kills += bool(states & {"submitting", "submitted", "running"})
        sim.faults(asset_error_probability=0.0)
        env = cli_env(JIMENG_SESSIONID=f"{TOKEN_A},{TOKEN_B}")
        final = subprocess.run(cli("resume", str(out), *common), env=env, capture_output=True, text=True,
                               timeout=180)
        figures.final_code, figures.final_stderr = final.returncode, final.stderr
        verify = subprocess.run(cli("run", str(manifest), "--out", str(out), *common, "--verify"), env=env,
                                capture_output=True, text=True, timeout=180)
        figures.verify_code, figures.verify_stderr = verify.returncode, verify.stderr
        figures.stats = sim.stats()
    finally:
        sim.close()
    figures.requests = {key: (state, submit_id) for key, state, submit_id in query(
        ledger, "SELECT key, state, submit_id FROM requests")}
    from jimeng_batch.intake.manifest import load_manifest
    from jimeng_batch.intake.plan import iter_distinct
    from jimeng_batch.protocol.request_spec import RequestSpec

    figures.final_keys = {item.key for item in iter_distinct(load_manifest(manifest)) if isinstance(item, RequestSpec)}
    figures.seconds = time.monotonic() - started
    return figures


