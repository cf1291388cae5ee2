"""The executor: runs the ledger's requests against the service, at most ``cap`` in flight per token.

Lifecycle of a request, every step committed to the ledger before the next begins::

    planned -> submitting -> submitted -> running -> succeeded -> downloaded
                                                  \\-> failed | blocked | invalid
    planned -> skipped (not admitted: stop, budget, interrupt; planned again on the next run)

- Admission is FIFO in plan order. Each admitted request holds a slot of its token from its submit until its
  generation ends; downloads happen outside the slot.
- Every outcome goes through :func:`jimeng_batch.protocol.outcomes.classify`: retries back off exponentially with jitter
  (or wait the given delay / ``Retry-After``), a bounded number of times; terminal outcomes end the request;
  a stop quarantines or exhausts the token (others go on) or, when no token is left or the stop concerns every
  token, stops admitting. In-flight jobs are always polled and downloaded to the end.
- A submit whose answer was lost is reconciled by asking for its ``submit_id`` before it is sent again, and a
  crash leaves ``submitting`` rows that the next run reconciles the same way before anything is resubmitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiolimiter import AsyncLimiter

from jimeng_batch.engine import ledger as states
from jimeng_batch.engine.cache import CachedAsset, ResultCache, copy_verified
from jimeng_batch.engine.download import ASSETS_DIR, Downloaded, Syncer, download
from jimeng_batch.engine.ledger import Ledger, RequestRow
from jimeng_batch.engine.poller import BatchPoller
from jimeng_batch.engine.token_pool import TokenPool
from jimeng_batch.errors import OutputError
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.client import (
    CallError,
    HistoryRecord,
    JimengClient,
    RequestCallError,
    RetryableCallError,
    StopCallError,
)
from jimeng_batch.protocol.drafts import build_request
from jimeng_batch.protocol.imagex import Uploader
from jimeng_batch.protocol.outcomes import Action, Rule, TokenEffect, classify
from jimeng_batch.protocol.request_spec import RequestSpec
from jimeng_batch.protocol.tokens import Token

T = TypeVar("T")
log = logging.getLogger("jimeng_batch.run")

HISTORY_BATCH = 50  # ids per get_history_by_ids call when reconciling
STOP_REASONS_EXIT_3 = frozenset({"credits", "login", "permission", "region", "budget", "preflight"})
FAIL_ON_STATES = (states.FAILED, states.BLOCKED, states.INVALID, states.SKIPPED)
FAIL_ON_DEFAULT = frozenset(FAIL_ON_STATES)
STATUS_QUEUED = 20  # a record's status while the job waits in the service's queue


@dataclass
class RunOptions:
    """How a run behaves; the manifest's ``limits`` and the command line fill it."""

    concurrency: int = 3  # jobs in flight per token (the document's rule)
    submits_per_second: float | None = None
    polls_per_second: float | None = None
    downloads_per_second: float | None = None
    uploads_per_second: float | None = None
    max_unfinished: int | None = None  # admitted but not yet final (downloads included); None: 4 x cap x tokens + 32
    max_retries: int = 5
    backoff_base: float = 1.0  # seconds; doubled per retry, with jitter
    backoff_max: float = 60.0
    poll_first: dict[str, float] = field(default_factory=lambda: {"image": 2.0, "video": 5.0})
    poll_max: dict[str, float] = field(default_factory=lambda: {"image": 5.0, "video": 15.0})
    poll_timeout: dict[str, float] = field(default_factory=lambda: {"image": 1800.0, "video": 3600.0})
    not_found_grace: float = 60.0  # a record missing this long after its submit has failed
    budget: float | None = None
    download: bool = True
    jitter_seed: int | None = None


