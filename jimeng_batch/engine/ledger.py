"""The ledger: a SQLite file (WAL) in the output folder that records every step of every request.

Tables: ``runs``, ``requests`` (one row per distinct request, keyed by its stable key, with its ``submit_id`` and
state), ``events`` (every state change, with its time: the lifecycle, for reports), ``attempts`` (every call,
with its outcome) and ``assets`` (every downloaded file, with its sha256). The schema is created and evolved by
the numbered migrations in :data:`MIGRATIONS`, recorded in ``migrations``.

Each change is committed before the caller goes on: a request is ``submitting`` on disk before its submit is
sent, so a crash at any moment leaves a ledger that says what might have happened. WAL with
``synchronous=NORMAL`` survives the process being killed (the writes are in the operating system's hands); a power
cut could lose the last few commits, which the idempotent ``submit_id`` and the reconciliation on resume cover.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from jimeng_batch.engine.run_log import enabled, log, step
from jimeng_batch.engine.states import STATES, State
from jimeng_batch.errors import APIError, ConfigError, LedgerError
from jimeng_batch.files import file_sha256, make_folder
from jimeng_batch.intake.plan import KnownRow
from jimeng_batch.intake.sources import display_path
from jimeng_batch.protocol.request_spec import RequestSpec, Source, spec_from_params

LEDGER_NAME = "ledger.sqlite"
T = TypeVar("T")
# Where results come from (`requests.origin`, `runs.origin`): the API host's base URL, or this prefix and the
# simulator's settings' fingerprint. A rehearsal's results never pass for the real thing.
SIMULATOR_ORIGIN = "simulator"


def is_simulated(origin: object) -> bool:
    return isinstance(origin, str) and origin.startswith(f"{SIMULATOR_ORIGIN}:")


def same_service(a: str, b: str) -> bool:
    """Two origins that are one service: the same host, or both the simulator (any settings)."""
    return a == b or (is_simulated(a) and is_simulated(b))


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at REAL NOT NULL,
            finished_at REAL,
            manifest TEXT NOT NULL,
            manifest_sha256 TEXT NOT NULL,
            tool_version TEXT NOT NULL,
            options TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'running',
            exit_code INTEGER,
            stop_reason TEXT
        );
        CREATE TABLE requests (
            key TEXT PRIMARY KEY,
            submit_id TEXT NOT NULL UNIQUE,
            ord INTEGER NOT NULL,
            job TEXT NOT NULL,
            source_file TEXT NOT NULL,
            source_row INTEGER,
            sample INTEGER NOT NULL,
            type TEXT NOT NULL,
            model TEXT NOT NULL,
            resolution TEXT NOT NULL,
            params TEXT NOT NULL,
            estimated_credits REAL NOT NULL,
            state TEXT NOT NULL,
            token TEXT,
            history_record_id TEXT,
            task_id TEXT,
            submits INTEGER NOT NULL DEFAULT 0,
            polls INTEGER NOT NULL DEFAULT 0,
            retries INTEGER NOT NULL DEFAULT 0,
            code TEXT,
            reason TEXT,
            message TEXT,
            shared_from TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            submitted_at REAL,
            finished_at REAL,
            downloaded_at REAL,
            run_id INTEGER REFERENCES runs(id)
        );
        CREATE INDEX requests_by_state ON requests(state, ord);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL,
            run_id INTEGER,
            state TEXT NOT NULL,
            at REAL NOT NULL,
            detail TEXT
        );
        CREATE INDEX events_by_key ON events(key);
        CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            key TEXT,
            run_id INTEGER,
            kind TEXT NOT NULL,
            started_at REAL NOT NULL,
            seconds REAL NOT NULL,
            outcome TEXT NOT NULL,
            code TEXT,
            http_status INTEGER,
            message TEXT
        );
        CREATE INDEX attempts_by_key ON attempts(key);
        CREATE TABLE assets (
            key TEXT NOT NULL,
            idx INTEGER NOT NULL,
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            width INTEGER,
            height INTEGER,
            format TEXT,
            item_id TEXT,
            url_expires REAL,
            downloaded_at REAL NOT NULL,
            PRIMARY KEY (key, idx)
        );
    """),
    Migration(2, "uploads", """
        CREATE TABLE uploads (
            account TEXT NOT NULL,
            region TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            image_uri TEXT NOT NULL,
            width INTEGER,
            height INTEGER,
            format TEXT,
            size INTEGER NOT NULL,
            uploaded_at REAL NOT NULL,
            PRIMARY KEY (account, region, sha256)
        );
    """),
    Migration(3, "origins, accounts and plans", """
        ALTER TABLE runs ADD COLUMN origin TEXT;
        ALTER TABLE runs ADD COLUMN pid INTEGER;
        ALTER TABLE requests ADD COLUMN origin TEXT;
        ALTER TABLE requests ADD COLUMN account TEXT;
        ALTER TABLE requests ADD COLUMN planned_in INTEGER;
    """),
    # The service's queue as polls see it (the latest, and the first sight, for the report's queue stage), and which
    # version of a video was downloaded (the high-bitrate download version, or the preview and why).
    Migration(4, "queue and download versions", """
        ALTER TABLE requests ADD COLUMN queue_position INTEGER;
        ALTER TABLE requests ADD COLUMN queue_length INTEGER;
        ALTER TABLE requests ADD COLUMN forecast_seconds REAL;
        ALTER TABLE requests ADD COLUMN forecast_queue_seconds REAL;
        ALTER TABLE requests ADD COLUMN first_queue_position INTEGER;
        ALTER TABLE requests ADD COLUMN first_forecast_queue_seconds REAL;
        ALTER TABLE assets ADD COLUMN variant TEXT;
        ALTER TABLE assets ADD COLUMN fallback_reason TEXT;
    """),
    # What each spreadsheet row of a plan made, by the row's digest (its number, its cells, and all of its job and
    # the settings its requests depend on: intake/plan.py's job_digest): a later plan of a changed spreadsheet
    # recalls the rows that did not change instead of checking and expanding them again.
    Migration(5, "plan rows", """
        CREATE TABLE plan_rows (
            digest BLOB PRIMARY KEY,
            job TEXT NOT NULL,
            regions TEXT NOT NULL,
            models TEXT NOT NULL,
            keys TEXT NOT NULL
        );
    """),
)
LATEST_VERSION = MIGRATIONS[-1].version
_SEPARATOR = "\n"  # between the keys, regions, models of a plan row (none holds a line break)


