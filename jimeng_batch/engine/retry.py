"""The one retry policy: every call the executor makes (submit, poll, reconcile, upload, download) goes through
:meth:`Retrier.call`.

In the style of stamina's single retry context: the helper takes the call, its kind and its rate limiter; a failure
is classified by the outcome table (the client's errors carry their :class:`~jimeng_batch.protocol.outcomes.Rule`);
a retryable one is tried again after exponential backoff with jitter, or after the rule's fixed delay or the
answer's ``Retry-After`` (both capped at :attr:`RetryPolicy.retry_after_cap`); anything else, and the last retryable
error once the attempts or the deadline run out, is raised to the caller, with ``error.tries`` set.

A caller adds what its call needs on top, never a loop of its own: submit passes ``recover`` (ask the service
whether a submit whose answer was lost arrived after all, before sending it again), a download makes the refresh
of an expired URL the first step of its next attempt.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiolimiter import AsyncLimiter

from jimeng_batch.engine.breaker import OUTAGE_REASONS
from jimeng_batch.engine.run_log import log, step
from jimeng_batch.errors import APIError, RetryableAPIError
from jimeng_batch.protocol.outcomes import Action

T = TypeVar("T")

# What a finished call is reported as: its request key (None for calls that serve many), kind, start (unix time),
# duration (seconds) and the error it raised (None when it succeeded).
Recorder = Callable[[str | None, str, float, float, APIError | None], None]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failed call is tried again."""

    max_retries: int = 5  # tries after the first; calls with a deadline (polls) are bounded by it instead
    backoff_base: float = 1.0  # seconds before the first retry, doubled for each one after
    backoff_max: float = 60.0
    # A Retry-After (or a fixed delay of the table) above this is cut to it: a server asking for an hour is more
    # likely misconfigured than right, and a run should notice recovery within minutes.
    retry_after_cap: float = 300.0

    def delay(self, retry: int, error: APIError, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first) after ``error``."""
        if error.retry_after is not None:
            return min(error.retry_after, self.retry_after_cap)
        if error.rule.action is Action.RETRY_AFTER and error.rule.delay is not None:
            return min(error.rule.delay, self.retry_after_cap)
        backoff: float = min(self.backoff_max, self.backoff_base * (2 ** min(retry, 32)))  # no float overflow
        return backoff * rng.uniform(0.5, 1.0)  # jitter: calls that failed together do not retry together


@contextlib.asynccontextmanager
async def limited(limiter: AsyncLimiter | None) -> AsyncIterator[None]:
    """Hold a place of ``limiter`` (none: no limit) for the duration of the block."""
    if limiter is None:
        yield
    else:
        async with limiter:
            yield


class Retrier:
    """Runs calls under one :class:`RetryPolicy`; create it inside the running event loop."""

    def __init__(self, policy: RetryPolicy, *, record: Recorder, sleep: Sleep,
                 clock: Callable[[], float] = time.time, on_retry: Callable[[str, str], None] | None = None,
                 seed: int | None = None, outage: Callable[[], bool] | None = None) -> None:
        self.policy = policy
        self._record = record
        self._outage = outage  # True once the circuit breaker tripped: outage failures are not retried then
        self._sleep = sleep
        self._clock = clock
        self._on_retry = on_retry  # (request key, kind): counts a request's retries
        self._random = random.Random(seed)

    async def timed(self, key: str | None, kind: str, call: Awaitable[T]) -> T:
        """Await one call, reporting its kind, time and outcome to the recorder."""
        started = self._clock()
        begun = time.perf_counter()
        try:
            result = await call
        except APIError as error:
            self._record(key, kind, started, time.perf_counter() - begun, error)
            raise
        self._record(key, kind, started, time.perf_counter() - begun, None)
        return result

    async def call(self, kind: str, call: Callable[[], Awaitable[T]], *, key: str | None = None,
                   limiter: AsyncLimiter | None = None, deadline: float | None = None,
                   recover: Callable[[RetryableAPIError], Awaitable[T | None]] | None = None,
                   before_retry: Callable[[RetryableAPIError], None] | None = None, record: bool = True) -> T:
        """``call()`` until it succeeds, retrying what the outcome table says to retry.

        ``deadline`` (unix time) bounds the retries instead of ``max_retries``: a poll keeps trying until its job's
        poll timeout, since giving up earlier would write off a job that is paid for. ``recover`` is asked after
        each retryable failure, the last one included; a value it returns is the call's result (submit: the service
        had it after all). ``before_retry`` is told of each failure that will be retried. ``record=False`` for calls
        whose own HTTP calls are recorded elsewhere (a poll rides a batched call).
        """
        retry = 0
        while True:
            try:
                async with limited(limiter):
                    return await (self.timed(key, kind, call()) if record else call())
            except RetryableAPIError as error:
                if recover is not None:
                    found = await recover(error)
                    if found is not None:
                        return found
                wait = self.policy.delay(retry, error, self._random)
                spent = retry >= self.policy.max_retries if deadline is None else self._clock() + wait > deadline
                if spent or (self._outage is not None and self._outage() and error.rule.reason in OUTAGE_REASONS):
                    error.tries = retry + 1
                    raise
                if key is not None and self._on_retry is not None:
                    self._on_retry(key, kind)
                # One line per retry: which call, which try, how long it waits, and why (no payload).
                log.info("%s failed; try %d%s in %.1f s", kind, retry + 2,
                         "" if deadline is not None else f" of {self.policy.max_retries + 1}", wait,
                         extra=step("retry", key, said=("kind", "attempt", "wait"), kind=kind, attempt=retry + 2,
                                    wait=round(wait, 3), reason=error.rule.reason, code=error.code,
                                    message=str(error)))
                if before_retry is not None:
                    before_retry(error)
                await self._sleep(wait)
                retry += 1
