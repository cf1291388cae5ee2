"""Shared pieces of the reliability suite: running the command line in a subprocess, reading a ledger from outside.

A ledger is read through a separate read-only SQLite connection, the way a user's `sqlite3 ledger.sqlite` would see
it while a run writes it (or after the run was killed).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import REPO

from jimeng_batch.files import file_sha256

Assets = dict[str, dict[int, str]]  # key -> index -> sha256


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a `python -m jimeng_batch` subprocess: this checkout first, no token unless given."""
    env = {k: v for k, v in os.environ.items() if k not in ("JIMENG_SESSIONID", "JIMENG_BASE_URL",
                                                            "JIMENG_BATCH_DEBUG")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "jimeng_batch", *args]


def run_cli_process(args: list[str], env: dict[str, str], timeout: float = 120, **kwargs: Any
                    ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), env=env, capture_output=True, text=True, timeout=timeout, check=False,
                          **kwargs)


def query(ledger: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on a ledger, read-only; [] when the ledger does not exist yet or has no such table."""
    if not ledger.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []


def count(ledger: Path, sql: str) -> int:
    rows = query(ledger, sql)
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def states(ledger: Path) -> dict[str, str]:
    return dict(query(ledger, "SELECT key, state FROM requests"))  # type: ignore[arg-type]


def assets(ledger: Path) -> Assets:
    found: Assets = {}
    for key, index, sha in query(ledger, "SELECT key, idx, sha256 FROM assets"):
        found.setdefault(key, {})[index] = sha
    return found


sha256_file = file_sha256  # the product's own streaming hash


def check_recorded_files(out: Path) -> int:
    """Every asset the ledger records exists with its recorded size and sha256; returns how many were checked."""
    rows = query(out / "ledger.sqlite", "SELECT path, size, sha256 FROM assets")
    for path, size, sha in rows:
        file = out / path
        assert file.is_file(), f"{path}: recorded in the ledger but missing"
        assert file.stat().st_size == size, f"{path}: {file.stat().st_size} bytes, the ledger says {size}"
        assert sha256_file(file) == sha, f"{path}: sha256 differs from the ledger's"
    return len(rows)


def wait_process(process: subprocess.Popen[str], seconds: float) -> bool:
    """Wait up to ``seconds`` for the process; True when it ended by itself."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def wait_for_events(process: subprocess.Popen[str], ledger: Path, target: int, limit: float = 60.0) -> bool:
    """Wait (in short waits on the process) until the ledger holds ``target`` events; True if the process ended."""
    waited = 0.0
    while count(ledger, "SELECT COUNT(*) FROM events") < target:
        if wait_process(process, 0.01):
            return True
        waited += 0.01
        if waited > limit:
            raise AssertionError(f"no progress in {limit} s")
    return False
