"""Merging output folders (the shards of one manifest, say) into one: ledgers, files, then the report.

The merged folder gets a new ledger (the same migrations) holding every input's runs (one row each, renumbered),
and for each request key the row of the input where it got furthest (downloaded before succeeded before a failure
before in flight before planned; the first input on a tie), with that input's events, attempts and files. Calls
not tied to one request (batched polls) are all kept. Two inputs that disagree on a key's ``submit_id`` or
parameters did not come from the same manifest rules, and the merge refuses them. Files are hard-linked where the
file system allows (else copied) and checked against the sha256 the ledger recorded. Inputs whose runs were of
different manifests (by the manifest's sha256: its content) are refused unless allowed: shards of one manifest
merge into its run, the folders of two manifests into a report of neither. The merged report is titled with the
manifest's name.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jimeng_batch.engine.ledger import LEDGER_NAME, Ledger
from jimeng_batch.engine.lock import FolderLock
from jimeng_batch.engine.states import State
from jimeng_batch.errors import ConfigError, LedgerError
from jimeng_batch.files import copy_verified
from jimeng_batch.intake.sources import display_path

# How far a request got; the merge keeps the furthest.
_PROGRESS = {State.DOWNLOADED: 6, State.SUCCEEDED: 5, State.FAILED: 4, State.BLOCKED: 4, State.INVALID: 4,
             State.RUNNING: 3, State.SUBMITTED: 2, State.LOST: 2, State.SUBMITTING: 1, State.SKIPPED: 0,
             State.PLANNED: 0, State.REMOVED: 0}


@dataclass(frozen=True)
class Merged:
    """What a merge produced."""

    folder: Path
    inputs: int
    runs: int
    requests: int
    files: int
    duplicates: int  # keys found in more than one input
    title: str  # the manifest's name (the names of the manifests, when different ones were allowed)


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def _rows(db: sqlite3.Connection, table: str, columns: list[str], order: str) -> list[dict[str, Any]]:
    cursor = db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")  # noqa: S608
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def merge_folders(inputs: list[Path], into: Path, *, allow_mixed_origins: bool = False,
                  allow_different: bool = False) -> Merged:
    """Merge the output folders ``inputs`` into the new folder ``into``."""
    if not inputs:
        raise ConfigError("merge: name at least one output folder to merge")
    resolved = [folder.resolve() for folder in inputs]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("merge: the same folder is named twice")
    if into.resolve() in resolved:
        raise ConfigError(f"--into: {display_path(into)} is one of the inputs; merge into a new folder")
    if (into / LEDGER_NAME).exists():
        raise ConfigError(f"--into: {display_path(into)} already holds a ledger; merge into a new folder")
    # Opening through Ledger brings an older ledger up to this version's schema before it is read.
    sources = [Ledger.open_existing(folder) for folder in inputs]
    created = not into.exists()
    try:
        _check_origins(inputs, sources, allow_mixed_origins)
        title = _check_manifests(inputs, sources, allow_different)
        chosen, duplicates = _choose(inputs, sources)
        target = Ledger.in_folder(into)
        try:
            with FolderLock(into, "merge"):
                files = _write(inputs, sources, chosen, target, into)
            runs = int(target.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        finally:
            target.close()
    except BaseException:
        if created:
            shutil.rmtree(into, ignore_errors=True)  # half a merge is worse than none: it could not be resumed
        raise
    finally:
        for source in sources:
            source.close()
    return Merged(into, len(inputs), runs, len(chosen), files, duplicates, title)


def _manifests(source: Ledger) -> dict[tuple[str, str], str]:
    """The plans a folder's runs made: (manifest sha256, the spreadsheet options they were planned with) -> the
    manifest's name (the file's stem, as `run` names its folder). The shard is not part of it: shards of one
    manifest are what a merge is for."""
    plans: dict[tuple[str, str], str] = {}
    for sha, name, options in source.db.execute("SELECT manifest_sha256, manifest, options FROM runs ORDER BY id"):
        sheet = (json.loads(options or "{}").get("config") or {}).get("sheet")
        plans[(str(sha), json.dumps(sheet, sort_keys=True))] = Path(str(name)).stem
    return plans


def _check_manifests(inputs: list[Path], sources: list[Ledger], allowed: bool) -> str:
    """Refuse inputs of different manifests, or of one manifest planned with different spreadsheet options
    (unless ``allowed``); the merged folder's title: the manifest's name (the names, joined, when different
    manifests were allowed; the first folder's name when no run names one)."""
    found: dict[tuple[str, str], tuple[str, list[str]]] = {}  # plan -> (name, the folders holding runs of it)
    for folder, source in zip(inputs, sources, strict=True):
        for plan, name in _manifests(source).items():
            found.setdefault(plan, (name, []))[1].append(display_path(folder))
    if len(found) > 1 and not allowed:
        same_file = len({sha for sha, _ in found}) == 1
        what = "one manifest planned with different spreadsheet options (--region, --type, --model, ...)" \
            if same_file else f"{len({sha for sha, _ in found})} different manifests"
        listed = "; ".join(f"{name} (sha256 {sha[:12]}…" + (f", options {sheet}" if same_file else "")
                           + f", in {', '.join(folders)})" for (sha, sheet), (name, folders) in found.items())
        raise ConfigError(f"merge: the folders hold runs of {what}: {listed}; merge the runs of one manifest (its "
                          "shards), or give --allow-different")
    return " + ".join(dict.fromkeys(name for name, _ in found.values())) or inputs[0].name


def _check_origins(inputs: list[Path], sources: list[Ledger], allowed: bool) -> None:
    """Folders whose results come from different origins (the simulator and a host, two hosts) stay apart."""
    origins = {origin: display_path(folder) for folder, source in zip(inputs, sources, strict=True)
               for origin in source.origins()}
    if len(origins) > 1 and not allowed:
        listed = "; ".join(f"{origin} ({folder})" for origin, folder in sorted(origins.items()))
        raise ConfigError(f"merge: the folders' results come from different origins: {listed}; merge them only "
                          "with --allow-mixed-origins")


def _choose(inputs: list[Path], sources: list[Ledger]) -> tuple[dict[str, tuple[int, dict[str, Any]]], int]:
    """For each key, the input whose row got furthest, and how many keys were in more than one input."""
    chosen: dict[str, tuple[int, dict[str, Any]]] = {}
    duplicates = 0
    for number, source in enumerate(sources):
        columns = _columns(source.db, "requests")
        for row in _rows(source.db, "requests", columns, "ord"):
            key = row["key"]
            if key not in chosen:
                chosen[key] = (number, row)
                continue
            duplicates += 1
            first_number, first = chosen[key]
            where = f"{display_path(inputs[first_number])} and {display_path(inputs[number])}"
            if first["submit_id"] != row["submit_id"]:
                raise ConfigError(f"request {key}: {where} disagree on its submit_id ({first['submit_id']} and "
                                  f"{row['submit_id']}); they were not planned by the same rules")
            if json.loads(first["params"]) != json.loads(row["params"]):
                raise ConfigError(f"request {key}: {where} disagree on its parameters; they are not runs of the "
                                  "same manifest")
            if _PROGRESS.get(row["state"], 0) > _PROGRESS.get(first["state"], 0):
                chosen[key] = (number, row)
    return chosen, duplicates


_REQUEST_TABLES = frozenset({"runs", "requests", "events", "attempts", "assets", "migrations"})


def _other_tables(source: sqlite3.Connection, target: sqlite3.Connection) -> list[str]:
    def tables(db: sqlite3.Connection) -> set[str]:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                             "AND name NOT LIKE 'sqlite_%'")}

    return sorted((tables(source) & tables(target)) - _REQUEST_TABLES)


