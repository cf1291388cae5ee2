"""The circuit breaker: an outage stops the run instead of failing every request in it.

One breaker per host a run talks to (the API host, the asset hosts). It counts the calls that failed because the
host could not be reached or answered with a server error; a call that got any answer from the service resets it.
After :data:`MAX_FAILURES` such failures in a row, or :data:`MAX_SILENCE` seconds with failures and no success, it
trips: the run submits nothing more, calls to that host stop retrying (what is in flight stays as it is, for the
next run), and the run ends with exit 3 and "cannot reach HOST: ...".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from jimeng_batch.errors import APIError

MAX_FAILURES = 10  # failures in a row, across requests
MAX_SILENCE = 60.0  # seconds with failures and not one successful call
OUTAGE_REASONS = frozenset({"network", "server"})  # what an unreachable or broken host looks like


@dataclass
class _Host:
    failures: int = 0
    last_success: float = 0.0
    last_error: str = ""


class Breakers:
    """The breakers of one run, by host name."""

    def __init__(self, clock: Callable[[], float] = time.time, *, max_failures: int = MAX_FAILURES,
                 max_silence: float = MAX_SILENCE) -> None:
        self._clock = clock
        self._max_failures = max_failures
        self._max_silence = max_silence
        self._hosts: dict[str, _Host] = {}
        self.tripped: str | None = None  # "cannot reach HOST: why", once any breaker has tripped

    def _host(self, host: str) -> _Host:
        found = self._hosts.get(host)
        if found is None:
            found = self._hosts[host] = _Host(last_success=self._clock())
        return found

    def record(self, host: str, error: APIError | None) -> None:
        """The outcome of one call to ``host``."""
        state = self._host(host)
        if error is None or error.rule.reason not in OUTAGE_REASONS:
            state.failures = 0
            state.last_success = self._clock()
            return
        state.failures += 1
        state.last_error = str(error)
        silent = self._clock() - state.last_success
        if self.tripped is None and (state.failures >= self._max_failures or silent >= self._max_silence):
            self.tripped = f"cannot reach {host}: {state.last_error}"

    def is_open(self) -> bool:
        return self.tripped is not None