@dataclass
class RunResult:
    """What a run ended with."""

    counts: dict[str, int]
    stop_reason: str | None
    interrupted: bool
    admitted_credits: float
    token_states: dict[str, str]
    in_flight_high_water: dict[str, int]
    fail_on: frozenset[str] = FAIL_ON_DEFAULT  # the final states that make the run fail (`--fail-on`)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.stop_reason in STOP_REASONS_EXIT_3:
            return 3
        bad = sum(self.counts.get(s, 0) for s in (states.FAILED, states.BLOCKED, states.INVALID)
                  if s in self.fail_on)
        # `skipped` covers requests left unsent; a job left in flight or undownloaded always fails the run.
        unsent = sum(self.counts.get(s, 0) for s in (states.SKIPPED, states.PLANNED)) if states.SKIPPED in \
            self.fail_on else 0
        unfinished = sum(self.counts.get(s, 0) for s in (*states.IN_FLIGHT_STATES, states.SUCCEEDED))
        return 1 if bad or unsent or unfinished else 0


_ROW_FIELDS = frozenset(field.name for field in dataclasses.fields(RequestRow))


class UploadUnavailable(Exception):
    """A local image cannot be uploaded (gone, changed, unreadable): the request fails with reason `upload`."""


class _Lease:
    """The token slot a request holds; a request can move to another token when its token is stopped."""

    def __init__(self, token: Token | None) -> None:
        self.token = token


