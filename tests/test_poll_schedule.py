"""When jobs are polled (engine/poll_schedule.py): timed to the service's forecast and to the completion times seen
this run, within a poll budget per token. Fake clocks only: nothing here sleeps, nothing asserts wall time."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from run_helpers import NoWait, drive, fast_options, simulator, write_manifest

from jimeng_batch.engine.config import RunConfig
from jimeng_batch.engine.poll_schedule import (
    DEFAULT_POLLS_PER_SECOND,
    LEAD,
    MIN_OBSERVED,
    POLL_FIRST,
    POLL_MAX,
    SPARSE,
    TAIL,
    Budget,
    JobSight,
    Observed,
    expected_end,
    next_interval,
)
from jimeng_batch.engine.poller import BatchPoller
from jimeng_batch.protocol.client import HistoryRecord
from jimeng_batch.sim import FakeClock


def test_without_an_expectation_polls_back_off_as_before() -> None:
    intervals, interval = [], POLL_FIRST["image"]
    for _ in range(5):
        interval = next_interval(JobSight("image", 0.0, 0.0, interval))
        intervals.append(interval)
    assert intervals == [1.5, 2.25, 3.375, 5.0, 5.0] and max(intervals) == POLL_MAX["image"]


@pytest.mark.parametrize("kind", ["image", "video"])
def test_a_job_waits_until_shortly_before_its_expected_end_then_is_polled_closely(kind: str) -> None:
    end = 100.0
    far = next_interval(JobSight(kind, 0.0, 2.0, 2.0, end))
    assert far == SPARSE[kind]  # a long forecast is checked on now and then, in case it was wrong
    near = next_interval(JobSight(kind, 0.0, 90.0, far, end))
    assert near == pytest.approx(end - LEAD - 90.0)  # wakes LEAD before the expected end
    assert next_interval(JobSight(kind, 0.0, end - LEAD, near, end)) == TAIL[kind]
    assert next_interval(JobSight(kind, 0.0, end + 30, TAIL[kind], end)) == TAIL[kind]  # late: closely until done


def test_the_expected_end_comes_from_the_forecast_else_the_last_forecast_else_what_was_observed() -> None:
    common = {"submitted_at": 10.0, "forecast_queue_seconds": None, "observed": 9.0}
    queued = expected_end(now=12.0, in_queue=True, forecast_seconds=14.0, last_forecast_end=None, **common)
    assert queued == 26.0  # what is left of the queue plus the generation, from this poll
    # Running: the service forecasts the generation only; the end forecast while queued stands.
    assert expected_end(now=20.0, in_queue=False, forecast_seconds=12.0, last_forecast_end=queued, **common) == 26.0
    # Never seen queued: it started at its submit at the earliest.
    assert expected_end(now=12.0, in_queue=False, forecast_seconds=12.0, last_forecast_end=None, **common) == 22.0
    # No forecast at all: submit + the observed percentile; nothing observed either: not known.
    assert expected_end(now=12.0, in_queue=False, forecast_seconds=None, last_forecast_end=None, **common) == 19.0
    assert expected_end(now=12.0, in_queue=False, forecast_seconds=None, last_forecast_end=None,
                        submitted_at=10.0, forecast_queue_seconds=None, observed=None) is None


def test_the_observed_percentile_is_per_model_and_resolution_and_follows_recent_jobs() -> None:
    observed = Observed(keep=10)
    for seconds in (12.0, 8.0):
        observed.add("m", "2k", seconds)
    assert observed.percentile("m", "2k") is None  # fewer than MIN_OBSERVED: no guess
    for seconds in range(MIN_OBSERVED, 21):
        observed.add("m", "2k", float(seconds) + 100)
    observed.add("m", "1k", 1.0)
    observed.add("m", "2k", float("nan"))  # ignored
    assert observed.percentile("m", "2k") == 112.0  # the ten most recent: 111..120, p10 = the second lowest
    assert observed.percentile("m", "1k") is None and observed.percentile("other", "2k") is None


def test_the_budget_lets_a_burst_through_then_holds_the_average_rate() -> None:
    budget, now, sent = Budget(0.5, burst=3, now=0.0), 0.0, []
    while now < 100.0:
        now += budget.wait(now)
        budget.take(now)
        sent.append(now)
        now += 0.1  # a caller that would poll ten times a second
    assert sent[:3] == pytest.approx([0.0, 0.1, 0.2])  # the burst
    assert all(b - a == pytest.approx(2.0) for a, b in itertools.pairwise(sent[3:]))  # then every 2 s
    assert len(sent) <= 3 + 100 * 0.5


def test_the_default_budget_is_the_web_apps_pace_unless_a_fixed_interval_is_asked_for() -> None:
    assert RunConfig().poll_budget() == DEFAULT_POLLS_PER_SECOND == 0.5  # one batched call per 2 s per token
    assert RunConfig(polls_per_second=2.0).poll_budget() == 2.0
    assert RunConfig(poll_interval=0.01).poll_budget() is None
    assert RunConfig(poll_interval=0.01, polls_per_second=1.0).poll_budget() == 1.0
    assert RunConfig().timed_polls and not RunConfig(poll_interval=1.0).timed_polls


def test_ids_that_come_due_while_a_call_waits_for_the_budget_join_that_call() -> None:
    clock = FakeClock(0.0)
    calls: list[list[str]] = []

    async def fetch(ids: list[str]) -> dict[str, HistoryRecord | None]:
        calls.append(ids)
        return {}

    async def main() -> None:
        poller = BatchPoller(fetch, budget=Budget(0.5, burst=1, now=0.0), sleep=NoWait(advance=clock.advance),
                             clock=clock)
        await poller.poll("a")  # the budget's one call
        await asyncio.gather(poller.poll("b"), poller.poll("c"))  # both wait for the budget: one call
        await poller.close()

    asyncio.run(main())
    assert calls == [["a"], ["b", "c"]] and clock() == pytest.approx(2.0)


ONE = "jobs:\n  - {type: image, resolution: 1k, prompt: a}\n"
TWO = "jobs:\n  - {type: image, resolution: 1k, prompt: 'picture {n}', vars: {n: [1, 2]}}\n"


def _timed_run(tmp_path: Path, text: str, jobs: int, **options: object) -> tuple[float, int]:
    """Fake time the run took, and its poll calls: a simulator whose generation takes 12 s, one token."""
    manifest = write_manifest(tmp_path, text)
    clock = FakeClock(1_700_000_000.0)
    sleep = NoWait(advance=clock.advance)
    start = clock()
    with simulator(latency={"generation": 12.0}, max_clock_skew_s=None, clock=clock) as server:
        run = drive(manifest, server, out=tmp_path / "out", clock=clock, sleep=sleep,
                    options=fast_options(download=False, **options))
        polls = server.state.stats()["polls"]
    assert run.result.counts == {"succeeded": jobs}
    return clock() - start, polls


def test_a_job_s_end_is_noticed_at_once_not_at_the_next_backed_off_poll(tmp_path: Path) -> None:
    """The issue's late completion: polls backing off to 5 s saw a 12 s job end at 14.5 s."""
    took, polls = _timed_run(tmp_path, ONE, 1)
    assert 12.0 <= took <= 12.0 + TAIL["image"] + 1e-6
    assert polls <= 6