def _insert(db: sqlite3.Connection, table: str, rows: list[dict[str, Any]], *, ignore: bool = False) -> None:
    if not rows:
        return
    wanted = set(_columns(db, table))
    columns = [name for name in rows[0] if name in wanted]
    marks = ", ".join("?" for _ in columns)
    verb = "INSERT OR IGNORE" if ignore else "INSERT"
    db.executemany(f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                   [tuple(row[name] for name in columns) for row in rows])


def _write(inputs: list[Path], sources: list[Ledger], chosen: dict[str, tuple[int, dict[str, Any]]],
           target: Ledger, into: Path) -> int:
    """Copy runs, the chosen requests with their events, attempts and assets, and the files; the file count."""
    db = target.db
    files = 0
    next_ord = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        for number, (folder, source) in enumerate(zip(inputs, sources, strict=True)):
            run_ids: dict[int, int] = {}
            run_columns = [c for c in _columns(source.db, "runs") if c != "id"]
            for run in _rows(source.db, "runs", ["id", *run_columns], "id"):
                old = run.pop("id")
                _insert(db, "runs", [run])
                run_ids[old] = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
            keys = {key for key, (owner, _) in chosen.items() if owner == number}
            requests = [row for key, (owner, row) in chosen.items() if owner == number]
            for row in sorted(requests, key=lambda r: r["ord"]):
                row = {**row, "ord": next_ord, "run_id": run_ids.get(row["run_id"])}
                next_ord += 1
                _insert(db, "requests", [row])
            for table in ("events", "attempts"):
                columns = [c for c in _columns(source.db, table) if c != "id"]
                rows = [{**r, "run_id": run_ids.get(r["run_id"])} for r in _rows(source.db, table, columns, "id")
                        if r["key"] in keys or (table == "attempts" and r["key"] is None)]
                _insert(db, table, rows)
            asset_columns = _columns(source.db, "assets")
            assets = [a for a in _rows(source.db, "assets", asset_columns, "key, idx") if a["key"] in keys]
            for asset in assets:
                _copy_asset(folder, into, asset)
            _insert(db, "assets", assets)
            files += len(assets)
            for table in _other_tables(source.db, db):
                # Tables not about one request (uploads remembered per account): every row, duplicates dropped.
                _insert(db, table, _rows(source.db, table, _columns(source.db, table), "rowid"), ignore=True)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return files


def _copy_asset(folder: Path, into: Path, asset: dict[str, Any]) -> None:
    source = folder / asset["path"]
    if not source.is_file():
        raise LedgerError(f"{display_path(source)}: listed in the ledger but missing; resume that run first")
    if not copy_verified(source, into / asset["path"], asset["sha256"]):
        raise LedgerError(f"{display_path(source)}: its content no longer matches the sha256 in the ledger")
