"""When a job is polled: timed to when it is expected to finish, within a poll budget per token.

A job's generation, not the client, is the long pole: a slot is only given back when a poll sees the job end, so
every second between the end and the poll that notices it is a second the slot does no work. Polling often costs
calls (the service's rate limits, and the web app's own pace of one batched call every 2-5 s per token, protocol
reference section 5); polling rarely loses slot time. The policy, per job:

1. The first poll comes ``POLL_FIRST`` after the submit (it reads the service's forecast; early, so that the job is
   most likely still queued and the forecast counts its whole remaining time).
2. The job is expected to end at the service's own forecast (``forecast_cost_time``: what is left of the queue
   plus the generation, counted from the poll that said it), else at the 10th percentile of the completion times
   observed so far in this run for the same model and resolution (``Observed``), else not known.
3. Until ``LEAD`` before that moment the job waits (at most ``SPARSE`` between two polls, in case the forecast was
   wrong); from then on it is polled every ``TAIL`` seconds until it ends. With no expectation at all, the interval
   backs off from ``POLL_FIRST`` by ``POLL_GROWTH`` to ``POLL_MAX`` (the policy of earlier versions).

Every job of a token that is due at the same moment shares one ``get_history_by_ids`` call (engine/poller.py); the
token's other jobs ride along in that call, and one that it shows ended (or forecast for the first time) is taken up
at once, without a call of its own. The calls of a token are paced by a :class:`Budget`: a token bucket of
``polls_per_second`` (default ``DEFAULT_POLLS_PER_SECOND``) that lets ``BURST`` calls go closer together when jobs
end close together. A fixed
``--poll-interval`` replaces steps 2 and 3 (and, unless a budget is given, the budget too).

Pure: times are passed in, nothing here sleeps or reads a clock.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

# Per kind of job: the first poll after the submit, the back-off without any expectation, the close interval near
# the expected end, and the longest wait between two polls before it.
POLL_FIRST = {"image": 1.0, "video": 5.0}
POLL_MAX = {"image": 5.0, "video": 15.0}
POLL_GROWTH = 1.5
TAIL = {"image": 1.0, "video": 1.0}
SPARSE = {"image": 10.0, "video": 30.0}
# The service's forecast counts whole seconds (each of its two parts rounded up): close polling starts this long
# before the end it forecasts (about where a forecast rounded up twice puts the true end on average); at one poll
# per TAIL from there, the budget's average suffices for three jobs a token.
LEAD = 1.0
# The observed completion times: the percentile close polling starts at, the fewest observations it is read from,
# and how many recent ones are kept per model and resolution (the policy follows a run's changing pace).
PERCENTILE = 0.10
MIN_OBSERVED = 3
KEEP_OBSERVED = 500
# The web app polls about every 2-5 s per token: on average one batched call per 2 s, per token.
DEFAULT_POLLS_PER_SECOND = 0.5
BURST = 3.0


@dataclass(frozen=True)
class JobSight:
    """What is known of one job when its next poll is decided (times in seconds, on the run's clock)."""

    kind: str  # image or video
    submitted_at: float
    now: float
    last_interval: float  # the wait before the poll just made (the back-off's base)
    expected_end: float | None = None  # the forecast's end, or submit + the observed percentile; None: not known


def expected_end(*, now: float, in_queue: bool, forecast_seconds: float | None,
                 forecast_queue_seconds: float | None, submitted_at: float, last_forecast_end: float | None,
                 observed: float | None) -> float | None:
    """When the job should end: from the forecast of this poll, else the last one, else the observed percentile.

    A job still queued is forecast whole from now (what is left of the queue plus the generation). Once it runs,
    the service forecasts the generation only, not how much of it is left: the end forecast while it was queued
    stands; a job never seen queued started at its submit, at the latest when first seen running.
    """
    if forecast_seconds is not None:
        if in_queue:
            return now + forecast_seconds
        if last_forecast_end is not None:
            return last_forecast_end
        generation = forecast_seconds - (forecast_queue_seconds or 0.0)
        return submitted_at + generation
    if last_forecast_end is not None:
        return last_forecast_end
    if observed is not None:
        return submitted_at + observed
    return None


def next_interval(sight: JobSight) -> float:
    """Seconds from ``sight.now`` to the job's next poll (the first one: ``POLL_FIRST``)."""
    kind = sight.kind
    if sight.expected_end is None:
        return min(POLL_MAX[kind], sight.last_interval * POLL_GROWTH)
    start = sight.expected_end - LEAD
    if sight.now < start - TAIL[kind]:
        return min(start - sight.now, SPARSE[kind])
    return TAIL[kind]


class Observed:
    """Completion times (submit to the poll that saw the end) seen this run, by model and resolution."""

    def __init__(self, keep: int = KEEP_OBSERVED) -> None:
        self._keep = keep
        self._recent: dict[tuple[str, str], deque[float]] = {}
        self._sorted: dict[tuple[str, str], list[float]] = {}

    def add(self, model: str, resolution: str, seconds: float) -> None:
        if not (seconds >= 0 and math.isfinite(seconds)):
            return
        key = (model, resolution)
        recent = self._recent.setdefault(key, deque())
        ordered = self._sorted.setdefault(key, [])
        if len(recent) >= self._keep:
            oldest = recent.popleft()
            del ordered[bisect.bisect_left(ordered, oldest)]
        recent.append(seconds)
        bisect.insort(ordered, seconds)

    def percentile(self, model: str, resolution: str, fraction: float = PERCENTILE) -> float | None:
        """The ``fraction`` quantile (nearest rank, low) of what was observed; None below ``MIN_OBSERVED``."""
        ordered = self._sorted.get((model, resolution), [])
        if len(ordered) < MIN_OBSERVED:
            return None
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Budget:
    """A token bucket of poll calls for one token: ``rate`` calls a second on average, ``burst`` in a row."""

    def __init__(self, rate: float, burst: float = BURST, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._level = self.burst
        self._at = now

    def _fill(self, now: float) -> None:
        if now > self._at:
            self._level = min(self.burst, self._level + (now - self._at) * self.rate)
            self._at = now

    def wait(self, now: float) -> float:
        """Seconds until a call may go (0: now)."""
        self._fill(now)
        return 0.0 if self._level >= 1.0 else (1.0 - self._level) / self.rate

    def take(self, now: float) -> None:
        """A call went now."""
        self._fill(now)
        self._level -= 1.0
