"""What the simulator needs from uvicorn beyond its public API, in one place, for the versions it was written for.

One thing: :class:`FastStopServer` stops at once instead of at uvicorn's next 0.1 s tick. Tests start and stop a
simulator per test, and every stop would otherwise cost a tenth of a second of idle waiting. It replaces
``uvicorn.Server.main_loop`` (a loop that sleeps 0.1 s between ``on_tick`` calls, unchanged across the tested
versions) with one that also wakes on an event. With a uvicorn that lacks ``main_loop`` or ``on_tick`` it leaves
them alone: stopping is then merely slower. ``pyproject.toml`` pins uvicorn to :data:`TESTED_VERSIONS`, and a test
keeps the pin, this constant and the installed version in step.

Dropping a connection needs no internals: an incomplete response is closed by the server (see
``jimeng_batch.sim.app.DropConnection``); uvicorn logs each one, which :func:`quiet_dropped_answers` filters.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn

TESTED_VERSIONS = ">=0.29,<0.55"  # the uvicorn releases whose Server.main_loop this replaces
DROPPED_ANSWER_LOG = "ASGI callable returned without completing response."


def _can_replace_main_loop() -> bool:
    return callable(getattr(uvicorn.Server, "main_loop", None)) and callable(getattr(uvicorn.Server, "on_tick", None))


class FastStopServer(uvicorn.Server):
    """A uvicorn server whose :meth:`request_stop` takes effect at once."""

    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        if not _can_replace_main_loop():  # pragma: no cover - a uvicorn outside TESTED_VERSIONS
            await super().main_loop()
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            try:
                await asyncio.wait_for(self._wake.wait(), 0.1)
            except TimeoutError:
                pass
            should_exit = await self.on_tick(counter)

    def request_stop(self) -> None:
        """Stop serving (safe from any thread); nothing is drained: a simulator's clients are already done."""
        self.should_exit = True
        self.force_exit = True
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)


class _DroppedAnswers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != DROPPED_ANSWER_LOG


_FILTER = _DroppedAnswers()


def quiet_dropped_answers() -> None:
    """Keep uvicorn from logging the simulator's deliberately dropped answers as errors (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
