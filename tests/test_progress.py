"""What a run shows while it works: the same state names as `status`, a title, totals, a rate and an ETA that is
never made up, retries and the last error, the stop, and the outage; readable at 60 columns, the plain line saying
the same things."""

from __future__ import annotations

import io
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from run_helpers import IMAGES, drive, write_manifest

from jimeng_batch.engine import progress
from jimeng_batch.engine.executor import Executor
from jimeng_batch.engine.ledger import QueueSight
from jimeng_batch.engine.progress import Progress, Sight, progress_title
from jimeng_batch.engine.states import State
from jimeng_batch.protocol.tokens import Scrubber, Token

SECRET = "tokS" + "e" * 28


@pytest.fixture
def closed_port() -> Iterator[str]:
    """A base URL whose port is bound and never listens: every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{probe.getsockname()[1]}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Shown:
    """A display over a sight the test changes, with a fake clock, rendered by rich's recording console."""

    def __init__(self, width: int = 60, **sight: Any) -> None:
        self.clock = Clock()
        self.sight = Sight(**({"counts": Counter({State.PLANNED: 48})} | sight))
        self.progress = Progress(lambda: self.sight, title=progress_title(Path("jobs/demo.yaml"), Path("out/demo")),
                                 clock=self.clock, live=True)
        self.width = width

    def set(self, seconds: float = 0.0, **sight: Any) -> Shown:
        self.clock.now += seconds
        self.sight = Sight(**({"counts": self.sight.counts} | sight))
        return self

    def text(self) -> str:
        console = Console(record=True, width=self.width, color_system=None, file=io.StringIO())
        console.print(self.progress.renderable())
        text = console.export_text()
        assert all(len(row) <= self.width for row in text.splitlines())
        return text

    def flat(self) -> str:
        """The text with its wrapping undone (a long message may wrap; the counts never do)."""
        return " ".join(self.text().split())

    def line(self) -> str:
        return self.progress.line()


def test_the_title_names_the_manifest_and_the_output_folder() -> None:
    """It said "jimeng-batch run" and nothing more."""
    text = Shown().text()
    assert text.splitlines()[0] == "jimeng-batch: jobs/demo.yaml -> out/demo"


def test_total_done_percentage_bar_elapsed_and_rate() -> None:
    shown = Shown().set(60.0, counts=Counter({State.PLANNED: 30, State.RUNNING: 6, State.DOWNLOADED: 12}))
    text = shown.text()
    assert "12/48 done (25%)" in text and "━" in text  # the bar
    assert "elapsed 1m00s" in text and "12/min" in text
    line = shown.line()
    assert "12/48 done (25%)" in line and "elapsed 1m00s" in line and "12/min" in line


def test_the_eta_is_never_made_up() -> None:
    """It started at "10m00s": one request ended after a while was taken for a rate."""
    shown = Shown()
    assert "ETA -" in shown.text() and "rate -" in shown.text()
    shown.set(12.5, counts=Counter({State.PLANNED: 47, State.DOWNLOADED: 1}))
    assert "ETA -" in shown.text(), "one request is no rate"
    shown.set(17.5, counts=Counter({State.PLANNED: 45, State.DOWNLOADED: 3}))  # 3 in 30 s: 6/min, 45 left
    assert "ETA 7m30s (rate so far)" in shown.text()
    assert "ETA 7m30s (rate so far)" in shown.line()


def test_requests_ended_by_an_earlier_run_are_no_rate_of_this_one() -> None:
    """Failures of an earlier run were counted as ended by this one: an ETA of "0m00s" from the start."""
    shown = Shown(counts=Counter({State.PLANNED: 8, State.DOWNLOADED: 30, State.FAILED: 10}))
    assert "ETA -" in shown.text()
    shown.set(1.0, counts=Counter({State.PLANNED: 7, State.DOWNLOADED: 31, State.FAILED: 10}))
    assert "ETA -" in shown.text() and "41/48 done (85%)" in shown.text()


def test_the_eta_comes_from_the_service_forecast_when_it_is_known() -> None:
    queued = (QueueSight(3, 12, 40.0, 30.0), QueueSight(5, 12, 75.0, 60.0))
    shown = Shown().set(5.0, counts=Counter({State.SUBMITTED: 2, State.DOWNLOADED: 46}), queued=queued)
    assert "ETA 1m15s (service forecast)" in shown.text()
    assert "service queue: queued 3/12 (2 jobs), ~75 s" in shown.text()
    assert "waiting 2" in shown.text()


def test_states_are_named_as_status_names_them_and_blocked_is_not_failed() -> None:
    """The display said "queued" for planned and counted blocked as "failed"."""
    counts = Counter({State.PLANNED: 5, State.SUBMITTED: 2, State.RUNNING: 3, State.DOWNLOADED: 4, State.FAILED: 1,
                      State.BLOCKED: 2, State.INVALID: 1})
    shown = Shown().set(counts=counts)
    for text in (shown.text(), shown.line()):
        assert "queued 5" not in text and "failed 3" not in text
        for part in ("planned 5", "submitted 2", "running 3", "downloaded 4", "failed 1", "blocked 2", "invalid 1"):
            assert part in text, (part, text)
    assert "skipped" not in shown.text()  # a state with nothing in it, shown only once it has some