@dataclass(frozen=True, slots=True)
class RequestRow:
    """A request as the ledger holds it."""

    key: str
    submit_id: str
    ord: int
    job: str
    type: str
    model: str
    resolution: str
    params: dict[str, Any]
    estimated_credits: float
    state: State
    token: str | None
    history_record_id: str | None
    code: str | None
    reason: str | None
    submitted_at: float | None
    sample: int
    source_file: str
    source_row: int | None
    account: str | None = None  # the one-way id of the account it was sent with (never the token, never a label)
    origin: str | None = None  # where it was sent (or its cached result came from)
    planned_in: int | None = None  # the run whose plan last named it

    @property
    def kind(self) -> str:
        return "video" if self.type == "video" else "image"

    def spec(self) -> RequestSpec:
        """The request, rebuilt for building its draft."""
        return spec_from_params(self.key, self.submit_id, self.sample, self.params,
                                Source(self.source_file, self.job, 0, self.source_row), self.estimated_credits)


# What the run log shows of a state change besides its detail: small values, never a payload (the token column
# holds the masked label; the message is the service's one-line message, scrubbed like the detail).
_LOGGED_COLUMNS = ("token", "history_record_id", "shared_from", "reason", "code", "message")
# Requests read by state come a page of this many rows at a time (see Ledger.in_states).
ROWS_PAGE = 1000
_ROW_COLUMNS = ("key, submit_id, ord, job, type, model, resolution, params, estimated_credits, state, token, "
                "history_record_id, code, reason, submitted_at, sample, source_file, source_row, account, origin, "
                "planned_in")


def _row(values: tuple[Any, ...]) -> RequestRow:
    data = list(values)
    data[7] = json.loads(data[7])
    data[9] = State(data[9])
    return RequestRow(*data)


@dataclass(frozen=True, slots=True)
class AssetRecord:
    """One downloaded file of a request, as the ledger (and the result cache) records it."""

    index: int  # the item's place in the record's item_list
    kind: str  # "image" or "video"
    path: str  # relative to the output folder: assets/<key>-<index>.<ext>
    sha256: str
    size: int
    width: int | None
    height: int | None
    format: str | None
    item_id: str | None = None
    url_expires: float | None = None  # when the signed URL it came from stops working (unix time)
    variant: str | None = None  # a video's version: "high" (get_local_item_list's download version) or "preview"
    fallback_reason: str | None = None  # why a video is the preview


_ASSET_COLUMNS = "idx, kind, path, sha256, size, width, height, format, item_id, url_expires, variant, fallback_reason"


@dataclass(frozen=True, slots=True)
class QueueSight:
    """What one poll said of a job's place in the service's queue (protocol reference 5)."""

    position: int | None  # queue_info.queue_idx
    length: int | None  # queue_info.queue_length
    forecast_seconds: float | None  # forecast_cost_time: queue plus generation
    forecast_queue_seconds: float | None  # forecast_cost_time.forecast_queue_cost


