"""Batched polling: one ``get_history_by_ids`` call answers every job of a token that is due for a poll.

Each job keeps its own schedule (first poll, back-off); when it is due it hands its history id to its token's
poller and waits. The poller sends one call for all the ids waiting at that moment (up to ``max_batch``), and
while that call is in flight the next ones gather. Fifty jobs in flight then cost a few calls per second instead
of fifty, which keeps the client's CPU, the service's rate limits and the poll limiter happy. A token's calls are
paced by its :class:`~jimeng_batch.engine.poll_schedule.Budget` (when it has one): ids that come due while a call
waits for the budget join that call. Every call also asks for the ids that ride along (:meth:`BatchPoller.ride`):
jobs of the token that are not due yet, whose end (or first forecast) it may show for no extra call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from jimeng_batch.engine.poll_schedule import Budget
from jimeng_batch.protocol.client import HistoryRecord

Fetch = Callable[[list[str]], Awaitable[dict[str, HistoryRecord | None]]]

MAX_BATCH = 50


class BatchPoller:
    """Polls for one token; create it inside the running event loop."""

    def __init__(self, fetch: Fetch, max_batch: int = MAX_BATCH, *, budget: Budget | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self._fetch = fetch
        self._max_batch = max_batch
        self._budget = budget
        self._sleep = sleep
        self._clock = clock
        self._waiting: dict[str, list[asyncio.Future[HistoryRecord | None]]] = {}
        self._riders: dict[str, tuple[Callable[[HistoryRecord], bool], asyncio.Future[HistoryRecord]]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.calls = 0

    async def poll(self, history_id: str) -> HistoryRecord | None:
        """The record of ``history_id`` (None while the service does not know it), or the call's error."""
        future: asyncio.Future[HistoryRecord | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(history_id, []).append(future)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        return await future

    def ride(self, history_id: str, wanted: Callable[[HistoryRecord], bool]) -> asyncio.Future[HistoryRecord]:
        """Ask for ``history_id`` in every call made for other ids (none is made for it); the future gets the first
        record that ``wanted`` accepts. Until :meth:`leave`."""
        future: asyncio.Future[HistoryRecord] = asyncio.get_running_loop().create_future()
        self.leave(history_id)
        self._riders[history_id] = (wanted, future)
        return future

    def leave(self, history_id: str) -> None:
        entry = self._riders.pop(history_id, None)
        if entry is not None and not entry[1].done():
            entry[1].cancel()

    async def _run(self) -> None:
        while self._waiting:
            if self._budget is not None:
                wait = self._budget.wait(self._clock())
                if wait > 0:
                    await self._sleep(wait)  # the ids that come due meanwhile join this call
                self._budget.take(self._clock())
            ids = list(self._waiting)[: self._max_batch]
            futures = {history_id: self._waiting.pop(history_id) for history_id in ids}
            riders = [history_id for history_id in self._riders if history_id not in futures]
            riders = riders[: max(0, self._max_batch - len(ids))]
            self.calls += 1
            try:
                found = await self._fetch(ids + riders)
            except Exception as error:  # noqa: BLE001 - handed to every job that waited on this call
                for waiting in futures.values():
                    for future in waiting:
                        if not future.done():
                            future.set_exception(error)
                continue
            for history_id, waiting in futures.items():
                for future in waiting:
                    if not future.done():
                        future.set_result(found.get(history_id))
            for history_id in riders:
                record, entry = found.get(history_id), self._riders.get(history_id)
                if record is not None and entry is not None and not record.malformed and entry[0](record):
                    del self._riders[history_id]
                    if not entry[1].done():
                        entry[1].set_result(record)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