class Executor:
    """Runs what the ledger holds. Create and :meth:`run` it inside the event loop."""

    def __init__(self, ledger: Ledger, client: JimengClient, tokens: list[Token], options: RunOptions, *,
                 out_dir: Path, region: catalog.Region, versions: catalog.ProtocolVersions, web_id: str,
                 cache: ResultCache | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.time,
                 on_change: Callable[[Counter[str]], None] | None = None,
                 uploader: Uploader | None = None, local_files: Mapping[str, Path] | None = None,
                 upload_scope: str | None = None) -> None:
        self.ledger = ledger
        self.client = client
        self.tokens = tokens
        self.options = options
        self.out_dir = out_dir
        self.region = region
        self.versions = versions
        self.web_id = web_id
        self.cache = cache
        self.sleep = sleep
        self.clock = clock
        self.on_change = on_change
        self.counts: Counter[str] = Counter(ledger.counts())
        self.stop_reason: str | None = None
        self.interrupted = False
        self.admitted_credits = 0.0
        self._random = random.Random(options.jitter_seed)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pollers: dict[str, BatchPoller] = {}
        self.uploader = uploader
        self.local_files = dict(local_files or {})
        # Where an uploaded image_uri is valid: the region, or the host standing in for it (a simulator forgets
        # its uploads when it stops, so another base URL means another upload).
        self.upload_scope = upload_scope or region.code
        self._uploads: dict[tuple[str, str], asyncio.Future[str]] = {}

    # -- bookkeeping ---------------------------------------------------------------------------------------------

    def _set(self, row: RequestRow, state: str, *, detail: str | None = None, **fields: Any) -> RequestRow:
        """Commit a state change, keep the in-memory counts, and return the row as it now is."""
        self.ledger.set_state(row.key, state, detail=detail, **fields)
        self.counts[row.state] -= 1
        self.counts[state] += 1
        if self.on_change is not None:
            self.on_change(self.counts)
        # The row as the ledger now holds it, without reading it back (this runs several times per request).
        known = {name: value for name, value in fields.items() if name in _ROW_FIELDS}
        if state == states.SUBMITTED and "submitted_at" not in known:
            known["submitted_at"] = self.ledger.last_change
        return dataclasses.replace(row, state=state, **known)

    def stop(self, reason: str) -> None:
        """Admit nothing more; in-flight jobs are still finished."""
        if self.stop_reason is None:
            self.stop_reason = reason
            log.warning("no new submits: %s", reason)

    def interrupt(self) -> None:
        """Ctrl-C or SIGTERM: the same drain as a stop."""
        self.interrupted = True
        self.stop("interrupted")

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def _limiter(self, rate: float | None) -> AsyncLimiter | None:
        # aiolimiter binds to the running loop, so limiters are made here, inside it.
        return AsyncLimiter(rate, 1.0) if rate else None

    @contextlib.asynccontextmanager
    async def _limited(self, limiter: AsyncLimiter | None) -> AsyncIterator[None]:
        if limiter is None:
            yield
        else:
            async with limiter:
                yield

    def _backoff(self, attempt: int, error: CallError) -> float:
        if error.retry_after is not None:
            return float(error.retry_after)
        if error.rule.action is Action.RETRY_AFTER and error.rule.delay is not None:
            return error.rule.delay
        delay: float = min(self.options.backoff_max, self.options.backoff_base * (2 ** attempt))
        return delay * self._random.uniform(0.5, 1.0)

    async def _timed(self, key: str | None, kind: str, call: Awaitable[T]) -> T:
        """Await ``call``, recording the attempt (its kind, time and outcome) in the ledger."""
        started = self.clock()
        begun = time.perf_counter()
        try:
            result = await call
        except CallError as error:
            self.ledger.add_attempt(key, kind, started, time.perf_counter() - begun, error.rule.action.value,
                                    error.code, error.http_status, str(error))
            raise
        self.ledger.add_attempt(key, kind, started, time.perf_counter() - begun, "ok")
        return result

    # -- the run -------------------------------------------------------------------------------------------------

    async def run(self) -> RunResult:
        self.pool = TokenPool(self.tokens, self.options.concurrency)
        self.submit_limiter = self._limiter(self.options.submits_per_second)
        self.poll_limiter = self._limiter(self.options.polls_per_second)
        self.download_limiter = self._limiter(self.options.downloads_per_second)
        self.upload_limiter = self._limiter(self.options.uploads_per_second)
        self.syncer = Syncer()
        self._backlog = asyncio.Semaphore(self.options.max_unfinished or 4 * self.options.concurrency * len(self.tokens)
                                          + 32)
        for row in list(self.ledger.in_states([states.SKIPPED])):
            self._set(row, states.PLANNED, detail="planned again")
        for key in self.ledger.verify_assets(self.out_dir):
            damaged = self.ledger.get(key)
            if damaged is not None and damaged.state == states.DOWNLOADED:
                log.warning("%s: a downloaded file is missing or damaged; downloading it again", key)
                self._set(damaged, states.SUCCEEDED, detail="asset missing or damaged: download again")
        try:
            await self._reconcile()
            self._resume_in_flight()
            await self._admit()
            await self._wait_all()
        finally:
            for task in self._tasks:
                task.cancel()
            for poller in self._pollers.values():
                await poller.close()
        await self.pool.close()
        reason = self.stop_reason or "not admitted"
        for row in list(self.ledger.in_states([states.PLANNED])):
            self._set(row, states.SKIPPED, reason=reason, detail=reason)
        self.ledger.flush()
        return RunResult(dict(self.ledger.counts()), self.stop_reason, self.interrupted, self.admitted_credits,
                         self.pool.states(), self.pool.high_water())

    def _spawn(self, work: Awaitable[None]) -> None:
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

    async def _reconcile(self) -> None:
        """Ask the service about every request whose submit may or may not have arrived, before resending any."""
        rows = list(self.ledger.in_states([states.SUBMITTING]))
        by_token: dict[str, list[RequestRow]] = {}
        for row in rows:
            by_token.setdefault(row.token or "", []).append(row)
        for label, group in by_token.items():
            token = self.pool.token(label)
            if token is None:
                for row in group:
                    self._set(row, states.SKIPPED, reason="token", detail="submitted with a token that is not in "
                              "this run's pool; cannot check whether it was received")
                continue
            for start in range(0, len(group), HISTORY_BATCH):
                chunk = group[start:start + HISTORY_BATCH]
                ids = [r.submit_id for r in chunk]

                def ask(ids: list[str] = ids, token: Token = token) -> Awaitable[dict[str, HistoryRecord | None]]:
                    return self.client.history(token, submit_ids=ids)

                found = await self._retrying(None, "reconcile", ask)
                if found is None:
                    continue  # could not ask: the rows stay `submitting` for the next run
                for row in chunk:
                    record = found.get(row.submit_id)
                    if record is not None and record.history_record_id:
                        self._set(row, states.SUBMITTED, history_record_id=record.history_record_id,
                                  detail="reconciled: the service had it")
                    else:
                        self._set(row, states.PLANNED, detail="reconciled: never received, safe to send again")

    def _resume_in_flight(self) -> None:
        for row in list(self.ledger.in_states([states.SUBMITTED, states.RUNNING, states.SUCCEEDED])):
            token = self.pool.token(row.token)
            if token is None:
                self._set(row, states.SKIPPED, reason="token",
                          detail="in flight on a token that is not in this run's pool")
                continue
            if row.state == states.SUCCEEDED:
                self._spawn(self._finish(row, token, lease=None))
            else:
                self.pool.hold(token)
                self._spawn(self._finish(row, token, lease=_Lease(token)))

    async def _admit(self) -> None:
        queue = deque(self.ledger.keys_in_states([states.PLANNED]))
        while queue and not self.stopping:
            row = self.ledger.get(queue[0])
            if row is None or row.state != states.PLANNED:
                queue.popleft()
                continue
            if await self._from_cache(row):
                queue.popleft()
                continue
            budget = self.options.budget
            if budget is not None and self.admitted_credits + row.estimated_credits > budget:
                self.stop("budget")
                break
            # Backpressure: jobs finish faster than their files download when the asset host is slow; without a
            # bound, finished-but-not-downloaded requests would pile up in memory.
            await self._backlog.acquire()
            token = await self.pool.acquire()
            if token is None or self.stopping:
                self._backlog.release()
                if token is not None:
                    await self.pool.release(token)
                if token is None:
                    self.stop(self._no_token_reason())
                break
            queue.popleft()
            self.admitted_credits += row.estimated_credits
            self._spawn(self._admitted(row, token))

    async def _admitted(self, row: RequestRow, token: Token) -> None:
        try:
            await self._finish(row, token, lease=_Lease(token))
        finally:
            self._backlog.release()

    def _no_token_reason(self) -> str:
        reasons = [state for state in self.pool.states().values()]
        if any("quarantined" in r for r in reasons) and not any("exhausted" in r for r in reasons):
            return "login"
        return "credits"

    # -- one request ---------------------------------------------------------------------------------------------

    async def _finish(self, row: RequestRow, token: Token, lease: _Lease | None) -> None:
        """Drive one request from where it stands to a final state."""
        record: HistoryRecord | None = None
        try:
            if row.state == states.PLANNED:
                assert lease is not None
                submitted = await self._submit(row, lease)
                if submitted is None:
                    return
                row, token = submitted, lease.token or token
            if row.state in (states.SUBMITTED, states.RUNNING):
                record = await self._poll(row, token)
        finally:
            if lease is not None and lease.token is not None:
                await self.pool.release(lease.token)
                lease.token = None
        if row.state == states.SUCCEEDED or record is not None:
            current = self.ledger.get(row.key)
            if current is not None and current.state == states.SUCCEEDED and self.options.download:
                await self._download_all(current, token, record)

    async def _retrying(self, key: str | None, kind: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """A read-only call (poll, reconcile) retried on retryable errors; None when it keeps failing."""
        for attempt in range(self.options.max_retries + 1):
            try:
                async with self._limited(self.poll_limiter):
                    return await self._timed(key, kind, call())
            except RetryableCallError as error:
                if attempt == self.options.max_retries:
                    log.warning("%s %s: giving up after %d tries: %s", kind, key or "", attempt + 1, error)
                    return None
                await self.sleep(self._backoff(attempt, error))
        return None

    async def _submit(self, row: RequestRow, lease: _Lease) -> RequestRow | None:
        """Upload what it needs, then send the draft until the service accepts it; None when it ended unsent."""
        spec = row.spec()
        attempt = 0
        while True:
            token = lease.token
            assert token is not None
            sending = False
            try:
                uploaded = await self._ensure_uploaded(spec, token, row.key)
                row = self._set(row, states.SUBMITTING, token=token.label, detail=f"attempt {attempt + 1}")
                self.ledger.bump(row.key, "submits")
                request = build_request(spec, self.region, self.versions, web_id=self.web_id,
                                        created_ms=int(self.clock() * 1000), uploaded=uploaded)
                sending = True
                async with self._limited(self.submit_limiter):
                    submitted = await self._timed(row.key, "submit",
                                                  self.client.submit(request, token, request_key=row.key))
            except RetryableCallError as error:
                if sending and error.rule.reason in ("network", "server"):
                    # The submit may have arrived and been charged even though no answer came back.
                    known = await self._known(row, token)
                    if known is not None:
                        return self._set(row, states.SUBMITTED, history_record_id=known,
                                         detail="the service had it after a lost answer")
                if attempt >= self.options.max_retries:
                    self._end(row, error.rule, error, detail=f"gave up after {attempt + 1} tries")
                    return None
                self.ledger.bump(row.key, "retries")
                if row.state != states.PLANNED:
                    row = self._set(row, states.PLANNED, detail=f"retry: {error.rule.meaning}")
                await self.sleep(self._backoff(attempt, error))
                attempt += 1
                continue
            except StopCallError as error:
                if row.state != states.PLANNED:
                    row = self._set(row, states.PLANNED, detail=f"not accepted: {error.rule.meaning}")
                replacement = await self._stopped(token, error.rule, lease)
                if replacement is None:
                    return None
                continue
            except RequestCallError as error:
                self._end(row, error.rule, error)
                return None
            except UploadUnavailable as problem:
                self._end(row, classify("fail_code", "upload"), None, code="upload", detail=str(problem),
                                 reason="upload")
                return None
            return self._set(row, states.SUBMITTED, history_record_id=submitted.history_record_id,
                             task_id=submitted.task_id)

    async def _ensure_uploaded(self, spec: RequestSpec, token: Token, key: str) -> dict[str, str]:
        """The image_uri of each local file the request names, uploading each file once per account and region."""
        uploaded: dict[str, str] = {}
        for image in spec.images():
            if image.kind != "file" or image.sha256 is None or image.sha256 in uploaded:
                continue
            uploaded[image.sha256] = await self._upload_once(token, image.sha256, key)
        return uploaded

    async def _upload_once(self, token: Token, sha256: str, key: str) -> str:
        memo = (token.account, sha256)
        known = self.ledger.uploaded(token.account, self.upload_scope, sha256)
        if known is not None:
            return known
        pending = self._uploads.get(memo)
        if pending is None:  # the first request that needs this file uploads it; the others wait for it
            pending = self._uploads[memo] = asyncio.ensure_future(self._upload(token, sha256, key))
        try:
            return await asyncio.shield(pending)
        finally:
            if pending.done() and (pending.cancelled() or pending.exception() is not None):
                self._uploads.pop(memo, None)  # a failed upload may be tried again

    async def _upload(self, token: Token, sha256: str, key: str) -> str:
        path = self.local_files.get(sha256)
        if path is None or self.uploader is None:
            raise UploadUnavailable("the local image is not part of this run's manifest any more")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UploadUnavailable(f"cannot read {path.name} ({exc.strerror})") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise UploadUnavailable(f"{path.name} changed since it was planned; plan the manifest again")
        async with self._limited(self.upload_limiter):
            image = await self._timed(key, "upload", self.uploader.upload(token, data))
        self.ledger.add_upload(token.account, self.upload_scope, sha256, image.uri, image.width or None,
                               image.height or None, image.format or None, len(data))
        log.info("uploaded %s as %s", path.name, image.uri)
        return image.uri

    async def _stopped(self, token: Token, rule: Rule, lease: _Lease) -> Token | None:
        """A stop outcome: take the token (or everything) out; a new token for the request if one is left."""
        await self.pool.release(token)
        lease.token = None
        if rule.token is TokenEffect.NONE:
            self.stop(rule.reason)
            return None
        await self.pool.mark(token, rule.token, rule.reason)
        log.warning("token %s %s: %s", token.label, "quarantined" if rule.token is TokenEffect.QUARANTINE
                    else "exhausted", rule.meaning)
        if self.stopping:
            return None
        replacement = await self.pool.acquire()
        if replacement is None:
            self.stop(self._no_token_reason())
            return None
        lease.token = replacement
        return replacement

    async def _known(self, row: RequestRow, token: Token) -> str | None:
        """The history id of ``row`` if the service already has its submit_id."""
        found = await self._retrying(row.key, "reconcile",
                                     lambda: self.client.history(token, submit_ids=[row.submit_id]))
        record = (found or {}).get(row.submit_id)
        return record.history_record_id if record is not None and record.history_record_id else None

    def _end(self, row: RequestRow, rule: Rule, error: CallError | None, *, detail: str | None = None,
             code: str | None = None, reason: str | None = None) -> None:
        state = {Action.BLOCKED: states.BLOCKED, Action.INVALID: states.INVALID}.get(rule.action, states.FAILED)
        self._set(row, state, reason=reason or rule.reason, code=code or (error.code if error else rule.code),
                  message=str(error) if error else rule.meaning, detail=detail or rule.meaning)
        return None

    async def _poll(self, row: RequestRow, token: Token) -> HistoryRecord | None:
        """Poll until the job ends; the finished record, or None when it failed or could not be followed."""
        kind = row.kind
        history_id = row.history_record_id
        assert history_id is not None
        submitted_at = row.submitted_at or self.clock()
        interval = self.options.poll_first[kind]
        deadline = submitted_at + self.options.poll_timeout[kind]
        while True:
            await self.sleep(interval)
            self.ledger.bump(row.key, "polls")
            try:
                record = await self._poller(token).poll(history_id)
            except RetryableCallError as error:
                interval = max(interval, self._backoff(0, error))
                if self.clock() > deadline:
                    self._end(row, classify("transport", "timeout"), error, detail="poll timeout")
                    return None
                continue
            except StopCallError as error:
                await self.pool.mark(token, error.rule.token, error.rule.reason)
                if error.rule.token is TokenEffect.NONE:
                    self.stop(error.rule.reason)
                log.warning("%s: cannot follow its job any more (%s); left for the next run", row.key, error)
                return None
            except RequestCallError as error:
                self._end(row, error.rule, error)
                return None
            if record is None:
                if self.clock() - submitted_at > self.options.not_found_grace:
                    self._end(row, classify("fail_code", "not-found"), None, detail="record not found",
                                     code="not-found")
                    return None
                continue  # shortly after a submit the service may not know the record yet
            if record.failed:
                self._end(row, classify("fail_code", record.fail_code), None, code=record.fail_code,
                                 detail=record.fail_message or f"status {record.status}")
                return None
            if record.complete(kind):
                self._set(row, states.SUCCEEDED, detail=f"{len(record.items)} item(s)")
                return record
            if row.state != states.RUNNING and record.status != STATUS_QUEUED:
                # Only once the job has left the queue, so that reports can tell queueing from generation.
                row = self._set(row, states.RUNNING, detail=f"status {record.status}")
            if self.clock() > deadline:
                self._end(row, classify("transport", "timeout"), None, detail="poll timeout", code="timeout")
                return None
            interval = min(self.options.poll_max[kind], interval * 1.5)

    def _poller(self, token: Token) -> BatchPoller:
        poller = self._pollers.get(token.label)
        if poller is None:
            async def fetch(ids: list[str], token: Token = token) -> dict[str, HistoryRecord | None]:
                async with self._limited(self.poll_limiter):
                    return await self._timed(None, "poll", self.client.history(token, history_ids=ids))

            poller = self._pollers[token.label] = BatchPoller(fetch)
        return poller

    async def _download_all(self, row: RequestRow, token: Token, record: HistoryRecord | None) -> None:
        """Fetch every item of a finished job; a URL that stopped working is refreshed by polling once more."""
        folder = self.out_dir / ASSETS_DIR
        done = {asset["idx"] for asset in self.ledger.assets_of(row.key)}
        refreshed = record is not None
        if record is None:
            record = await self._refresh(row, token)
            if record is None:
                return
        kind = row.kind
        assets: list[CachedAsset] = []
        for index, item in enumerate(record.items):
            if index in done:
                continue
            for attempt in range(self.options.max_retries + 1):
                try:
                    async with self._limited(self.download_limiter):
                        got: Downloaded = await self._timed(row.key, "download",
                                                            download(self.client, item, folder, row.key, index,
                                                                     self.syncer))
                except OSError as exc:
                    # The output folder itself failed (full, read-only): nothing more can be kept, so stop here;
                    # the request stays `succeeded` and the next run downloads it.
                    raise OutputError(f"{folder}: cannot write a download ({exc.strerror or exc}); finished "
                                      "files and the ledger are kept, and the run can be resumed") from exc
                except CallError as error:
                    if error.http_status in (403, 404, 410) and not refreshed:
                        fresh = await self._refresh(row, token)
                        refreshed = True
                        if fresh is not None and index < len(fresh.items):
                            item = fresh.items[index]
                            continue
                    if attempt >= self.options.max_retries or isinstance(error, RequestCallError):
                        self._end(row, error.rule, error, detail=f"download of item {index} failed")
                        return
                    await self.sleep(self._backoff(attempt, error))
                    continue
                self.ledger.add_asset(row.key, index, kind, str(got.path.relative_to(self.out_dir)), got.sha256,
                                      got.size, got.width, got.height, got.format, item.item_id, got.url_expires)
                assets.append(CachedAsset(index, kind, str(got.path.resolve()), got.sha256, got.size, got.width,
                                          got.height, got.format))
                break
        self._set(row, states.DOWNLOADED, detail=f"{len(record.items)} file(s)")
        if self.cache is not None and not done:
            self.cache.store(row.key, assets)

    async def _refresh(self, row: RequestRow, token: Token) -> HistoryRecord | None:
        history_id = row.history_record_id or ""
        found = await self._retrying(row.key, "poll", lambda: self.client.history(token, history_ids=[history_id]))
        record = (found or {}).get(history_id)
        if record is None or not record.complete(row.kind):
            log.warning("%s: the finished job's files cannot be listed now; left for the next run", row.key)
            return None
        return record

    async def _from_cache(self, row: RequestRow) -> bool:
        """Reuse a cached result of the same key: no submission, the files copied in and checked."""
        if self.cache is None:
            return False
        cached = self.cache.lookup(row.key)
        if not cached:
            return False
        folder = self.out_dir / ASSETS_DIR
        for asset in cached:
            target = folder / f"{row.key}-{asset.index}{Path(asset.path).suffix}"
            if Path(asset.path).resolve() != target.resolve() and not copy_verified(Path(asset.path), target,
                                                                                    asset.sha256):
                return False
        for asset in cached:
            target = folder / f"{row.key}-{asset.index}{Path(asset.path).suffix}"
            self.ledger.add_asset(row.key, asset.index, asset.kind, str(target.relative_to(self.out_dir)),
                                  asset.sha256, asset.size, asset.width, asset.height, asset.format, None, None)
        self._set(row, states.DOWNLOADED, shared_from="cache", detail="reused from the result cache")
        return True

