"""The simulator's memory: accounts, records, stats, and the business rules that change them.

Nothing here speaks HTTP or sleeps. Time comes from an injected clock, and a record's status is computed from
``now - submitted_at`` against the queue and generation durations sampled when it was accepted; polling reads the
clock and never advances anything. All mutations take one lock so that a test thread may read the stats (or
change credits) while the server thread serves requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from jimeng_batch.protocol import catalog
from jimeng_batch.sim.clock import Clock, system_clock
from jimeng_batch.sim.codes import Concept, Outcome, outcome
from jimeng_batch.sim.config import SimConfig
from jimeng_batch.sim.imagex import ImageXStore
from jimeng_batch.sim.journal import Journal, StoredAccount, StoredRecord, account_id
from jimeng_batch.sim.validate import (
    DraftError,
    DraftSpec,
    parse_submission,
    submit_id_of,
)

__all__ = ["Account", "Record", "SimError", "SimState", "mask_token"]

Sleep = Callable[[float], Awaitable[None]]

# Status codes of a record (protocol reference 2.3).
QUEUED, GENERATING, FINALISING, FAILED, DONE = 20, 42, 45, 30, 50
HIGH_BITRATE_VARIANT = "hq"  # the asset name's suffix of a video's download version (get_local_item_list)
_FINALISING_SHARE = 0.2  # the last fifth of the generation time reports 45
# Days of the daily claim: the service's own day, Asia/Shanghai (UTC+8, no daylight saving), which every client names
# in the claim's time_zone.
CLAIM_DAY_OFFSET_S = 8 * 3600


def claim_day(now: float) -> int:
    """The number of the claim day ``now`` falls in."""
    return int(now + CLAIM_DAY_OFFSET_S) // 86400


def claim_day_end(now: float) -> int:
    """Unix seconds when the claim day of ``now`` ends (when its grant expires)."""
    return (claim_day(now) + 1) * 86400 - CLAIM_DAY_OFFSET_S


def mask_token(token: str) -> str:
    """How an account appears in stats and logs: never the token itself."""
    return f"{token[:4]}…({len(token)})"


class SimError(Exception):
    """A business error: which outcome (looked up per profile in codes.py) and a detail for ``errmsg``."""

    def __init__(self, concept: Concept, detail: str = "") -> None:
        super().__init__(f"{concept}: {detail}" if detail else concept)
        self.concept = concept
        self.detail = detail


@dataclass(eq=False)
class Record:
    """One accepted submit and the job it started."""

    history_record_id: str
    task_id: str
    submit_id: str
    account: str  # masked label
    spec: DraftSpec
    image_count: int
    submitted_at: float
    queue_s: float
    generation_s: float
    filtered: bool
    fail_code: str
    cost: int
    visible_at: float

    @property
    def finishes_at(self) -> float:
        """When the record reaches a terminal status (failed records fail at the end of their queue time)."""
        return self.submitted_at + self.queue_s + (0.0 if self.filtered else self.generation_s)

    def status(self, now: float) -> int:
        elapsed = now - self.submitted_at
        if elapsed < self.queue_s:
            return QUEUED
        if self.filtered:
            return FAILED
        generating = elapsed - self.queue_s
        if generating >= self.generation_s:
            return DONE
        return FINALISING if generating >= self.generation_s * (1 - _FINALISING_SHARE) else GENERATING

    def asset_name(self, index: int, variant: str = "") -> str:
        """The file name of an item; a video's ``variant`` (``hq``) names its high-bitrate download version."""
        extension = "mp4" if self.spec.kind == "video" else "png"
        suffix = f"-{variant}" if variant else ""
        return f"{self.history_record_id}-{index}{suffix}.{extension}"

    def item_id(self, index: int) -> str:
        return f"{self.history_record_id}{index + 1:02d}"


