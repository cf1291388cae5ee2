"""The one retry policy, by itself: what is retried, how long it waits, when it gives up, and what it raises."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from jimeng_batch.engine.retry import Retrier, RetryPolicy
from jimeng_batch.errors import APIError, RequestFailedError, RetryableAPIError, StopSubmittingError
from jimeng_batch.protocol.outcomes import classify, error_for


def busy() -> APIError:
    return error_for(classify("ret", "2004"), "busy", code="2004")


class Harness:
    """A retrier with a fake clock that the sleeps advance, and a record of every call and wait."""

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.recorded: list[tuple[str | None, str, str]] = []
        self.retried: list[tuple[str, str]] = []
        self.retrier = Retrier(policy or RetryPolicy(), record=self.record, sleep=self.sleep, clock=lambda: self.now,
                               on_retry=lambda key, kind: self.retried.append((key, kind)), seed=3)

    def record(self, key: str | None, kind: str, started: float, seconds: float, error: APIError | None) -> None:
        self.recorded.append((key, kind, "ok" if error is None else error.rule.action.value))

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def run(self, kind: str, call: Callable[[], Awaitable[Any]], **options: Any) -> Any:
        return asyncio.run(self.retrier.call(kind, call, **options))


def failing(errors: list[APIError], result: str = "done") -> Callable[[], Awaitable[str]]:
    """A call that raises each of ``errors`` in turn, then returns ``result``."""
    pending = list(errors)

    async def call() -> str:
        if pending:
            raise pending.pop(0)
        return result

    return call


def test_retryable_errors_are_retried_with_doubling_jittered_backoff() -> None:
    harness = Harness(RetryPolicy(max_retries=5, backoff_base=1.0, backoff_max=60.0))
    assert harness.run("submit", failing([busy(), busy(), busy()]), key="k") == "done"
    assert len(harness.sleeps) == 3
    for retry, wait in enumerate(harness.sleeps):
        assert 0.5 * 2 ** retry <= wait <= 2 ** retry
    assert harness.recorded == [("k", "submit", "retry")] * 3 + [("k", "submit", "ok")]
    assert harness.retried == [("k", "submit")] * 3


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0)
    waits = [policy.delay(retry, busy(), random.Random(0)) for retry in range(10)]
    assert max(waits) <= 8.0 and waits[-1] >= 4.0
    assert 4.0 <= policy.delay(5000, busy(), random.Random(0)) <= 8.0  # a poll retried for an hour: no overflow


@pytest.mark.parametrize(("retry_after", "expected"), [
    pytest.param(7.0, 7.0, id="honoured"),
    pytest.param(10_000.0, 300.0, id="capped"),
])
def test_retry_after_is_honoured_up_to_the_cap(retry_after: float, expected: float) -> None:
    error = error_for(classify("http", 429), "rate", code="429", retry_after=retry_after)
    harness = Harness()
    harness.run("poll", failing([error]))
    assert harness.sleeps == [expected]


def test_the_tables_fixed_delay_is_used_and_capped() -> None:
    risk = error_for(classify("ret", "4013"), "risk", code="4013")
    assert RetryPolicy().delay(0, risk, random.Random(0)) == 60.0
    assert RetryPolicy(retry_after_cap=5.0).delay(0, risk, random.Random(0)) == 5.0


def test_when_attempts_run_out_the_last_error_is_raised_with_its_tries() -> None:
    errors = [busy() for _ in range(4)]
    harness = Harness(RetryPolicy(max_retries=3))
    with pytest.raises(RetryableAPIError) as raised:
        harness.run("download", failing(errors))
    assert raised.value is errors[-1] and raised.value.tries == 4
    assert len(harness.sleeps) == 3


@pytest.mark.parametrize("error", [
    pytest.param(error_for(classify("ret", "2001"), "credits", code="2001"), id="stop"),
    pytest.param(error_for(classify("fail_code", "2038"), "blocked", code="2038"), id="terminal"),
])
def test_errors_that_are_not_retryable_are_raised_at_once(error: APIError) -> None:
    harness = Harness()
    with pytest.raises((StopSubmittingError, RequestFailedError)) as raised:
        harness.run("submit", failing([error]))
    assert raised.value is error and harness.sleeps == []


def test_recover_can_end_the_call_with_a_result() -> None:
    """Submit's reconcile: after a lost answer, the service had the submit after all; it is not sent again."""
    lost = error_for(classify("transport", "connection"), "dropped", code="connection")
    asked: list[APIError] = []
    sent: list[int] = []

    async def send() -> str:
        sent.append(1)
        raise lost

    async def recover(error: RetryableAPIError) -> str | None:
        asked.append(error)
        return "found" if len(asked) == 2 else None

    harness = Harness()
    requeued: list[APIError] = []
    assert harness.run("submit", send, recover=recover, before_retry=requeued.append) == "found"
    assert len(sent) == 2 and asked == [lost, lost] and requeued == [lost]


def test_recover_is_asked_after_the_last_failure_too() -> None:
    lost = error_for(classify("transport", "timeout"), "timeout", code="timeout")

    async def recover(error: RetryableAPIError) -> str | None:
        return "found"

    harness = Harness(RetryPolicy(max_retries=0))
    assert harness.run("submit", failing([lost]), recover=recover) == "found"


def test_a_deadline_bounds_retries_instead_of_their_number() -> None:
    """Polls: retried for as long as their job may still finish, whatever max_retries says."""
    harness = Harness(RetryPolicy(max_retries=1, backoff_max=4.0))
    errors = [busy() for _ in range(50)]
    deadline = harness.now + 30.0
    with pytest.raises(RetryableAPIError) as raised:
        harness.run("poll", failing(errors), deadline=deadline)
    assert raised.value.tries > 2  # more than max_retries allows
    assert deadline - 4.0 < harness.now <= deadline  # it never waits past the deadline, and gives up only near it
    assert harness.run("poll", failing([busy()]), deadline=harness.now + 30.0) == "done"


def test_calls_can_go_unrecorded() -> None:
    harness = Harness()
    harness.run("poll", failing([busy()]), record=False)
    assert harness.recorded == []