def _cannot_write(path: Path, exc: sqlite3.OperationalError, lost: str = "") -> LedgerError:
    """The error of a failed write (disk full, read-only folder); ``lost``: what it leaves unwritten."""
    return LedgerError(f"{path}: cannot write the ledger ({exc}); {lost}what was recorded before is kept, and the "
                       "run can be resumed once the folder is writable")


def _writes(method: Callable[..., T]) -> Callable[..., T]:
    """Turn a failed write (disk full, read-only folder) into a LedgerError that says so."""

    @functools.wraps(method)
    def wrapper(self: Ledger, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            raise _cannot_write(self.path, exc) from exc

    return wrapper


class Ledger:
    """The ledger of one output folder."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA busy_timeout=5000")
            # A damaged file can open and even migrate, then fail half-way through a run or a status: check it
            # whole first (a tenth of a second for a ledger of a million events).
            found = self.db.execute("PRAGMA quick_check(1)").fetchone()
            if found is None or found[0] != "ok":
                raise sqlite3.DatabaseError("damaged: SQLite's integrity check fails")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            if hasattr(self, "db"):
                self.db.close()
            raise LedgerError(f"{path}: not a usable ledger ({exc}); move it away to start afresh") from exc
        self.run_id: int | None = None
        self.run_started = 0.0  # when the run recorded by begin_run started (unix time)
        self.plan_id: int | None = None  # the run whose plan is current (None: a plan from before plans had ids)
        # Every text the ledger stores from a server passes through this (a run sets it to its token scrubber):
        # a server that quotes the request's cookie back must not put a session token on disk.
        self.scrub: Callable[[str], str] = str
        self.last_change = 0.0  # the time of the last state change (what `submitted_at` was set to)
        self._bumps: dict[tuple[str, str], int] = {}
        self._attempts: list[tuple[Any, ...]] = []
        self._queue: dict[str, tuple[QueueSight, QueueSight]] = {}  # key -> (first sight, latest), unwritten

    @classmethod
    def in_folder(cls, folder: Path, **kwargs: Any) -> Ledger:
        """The ledger of an output folder, creating the folder and the ledger when they do not exist yet."""
        make_folder(folder, "--out")
        return cls(folder / LEDGER_NAME, **kwargs)

    @classmethod
    def open_existing(cls, folder: Path, **kwargs: Any) -> Ledger:
        """The ledger of a run's output folder; a clear error when ``folder`` is not one."""
        return cls(cls.path_in(folder), **kwargs)

    @staticmethod
    def path_in(folder: Path) -> Path:
        """The ledger file of a run's output folder (for readers that open it read-only); a clear error when
        ``folder`` is not one."""
        path = folder / LEDGER_NAME
        if not path.is_file():
            raise ConfigError(f"{display_path(folder)}: no ledger here ({LEDGER_NAME}); is it a run's output "
                              "folder?")
        return path

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.flush()
        except LedgerError:
            pass  # the folder could not be written; what was committed before stays
        self.db.close()

    # -- migrations ---------------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                        "applied_at REAL NOT NULL)")
        done = {row[0] for row in self.db.execute("SELECT version FROM migrations")}
        if done and max(done) > LATEST_VERSION:
            raise LedgerError(f"{self.path}: written by a newer jimeng-batch (schema {max(done)}); upgrade to use it")
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            # One script, one transaction: a migration is applied whole or not at all.
            # The values are the migration table's own constants and a float, never input.
            record = (f"INSERT INTO migrations VALUES ({migration.version}, '{migration.name}', "  # noqa: S608
                      f"{self._clock()!r});")
            try:
                self.db.executescript("BEGIN IMMEDIATE;" + migration.sql + record + "COMMIT;")
            except sqlite3.Error:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    def schema_version(self) -> int:
        return int(self.db.execute("SELECT MAX(version) FROM migrations").fetchone()[0] or 0)

    class _Tx:
        """A transaction; opened inside another (:meth:`planning`), a part of that one, committed with it."""

        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db
            self.outer = False

        def __enter__(self) -> None:
            self.outer = not self.db.in_transaction
            if self.outer:
                self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, kind: object, *rest: object) -> None:
            if self.outer:
                self.db.execute("ROLLBACK" if kind else "COMMIT")

    def _transaction(self) -> Ledger._Tx:
        return Ledger._Tx(self.db)

    @contextlib.contextmanager
    def planning(self) -> Iterator[None]:
        """Write a plan (:meth:`add_planned`, :meth:`mark_planned`, :class:`PlanRows`) as one transaction.

        A plan is all or nothing: a run stopped while planning plans again next time, so the requests and rows of
        a plan cut short are no use to it, and a commit every batch only cost time. With WAL each commit writes
        out every page the batch dirtied, and the keys are hashes that land all over the table's indexes: one
        commit made a 300,000-row plan 28% faster (bench/bench_plan.py). SQLite spills what does not fit its
        cache to the WAL, so memory stays as it was. The WAL grows to about the plan's size meanwhile (where a
        commit a batch kept it to a few MiB): it is copied into the ledger and cut back to nothing at the end.
        """
        try:
            with self._transaction():
                yield
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as exc:
            raise _cannot_write(self.path, exc, "the plan was not written; ") from exc

    # -- runs ----------------------------------------------------------------------------------------------------

    @_writes
    def begin_run(self, manifest: str, manifest_sha256: str, tool_version: str, options: dict[str, Any], *,
                  origin: str | None = None, pid: int | None = None) -> int:
        self.run_started = self._clock()
        cursor = self.db.execute(
            "INSERT INTO runs (started_at, manifest, manifest_sha256, tool_version, options, origin, pid) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.run_started, manifest, manifest_sha256, tool_version, json.dumps(options, sort_keys=True), origin,
             pid),
        )
        self.run_id = int(cursor.lastrowid or 0)
        return self.run_id

    @_writes
    def set_run_options(self, options: dict[str, Any]) -> None:
        self.db.execute("UPDATE runs SET options = ? WHERE id = ?", (json.dumps(options, sort_keys=True), self.run_id))

    @_writes
    def end_run(self, status: str, exit_code: int, stop_reason: str | None = None) -> None:
        self.flush()
        self.db.execute("UPDATE runs SET finished_at = ?, status = ?, exit_code = ?, stop_reason = ? WHERE id = ?",
                        (self._clock(), status, exit_code, stop_reason, self.run_id))

    def last_run(self) -> dict[str, Any] | None:
        row = self.db.execute("SELECT id, manifest, manifest_sha256, options, status, exit_code, stop_reason, origin, "
                              "pid, started_at FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return {"id": row[0], "manifest": row[1], "manifest_sha256": row[2], "options": json.loads(row[3]),
                "status": row[4], "exit_code": row[5], "stop_reason": row[6], "origin": row[7], "pid": row[8],
                "started_at": row[9]}

    def origins(self) -> dict[str, int]:
        """Where the folder's requests were sent (or their cached results came from): origin -> requests."""
        rows = self.db.execute("SELECT origin, COUNT(*) FROM requests WHERE origin IS NOT NULL GROUP BY origin")
        return {str(origin): int(n) for origin, n in rows.fetchall()}

    # -- requests ------------------------------------------------------------------------------------------------

    @_writes
    def add_planned(self, specs: Iterable[RequestSpec], batch: int = 2000, *, distinct: bool = False) -> int:
        """Record every request not yet in the ledger as planned, and mark every request ``specs`` names as part of
        this run's plan (``planned_in``); returns how many were new. ``distinct``: ``specs`` name each key once
        (as the runner's plan does), so in a ledger that held no requests none is looked up (3 s of a first plan
        of a million rows)."""
        now = self._clock()
        before = self.total()
        look_up = before > 0 or not distinct
        pending: list[tuple[Any, ...]] = []
        # Read once (a scan of the table): the run holds the folder's lock, so it is the only writer
        ords = itertools.count(int(self.db.execute("SELECT COALESCE(MAX(ord), -1) + 1 FROM requests").fetchone()[0]))

        def flush() -> None:
            with self._transaction():
                # The new requests take the next places in order, without gaps for the ones the ledger holds
                # already: so that a plan that passes over those (the rows a memo recalls) numbers alike.
                known = self._known_keys([row[0] for row in pending]) if look_up else set()
                self.db.executemany(
                    "INSERT INTO requests (key, submit_id, ord, job, source_file, source_row, sample, type, model, "
                    "resolution, params, estimated_credits, state, created_at, updated_at, run_id, planned_in) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'planned', ?, ?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET planned_in = excluded.planned_in",
                    [(row[0], row[1], -1 if row[0] in known else next(ords), *row[2:]) for row in pending],
                )
            pending.clear()

        for spec in specs:
            pending.append((spec.key, spec.submit_id, spec.source.job, spec.source.file, spec.source.row, spec.sample,
                            spec.type, spec.model, spec.resolution, json.dumps(spec.params(), ensure_ascii=False),
                            spec.estimated_credits, now, now, self.run_id, self.run_id))
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
        return self.total() - before

    def _known_keys(self, keys: list[str], chunk: int = 500) -> set[str]:
        """Which of ``keys`` the ledger holds."""
        found: set[str] = set()
        for start in range(0, len(keys), chunk):
            part = keys[start:start + chunk]
            marks = ", ".join("?" * len(part))
            found.update(key for (key,) in self.db.execute(f"SELECT key FROM requests WHERE key IN ({marks})",  # noqa: S608
                                                           part))
        return found

    @_writes
    def mark_planned(self, keys: Iterable[str], batch: int = 2000) -> None:
        """Mark requests already in the ledger as part of this run's plan (what :meth:`add_planned` does for the
        requests it is given that the ledger holds)."""
        pending: list[tuple[int | None, str]] = []
        for key in keys:
            pending.append((self.run_id, key))
            if len(pending) >= batch:
                with self._transaction():
                    self.db.executemany("UPDATE requests SET planned_in = ? WHERE key = ?", pending)
                pending.clear()
        if pending:
            with self._transaction():
                self.db.executemany("UPDATE requests SET planned_in = ? WHERE key = ?", pending)

    def plan_rows(self, *, write: bool, prune: bool = False) -> PlanRows:
        """The rows of earlier plans, to recall (and, with ``write``, to remember this plan's new rows; with
        ``prune``, a plan of the whole manifest, to forget the rows it neither recalled nor remembered)."""
        return PlanRows(self.db, write=write, prune=prune)

    @_writes
    def set_aside_unplanned(self, plan: int) -> tuple[int, int]:
        """Requests never sent that the plan ``plan`` does not name become ``removed``; removed ones it names again
        are ``planned``. Returns (set aside, planned again). Requests already sent are left alone: they are paid for.
        """
        now = self._clock()
        with self._transaction():
            logged = enabled()
            aside = self.db.execute(
                "SELECT key FROM requests WHERE state IN ('planned', 'skipped') AND (planned_in IS NULL OR "
                "planned_in != ?)", (plan,)).fetchall() if logged else []
            back = self.db.execute("SELECT key FROM requests WHERE state = 'removed' AND planned_in = ?",
                                   (plan,)).fetchall() if logged else []
            self.db.execute(
                "INSERT INTO events (key, run_id, state, at, detail) SELECT key, ?, 'removed', ?, 'no longer in the "
                "manifest: set aside, never sent' FROM requests WHERE state IN ('planned', 'skipped') AND "
                "(planned_in IS NULL OR planned_in != ?)", (self.run_id, now, plan))
            removed = self.db.execute(
                "UPDATE requests SET state = 'removed', updated_at = ? WHERE state IN ('planned', 'skipped') AND "
                "(planned_in IS NULL OR planned_in != ?)", (now, plan)).rowcount
            self.db.execute(
                "INSERT INTO events (key, run_id, state, at, detail) SELECT key, ?, 'planned', ?, 'back in the "
                "manifest' FROM requests WHERE state = 'removed' AND planned_in = ?", (self.run_id, now, plan))
            restored = self.db.execute(
                "UPDATE requests SET state = 'planned', reason = NULL, updated_at = ? WHERE state = 'removed' AND "
                "planned_in = ?", (now, plan)).rowcount
        for (key,) in aside:
            log.info("no longer in the manifest: set aside, never sent", extra=step("state", key, State.REMOVED))
        for (key,) in back:
            log.info("back in the manifest", extra=step("state", key, State.PLANNED))
        return int(removed), int(restored)

    def unplanned_count(self, planned: Callable[[str], bool]) -> int:
        """How many never-sent requests a plan would set aside: those whose key ``planned`` says it does not name."""
        rows = self.db.execute("SELECT key FROM requests WHERE state IN ('planned', 'skipped')")
        return sum(1 for (key,) in rows if not planned(key))

    @_writes
    def verify_assets(self, folder: Path, *, hashes: bool = False) -> dict[str, int]:
        """Requests whose files are missing or not as recorded (key -> how many files); their assets are dropped.

        Sizes are compared at the start of every run (cheap, and it catches files deleted or cut short);
        ``hashes`` (``--verify``) reads every file and compares its sha256 too.
        """
        damaged: Counter[str] = Counter()
        base = os.fspath(folder)
        # Streamed, not fetched whole (a folder of a million requests holds millions of files), and stat-ed by
        # joined strings: building a Path for each was half the time of checking 100,000 files
        for key, path, size, sha256 in self.db.execute("SELECT key, path, size, sha256 FROM assets"):
            file = os.path.join(base, path)
            try:
                ok = os.stat(file).st_size == size and (not hashes or file_sha256(Path(file)) == sha256)
            except OSError:
                ok = False
            if not ok:
                damaged[key] += 1
        for key in sorted(damaged):
            with self._transaction():
                self.db.execute("DELETE FROM assets WHERE key = ?", (key,))
        return dict(sorted(damaged.items()))

    @_writes
    def set_state(self, key: str, state: State, *, detail: str | None = None, **fields: Any) -> None:
        """Move a request to ``state`` (and set other columns), recording the event, in one commit."""
        now = self._clock()
        self.last_change = now
        columns = {"state": state, **fields}
        if state == State.SUBMITTED and "submitted_at" not in fields:
            columns["submitted_at"] = now
        if state in (State.SUCCEEDED, State.FAILED, State.BLOCKED, State.INVALID) and "finished_at" not in fields:
            columns["finished_at"] = now
        if state == State.DOWNLOADED:
            columns.setdefault("downloaded_at", now)
        self._change(key, state, now, detail, columns)

    @_writes
    def note(self, key: str, state: State, *, detail: str, **fields: Any) -> None:
        """Record why a request stays where it is (an event in its current state), updating ``fields`` but none
        of its times: a transient failure that leaves it for the next run."""
        self._change(key, state, self._clock(), detail, dict(fields), event="stays")

    def _change(self, key: str, state: State, now: float, detail: str | None, columns: dict[str, Any],
                event: str = "state") -> None:
        """Update a request's columns and record the event, in one commit; server text is scrubbed first. The
        event is the run log's line too (one logging call: the ledger is where every state change is written)."""
        if detail is not None:
            detail = self.scrub(detail)
        if columns.get("message") is not None:
            columns["message"] = self.scrub(columns["message"])
        columns["updated_at"] = now
        assignments = ", ".join(f"{name} = ?" for name in columns)
        with self._transaction():
            self.db.execute(f"UPDATE requests SET {assignments} WHERE key = ?", (*columns.values(), key))  # noqa: S608
            self.db.execute("INSERT INTO events (key, run_id, state, at, detail) VALUES (?, ?, ?, ?, ?)",
                            (key, self.run_id, state, now, detail))
            self._flush_counters()
        if enabled():
            shown: dict[str, Any] = {name: columns.get(name) for name in _LOGGED_COLUMNS}
            log.log(logging.WARNING if event == "stays" else logging.INFO, detail or "",
                    extra=step(event, key, state, **shown))

    def bump(self, key: str, column: str, by: int = 1) -> None:
        """Count a submit, poll or retry. Counters and attempts are written with the next state change (or at
        :meth:`flush`): they are diagnostics, and a commit of their own for each was a large share of a run's CPU.
        """
        assert column in ("submits", "polls", "retries")
        self._bumps[(key, column)] = self._bumps.get((key, column), 0) + by

    def queue_seen(self, key: str, sight: QueueSight) -> None:
        """Record what a poll said of a job's place in the queue (buffered like :meth:`bump`: polls are many)."""
        earlier = self._queue.get(key)
        self._queue[key] = (earlier[0] if earlier else sight, sight)

    def queue_of(self, key: str) -> tuple[QueueSight, QueueSight] | None:
        """The first and latest queue sights recorded for ``key`` (after :meth:`flush`), or None."""
        row = self.db.execute("SELECT first_queue_position, first_forecast_queue_seconds, queue_position, "
                              "queue_length, forecast_seconds, forecast_queue_seconds FROM requests WHERE key = ?",
                              (key,)).fetchone()
        if row is None or (row[0] is None and row[2] is None):
            return None
        return QueueSight(row[0], None, None, row[1]), QueueSight(row[2], row[3], row[4], row[5])

    def _flush_counters(self) -> None:
        for (key, column), by in self._bumps.items():
            self.db.execute(f"UPDATE requests SET {column} = {column} + ? WHERE key = ?", (by, key))  # noqa: S608
        self._bumps.clear()
        for key, (first, latest) in self._queue.items():
            # The first sight is kept from the first poll that saw the job queued, whatever later polls say.
            self.db.execute(
                "UPDATE requests SET queue_position = ?, queue_length = ?, forecast_seconds = ?, "
                "forecast_queue_seconds = ?, first_queue_position = COALESCE(first_queue_position, ?), "
                "first_forecast_queue_seconds = COALESCE(first_forecast_queue_seconds, ?) WHERE key = ?",
                (latest.position, latest.length, latest.forecast_seconds, latest.forecast_queue_seconds,
                 first.position, first.forecast_queue_seconds, key))
        self._queue.clear()
        if self._attempts:
            self.db.executemany(
                "INSERT INTO attempts (key, run_id, kind, started_at, seconds, outcome, code, http_status, message) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", self._attempts)
            self._attempts.clear()

    @_writes
    def flush(self) -> None:
        """Write the buffered counters and attempts now."""
        if self._bumps or self._attempts or self._queue:
            with self._transaction():
                self._flush_counters()

    def get(self, key: str) -> RequestRow | None:
        row = self.db.execute(f"SELECT {_ROW_COLUMNS} FROM requests WHERE key = ?", (key,)).fetchone()  # noqa: S608
        return _row(row) if row else None

    def in_states(self, states: Iterable[State], *, page: int = ROWS_PAGE) -> Iterator[RequestRow]:
        """Requests in any of ``states``, in plan order, read a page at a time (by ``ord``, then key): a whole
        batch's rows with their parameters would be about 1.2 KB each in memory (120 MB for 100,000 planned
        requests). Each page is fetched whole before its rows are yielded, so a caller may change the state of the
        rows it is given; a row moved into ``states`` further on in plan order is met when its page comes."""
        wanted = list(states)
        marks = ", ".join("?" for _ in wanted)
        query = (f"SELECT {_ROW_COLUMNS} FROM requests WHERE state IN ({marks}) "  # noqa: S608
                 "AND (ord > ? OR (ord = ? AND key > ?)) ORDER BY ord, key LIMIT ?")
        last: tuple[int, str] = (-(1 << 62), "")
        while True:
            rows = self.db.execute(query, (*wanted, last[0], last[0], last[1], page)).fetchall()
            for row in rows:
                yield _row(row)
            if len(rows) < page:
                return
            last = (int(rows[-1][2]), str(rows[-1][0]))

    def keys_by_region(self, states: Iterable[State]) -> list[tuple[str, str | None]]:
        """Requests in any of ``states`` with the region each goes to, in plan order."""
        wanted = list(states)
        marks = ", ".join("?" for _ in wanted)
        query = (f"SELECT key, json_extract(params, '$.region') FROM requests WHERE state IN ({marks}) "  # noqa: S608
                 "ORDER BY ord")
        return [(row[0], row[1]) for row in self.db.execute(query, wanted)]

    def jobs_by_region(self, states: Iterable[State]) -> dict[str, list[str]]:
        """The jobs with requests in any of ``states``, by the region their requests go to."""
        wanted = list(states)
        marks = ", ".join("?" for _ in wanted)
        query = (f"SELECT DISTINCT json_extract(params, '$.region'), job FROM requests "  # noqa: S608
                 f"WHERE state IN ({marks}) ORDER BY ord")
        found: dict[str, list[str]] = {}
        for region, job in self.db.execute(query, wanted):
            jobs = found.setdefault(str(region), [])
            if job not in jobs:
                jobs.append(job)
        return found

    def keys_in_states(self, states: Iterable[State]) -> list[str]:
        wanted = list(states)
        marks = ", ".join("?" for _ in wanted)
        query = f"SELECT key FROM requests WHERE state IN ({marks}) ORDER BY ord"  # noqa: S608
        return [row[0] for row in self.db.execute(query, wanted)]

    def counts(self) -> dict[State, int]:
        """Requests by state (states with none left out), in lifecycle order."""
        found = dict(self.db.execute("SELECT state, COUNT(*) FROM requests GROUP BY state").fetchall())
        return {state: int(found[state]) for state in STATES if found.get(state)}

    def total(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM requests").fetchone()[0])

    def unsent_by_model(self) -> dict[str, int]:
        """Requests a run may still send (planned, skipped, or submitting and maybe never received), by model."""
        rows = self.db.execute("SELECT model, COUNT(*) FROM requests WHERE state IN ('planned', 'skipped', "
                               "'submitting') GROUP BY model")
        return {str(model): int(n) for model, n in rows.fetchall()}

    # -- attempts and assets -------------------------------------------------------------------------------------

    def add_attempt(self, key: str | None, kind: str, started_at: float, seconds: float, outcome: str,
                    code: str | None = None, http_status: int | None = None, message: str | None = None) -> None:
        """Record a call (buffered like :meth:`bump`; written with the next state change)."""
        self._attempts.append((key, self.run_id, kind, started_at, seconds, outcome, code, http_status, message))

    def record_call(self, key: str | None, kind: str, started_at: float, seconds: float,
                    error: APIError | None) -> None:
        """Record a call and how it went: ``ok``, or the action its error's outcome calls for."""
        if error is None:
            self.add_attempt(key, kind, started_at, seconds, "ok")
        else:
            self.add_attempt(key, kind, started_at, seconds, error.rule.action.value, error.code, error.http_status,
                             self.scrub(str(error)))

    @_writes
    def add_asset(self, key: str, asset: AssetRecord) -> None:
        self.db.execute(
            f"INSERT OR REPLACE INTO assets (key, {_ASSET_COLUMNS}, downloaded_at) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, asset.index, asset.kind, asset.path, asset.sha256, asset.size, asset.width, asset.height,
             asset.format, asset.item_id, asset.url_expires, asset.variant,
             None if asset.fallback_reason is None else self.scrub(asset.fallback_reason), self._clock()),
        )

    def assets_of(self, key: str) -> list[AssetRecord]:
        """The files recorded for ``key``, by index."""
        cursor = self.db.execute(f"SELECT {_ASSET_COLUMNS} FROM assets WHERE key = ? ORDER BY idx",  # noqa: S608
                                 (key,))
        return [AssetRecord(*row) for row in cursor.fetchall()]

    # -- uploads -------------------------------------------------------------------------------------------------

    def uploaded(self, account: str, region: str, sha256: str) -> str | None:
        """The image_uri of a file already uploaded for this account (a one-way id, never the token) and region."""
        row = self.db.execute("SELECT image_uri FROM uploads WHERE account = ? AND region = ? AND sha256 = ?",
                              (account, region, sha256)).fetchone()
        return str(row[0]) if row else None

    @_writes
    def add_upload(self, account: str, region: str, sha256: str, image_uri: str, width: int | None,
                   height: int | None, fmt: str | None, size: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (account, region, sha256, image_uri, width, height, fmt, size, self._clock()))