@dataclass(eq=False)
class Account:
    """A session token's credits, open jobs, uploads and recent request times."""

    token: str  # "" for an account restored from a journal until a request with its token arrives
    id: str  # a one-way id of the token (what a journal stores)
    label: str
    purchase_credit: int
    gift_credit: int = 0
    last_receive_day: int | None = None
    open_records: list[Record] = field(default_factory=list)
    uploaded_uris: set[str] = field(default_factory=set)
    recent_requests: deque[float] = field(default_factory=deque)

    @property
    def balance(self) -> int:
        return self.purchase_credit + self.gift_credit

    def prune_open(self, now: float) -> int:
        self.open_records = [r for r in self.open_records if r.finishes_at > now]
        return len(self.open_records)

    def stored(self) -> StoredAccount:
        return StoredAccount(self.id, self.label, self.purchase_credit, self.gift_credit, self.last_receive_day,
                             frozenset(self.uploaded_uris))


@dataclass
class _Stats:
    submits_by_submit_id: Counter[str] = field(default_factory=Counter)
    repeats_by_submit_id: Counter[str] = field(default_factory=Counter)
    charges_by_submit_id: Counter[str] = field(default_factory=Counter)
    credits_charged: Counter[str] = field(default_factory=Counter)
    in_flight_high_water: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    polls: int = 0
    polled_ids: int = 0
    uploads: int = 0
    upload_bytes: int = 0
    downloads: int = 0
    download_bytes: int = 0