def test_running_waiting_and_retrying_are_counted_and_the_last_error_shown() -> None:
    shown = Shown().set(counts=Counter({State.PLANNED: 40, State.SUBMITTED: 5, State.RUNNING: 3}),
                        queued=(QueueSight(1, 4, None, None),) * 5, retrying=2, retries=7,
                        last_error="m-1: submit: HTTP 503 Service Unavailable")
    for text in (shown.flat(), shown.line()):
        assert "running 3" in text and "waiting 5" in text and "retrying 2 (7 retries)" in text
        assert "last error: m-1: submit: HTTP 503 Service Unavailable" in text


def test_the_last_error_is_one_line_without_the_token() -> None:
    scrub = Scrubber([Token(SECRET)])
    line = progress.error_line(f"m-1: poll: refused for {SECRET}\n\x1b[31mred" + "x" * 500, scrub)
    assert SECRET not in line and "\n" not in line and "\x1b" not in line and "\\n" in line
    assert len(line) == progress.ERROR_WIDTH and line.endswith("…")


def test_after_ctrl_c_it_says_what_it_waits_for_and_no_more_queue_or_eta() -> None:
    """After Ctrl-C it kept showing the queue and an ETA."""
    shown = Shown().set(30.0, counts=Counter({State.SKIPPED: 0, State.PLANNED: 40, State.RUNNING: 3,
                                              State.DOWNLOADED: 5}),
                        queued=(QueueSight(3, 12, 40.0, 30.0),), stop_reason="interrupted", interrupted=True)
    for text in (shown.flat(), shown.line()):
        assert "stopping: waiting for 3 in flight (interrupted)" in text
        assert "ETA" not in text and "service queue" not in text


def test_a_stop_for_an_unreachable_host_says_so() -> None:
    shown = Shown().set(counts=Counter({State.PLANNED: 45, State.SUBMITTED: 3}), stop_reason="unreachable",
                        stop_message="cannot reach http://127.0.0.1:9: connection refused")
    assert "cannot reach http://127.0.0.1:9: connection refused" in shown.flat()
    assert "stopping: waiting for 3 in flight (cannot reach http://127.0.0.1:9" in shown.line()


def test_sixty_columns_cut_nothing() -> None:
    """At 60 columns the table's headers were cut ("subm…")."""
    counts = Counter({State.PLANNED: 1234, State.SUBMITTING: 12, State.SUBMITTED: 345, State.RUNNING: 67,
                      State.SUCCEEDED: 8, State.DOWNLOADED: 9012, State.FAILED: 34, State.BLOCKED: 56,
                      State.INVALID: 7, State.LOST: 1})
    shown = Shown().set(3725.0, counts=counts, queued=(QueueSight(3, 1200, 4000.0, 3000.0),) * 345, retrying=12,
                        retries=1234, credits=12345.5, last_error="k" * 40 + ": poll: HTTP 502 Bad Gateway")
    text = shown.text()
    assert all(len(row) <= 60 for row in text.splitlines())
    assert "…" not in text
    flat = " ".join(text.split())
    for part in ("planned 1234", "submitting 12", "submitted 345", "running 67", "succeeded 8", "downloaded 9012",
                 "failed 34", "blocked 56", "invalid 7", "lost 1", "retrying 12 (1234 retries)", "credits ~12345.5",
                 "elapsed 1h02m05s", "HTTP 502 Bad Gateway", "9109/10776 done (85%)"):
        assert part in flat, (part, text)


def test_the_plain_line_is_printed_with_the_title_first(capsys: pytest.CaptureFixture[str]) -> None:
    shown = Progress(lambda: Sight(Counter({State.PLANNED: 2, State.DOWNLOADED: 1})),
                     title=progress_title(Path("m.yaml"), Path("out")), live=False)
    shown._print(shown.title)
    shown._show()
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "jimeng-batch: m.yaml -> out"
    assert err[1].startswith("1/3 done (33%) | elapsed ") and "| planned 2 | running 0 | downloaded 1 |" in err[1]


def test_the_service_queue_is_described_from_the_front_most_job() -> None:
    assert progress.describe_queue([]) is None
    assert progress.describe_queue([QueueSight(3, 12, 40.0, 30.0)]) == "queued 3/12, ~40 s"
    several = [QueueSight(9, 12, 75.0, 60.0), QueueSight(3, 12, 40.0, 30.0), QueueSight(None, None, None, None)]
    assert progress.describe_queue(several) == "queued 3/12 (3 jobs), ~75 s"


def test_an_unreachable_host_shows_its_error_and_then_cannot_reach(tmp_path: Path, closed_port: str) -> None:
    """With an unreachable host the display sat at "submitted 3" for minutes and said no error."""
    seen: list[Executor] = []
    manifest = write_manifest(tmp_path, IMAGES)

    def watch(executor: Executor, counts: Counter[State]) -> None:
        seen[:] = [executor]

    run = drive(manifest, None, out=tmp_path / "out", base_url=closed_port, on_change=watch)
    assert run.result.stop_reason == "unreachable"
    sight = seen[0].sight()
    assert sight.retries > 0 and sight.last_error is not None and "submit:" in sight.last_error
    shown = progress.plain_line(progress.lines(sight, elapsed=5.0, done_at_start=0))
    assert f"stopped (cannot reach {closed_port}" in shown and "last error: " in shown and "skipped 5" in shown