def test_when_a_slot_frees_the_next_submit_goes_at_once(tmp_path: Path) -> None:
    """One slot, two 12 s jobs: the second is sent as soon as the first is seen done, so the run takes about
    twice the generation and nothing more."""
    took, _polls = _timed_run(tmp_path, TWO, 2, concurrency=1)
    assert 24.0 <= took <= 24.0 + 2 * TAIL["image"] + 1e-6


def test_jobs_not_due_ride_along_with_a_call_and_are_woken_by_what_they_wait_for() -> None:
    calls: list[list[str]] = []
    done = HistoryRecord(history_record_id="r", status=50)
    queued = HistoryRecord(history_record_id="q", status=20)

    async def fetch(ids: list[str]) -> dict[str, HistoryRecord | None]:
        calls.append(ids)
        return {"r": done, "q": queued}

    async def main() -> None:
        poller = BatchPoller(fetch)
        ended = poller.ride("r", lambda record: record.status == 50)
        waiting = poller.ride("q", lambda record: record.status == 50)
        await poller.poll("a")  # a's call asks for the riders too: no call of their own
        assert ended.done() and ended.result() is done
        assert not waiting.done()  # still queued: it rides on
        poller.leave("q")
        assert waiting.cancelled()
        await poller.poll("a")
        await poller.close()

    asyncio.run(main())
    assert calls == [["a", "r", "q"], ["a"]]
