"""Time for the simulator: a callable returning unix seconds, so that tests can drive it by hand.

Latency is modelled by timestamps, not by sleeping: a record's status is a function of how long ago it was
submitted, so a test that advances a :class:`FakeClock` sees the job move through its states instantly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]

system_clock: Clock = time.time


class FakeClock:
    """A clock that moves only when told to. Safe to advance from a test thread while the server reads it."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` and return the new time."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, unix_seconds: float) -> None:
        with self._lock:
            self._now = float(unix_seconds)
