"""The Python API: a curated `__all__`, a light import, and every verb from a plain script and from inside a running
event loop (a notebook), Ctrl-C included."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from conftest import REPO
from run_helpers import IMAGES, TOKEN, simulator, write_manifest

import jimeng_batch as jb
from jimeng_batch.engine.states import State

FAST = {"poll_interval": 0.01, "quiet": True, "use_cache": False}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JIMENG_SESSIONID", "JIMENG_BASE_URL", "JIMENG_IMAGEX_URL"):
        monkeypatch.delenv(name, raising=False)


def test_all_is_sorted_and_is_exactly_the_public_names() -> None:
    # dir(): the names imported when first used are public too
    public = {name for name in dir(jb)
              if not name.startswith("_") and not isinstance(getattr(jb, name), types.ModuleType)} | {"__version__"}
    assert jb.__all__ == sorted(jb.__all__)
    assert set(jb.__all__) == public


def test_importing_the_package_loads_no_heavy_library() -> None:
    code = ("import sys, jimeng_batch; print(','.join(m for m in ('pandas', 'matplotlib', 'uvicorn', 'pyarrow') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_the_manifest_commands_load_neither_the_engine_nor_the_simulator() -> None:
    # `plan` and `validate` start in half the time without them (httpx, the executor, the simulator's server)
    code = ("import sys; from jimeng_batch.cli import main; sys.argv = ['jimeng-batch', 'plan', 'jobs/demo.yaml']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(','.join(m for m in ('httpx', 'jimeng_batch.engine.runner', 'jimeng_batch.sim', 'jimeng_batch.api') "
            "if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "Plan for" in done.stdout and done.stderr.strip() == ""
    assert jb.run is jb.api.run and jb.PlanSummary.__name__ == "PlanSummary"  # the lazy names resolve


def test_the_version_is_the_projects() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert jb.__version__ == project["version"]


def test_validate_returns_located_problems(tmp_path: Path) -> None:
    good = write_manifest(tmp_path, "jobs:\n  - {type: image, prompt: a}\n", "good.yaml")
    bad = write_manifest(tmp_path, "jobs:\n  - {type: image, prompt: a, model: nope}\n", "bad.yaml")
    assert jb.validate(good) == []
    (problem,) = jb.validate(bad)
    assert isinstance(problem, jb.Problem) and problem.location.line == 2 and "unknown model 'nope'" in str(problem)
    (missing,) = jb.validate(tmp_path / "missing.yaml")
    assert str(missing).endswith("missing.yaml: no such file")
    sheet = tmp_path / "rows.csv"
    sheet.write_text("prompt\na\n", encoding="utf-8")
    assert jb.validate(sheet, region="us", model="jimeng-4.0") == []


def test_plan_has_the_summary_and_every_request(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, "jobs:\n  - {type: image, prompt: [a, b, a], count: 2}\n")
    planned = jb.plan(path)
    assert (planned.summary.requests, planned.summary.distinct) == (6, 4)
    requests = list(planned.requests())
    assert len(requests) == 4 and len({r.key for r in requests}) == 4
    records = list(planned.records())
    assert [r["key"] for r in records] == [r.key for r in requests]
    assert records[0]["request"]["path"] == "/mweb/v1/aigc_draft/generate"
    halves = [jb.plan(path, shard=f"{k}/2").summary.distinct for k in (1, 2)]
    assert sum(halves) == 4
    with pytest.raises(jb.SchemaError, match="unknown model"):
        jb.plan(write_manifest(tmp_path, "jobs:\n  - {type: image, prompt: a, model: nope}\n", "bad.yaml"))


def test_run_results_and_metrics_from_a_script(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, IMAGES)
    result = jb.run(path, sim=True, out=tmp_path / "out", concurrency=2, **FAST)
    assert isinstance(result, jb.RunResult)
    assert result.counts == {State.DOWNLOADED: 5} and result.out_dir == tmp_path / "out"
    assert (tmp_path / "out" / "report.html").is_file()
    frame = jb.results(tmp_path / "out")
    assert len(frame) == 5 and set(frame["state"]) == {"downloaded"}
    numbers = jb.metrics(tmp_path / "out")
    assert (numbers["totalRequests"], numbers["successRequests"]) == (5, 5)
    with pytest.raises(jb.ConfigError, match="no ledger here"):
        jb.results(tmp_path)


def test_run_rejects_options_it_does_not_know_or_cannot_use(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, IMAGES)
    with pytest.raises(jb.ConfigError, match=r"unknown run option.*concurency"):
        jb.run(path, sim=True, out=tmp_path / "out", concurency=2)
    with pytest.raises(jb.ConfigError, match="budget must be a number of credits"):
        jb.run(path, sim=True, out=tmp_path / "out", budget=float("nan"))
    assert not (tmp_path / "out").exists()


def test_run_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    """A notebook's cell runs inside the kernel's event loop: asyncio.run() cannot be called there."""
    path = write_manifest(tmp_path, IMAGES)

    async def cell() -> jb.RunResult:
        asyncio.get_running_loop()  # there is a running loop here
        return jb.run(path, sim=True, out=tmp_path / "out", report=False, **FAST)

    result = asyncio.run(cell())
    assert result.counts == {State.DOWNLOADED: 5}
    assert last_run_status(tmp_path / "out") == "finished"


def test_arun_in_the_callers_loop(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, IMAGES)

    async def main() -> tuple[jb.RunResult, jb.RunResult]:
        first = await jb.arun(path, sim=True, out=tmp_path / "one", report=False, **FAST)
        second = await jb.arun(path, sim=True, out=tmp_path / "two", **FAST)  # two in one loop, one after another
        return first, second

    first, second = asyncio.run(main())
    assert first.counts == second.counts == {State.DOWNLOADED: 5}
    assert (tmp_path / "two" / "report.html").is_file() and not (tmp_path / "one" / "report.html").exists()


def test_cancelling_arun_never_leaves_the_run_marked_running(tmp_path: Path) -> None:
    """Cancelled while it plans (in a thread that cannot be stopped) or later: the run ends as interrupted."""
    path = write_manifest(tmp_path, IMAGES)

    async def main() -> None:
        task = asyncio.create_task(jb.arun(path, sim=True, out=tmp_path / "out", **FAST))
        await asyncio.sleep(0)  # it has started planning
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.get_running_loop().shutdown_default_executor()  # the planning thread is done
        for _ in range(3):
            await asyncio.sleep(0)  # and its completion handled

    asyncio.run(main())
    assert last_run_status(tmp_path / "out") == "interrupted"


def test_a_failing_run_is_never_left_marked_running(tmp_path: Path) -> None:
    """An error after the run was recorded (here: the assets folder cannot be made) ends it as failed."""
    path = write_manifest(tmp_path, IMAGES)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "assets").write_text("a file where the assets folder goes")
    with pytest.raises(jb.OutputError, match="cannot write a download"):
        jb.run(path, sim=True, out=tmp_path / "out", **FAST)
    assert last_run_status(tmp_path / "out") == "failed"
    broken = tmp_path / "sim.yaml"
    broken.write_text("images_per_request: 99\n")  # a broken simulator config is found before anything is made
    with pytest.raises(jb.ConfigError, match="images_per_request"):
        jb.run(path, sim=True, sim_config=broken, out=tmp_path / "other", **FAST)
    assert not (tmp_path / "other").exists()


def test_resume_from_the_api_remembers_the_run(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, IMAGES)
    first = jb.run(path, sim=True, out=tmp_path / "out", budget=2, report=False, **FAST)
    assert first.counts == {State.DOWNLOADED: 2, State.SKIPPED: 3} and first.stop_reason == "budget"
    again = jb.resume(tmp_path / "out", quiet=True, budget=10)
    assert again.counts == {State.DOWNLOADED: 5}


SCRIPT = """
import asyncio, json, sys
import jimeng_batch as jb