def _derived_int(seed: int, purpose: str, modulus: int) -> int:
    digest = hashlib.sha256(f"{seed}\x00{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % modulus


class SimState:
    """All mutable simulator state, behind one lock; the clock and the async sleep are injected."""

    def __init__(self, config: SimConfig, *, clock: Clock = system_clock, sleep: Sleep = asyncio.sleep,
                 journal: Journal | None = None) -> None:
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.lock = threading.Lock()
        self.fault_rng = random.Random(config.seed)
        self.asset_secret = hashlib.sha256(f"jimeng-sim-assets\x00{config.seed}".encode()).digest()
        self.imagex = ImageXStore(seed=config.seed, token_ttl_s=config.upload_token_ttl_s,
                                  max_upload_bytes=config.max_upload_bytes)
        self._accounts: dict[str, Account] = {}  # by token
        self._by_id: dict[str, Account] = {}  # by account id, restored ones included
        self._records: dict[str, Record] = {}
        self._by_submit: dict[tuple[str, str], Record] = {}  # by (account id, submit_id)
        self.journal = journal
        self._stats = _Stats()
        self._counter = 0
        self._id_base = 7_000_000_000_000 + _derived_int(config.seed, "history", 10**9) * 1000  # 13 digits, as live
        self._costs = catalog.CostTable(dict(config.cost_overrides))
        self._filter_words = tuple(w.lower() for w in config.content_filter.words if w)
        self._known_uris = frozenset(config.known_image_uris)
        self._labels: set[str] = set()
        if journal is not None:
            self._restore(journal)
        for token, credits in config.accounts.items():
            if account_id(token) not in self._by_id:
                self._add_account(token, int(credits))

    def _restore(self, journal: Journal) -> None:
        """Accounts and records as a previous simulator on this journal left them."""
        for stored in journal.accounts():
            account = Account("", stored.id, stored.label, stored.purchase, stored.gift, stored.last_receive_day,
                              uploaded_uris=set(stored.uploaded))
            self._by_id[stored.id] = account
            self._labels.add(stored.label)
        stats = self._stats
        for stored_record in journal.records():
            owner = self._by_id.get(stored_record.account)
            if owner is None:
                continue
            spec = parse_submission(stored_record.body, known_uri=lambda uri: True)
            record = Record(stored_record.history_record_id, stored_record.task_id, stored_record.submit_id,
                            owner.label, spec, stored_record.image_count, stored_record.submitted_at,
                            stored_record.queue_s, stored_record.generation_s, stored_record.filtered,
                            stored_record.fail_code, stored_record.cost, stored_record.visible_at)
            self._records[record.history_record_id] = record
            self._by_submit[(owner.id, record.submit_id)] = record
            owner.open_records.append(record)
            self._counter = max(self._counter, stored_record.counter)
            stats.submits_by_submit_id[record.submit_id] += 1
            stats.charges_by_submit_id[record.submit_id] += 1
            stats.credits_charged[owner.label] += record.cost

    def _save(self, account: Account) -> None:
        if self.journal is not None:
            self.journal.save_account(account.stored())

    def set_faults(self, changes: Mapping[str, Any]) -> None:
        """Replace some fault settings of a running simulator (checked like a config file's ``faults:``)."""
        from jimeng_batch.sim.config import config_from_mapping

        parsed = config_from_mapping({"faults": dict(changes)}).faults  # unknown keys and bad values refused
        with self.lock:
            merged = replace(self.config.faults, **{name: getattr(parsed, name) for name in changes})
            self.config = replace(self.config, faults=merged)

    def set_catalog(self, changes: Mapping[str, Any]) -> None:
        """Replace the account's catalog of a running simulator (checked like a config file's ``catalog:``): a
        model retired between two runs, say."""
        from jimeng_batch.sim.config import config_from_mapping

        parsed = config_from_mapping({"catalog": dict(changes)}).catalog
        with self.lock:
            self.config = replace(self.config, catalog=parsed)

    # -- outcomes ------------------------------------------------------------------------------------------------

    def outcome(self, concept: Concept) -> Outcome:
        return outcome(self.config.profile, concept, self.config.error_codes)

    def count_request(self, endpoint: str) -> None:
        with self.lock:
            self._stats.requests[endpoint] += 1

    def count_error(self, code: str) -> None:
        with self.lock:
            self._stats.errors[code] += 1

    def chance(self, probability: float) -> bool:
        """One draw from the seeded fault generator; no draw at all when the probability is zero."""
        if probability <= 0.0:
            return False
        with self.lock:
            return self.fault_rng.random() < probability

    def pick(self, options: tuple[int, ...]) -> int:
        with self.lock:
            return self.fault_rng.choice(options)

    # -- accounts ------------------------------------------------------------------------------------------------

    def account(self, token: str | None) -> Account:
        """The account of a sessionid; a login error when there is none (or it is unknown and accounts are strict)."""
        if not token:
            raise SimError("login", "sessionid cookie missing")
        with self.lock:
            account = self._accounts.get(token)
            if account is None:
                restored = self._by_id.get(account_id(token))
                if restored is not None:  # known from the journal: the same account, now with its token
                    restored.token = token
                    self._accounts[token] = account = restored
                elif self.config.strict_accounts:
                    raise SimError("login", "unknown sessionid")
                else:
                    account = self._add_account(token, self.config.default_credits)
            return account

    def _add_account(self, token: str, credits: int) -> Account:
        label = mask_token(token)
        if label in self._labels:  # two tokens with the same prefix and length must not merge in the stats
            label = f"{label}#{sum(1 for known in self._labels if known.startswith(label)) + 1}"
        self._labels.add(label)
        account = Account(token, account_id(token), label, credits)
        self._accounts[token] = account
        self._by_id[account.id] = account
        self._save(account)
        return account

    def set_credits(self, token: str, credits: int) -> None:
        """Test hook: give an account exactly ``credits`` (all as purchased credits)."""
        account = self.account(token)
        with self.lock:
            account.purchase_credit, account.gift_credit = credits, 0
            self._save(account)

    def check_rate(self, account: Account) -> None:
        limit = self.config.rate_limit
        if limit.requests is None:
            return
        now = self.clock()
        with self.lock:
            recent = account.recent_requests
            while recent and recent[0] <= now - limit.window_s:
                recent.popleft()
            if len(recent) >= limit.requests:
                raise SimError("rate_limited", f"more than {limit.requests} requests in {limit.window_s:g}s")
            recent.append(now)

    def credit_info(self, account: Account) -> dict[str, Any]:
        with self.lock:
            gift, purchase = account.gift_credit, account.purchase_credit
        day_end = claim_day_end(self.clock())  # the day's grant expires with the day
        expiring = [{"credit_amount": gift, "expire_time": day_end}] if gift else []
        return {
            "credit": {"gift_credit": gift, "purchase_credit": purchase, "vip_credit": 0},
            "expiring_credits": expiring,
            "credits_detail": {"gift_credits": [{"residual_credits": gift, "credits_life_end": day_end}]
                               if gift else []},
        }

    def receive_credit(self, account: Account) -> dict[str, Any]:
        """The daily claim: ``daily_credits`` once per day; a second claim the same day is answered like the
        first but with ``is_first_receive`` false and a quota of 0 (nothing granted, no error)."""
        day = claim_day(self.clock())
        with self.lock:
            first = account.last_receive_day != day
            quota = self.config.daily_credits if first else 0
            if first:
                account.last_receive_day = day
                account.gift_credit += quota
                self._save(account)
        # The shape of the live (HK) answer, protocol reference 2.6.
        return {"is_first_receive": first, "receive_quota": quota, "has_popup": first, "receive_inter_days": 1}

    def account_info(self, account: Account) -> dict[str, Any]:
        """What ``/passport/account/info/v2`` answers for a live session: a stable user id, never the token."""
        user_id = int(account.id[:12], 16)
        return {"user_id": user_id, "user_id_str": str(user_id), "app_id": 513695}

    # -- jobs ----------------------------------------------------------------------------------------------------

    def cost_of(self, spec: DraftSpec) -> int:
        return math.ceil(self._costs.estimate(spec.model, spec.resolution, spec.duration_s))

    def submit(self, account: Account, body: Any) -> tuple[Record, bool]:
        """Accept a submit; ``(record, True)`` when the submit_id was already known (nothing charged again)."""
        try:
            submit_id = submit_id_of(body)
        except DraftError as exc:
            raise SimError("param", str(exc)) from None
        now = self.clock()
        with self.lock:
            known = self._by_submit.get((account.id, submit_id))
            if known is not None:
                self._stats.submits_by_submit_id[submit_id] += 1
                self._stats.repeats_by_submit_id[submit_id] += 1
                return known, True
            uploaded = account.uploaded_uris
            known_uris = self._known_uris
            try:
                spec = parse_submission(body, known_uri=lambda uri: uri in uploaded or uri in known_uris)
            except DraftError as exc:
                raise SimError(exc.concept, str(exc)) from None
            if spec.model.key in self.config.unavailable_models or spec.model.name in self.config.unavailable_models:
                raise SimError("model_unavailable", spec.model.key)
            if self.config.profile == "live" and catalog.needs_a_bogus(spec.model):
                # As the live service does: no plain HTTP client can make the browser's a_bogus (nothing charged).
                raise SimError("anti_bot", f"{spec.model.name} needs a_bogus")
            cap = self.config.max_in_flight
            in_flight = account.prune_open(now)
            if cap is not None and in_flight >= cap:
                raise SimError("in_flight_cap", f"{in_flight} jobs unfinished, at most {cap}")
            cost = self.cost_of(spec)
            if account.balance < cost:
                raise SimError("credits", f"this request costs {cost}, the balance is {account.balance}")
            record = self._new_record(account, submit_id, spec, cost, now)
            gift_used = min(account.gift_credit, cost)
            account.gift_credit -= gift_used
            account.purchase_credit -= cost - gift_used
            if self.journal is not None:  # on disk before the answer that reveals it is sent
                self.journal.add_record(StoredRecord(
                    record.history_record_id, record.task_id, submit_id, account.id, dict(body), record.image_count,
                    record.submitted_at, record.queue_s, record.generation_s, record.filtered, record.fail_code,
                    cost, record.visible_at, self._counter), account.stored())
            account.open_records.append(record)
            stats = self._stats
            stats.submits_by_submit_id[submit_id] += 1
            stats.charges_by_submit_id[submit_id] += 1
            stats.credits_charged[account.label] += cost
            stats.in_flight_high_water[account.label] = max(stats.in_flight_high_water[account.label], in_flight + 1)
            return record, False

    def _new_record(self, account: Account, submit_id: str, spec: DraftSpec, cost: int, now: float) -> Record:
        self._counter += 1
        history_id = str(self._id_base + self._counter)
        rng = random.Random(f"{self.config.seed}\x00{submit_id}")  # latencies independent of arrival order
        latency = self.config.latency
        generation = latency.generation
        if spec.kind == "video" and latency.video_generation:
            generation = latency.video_generation
        prompt = spec.prompt.lower()
        filtered = any(word in prompt for word in self._filter_words)
        record = Record(
            history_record_id=history_id,
            task_id=str(int(history_id) + 10**12),
            submit_id=submit_id,
            account=account.label,
            spec=spec,
            image_count=1 if spec.kind == "video" else (spec.image_count or self.config.images_per_request),
            submitted_at=now,
            queue_s=latency.queue.sample(rng),
            generation_s=generation.sample(rng),
            filtered=filtered,
            fail_code=self.config.content_filter.fail_code if filtered else "",
            cost=cost,
            visible_at=now + self.config.faults.not_found_after_submit_s,
        )
        self._records[history_id] = record
        self._by_submit[(account.id, submit_id)] = record
        return record

    def lookup(self, account: Account, history_ids: list[str], submit_ids: list[str]) -> dict[str, Record]:
        """The account's records for the ids asked, keyed by the id as asked; absent ids are simply missing."""
        now = self.clock()
        found: dict[str, Record] = {}
        with self.lock:
            self._stats.polls += 1
            self._stats.polled_ids += len(history_ids) + len(submit_ids)
            for hid in history_ids:
                record = self._records.get(hid)
                if record is not None and record.account == account.label and record.visible_at <= now:
                    found[hid] = record
            for sid in submit_ids:
                record = self._by_submit.get((account.id, sid))
                if record is not None and record.visible_at <= now:
                    found[sid] = record
        return found

    # -- assets and uploads --------------------------------------------------------------------------------------

    def asset(self, name: str) -> tuple[Record, int, str] | None:
        """The record, item index and variant ("" or ``hq``) an asset file name refers to, if it exists and is
        finished."""
        stem = name.rpartition(".")[0]
        history_id, _, rest = stem.partition("-")
        index_text, _, variant = rest.partition("-")
        record = self._records.get(history_id)
        if record is None or not index_text.isdigit() or variant not in ("", HIGH_BITRATE_VARIANT):
            return None
        index = int(index_text)
        if index >= record.image_count or record.asset_name(index, variant) != name:
            return None
        if variant and record.spec.kind != "video":
            return None
        if record.status(self.clock()) != DONE:
            return None
        return record, index, variant

    def item(self, account: Account, item_id: str) -> Record | None:
        """The account's finished video record whose item ``item_id`` is (``get_local_item_list``)."""
        with self.lock:
            record = self._records.get(item_id[:-2])
        if (record is None or record.account != account.label or record.spec.kind != "video"
                or record.item_id(0) != item_id or record.status(self.clock()) != DONE):
            return None
        return record

    def count_download(self, size: int) -> None:
        with self.lock:
            self._stats.downloads += 1
            self._stats.download_bytes += size

    def count_upload(self, account_token: str, uri: str, size: int) -> None:
        account = self.account(account_token)
        with self.lock:
            account.uploaded_uris.add(uri)
            self._stats.uploads += 1
            self._stats.upload_bytes += size
            self._save(account)

    # -- observability -------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A JSON-ready snapshot; accounts appear only by their masked label."""
        now = self.clock()
        with self.lock:
            s = self._stats
            in_flight = {a.label: a.prune_open(now) for a in self._by_id.values()}
            balances = {a.label: a.balance for a in self._by_id.values()}
            return {
                "profile": self.config.profile,
                "submits_by_submit_id": dict(s.submits_by_submit_id),
                "repeats_by_submit_id": dict(s.repeats_by_submit_id),
                "charges_by_submit_id": dict(s.charges_by_submit_id),
                "credits_charged": dict(s.credits_charged),
                "credits_balance": balances,
                "in_flight": in_flight,
                "in_flight_high_water": dict(s.in_flight_high_water),
                "polls": s.polls,
                "polled_ids": s.polled_ids,
                "uploads": s.uploads,
                "upload_bytes": s.upload_bytes,
                "downloads": s.downloads,
                "download_bytes": s.download_bytes,
                "requests": dict(s.requests),
                "errors": dict(s.errors),
                "records": len(self._records),
            }

