"""What a run shows while it works: a rich live panel on a terminal, periodic plain lines otherwise.

Both read a :class:`Sight` of the executor's in-memory state (counts, the service's queue, retries, the last
error, the stop); neither touches the ledger, so showing progress costs nothing per request. Both say the same
things, built by the same pure functions: the live panel one fact a line (readable at 60 columns), the plain mode
the same facts on one line. States are named as ``status`` names them. Messages name tokens only by their masked
labels, and the last error is scrubbed of tokens and escaped before it gets here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from jimeng_batch.engine.ledger import QueueSight
from jimeng_batch.engine.states import FINAL_STATES, IN_FLIGHT_STATES, STATES, State
from jimeng_batch.errors import printable
from jimeng_batch.intake.sources import display_path

log = logging.getLogger("jimeng_batch.run")

# Shown even at zero, so that a glance finds them where they always are; the other states once they have any.
ALWAYS_SHOWN = (State.PLANNED, State.RUNNING, State.DOWNLOADED, State.FAILED, State.BLOCKED)
# An ETA from the rate so far once this many requests have ended in this run, not from the first one or two
# (one request ending after 12 s of a 50-request run is no rate: it once showed "10m00s" at the start).
MIN_FINISHED_FOR_RATE = 3
ERROR_WIDTH = 200  # the last error is cut to this many characters: one line, never a payload


@dataclass(frozen=True)
class Sight:
    """What the display is shown of a run at one moment (built by the executor, in memory)."""

    counts: Mapping[State, int]
    credits: float = 0.0  # estimated credits admitted so far
    queued: tuple[QueueSight, ...] = ()  # jobs in the service's queue, as their last polls saw them
    retrying: int = 0  # requests whose last call failed and is being tried again
    retries: int = 0  # calls tried again in this run
    last_error: str | None = None  # one line, scrubbed and escaped
    stop_reason: str | None = None
    stop_message: str | None = None  # "cannot reach HOST: ..."
    interrupted: bool = False


@dataclass(frozen=True)
class Eta:
    seconds: float
    source: str  # "service forecast" or "rate so far"


def progress_title(manifest: Path, out_dir: Path) -> str:
    """``jimeng-batch: jobs/demo.yaml -> out/demo``: which manifest runs, and where its files go."""
    return f"jimeng-batch: {printable(display_path(manifest))} -> {printable(display_path(out_dir))}"


def error_line(text: str, scrub: Callable[[str], str]) -> str:
    """An error as the display shows it: no form of a token in it (``scrub``, the ledger's Scrubber), control
    characters escaped, on one line, cut to :data:`ERROR_WIDTH` characters."""
    line = printable(scrub(text))
    return line if len(line) <= ERROR_WIDTH else line[:ERROR_WIDTH - 1] + "…"


def clock_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def work_total(counts: Mapping[State, int]) -> int:
    """The requests of the run: every one but those the manifest no longer names."""
    return sum(n for state, n in counts.items() if state != State.REMOVED)


def finished(counts: Mapping[State, int]) -> int:
    """Requests that reached a final state (downloaded, failed, blocked, invalid)."""
    return sum(counts.get(state, 0) for state in FINAL_STATES)


def in_flight(counts: Mapping[State, int]) -> int:
    """Requests sent and not ended: what a stop still waits for (files to download included)."""
    return sum(counts.get(state, 0) for state in (*IN_FLIGHT_STATES, State.SUCCEEDED))


def rate_per_minute(done_now: int, done_at_start: int, elapsed: float) -> float | None:
    """Requests ended per minute in this run; None until :data:`MIN_FINISHED_FOR_RATE` have."""
    ended = done_now - done_at_start
    if ended < MIN_FINISHED_FOR_RATE or elapsed <= 0:
        return None
    return ended / elapsed * 60


def eta(sight: Sight, rate: float | None) -> Eta | None:
    """Time left: the service's longest forecast for its queued jobs when nothing is left to send (those jobs are
    then all that remain); otherwise the rate so far, never less than that forecast; None while neither is known."""
    counts = sight.counts
    left = work_total(counts) - finished(counts) - counts.get(State.SKIPPED, 0)
    if left <= 0:
        return None
    forecasts = [q.forecast_seconds for q in sight.queued if q.forecast_seconds is not None]
    forecast = max(forecasts) if forecasts else None
    if forecast is not None and not counts.get(State.PLANNED, 0):
        return Eta(forecast, "service forecast")
    if rate is None:
        return None
    return Eta(max(left / rate * 60, forecast or 0.0), "rate so far")


def describe_queue(sights: Iterable[QueueSight]) -> str | None:
    """The service's queue as the last polls of the jobs waiting in it saw it: the front-most job's place, how
    many of the run's jobs wait, and the longest forecast (``queued 3/12 (4 jobs), ~40 s``); None when none waits."""
    waiting = list(sights)
    if not waiting:
        return None
    placed = [sight for sight in waiting if sight.position is not None]
    text = "queued"
    if placed:
        front = min(placed, key=lambda sight: sight.position or 0)
        text += f" {front.position}" + (f"/{front.length}" if front.length else "")
    if len(waiting) > 1:
        text += f" ({len(waiting)} jobs)"
    forecasts = [sight.forecast_seconds for sight in waiting if sight.forecast_seconds is not None]
    if forecasts:
        text += f", ~{max(forecasts):.0f} s"
    return text