async def cell():
    return jb.run(sys.argv[1], out=sys.argv[2], base_url=sys.argv[3], poll_interval=0.02, quiet=True,
                  use_cache=False, preflight="off", report=False)

result = asyncio.run(cell())
print(json.dumps({"interrupted": result.interrupted, "counts": dict(result.counts)}))
"""


def test_ctrl_c_drains_a_run_started_inside_an_event_loop(tmp_path: Path) -> None:
    """In a notebook, Ctrl-C (SIGINT; a KeyboardInterrupt by default) drains the run as on the command line."""
    from test_kill_resume import MANIFEST, wait_for_a_submit

    path = write_manifest(tmp_path, MANIFEST)
    script = tmp_path / "cell.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO), JIMENG_SESSIONID=TOKEN)
    with simulator(latency={"submit": 0.05, "generation": 0.3}) as server:
        process = subprocess.Popen([sys.executable, str(script), str(path), str(out), server.base_url], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_a_submit(process, out / "ledger.sqlite")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "stopping: no new submits" in stderr
    printed = json.loads(stdout)
    assert printed["interrupted"] is True
    counts = printed["counts"]
    assert set(counts) <= {"downloaded", "skipped"} and counts.get("downloaded") and counts.get("skipped"), counts
    assert last_run_status(out) == "interrupted"


def last_run_status(out: Path) -> str:
    db = sqlite3.connect(out / "ledger.sqlite")
    try:
        return str(db.execute("SELECT status FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0])
    finally:
        db.close()
