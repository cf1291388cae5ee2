"""What a run shows while it works: a rich live table on a terminal, periodic plain lines otherwise.

Both read the executor's in-memory counts; neither touches the ledger, so showing progress costs nothing per
request. Messages name tokens only by their masked labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from jimeng_batch.engine.ledger import QueueSight
from jimeng_batch.engine.states import State

log = logging.getLogger("jimeng_batch.run")

COLUMNS = (
    ("queued", (State.PLANNED,)),
    ("submitted", (State.SUBMITTING, State.SUBMITTED)),
    ("running", (State.RUNNING,)),
    ("done", (State.SUCCEEDED, State.DOWNLOADED)),
    ("failed", (State.FAILED, State.BLOCKED, State.INVALID)),
    ("skipped", (State.SKIPPED,)),
)


def grouped(counts: Counter[State]) -> dict[str, int]:
    return {name: sum(counts.get(s, 0) for s in members) for name, members in COLUMNS}


def eta_seconds(done_now: int, total: int, started: float, done_at_start: int, now: float) -> float | None:
    """Time left at the rate requests have finished since the run started."""
    finished = done_now - done_at_start
    elapsed = now - started
    if finished <= 0 or elapsed <= 0:
        return None
    return (total - done_now) / (finished / elapsed)


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


def describe(counts: Counter[State], total: int, credits: float, eta: float | None) -> str:
    parts = [f"{name} {value}" for name, value in grouped(counts).items()]
    text = f"{' | '.join(parts)} | of {total} | credits ~{credits:g}"
    if eta is not None:
        text += f" | ETA {int(eta // 60)}m{int(eta % 60):02d}s"
    return text


class Progress:
    """Shows the run's progress until :meth:`stop`; call :meth:`start` inside the event loop."""

    def __init__(self, total: int, *, quiet: bool = False, interval: float = 10.0,
                 credits: Callable[[], float] = lambda: 0.0, live: bool | None = None,
                 note: Callable[[], str | None] = lambda: None,
                 queue: Callable[[], str | None] = lambda: None) -> None:
        self.total = total
        self.note = note  # why the run is stopping, once it is ("cannot reach HOST: ...")
        self.queue = queue  # the service's queue, as the polls see it ("queued 3/12, ~40 s")
        self.quiet = quiet
        self.interval = interval
        self.credits = credits
        self.live = sys.stderr.isatty() if live is None else live
        self.counts: Counter[State] = Counter()
        self.started = time.monotonic()
        self.done_at_start: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._live: Live | None = None

    def update(self, counts: Counter[State]) -> None:
        self.counts = counts
        if self.done_at_start is None:
            self.done_at_start = grouped(counts)["done"]

    def _eta(self) -> float | None:
        done = grouped(self.counts)["done"] + grouped(self.counts)["failed"]
        return eta_seconds(done, self.total, self.started, self.done_at_start or 0, time.monotonic())

    def _table(self) -> Table:
        note = self.note()
        table = Table(title="jimeng-batch run", title_justify="left",
                      caption=f"stopping: {note}" if note else None, caption_justify="left")
        for name, _ in COLUMNS:
            table.add_column(name, justify="right")
        table.add_column("credits ~", justify="right")
        table.add_column("ETA", justify="right")
        table.add_column("service queue", justify="right")
        eta = self._eta()
        values: list[Any] = list(grouped(self.counts).values())
        table.add_row(*(str(v) for v in values), f"{self.credits():g}",
                      "-" if eta is None else f"{int(eta // 60)}m{int(eta % 60):02d}s", self.queue() or "-")
        return table

    def start(self) -> None:
        if self.quiet:
            return
        if self.live:
            self._live = Live(self._table(), console=Console(stderr=True), refresh_per_second=4, transient=False)
            self._live.start()
        self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(0.25 if self._live else self.interval)
            self._show()

    def _show(self) -> None:
        if self._live is not None:
            self._live.update(self._table())
        else:
            line = describe(self.counts, self.total, self.credits(), self._eta())
            queue = self.queue()
            if queue:
                line += f" | {queue}"
            note = self.note()
            if note:
                line += f" | stopping: {note}"
            log.info(line)
            print(line, file=sys.stderr, flush=True)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._live is not None:
            self._live.update(self._table())
            self._live.stop()