def state_parts(counts: Mapping[State, int]) -> list[str]:
    """``planned 3``, ``running 2``, ...: every state as ``status`` names it, in lifecycle order."""
    return [f"{state} {counts.get(state, 0)}" for state in STATES
            if state != State.REMOVED and (state in ALWAYS_SHOWN or counts.get(state, 0))]


def stopping_text(sight: Sight) -> str | None:
    """The stop, once there is one: why, and what it still waits for (nothing, once the last job has ended)."""
    if sight.stop_reason is None:
        return None
    why = sight.stop_message or ("interrupted" if sight.interrupted else sight.stop_reason)
    flying = in_flight(sight.counts)
    return f"stopping: waiting for {flying} in flight ({why})" if flying else f"stopped ({why})"


@dataclass(frozen=True)
class Lines:
    """The display's facts, each one short line; the live panel shows them under a bar, the plain mode joins them."""

    done: str  # "12/48 done (25%)"
    timing: str  # "elapsed 1m02s · 11.6/min · ETA 3m10s (rate so far)"
    states: list[str]
    activity: list[str] = field(default_factory=list)  # waiting, retrying, credits
    queue: str | None = None
    error: str | None = None
    stopping: str | None = None
    fraction: float = 0.0


def lines(sight: Sight, *, elapsed: float, done_at_start: int) -> Lines:
    counts = sight.counts
    total = work_total(counts)
    done = finished(counts)
    fraction = done / total if total else 1.0
    rate = rate_per_minute(done, done_at_start, elapsed)
    stopping = stopping_text(sight)
    timing = [f"elapsed {clock_text(elapsed)}", "rate -" if rate is None else f"{rate:.3g}/min"]
    if stopping is None:  # a stopping run's ETA and queue are no longer what it is doing
        found = eta(sight, rate)
        timing.append("ETA -" if found is None else f"ETA {clock_text(found.seconds)} ({found.source})")
    activity = [f"waiting {len(sight.queued)}", f"retrying {sight.retrying} ({sight.retries} retries)",
                f"credits ~{sight.credits:g}"]
    queue = describe_queue(sight.queued) if stopping is None else None
    return Lines(f"{done}/{total} done ({fraction:.0%})", " · ".join(timing), state_parts(counts), activity,
                 None if queue is None else f"service queue: {queue}",
                 None if sight.last_error is None else f"last error: {sight.last_error}", stopping, fraction)


def plain_line(shown: Lines) -> str:
    """The same facts on one line, for logs and terminals without a live display."""
    parts = [shown.done, shown.timing.replace(" · ", " | "), *shown.states, *shown.activity]
    parts += [text for text in (shown.queue, shown.error, shown.stopping) if text]
    return " | ".join(parts)


def panel(title: str, shown: Lines) -> Group:
    """The live display: the title, a bar, then one fact a line (each wraps rather than being cut)."""
    bar = Table.grid(padding=(0, 1), expand=True)
    bar.add_column(ratio=1)
    bar.add_column(no_wrap=True)
    bar.add_row(ProgressBar(total=1.0, completed=shown.fraction), Text(shown.done))
    # Counts in columns: a narrow terminal moves a whole "blocked 2" to the next line, never cuts one in two.
    rows: list[RenderableType] = [Text(shown.timing), Columns([Text(part) for part in shown.states], padding=(0, 2)),
                                  Columns([Text(part) for part in shown.activity], padding=(0, 2))]
    rows += [Text(text, style=style) for text, style in ((shown.queue, ""), (shown.error, "red"),
                                                         (shown.stopping, "yellow")) if text]
    return Group(Text(title, style="bold"), bar, *rows)


class Progress:
    """Shows the run's progress until :meth:`stop`; call :meth:`start` inside the event loop."""

    def __init__(self, sight: Callable[[], Sight], *, title: str = "jimeng-batch run", quiet: bool = False,
                 interval: float = 10.0, live: bool | None = None, console: Console | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sight = sight
        self.title = title
        self.quiet = quiet
        self.interval = interval
        self.console = console
        self.live = (sys.stderr.isatty() if console is None else console.is_terminal) if live is None else live
        self.clock = clock
        self.started = clock()
        self.done_at_start = finished(sight().counts)  # what earlier runs ended is no rate of this one's
        self._task: asyncio.Task[None] | None = None
        self._live: Live | None = None

    def lines(self) -> Lines:
        return lines(self.sight(), elapsed=self.clock() - self.started, done_at_start=self.done_at_start)

    def renderable(self) -> Group:
        return panel(self.title, self.lines())

    def line(self) -> str:
        return plain_line(self.lines())

    def start(self) -> None:
        if self.quiet:
            return
        if self.live:
            self._live = Live(self.renderable(), console=self.console or Console(stderr=True), refresh_per_second=4,
                              transient=False)
            self._live.start()
        else:
            self._print(self.title)
        self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(0.25 if self._live else self.interval)
            self._show()

    def _print(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def _show(self) -> None:
        if self._live is not None:
            self._live.update(self.renderable())
        else:
            line = self.line()
            log.info(line)
            self._print(line)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._live is not None:
            self._live.update(self.renderable())
            self._live.stop()
        elif self._task is not None:
            self._show()  # the last state, so that a plain log ends with how the run ended
