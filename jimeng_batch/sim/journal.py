"""The simulator's memory on disk, so that a simulator restarted on the same file is the same service.

A run with ``--sim`` starts its simulator in-process; when that process is killed, a simulator that forgot its
records would turn every job in flight into "not found". With a journal, accounts (balances, uploads) and records
are written before the answer that reveals them is sent, and loaded again on the next start, so a killed and
resumed rehearsal behaves like one against a service that never went away.

Accounts are stored by a one-way id of their session token, never the token: a real token used against the
simulator must not land in a file. A restored account is recognised when a request with its token arrives.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jimeng_batch.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY, label TEXT NOT NULL, purchase INTEGER NOT NULL, gift INTEGER NOT NULL,
    last_receive_day INTEGER, uploaded TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    history_record_id TEXT PRIMARY KEY, task_id TEXT NOT NULL, submit_id TEXT NOT NULL, account TEXT NOT NULL,
    body TEXT NOT NULL, image_count INTEGER NOT NULL, submitted_at REAL NOT NULL, queue_s REAL NOT NULL,
    generation_s REAL NOT NULL, filtered INTEGER NOT NULL, fail_code TEXT NOT NULL, cost INTEGER NOT NULL,
    visible_at REAL NOT NULL, counter INTEGER NOT NULL
);
"""


def account_id(token: str) -> str:
    """What the journal keys an account by: a one-way id of its session token."""
    return hashlib.sha256(b"jimeng-batch simulator account\0" + token.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class StoredAccount:
    id: str
    label: str
    purchase: int
    gift: int
    last_receive_day: int | None
    uploaded: frozenset[str]


@dataclass(frozen=True, slots=True)
class StoredRecord:
    history_record_id: str
    task_id: str
    submit_id: str
    account: str  # the account id
    body: dict[str, Any]  # the submit's envelope, parsed again on load
    image_count: int
    submitted_at: float
    queue_s: float
    generation_s: float
    filtered: bool
    fail_code: str
    cost: int
    visible_at: float
    counter: int


class Journal:
    """One simulator's state file (SQLite). Every write commits before it returns."""

    def __init__(self, path: Path, seed: int) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            stored = self.db.execute("SELECT value FROM meta WHERE name = 'seed'").fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"{path}: cannot use the simulator's state file ({exc})") from exc
        if stored is None:
            self.db.execute("INSERT INTO meta VALUES ('seed', ?)", (str(seed),))
        elif stored[0] != str(seed):
            # Ids and asset signatures derive from the seed: another seed would be another service.
            raise ConfigError(f"{path}: the simulator's state was made with seed {stored[0]}, not {seed}")

    def close(self) -> None:
        self.db.close()

    def accounts(self) -> list[StoredAccount]:
        rows = self.db.execute("SELECT id, label, purchase, gift, last_receive_day, uploaded FROM accounts")
        return [StoredAccount(i, label, purchase, gift, day, frozenset(json.loads(uploaded)))
                for i, label, purchase, gift, day, uploaded in rows.fetchall()]

    def records(self) -> list[StoredRecord]:
        rows = self.db.execute("SELECT history_record_id, task_id, submit_id, account, body, image_count, "
                               "submitted_at, queue_s, generation_s, filtered, fail_code, cost, visible_at, counter "
                               "FROM records ORDER BY counter")
        return [StoredRecord(h, t, s, a, json.loads(b), n, at, q, g, bool(f), fc, c, v, k)
                for h, t, s, a, b, n, at, q, g, f, fc, c, v, k in rows.fetchall()]

    def save_account(self, account: StoredAccount) -> None:
        self.db.execute("INSERT OR REPLACE INTO accounts VALUES (?, ?, ?, ?, ?, ?)",
                        (account.id, account.label, account.purchase, account.gift, account.last_receive_day,
                         json.dumps(sorted(account.uploaded))))

    def add_record(self, record: StoredRecord, account: StoredAccount) -> None:
        """A new record and its account's balance, in one commit."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (record.history_record_id, record.task_id, record.submit_id, record.account,
                             json.dumps(record.body, ensure_ascii=False), record.image_count, record.submitted_at,
                             record.queue_s, record.generation_s, int(record.filtered), record.fail_code,
                             record.cost, record.visible_at, record.counter))
            self.save_account(account)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
