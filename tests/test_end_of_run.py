"""The end-of-run line says what happened and where to look: counts by state, why the exit code is what it is, and
the path of report.html."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_main

from jimeng_batch.engine.result import RunResult, exit_code, verdict
from jimeng_batch.engine.states import FAIL_ON_STATES, State


def result(counts: dict[State, int], **more: object) -> RunResult:
    return RunResult(Path("out"), counts, **more)  # type: ignore[arg-type]


def test_blocked_requests_fail_the_run_and_it_says_why() -> None:
    """Blocked requests failed the run (the default --fail-on) and nothing said so."""
    judged = verdict(result({State.DOWNLOADED: 48, State.BLOCKED: 12}), FAIL_ON_STATES)
    assert judged.line() == "exit 1: 12 blocked (--fail-on includes blocked)"
    judged = verdict(result({State.FAILED: 1, State.BLOCKED: 12, State.INVALID: 2}), FAIL_ON_STATES)
    assert judged.line() == "exit 1: 1 failed, 12 blocked, 2 invalid (--fail-on includes failed, blocked, invalid)"


def test_what_fail_on_lets_through_is_said_too() -> None:
    judged = verdict(result({State.DOWNLOADED: 48, State.BLOCKED: 12}), {State.FAILED})
    assert judged.line() == "exit 0: 48 downloaded; 12 blocked let through (--fail-on failed)"
    assert verdict(result({State.DOWNLOADED: 3}), FAIL_ON_STATES).line() == "exit 0: all 3 downloaded"
    assert verdict(result({}), FAIL_ON_STATES).line() == "exit 0: nothing to do"


def test_unsent_unfinished_stopped_and_interrupted_runs_say_why() -> None:
    judged = verdict(result({State.SKIPPED: 4, State.RUNNING: 2, State.LOST: 1}), FAIL_ON_STATES)
    assert judged.line() == ("exit 1: 4 skipped not sent (--fail-on includes skipped); 2 running, 1 lost paid for and "
                             "not finished (run again to finish them)")
    assert verdict(result({State.RUNNING: 2}), frozenset()).code == 1  # --fail-on none hides no paid work
    stopped = result({State.SKIPPED: 5}, stop_reason="unreachable", stop_message="cannot reach http://h: refused")
    assert verdict(stopped).line() == "exit 3: stopped for safety (unreachable): cannot reach http://h: refused"
    interrupted = result({State.PLANNED: 5}, stop_reason="interrupted", interrupted=True)
    assert verdict(interrupted).line().startswith("exit 130: interrupted")


@pytest.mark.parametrize("counts, fail_on", [
    ({State.DOWNLOADED: 1, State.BLOCKED: 1}, FAIL_ON_STATES), ({State.SKIPPED: 1}, frozenset()),
    ({State.SUCCEEDED: 1}, frozenset()), ({State.FAILED: 2}, {State.BLOCKED}), ({State.PLANNED: 1}, FAIL_ON_STATES),
])
def test_the_line_and_the_code_agree(counts: dict[State, int], fail_on: frozenset[State]) -> None:
    judged = verdict(result(counts), fail_on)
    assert judged.code == exit_code(result(counts), fail_on) and judged.line().startswith(f"exit {judged.code}: ")


def test_the_command_line_ends_with_why_and_the_report(write: Callable[..., Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """It gave neither the report's path nor why it exited 1."""
    monkeypatch.delenv("JIMENG_SESSIONID", raising=False)
    path = write("m.yaml", "jobs:\n  - {type: image, resolution: 1k, prompt: [a kite, a forbidden cat]}\n")
    common = ["--sim", "--poll-interval", "0.01", "--quiet", "--no-cache", "--out", "out"]
    code, _, err = run_main(["run", str(path), *common], capsys)
    assert code == 1, err
    counts, last_error, why, report = err.splitlines()[-4:]
    assert counts == "out: downloaded 1, blocked 1" and why == "exit 1: 1 blocked (--fail-on includes blocked)"
    assert report == "report: out/report.html"
    assert last_error.startswith("last error: ") and last_error.endswith(": blocked: content filtered")
    assert (tmp_path / "out" / "report.html").is_file()
    code, _, err = run_main(["run", str(path), *common, "--fail-on", "failed", "--no-report"], capsys)
    assert code == 0 and err.splitlines()[-1] == "exit 0: 1 downloaded; 1 blocked let through (--fail-on failed)"