class PlanRows:
    """The ledger's memo of spreadsheet rows (:class:`jimeng_batch.intake.plan.RowMemo`).

    A recalled row's requests are all in the ledger: the rows a plan remembers are held in a temporary table (the
    connection's own, gone if the process dies) and become recallable only in :meth:`commit`, called once every
    request of the plan is written; requests are never deleted. ``prune`` (a plan of the whole manifest): the rows
    it recalls are noted too, and :meth:`commit` forgets every other row, so that the memo holds the sheet as it is
    now, not every version of it (a sorted sheet of a million rows would add a million rows each time); a row that
    comes back is planned again, and finds its requests in the ledger.
    """

    def __init__(self, db: sqlite3.Connection, *, write: bool, prune: bool = False, batch: int = 2000) -> None:
        self.db = db
        self.write = write
        self.batch = batch
        self.pending: list[tuple[bytes, str, str, str, str]] = []
        self.kept: list[tuple[bytes]] = []  # prune: the digests recalled, not yet in temp.kept_plan_rows
        # A first plan (or one of a ledger from before plan rows) has nothing to recall: no query per row then
        self.empty = db.execute("SELECT 1 FROM main.plan_rows LIMIT 1").fetchone() is None
        self.prune = prune and write and not self.empty  # nothing to forget in a first plan
        if write:
            # Appended as they come, and copied in digest order: a digest is a hash, so inserting each into a
            # keyed table lands all over it (a million rows: 6.3 s of a plan's 55 in SQLite, 2.7 s appended and sorted)
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS new_plan_rows (digest BLOB, job TEXT, "
                            "regions TEXT, models TEXT, keys TEXT)")
        if self.prune:
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS kept_plan_rows (digest BLOB)")

    def recall(self, digest: bytes) -> KnownRow | None:
        if self.empty:
            return None
        row = self.db.execute("SELECT job, regions, models, keys FROM main.plan_rows WHERE digest = ?",
                              (digest,)).fetchone()
        if row is None:
            return None
        if self.prune:
            self.kept.append((digest,))
            if len(self.kept) >= self.batch:
                self._flush()
        job, regions, models, keys = row
        return KnownRow(str(job), *(tuple(str(text).split(_SEPARATOR)) for text in (regions, models, keys)))

    def remember(self, digest: bytes, row: KnownRow) -> None:
        if not self.write:
            return
        self.pending.append((digest, row.job, _SEPARATOR.join(row.regions), _SEPARATOR.join(row.models),
                             _SEPARATOR.join(row.keys)))
        if len(self.pending) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            with Ledger._Tx(self.db):
                self.db.executemany("INSERT INTO temp.new_plan_rows VALUES (?, ?, ?, ?, ?)",
                                    self.pending)
            self.pending.clear()
        if self.kept:
            with Ledger._Tx(self.db):
                self.db.executemany("INSERT INTO temp.kept_plan_rows VALUES (?)", self.kept)
            self.kept.clear()

    def commit(self) -> None:
        """Make the rows remembered recallable: call once the requests they made are all in the ledger."""
        self._flush()
        with Ledger._Tx(self.db):
            self.db.execute("INSERT OR REPLACE INTO main.plan_rows SELECT * FROM temp.new_plan_rows "
                            "ORDER BY digest")
            if self.prune:
                self.db.execute("DELETE FROM main.plan_rows WHERE digest NOT IN (SELECT digest FROM "
                                "temp.new_plan_rows) AND digest NOT IN (SELECT digest FROM temp.kept_plan_rows)")
                self.db.execute("DELETE FROM temp.kept_plan_rows")
            self.db.execute("DELETE FROM temp.new_plan_rows")
