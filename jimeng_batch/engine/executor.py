"""The executor: the scheduler that runs the ledger's requests, at most ``concurrency`` in flight per token.

Lifecycle of a request (:mod:`jimeng_batch.engine.states`), every step committed to the ledger before the next.

- Admission is FIFO in plan order, per region: a request is sent only with a token of its region (its job's, else
  the manifest's), through that region's client; each region's requests wait for that region's tokens only. Each
  admitted request holds a slot of its token from its submit until its generation ends; downloads happen outside
  the slot (:mod:`jimeng_batch.engine.download`), uploads before the submit (:mod:`jimeng_batch.engine.upload`).
- Every call goes through the one retry policy (:mod:`jimeng_batch.engine.retry`), which classifies failures by the
  outcome table. A final outcome (the service said no) ends the request; a failure that may pass leaves a request
  that is paid for where it is, with the reason, for the next run, and a request not yet sent ``skipped``. A stop
  quarantines or exhausts the token (others go on) or, when no token is left, the stop concerns every token, or the
  circuit breaker finds the host unreachable, stops admitting. In-flight jobs are followed to the end.
- A request sent with one account stays with that account (:mod:`jimeng_batch.engine.accounts`): it waits while its
  token is missing from the pool, and is never sent again elsewhere unless the run is told to reassign orphans.
- A submit whose answer was lost is reconciled by asking for its ``submit_id`` before it is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from aiolimiter import AsyncLimiter

from jimeng_batch.engine.accounts import Accounts
from jimeng_batch.engine.breaker import Breakers
from jimeng_batch.engine.cache import ResultCache
from jimeng_batch.engine.clients import Clients
from jimeng_batch.engine.config import RunConfig
from jimeng_batch.engine.download import Downloads
from jimeng_batch.engine.ledger import Ledger, QueueSight, RequestRow
from jimeng_batch.engine.poll_schedule import POLL_GROWTH, Budget, JobSight, Observed, expected_end, next_interval
from jimeng_batch.engine.poller import BatchPoller
from jimeng_batch.engine.progress import Sight, error_line
from jimeng_batch.engine.result import RunResult
from jimeng_batch.engine.retry import Retrier
from jimeng_batch.engine.run_log import step
from jimeng_batch.engine.states import State
from jimeng_batch.engine.submission import Submission
from jimeng_batch.engine.token_pool import TokenPool, TokenState
from jimeng_batch.engine.upload import Uploads
from jimeng_batch.errors import APIError, RequestFailedError, RetryableAPIError, StopSubmittingError
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.client import HISTORY_PATH, STATUS_DONE, HistoryRecord, JimengClient
from jimeng_batch.protocol.outcomes import Action, Rule, TokenEffect, classify
from jimeng_batch.protocol.tokens import Scrubber, Token

log = logging.getLogger("jimeng_batch.run")

NO_FILES_TRIES = 10  # polls of a finished record that lists no (or too few) files, before it is left for later
_ROW_FIELDS = frozenset(f.name for f in dataclasses.fields(RequestRow))
_TERMINAL = {Action.BLOCKED: State.BLOCKED, Action.INVALID: State.INVALID}
ASSET_HOST = "the asset host"
# The API host the calls of the running task go to (its token's region's), for the circuit breaker: one breaker
# per host, so that one region's outage is not counted against another's host.
_CALL_HOST: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_host", default=None)


@contextlib.contextmanager
def _calls_to(host: str) -> Iterator[None]:
    mark = _CALL_HOST.set(host)
    try:
        yield
    finally:
        _CALL_HOST.reset(mark)


class _Lease:
    """The token slot a request holds; a request can move to another token when its token is stopped."""

    def __init__(self, token: Token | None) -> None:
        self.token = token


class Executor:
    """Runs what the ledger holds. Create and :meth:`run` it inside the event loop."""

    def __init__(self, ledger: Ledger, clients: Clients, tokens: list[Token], config: RunConfig, *,
                 out_dir: Path, region: catalog.Region, versions: catalog.ProtocolVersions,
                 web_id: str | Callable[[str], str], origin: str | Mapping[str, str] = "",
                 cache: ResultCache | None = None, local_files: Mapping[str, Path] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, clock: Callable[[], float] = time.time,
                 on_change: Callable[[Counter[State]], None] | None = None) -> None:
        self.ledger = ledger
        ledger.scrub = Scrubber(tokens)  # what the service says is stored without any form of a token
        # Every call made with a token goes through that token's client (its proxy): ``client_for``. The direct
        # client names the API host and classifies what is not a call.
        self.clients = clients
        self.client = clients.default
        self.tokens = tokens
        self.config = config
        self.out_dir = out_dir
        self.region = region  # the run's own (the manifest's): that of tokens without a prefix
        self.versions = versions
        self._web_id = web_id if callable(web_id) else (lambda _region, given=web_id: given)
        # Where each region's results come from (its API host, or the simulator); a region not named: its host.
        self.origins = dict(origin) if not isinstance(origin, str) else {region.code: origin or self.client.api_base}
        self.origin = self.origin_of(region.code)
        self.cache = cache
        self.local_files = dict(local_files or {})
        self._regions_out: dict[str, str] = {}  # region -> why none of its tokens may submit any more
        self._admitting: set[str] = set()  # the regions with requests to admit this run
        self.sleep = sleep
        self.clock = clock
        self.on_change = on_change
        self.counts: Counter[State] = Counter(ledger.counts())
        self.stop_reason: str | None = None
        self.stop_message: str | None = None
        self.interrupted = False
        self.admitted_credits = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._pollers: dict[str, BatchPoller] = {}
        self.observed = Observed()  # completion times this run, by model and resolution: when to poll
        self.queued: dict[str, QueueSight] = {}  # jobs in the service's queue: what their last poll said
        # For the display only (nothing of it is stored): who is being retried, how often, what went wrong last.
        self.retrying: set[str] = set()
        self.retries = 0
        self.last_error: str | None = None

    def sight(self) -> Sight:
        """What the display shows of the run now."""
        return Sight(self.counts, self.admitted_credits, tuple(self.queued.values()), len(self.retrying),
                     self.retries, self.last_error, self.stop_reason, self.stop_message, self.interrupted)

    def _said(self, key: str | None, text: str) -> None:
        """The last error, for the display: one line, no token in it, cut short."""
        self.last_error = error_line(f"{key}: {text}" if key else text, self.ledger.scrub)

    def _retried(self, key: str, kind: str) -> None:
        self.ledger.bump(key, "retries")
        self.retries += 1
        self.retrying.add(key)

    # -- bookkeeping ---------------------------------------------------------------------------------------------

    def _set(self, row: RequestRow, state: State, *, detail: str | None = None, **fields: Any) -> RequestRow:
        """Commit a state change, keep the in-memory counts, and return the row as it now is."""
        self.ledger.set_state(row.key, state, detail=detail, **fields)
        self.counts[row.state] -= 1
        self.counts[state] += 1
        self.retrying.discard(row.key)
        if self.on_change is not None:
            self.on_change(self.counts)
        # The row as the ledger now holds it, without reading it back (this runs several times per request).
        known = {name: value for name, value in fields.items() if name in _ROW_FIELDS}
        if state == State.SUBMITTED and "submitted_at" not in known:
            known["submitted_at"] = self.ledger.last_change
        return dataclasses.replace(row, state=state, **known)

    def _end(self, row: RequestRow, rule: Rule, error: APIError | None, *, detail: str | None = None,
             code: str | None = None) -> None:
        """A final outcome: blocked, invalid or failed, with the rule's reason and what was said."""
        state = _TERMINAL.get(rule.action, State.FAILED)
        self._set(row, state, reason=rule.reason, code=code or (error.code if error else rule.code),
                  message=str(error) if error else rule.meaning, detail=detail or rule.meaning)
        self._said(row.key, f"{state}: {str(error) if error else detail or rule.meaning}")

    def _defer(self, row: RequestRow, error: APIError, detail: str) -> None:
        """A failure that may pass: the request stays where it is, with why, for the next run."""
        self.ledger.note(row.key, row.state, detail=f"{detail}; left for the next run", reason=error.rule.reason,
                         code=error.code, message=str(error))
        self.retrying.discard(row.key)

    def origin_of(self, region: str) -> str:
        """Where ``region``'s requests are sent (and their results come from)."""
        found = self.origins.get(region)
        if found is None:
            found = self.origins[region] = self.clients.api_base(region)
        return found

    def region_of(self, row: RequestRow) -> str:
        """The region a request goes to (rows always name it: it is part of their parameters)."""
        return str(row.params.get("region") or self.region.code)

    def web_id_of(self, region: str) -> str:
        return self._web_id(region)

    def upload_scope(self, token: Token) -> str:
        """Where an image_uri uploaded with ``token`` is valid: its region, or the host standing in for it (a
        simulator forgets its uploads when it stops, so another base URL means another upload); an image
        uploaded to the CN ImageX is no image_uri on the US one."""
        region = self.clients.region_of(token)
        base_url = self.clients.base_url(region)
        return region if base_url is None else f"{region}@{base_url}"

    def _record(self, key: str | None, kind: str, started: float, seconds: float, error: APIError | None) -> None:
        self.ledger.record_call(key, kind, started, seconds, error)
        if error is not None:
            self._said(key, f"{kind}: {error}")
        elif key is not None:
            self.retrying.discard(key)
        self.breakers.record(ASSET_HOST if kind == "download" else _CALL_HOST.get() or self.client.api_base, error)
        if self.breakers.tripped and self.stop_reason is None:
            self.stop("unreachable", self.breakers.tripped)

    def stop(self, reason: str, message: str | None = None) -> None:
        """Admit nothing more; in-flight jobs are still finished."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_message = message
            log.warning("no new submits (%s)%s; what is in flight is finished", reason,
                        f": {message}" if message else "", extra=step("stop", reason=reason))

    def interrupt(self) -> None:
        """Ctrl-C or SIGTERM: the same drain as a stop."""
        self.interrupted = True
        self.stop("interrupted")

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    # -- the run -------------------------------------------------------------------------------------------------

    async def run(self) -> RunResult:
        config = self.config
        self.started = self.clock()
        self.pool = TokenPool(self.tokens, config.concurrency, self.clients.region_of)
        # aiolimiter binds to the running loop, so limiters are made here, inside it. Polls are paced per token,
        # by each token's poller (its Budget); the few other history calls (reconciling, a download's fresh
        # record) are not limited.
        submits, downloads, uploads = (AsyncLimiter(rate, 1.0) if rate else None for rate in (
            config.submits_per_second, config.downloads_per_second, config.uploads_per_second))
        self.submit_limiter, self.poll_limiter = submits, None
        self.breakers = Breakers(self.clock)
        self.retrier = Retrier(config.retry_policy(), record=self._record, sleep=self.sleep, clock=self.clock,
                               on_retry=self._retried, seed=config.jitter_seed,
                               outage=self.breakers.is_open)
        self.uploads = Uploads(self.ledger, self.clients.uploader, self.retrier, local_files=self.local_files,
                               scope=self.upload_scope, limiter=uploads)
        self.downloads = Downloads(self.ledger, self.client_for, self.retrier, out_dir=self.out_dir,
                                   origin=lambda row: self.origin_of(self.region_of(row)),
                                   cache=self.cache, limiter=downloads)
        self.accounts = Accounts(self)
        self._backlog = asyncio.Semaphore(config.max_unfinished or 4 * config.concurrency * len(self.tokens) + 32)
        for row in self.ledger.in_states([State.SKIPPED]):
            self._set(row, State.PLANNED, detail="planned again")
        try:
            await self.accounts.reconcile()
            await self.accounts.resume_in_flight()
            await self._admit()
            await self._wait_all()
        finally:
            for task in self._tasks:
                task.cancel()
            for poller in self._pollers.values():
                await poller.close()
        await self.pool.close()
        if self.stop_reason is None and self._regions_out:
            # Some region's tokens all left the pool while others went on: its requests were not sent.
            region, why = next(iter(self._regions_out.items()))
            self.stop(why, f"no token of region {region} may submit any more ({why})")
        reason = self.stop_reason or "not admitted"
        for row in self.ledger.in_states([State.PLANNED]):
            self._set(row, State.SKIPPED, reason=reason, detail=self.stop_message or reason)
        self.ledger.flush()
        return RunResult(self.out_dir, dict(self.ledger.counts()), self.stop_reason, self.interrupted,
                         self.admitted_credits, self.pool.described(), self.pool.high_water(), self.stop_message,
                         dict(self.accounts.waiting), self.last_error)

    def client_for(self, token: Token) -> JimengClient:
        """The client of calls made with ``token`` (through its proxy, if it names one)."""
        return self.clients.client(token)

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            # Retrieve the error here: _wait_all re-raises the first one; without this, when several tasks fail at
            # once (a full disk fails every write), asyncio prints the others' tracebacks as "never retrieved".
            task.exception()

    async def _wait_all(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def _history(self, token: Token, submit_ids: list[str], key: str | None = None,
                       ) -> dict[str, HistoryRecord | None] | None:
        """The service's records of ``submit_ids``; None when it cannot be asked now."""
        try:
            client = self.client_for(token)
            with _calls_to(client.api_base):
                return await self.retrier.call("reconcile", lambda: client.history(token, submit_ids=submit_ids),
                                               key=key, limiter=self.poll_limiter)
        except RetryableAPIError as error:
            log.warning("reconcile %s: giving up after %d tries: %s", key or "", error.tries, error)
            return None

    async def _admit(self) -> None:
        """Admit each region's planned requests, in plan order, with that region's tokens."""
        queues: dict[str, deque[str]] = {}
        for key, region in self.ledger.keys_by_region([State.PLANNED]):
            queues.setdefault(region or self.region.code, deque()).append(key)
        self._admitting = set(queues)
        await asyncio.gather(*(self._admit_region(region, queue) for region, queue in queues.items()))

    async def _admit_region(self, region: str, queue: deque[str]) -> None:
        while queue and not self.stopping:
            row = self.ledger.get(queue[0])
            if row is None or row.state != State.PLANNED:
                queue.popleft()
                continue
            if self.downloads.from_cache(row) is not None:
                self._set(row, State.DOWNLOADED, shared_from="cache", origin=self.origin_of(region),
                          detail="reused from the result cache")
                queue.popleft()
                continue
            bound = self.accounts.token_of(row) if row.account is not None else None
            if row.account is not None and (bound is None or self.accounts.sent_elsewhere(row)):
                queue.popleft()  # it waits for its account, or a run to where it was sent (counted by Accounts)
                continue
            budget = self.config.budget
            if budget is not None and self.admitted_credits + row.estimated_credits > budget:
                self.stop("budget")
                break
            # Backpressure: jobs finish faster than their files download when the asset host is slow; without a
            # bound, finished-but-not-downloaded requests would pile up in memory.
            await self._backlog.acquire()
            token = await self.pool.acquire(bound, region=region)
            if token is None and bound is not None and not self.stopping:
                self._backlog.release()
                queue.popleft()  # its account may submit no more this run: it stays bound, for the next run
                continue
            if token is None or self.stopping:
                self._backlog.release()
                if token is not None:
                    await self.pool.release(token)
                if token is None:
                    self._no_token(region)
                break
            queue.popleft()
            self.admitted_credits += row.estimated_credits
            self.spawn(self._admitted(row, token))

    async def _admitted(self, row: RequestRow, token: Token) -> None:
        try:
            await self.finish(row, token, lease=_Lease(token))
        finally:
            self._backlog.release()

    def _no_token_reason(self, region: str) -> str:
        left = self.pool.states_of(region)
        return "login" if TokenState.QUARANTINED in left and TokenState.EXHAUSTED not in left else "credits"

    def _no_token(self, region: str) -> None:
        """No token of ``region`` may submit any more: its requests wait for the next run; the run stops once
        every region it sends to is in that state (the others go on meanwhile)."""
        reason = self._no_token_reason(region)
        if region not in self._regions_out:
            self._regions_out[region] = reason
            if len(self._admitting) > 1:
                log.warning("no token of region %s may submit any more (%s): its requests are not sent this run",
                            region, reason)
        if set(self._regions_out) >= self._admitting:
            self.stop(reason)

    def lease(self, token: Token) -> _Lease:
        """The slot of a job resumed in flight on ``token``."""
        self.pool.hold(token)
        return _Lease(token)

    # -- one request ---------------------------------------------------------------------------------------------

    async def finish(self, row: RequestRow, token: Token, lease: _Lease | None) -> None:
        """Drive one request from where it stands to a final state (or as far as it can go this run)."""
        with _calls_to(self.client_for(token).api_base):
            await self._finish(row, token, lease)

    async def _finish(self, row: RequestRow, token: Token, lease: _Lease | None) -> None:
        record: HistoryRecord | None = None
        try:
            if row.state == State.PLANNED:
                assert lease is not None
                submitted = await self._submit(row, lease)
                if submitted is None:
                    return
                row, token = submitted, lease.token or token
            if row.state in (State.SUBMITTED, State.RUNNING, State.LOST):
                record = await self._poll(row, token)
        finally:
            if lease is not None and lease.token is not None:
                await self.pool.release(lease.token)
                lease.token = None
        if row.state == State.SUCCEEDED or record is not None:
            current = self.ledger.get(row.key)
            if current is not None and current.state == State.SUCCEEDED and self.config.download:
                await self._download(current, token, record)

    async def _submit(self, row: RequestRow, lease: _Lease) -> RequestRow | None:
        """Upload what it needs, then send the draft until the service accepts it; None when it ended unsent."""
        submission = Submission(self, row)
        while lease.token is not None:
            token = lease.token
            try:
                submission.uploaded = await self.uploads.image_uris(submission.spec, token, row.key)
                submitted = await self.retrier.call(
                    "submit", functools.partial(submission.send, token), key=row.key, limiter=self.submit_limiter,
                    recover=functools.partial(submission.reconcile, token), before_retry=submission.requeue)
            except RetryableAPIError as error:
                self._unsent(submission, error)
                return None
            except StopSubmittingError as error:
                if submission.maybe_received:
                    # An earlier try may have been charged on this account: the next run asks it, and the
                    # request is never sent with another token.
                    if submission.row.state != State.SUBMITTING:
                        submission.row = self._set(submission.row, State.SUBMITTING, account=token.account,
                                                   token=token.label, detail="an earlier try may have arrived")
                    self._defer(submission.row, error, f"not accepted: {error.rule.meaning}")
                    await self._stopped(token, error.rule, lease, replace=False)
                    return None
                if submission.row.state != State.PLANNED:
                    submission.row = self._set(submission.row, State.PLANNED, account=None, token=None,
                                               detail=f"not accepted: {error.rule.meaning}")
                await self._stopped(token, error.rule, lease)
                continue
            except RequestFailedError as error:
                self._end(submission.row, error.rule, error)
                return None
            return self._set(submission.row, State.SUBMITTED, history_record_id=submitted.history_record_id,
                             task_id=submitted.task_id or None,
                             detail="the service had it after a lost answer" if submission.recovered else None)
        return None

    def _unsent(self, submission: Submission, error: RetryableAPIError) -> None:
        """A submit that kept failing in a way that may pass: nothing is written off. When the service does not
        have it (it said so, or nothing reached it) the request is ``skipped``, planned again by the next run; when
        that is not known, it stays ``submitting``, for the next run to ask before it sends anything."""
        row = submission.row
        detail = f"gave up after {error.tries} tries"
        if submission.maybe_received or (row.state == State.SUBMITTING and not submission.absent):
            if row.state != State.SUBMITTING:
                row = self._set(row, State.SUBMITTING, detail="an earlier try may have arrived")
            self._defer(row, error, f"{detail}; the service may have it")
        else:
            self._set(row, State.SKIPPED, reason=error.rule.reason, code=error.code, message=str(error),
                      account=None, token=None, detail=f"{detail}; nothing was charged")

    async def _stopped(self, token: Token, rule: Rule, lease: _Lease, *, replace: bool = True) -> None:
        """A stop outcome: take the token (or everything) out; a new token for the request if one is left (and
        ``replace``)."""
        await self.pool.release(token)
        lease.token = None
        if rule.token is TokenEffect.NONE:
            self.stop(rule.reason)
            return
        await self._retire(token, rule)
        if self.stopping or not replace:
            return
        region = self.clients.region_of(token)
        lease.token = await self.pool.acquire(region=region)  # another token of the request's region
        if lease.token is None:
            self._no_token(region)

    async def _retire(self, token: Token, rule: Rule) -> None:
        await self.pool.mark(token, rule.token, rule.reason)
        log.warning("token %s %s: %s", token.label, "quarantined" if rule.token is TokenEffect.QUARANTINE
                    else "exhausted", rule.meaning)

    async def _poll(self, row: RequestRow, token: Token) -> HistoryRecord | None:
        """Poll until the job ends; the finished record, or None when it ended otherwise or stays for the next run."""
        try:
            return await self._follow(row, token)
        finally:
            self.queued.pop(row.key, None)
            if row.history_record_id is not None:
                self._poller(token).leave(row.history_record_id)

    def _queue_seen(self, row: RequestRow, record: HistoryRecord) -> None:
        """Keep what the poll said of the service's queue: in the ledger, and for the display while it waits."""
        if record.queue_position is None and record.forecast_seconds is None:
            return
        sight = QueueSight(record.queue_position, record.queue_length, record.forecast_seconds,
                           record.forecast_queue_seconds)
        if record.in_queue:
            self.ledger.queue_seen(row.key, sight)
            self.queued[row.key] = sight
        else:
            self.queued.pop(row.key, None)

    async def _follow(self, row: RequestRow, token: Token) -> HistoryRecord | None:
        kind = row.kind
        history_id = row.history_record_id
        assert history_id is not None
        submitted_at = row.submitted_at or self.clock()
        interval = self.config.poll_first(kind)
        forecast_end: float | None = None  # when the service's last forecast said the job ends
        # Each run gives a job the whole poll timeout, counted from its submit or from the run's start.
        deadline = max(submitted_at, self.started) + self.config.poll_timeout(kind)
        poller = self._poller(token)
        rechecking = row.state == State.LOST  # lost by an earlier run: one look, then it stays lost
        without_files = 0
        riding: asyncio.Future[HistoryRecord] | None = None  # the record another job's call may bring
        brought: HistoryRecord | None = None

        def wanted(record: HistoryRecord) -> bool:
            """What is worth waking for: the end (once: a finished record still without its files is asked again on
            its own schedule, so that the no-files rule keeps its time), or the first forecast."""
            return record.failed or (record.status == STATUS_DONE and without_files == 0) or (
                forecast_end is None and record.forecast_seconds is not None)

        async def poll_once() -> HistoryRecord | None:
            record = brought if brought is not None else await poller.poll(history_id)
            if record is not None and record.malformed:  # this job's entry only: the others of the answer stand
                raise self.client.malformed(HISTORY_PATH, record.malformed, row.key)
            return record

        while True:
            if riding is None and self.config.timed_polls and not rechecking:
                riding = poller.ride(history_id, wanted)
            brought = await self._wait(0 if rechecking else interval, riding)
            if brought is not None:
                riding = None
            self.ledger.bump(row.key, "polls")
            try:
                record = await self.retrier.call("poll", poll_once, key=row.key, deadline=deadline, record=False)
                self.retrying.discard(row.key)
            except StopSubmittingError as error:
                await self.pool.mark(token, error.rule.token, error.rule.reason)
                if error.rule.token is TokenEffect.NONE:
                    self.stop(error.rule.reason)
                log.warning("%s: cannot follow its job any more (%s); left for the next run", row.key, error)
                return None
            except APIError as error:
                # Whatever a poll is answered (a gateway's 302 or 400 too), the job is paid for: only its record
                # can say it failed. It is left for the next run.
                self._defer(row, error, "cannot poll now")
                return None
            if record is None:
                if rechecking:
                    return None
                if self.clock() - submitted_at > self.config.lost_after:
                    rule = classify("local", "not-found")
                    self._set(row, State.LOST, reason=rule.reason, code=rule.code, message=rule.meaning,
                              detail=f"not shown by the service {self.config.lost_after:g} s after its submit")
                    return None
                interval = self._backed_off(kind, interval)
                continue  # shortly after a submit the service may not know the record yet
            if rechecking:
                row = self._set(row, State.SUBMITTED, detail="found by the service after all")
                rechecking = False
            if record.failed:
                rule = classify("fail_code", record.fail_code)
                self._end(row, rule, None, code=record.fail_code,
                          detail=record.fail_message or f"status {record.status}")
                if rule.token is not TokenEffect.NONE:  # no credits: the next submits on it would fail the same
                    await self._retire(token, rule)
                return None
            self._queue_seen(row, record)
            if record.complete(kind):
                self.observed.add(row.model, row.resolution, self.clock() - submitted_at)
                self._set(row, State.SUCCEEDED, detail=f"{len(record.items)} item(s)")
                return record
            if record.status == STATUS_DONE:  # finished, but the files are not (all) listed: ask again, a while
                without_files += 1
                interval = self._backed_off(kind, interval)
                if without_files > NO_FILES_TRIES:
                    self._defer(row, RetryableAPIError(
                        f"finished with {len(record.items)} of {record.total_count or 1} file(s) listed",
                        rule=classify("local", "no-files"), code="no-files"), "finished without files")
                    return None
            if row.state != State.RUNNING and not record.in_queue:
                # Only once the job has left the queue (its status, or queue_info saying it is processing), so that
                # reports can tell queueing from generation.
                row = self._set(row, State.RUNNING, detail=f"status {record.status}")
            if self.clock() > deadline:
                self._defer(row, RetryableAPIError("the job has not finished in time", rule=classify(
                    "local", "timeout"), code="timeout"), "poll timeout")
                return None
            if record.status == STATUS_DONE:
                continue
            if not self.config.timed_polls:
                interval = self._backed_off(kind, interval)
                continue
            now = self.clock()
            forecast_end = expected_end(
                now=now, in_queue=record.in_queue, forecast_seconds=record.forecast_seconds,
                forecast_queue_seconds=record.forecast_queue_seconds, submitted_at=submitted_at,
                last_forecast_end=forecast_end, observed=self.observed.percentile(row.model, row.resolution))
            interval = next_interval(JobSight(kind, submitted_at, now, interval, forecast_end))

    async def _wait(self, seconds: float, riding: asyncio.Future[HistoryRecord] | None) -> HistoryRecord | None:
        """Sleep until the next poll, or until another job's call brings the record wanted (then: that record)."""
        if riding is None:
            await self.sleep(seconds)
            return None
        sleeper = asyncio.ensure_future(self.sleep(seconds))
        try:
            either: set[asyncio.Future[Any]] = {sleeper, riding}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not sleeper.done():
                sleeper.cancel()
        return riding.result() if riding.done() and not riding.cancelled() else None

    def _backed_off(self, kind: str, interval: float) -> float:
        """The next interval without an expected end (or at the fixed --poll-interval)."""
        return min(self.config.poll_max(kind), interval * POLL_GROWTH)

    def _poller(self, token: Token) -> BatchPoller:
        poller = self._pollers.get(token.account)
        if poller is None:
            async def fetch(ids: list[str], token: Token = token) -> dict[str, HistoryRecord | None]:
                # One recorded call for every job waiting; each job retries a failure on its own schedule.
                client = self.client_for(token)
                with _calls_to(client.api_base):
                    return await self.retrier.timed(None, "poll", client.history(token, history_ids=ids))

            rate = self.config.poll_budget()
            poller = self._pollers[token.account] = BatchPoller(
                fetch, budget=Budget(rate, now=self.clock()) if rate else None, sleep=self.sleep, clock=self.clock)
        return poller

    async def _download(self, row: RequestRow, token: Token, record: HistoryRecord | None) -> None:
        try:
            assets = await self.downloads.fetch(row, token, record)
        except APIError as error:
            if error.code == "too-large":  # the one download outcome that is final: it would never fit
                self._end(row, error.rule, error, detail="download refused")
            else:
                self._defer(row, error, f"download failed after {error.tries} tries")
            return
        if assets is not None:
            self._set(row, State.DOWNLOADED, detail=f"{len(assets)} file(s)")
