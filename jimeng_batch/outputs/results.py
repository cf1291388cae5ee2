"""The ledger as pandas frames, and the results table: one row per request with everything known about it.

:func:`read_tables` is the only function here that touches the outside world (it reads ``ledger.sqlite``);
everything else is a pure function of the frames it is given, so reports are reproducible from a ledger alone.

Stage timings come from the ledger's ``events`` (every state change with its time):

- ``submit``: the last ``submitting`` before the first ``submitted`` (the attempt that was accepted) to it;
- ``queue``: ``submitted`` to ``running`` (the first poll that saw the job leave the queue: a status other than 20,
  or ``queue_info`` saying it is processing); the queue columns say what polls saw of it (place, forecast);
- ``generation``: ``running`` to ``succeeded``, or ``submitted`` to ``succeeded`` when no poll saw the job running
  (then it includes the time queued);
- ``download``: ``succeeded`` to ``downloaded``;
- ``end_to_end``: the first ``submitting`` to the final state (``downloaded``, ``failed``, ``blocked``, ``invalid``).
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa  # type: ignore[import-untyped]

from jimeng_batch.engine.ledger import Ledger, is_simulated
from jimeng_batch.engine.states import FINAL_STATES, State
from jimeng_batch.errors import LedgerError
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.outcomes import (
    RULES,
    UNKNOWN_FAIL,
    UNKNOWN_HTTP,
    UNKNOWN_RET,
    Rule,
)

STAGES = ("submit", "queue", "generation", "download", "end_to_end")

# The parameters of a request, as columns; nested ones (images) are JSON text so every output format holds them.
PARAM_COLUMNS = ("type", "region", "model", "model_key", "resolution", "prompt", "negative_prompt", "seed",
                 "seed_given", "ratio", "sample_strength", "duration", "aspect_ratio", "fps")
JSON_PARAM_COLUMNS = ("references", "first_frame", "end_frame")
# What each image request should make: its `images` (gen_option.gen_count), else the service's default; NA for video.
# And whether the model picked the ratio.
OUTPUT_COLUMNS = ("images", "intelligent_ratio")
LIST_COLUMNS = ("asset_paths", "asset_sha256", "asset_sizes", "asset_widths", "asset_heights", "asset_formats",
                "asset_variants", "asset_fallback_reasons")
# What polls saw of the service's queue (the first sight and the last one while queued); NaN where none said.
QUEUE_COLUMNS = ("first_queue_position", "first_forecast_queue_seconds", "queue_position", "queue_length",
                 "forecast_seconds", "forecast_queue_seconds")
TIME_COLUMNS = ("created_at", "submitted_at", "finished_at", "downloaded_at")

# The columns of the results table that do not depend on when or how fast a run went: two runs of the same
# manifest (sharded and merged, or not) agree on these.
COMPARABLE_COLUMNS = ("key", "submit_id", "manifest", "job", "row", "sample", *PARAM_COLUMNS, *JSON_PARAM_COLUMNS,
                      *OUTPUT_COLUMNS, "state", "code", "reason", "meaning", "cache_hit", "asset_count", "asset_sha256",
                      "asset_sizes", "asset_formats", "estimated_credits", "credits_spent")

_TEXT, _INT, _FLOAT, _BOOL = pa.large_string(), pa.int64(), pa.float64(), pa.bool_()
_TIME = pa.timestamp("ns", tz="UTC")
_TYPES = {"ord": _INT, "row": _INT, "sample": _INT, "seed": _INT, "seed_given": _BOOL, "sample_strength": _FLOAT,
          "duration": _INT, "fps": _INT, "images": _INT, "intelligent_ratio": _BOOL, "simulated": _BOOL,
          "cache_hit": _BOOL, "asset_count": _INT, "asset_bytes": _INT,
          **{name: pa.list_(pa.string()) for name in LIST_COLUMNS},
          **{name: pa.list_(pa.int64()) for name in ("asset_sizes", "asset_widths", "asset_heights")},
          **{name: _TIME for name in TIME_COLUMNS}, **{name: _FLOAT for name in QUEUE_COLUMNS},
          **{f"{stage}_seconds": _FLOAT for stage in STAGES},
          **{name: _INT for name in ("submits", "polls", "retries", "attempts", "failed_attempts")},
          "estimated_credits": _FLOAT, "credits_spent": _FLOAT}
# Every column of the results table in order (the frame :func:`results_frame` builds), with its Arrow type: text
# unless said otherwise. results.parquet has this schema whatever a batch holds.
RESULT_COLUMNS = ("key", "submit_id", "ord", "manifest", "job", "row", "sample", *PARAM_COLUMNS, *JSON_PARAM_COLUMNS,
                  *OUTPUT_COLUMNS, "state", "code", "reason", "meaning", "message", "history_record_id", "task_id",
                  "token", "origin", "simulated", "cache_hit", *LIST_COLUMNS, "asset_count", "asset_bytes",
                  *TIME_COLUMNS, *QUEUE_COLUMNS, *(f"{stage}_seconds" for stage in STAGES), "submits", "polls",
                  "retries", "attempts", "failed_attempts", "estimated_credits", "credits_spent")
RESULTS_SCHEMA = pa.schema([(name, _TYPES.get(name, _TEXT)) for name in RESULT_COLUMNS])

# Codes the executor records that are not answers of the service.
@dataclass(frozen=True)
class LedgerTables:
    """The ledger's tables, as read."""

    runs: pd.DataFrame
    requests: pd.DataFrame
    events: pd.DataFrame
    attempts: pd.DataFrame
    assets: pd.DataFrame


# Requests per batch when the results are streamed: a batch's frames (its requests, events, attempts and assets)
# are the only per-request data a report holds at a time. Measured (bench/bench_report.py): 2,000 adds about 40 MiB
# to the process (pandas' Arrow-backed text columns cost far more than their Python size), 5,000 about 130 MiB, for
# no more speed.
BATCH_REQUESTS = 2_000

# The columns read of each table. Only those reports use: events and attempts are the ledger's largest tables
# (several rows per request), and their free-text details would otherwise be most of a report's memory.
_BATCH_QUERIES = (
    ("events", "SELECT key, state, at FROM events WHERE key IN (SELECT value FROM json_each(?)) ORDER BY id"),
    ("attempts", "SELECT key, kind, outcome, code, http_status, seconds FROM attempts "
                 "WHERE key IN (SELECT value FROM json_each(?)) ORDER BY id"),
    ("assets", "SELECT * FROM assets WHERE key IN (SELECT value FROM json_each(?)) ORDER BY key, idx"),
)


def use_system_allocator() -> None:
    """Have Arrow (pandas' text columns) allocate with the system allocator: its default pool (mimalloc) keeps
    what a batch freed for itself, some 15 MiB more at the peak of a report; glibc gives it back to the next batch."""
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


def connect(out_dir: Path) -> sqlite3.Connection:
    """``out_dir``'s ledger opened read-only (a report never changes a ledger; its work tables are TEMP ones)."""
    path = Ledger.path_in(out_dir)
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: cannot be opened ({exc})") from exc


def _file_of(db: sqlite3.Connection) -> str:
    """The ledger file a connection reads, for an error message."""
    try:
        return str(next(row[2] for row in db.execute("PRAGMA database_list") if row[1] == "main"))
    except (sqlite3.Error, StopIteration):
        return "ledger.sqlite"


def read_runs(db: sqlite3.Connection) -> pd.DataFrame:
    """The ledger's runs (one row per run: a handful)."""
    try:
        return pd.read_sql_query("SELECT * FROM runs ORDER BY id", db)
    except (sqlite3.Error, pd.errors.DatabaseError) as exc:
        raise LedgerError(f"{_file_of(db)}: not a usable ledger ({exc})") from exc


def iter_tables(db: sqlite3.Connection, batch: int | None = None) -> Iterator[LedgerTables]:
    """The ledger's requests in plan order, :data:`BATCH_REQUESTS` at a time, each batch with the events,
    attempts and assets of its requests (``runs`` empty: read them once with :func:`read_runs`). At least one batch,
    empty when there are no requests, so a caller always has the columns."""
    size = batch or BATCH_REQUESTS
    runs = pd.DataFrame()
    try:
        chunks = pd.read_sql_query("SELECT * FROM requests ORDER BY ord", db, chunksize=size)
        yielded = False
        for requests in chunks:
            keys = json.dumps([str(key) for key in requests["key"]])
            frames = {name: pd.read_sql_query(sql, db, params=(keys,)) for name, sql in _BATCH_QUERIES}
            for name, column in (("events", "state"), ("attempts", "kind"), ("attempts", "outcome")):
                frames[name][column] = frames[name][column].astype("category")
            yielded = True
            yield LedgerTables(runs=runs, requests=requests, **frames)
        if not yielded:
            empty = {name: pd.read_sql_query(f"SELECT * FROM {name} LIMIT 0", db)  # noqa: S608
                     for name in ("requests", "events", "attempts", "assets")}
            yield LedgerTables(runs=runs, requests=empty["requests"],
                               events=empty["events"][["key", "state", "at"]],
                               attempts=empty["attempts"][["key", "kind", "outcome", "code", "http_status",
                                                           "seconds"]],
                               assets=empty["assets"])
    except (sqlite3.Error, pd.errors.DatabaseError) as exc:
        raise LedgerError(f"{_file_of(db)}: not a usable ledger ({exc})") from exc


def iter_results(db: sqlite3.Connection, batch: int | None = None) -> Iterator[pd.DataFrame]:
    """The results table in batches of requests (plan order; see :func:`results_frame`), each with the same
    columns; the first may be the only one, and empty."""
    offset = 0
    for tables in iter_tables(db, batch):
        frame = results_frame(tables)
        frame.index = pd.RangeIndex(offset, offset + len(frame))
        offset += len(frame)
        yield frame


def results_table(out_dir: Path) -> pd.DataFrame:
    """The whole results table as one frame (the Python API's ``results``): the streamed batches, concatenated."""
    db = connect(out_dir)
    try:
        return pd.concat(list(iter_results(db)))
    finally:
        db.close()


def arrow_table(frame: pd.DataFrame) -> pa.Table:
    """A batch of results as an Arrow table of :data:`RESULTS_SCHEMA`: the same types whatever values a batch
    happens to hold (a batch of unsent requests has no timestamps, one without files has empty lists), with the
    frame's pandas dtypes in its metadata (so it reads back as the frame)."""
    if frame.empty:  # no values to convert (an empty frame's list columns are not even lists)
        return RESULTS_SCHEMA.empty_table()
    return pa.Table.from_pandas(frame, schema=RESULTS_SCHEMA, preserve_index=False)


def is_missing(value: object) -> bool:
    """None, NaN, NA or NaT: a cell with no value (lists are values, even empty ones)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


@functools.lru_cache(maxsize=4096)  # a batch repeats a handful of (code, reason) pairs
def meaning_of(code: str | None, reason: str | None) -> str | None:
    """What a recorded code means, from the outcome table (the reason tells sources of the same code apart)."""
    if is_missing(code) or code == "":
        return None
    text = str(code)
    rules: tuple[Rule, ...] = (*RULES, UNKNOWN_RET, UNKNOWN_FAIL, UNKNOWN_HTTP)
    # The tool's own codes first: they never clash with a service code, which is numeric.
    matches = sorted((rule for rule in rules if rule.code == text), key=lambda rule: rule.source != "local")
    for rule in matches:
        if rule.reason == reason:
            return rule.meaning
    if matches:
        return matches[0].meaning
    if text.isdigit() and len(text) == 3:  # an HTTP status the table has no row of its own for
        return "server error" if text.startswith("5") else "refused"
    for rule in rules:
        if rule.reason == reason and rule.code in ("*", "4xx", "5xx"):
            return rule.meaning
    return None


def _first(events: pd.DataFrame, state: str) -> pd.Series:
    return events[events["state"] == state].groupby("key")["at"].min()


def stage_times(events: pd.DataFrame) -> pd.DataFrame:
    """Per request key: the seconds spent in each stage (NaN where a stage did not happen)."""
    columns = [f"{stage}_seconds" for stage in STAGES]
    if events.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="key"), dtype="float64")
    submitted = _first(events, State.SUBMITTED)
    submitting = events[events["state"] == State.SUBMITTING][["key", "at"]]
    before = submitting.join(submitted.rename("submitted"), on="key")
    # The submit that was accepted is the last `submitting` at or before the first `submitted`.
    accepted_send = before[before["at"] <= before["submitted"]].groupby("key")["at"].max()
    first_send = submitting.groupby("key")["at"].min()
    running = _first(events, State.RUNNING)
    succeeded = _first(events, State.SUCCEEDED)
    downloaded = _first(events, State.DOWNLOADED)
    ended = events[events["state"].isin(FINAL_STATES)].groupby("key")["at"].min()
    keys = pd.Index(sorted(set(events["key"])), name="key")
    frame = pd.DataFrame(index=keys)
    frame["submit_seconds"] = submitted - accepted_send
    frame["queue_seconds"] = running - submitted
    frame["generation_seconds"] = (succeeded - running).fillna(succeeded - submitted)
    frame["download_seconds"] = downloaded - succeeded
    frame["end_to_end_seconds"] = ended - first_send
    return frame.astype("float64")


def _assets_by_key(assets: pd.DataFrame) -> pd.DataFrame:
    names = {"path": "asset_paths", "sha256": "asset_sha256", "size": "asset_sizes", "width": "asset_widths",
             "height": "asset_heights", "format": "asset_formats", "variant": "asset_variants",
             "fallback_reason": "asset_fallback_reasons"}
    if assets.empty:
        return pd.DataFrame(columns=list(names.values()), index=pd.Index([], name="key"))
    ordered = assets.sort_values(["key", "idx"])
    for old in names:  # a ledger from before a column existed (reports open ledgers read-only, unmigrated)
        if old not in ordered.columns:
            ordered = ordered.assign(**{old: None})
    # One pass over the sorted rows, cutting a list per key (a groupby with a Python aggregate per group and
    # column was most of a report's time).
    keys = ordered["key"].tolist()
    columns = {new: [None if is_missing(v) else v for v in ordered[old].tolist()] for old, new in names.items()}
    index: list[str] = []
    data: dict[str, list[list[Any]]] = {new: [] for new in names.values()}
    start = 0
    for end in range(1, len(keys) + 1):
        if end == len(keys) or keys[end] != keys[start]:
            index.append(keys[start])
            for new, values in columns.items():
                data[new].append(values[start:end])
            start = end
    return pd.DataFrame(data, index=pd.Index(index, name="key"))


def _param_columns(params: pd.Series) -> pd.DataFrame:
    decoded = [json.loads(text) for text in params]
    data: dict[str, list[Any]] = {name: [p.get(name) for p in decoded] for name in PARAM_COLUMNS}
    for name in JSON_PARAM_COLUMNS:
        data[name] = [None if p.get(name) is None else json.dumps(p[name], ensure_ascii=False, sort_keys=True)
                      for p in decoded]
    data["images"] = [None if p.get("type") == "video" else p.get("images", catalog.DEFAULT_IMAGES_PER_REQUEST)
                      for p in decoded]
    data["intelligent_ratio"] = [bool(p.get("intelligent_ratio")) for p in decoded]
    frame = pd.DataFrame(data, index=params.index)
    frame["images"] = frame["images"].astype("Int64")
    frame["intelligent_ratio"] = frame["intelligent_ratio"].astype("bool")
    for name in ("seed", "duration", "fps"):
        frame[name] = frame[name].astype("Int64")
    frame["sample_strength"] = frame["sample_strength"].astype("Float64")
    frame["seed_given"] = frame["seed_given"].astype("boolean")
    for name in ("negative_prompt", "ratio", "aspect_ratio", *JSON_PARAM_COLUMNS):
        frame[name] = frame[name].astype("string")
    return frame


def results_frame(tables: LedgerTables) -> pd.DataFrame:
    """One row per request: source, parameters, final state, codes and meaning, ids, assets, timings, credits."""
    requests = tables.requests.set_index("key", drop=False)
    frame = pd.DataFrame(index=requests.index)
    frame["key"] = requests["key"]
    frame["submit_id"] = requests["submit_id"]
    frame["ord"] = requests["ord"].astype("int64")
    frame["manifest"] = requests["source_file"]
    frame["job"] = requests["job"]
    frame["row"] = requests["source_row"].astype("Int64")
    frame["sample"] = requests["sample"].astype("int64")
    params = _param_columns(requests["params"])
    for name in (*PARAM_COLUMNS, *JSON_PARAM_COLUMNS, *OUTPUT_COLUMNS):
        frame[name] = params[name]
    frame["state"] = requests["state"]
    frame["code"] = requests["code"].astype("string")
    frame["reason"] = requests["reason"].astype("string")
    frame["meaning"] = pd.Series([meaning_of(c if isinstance(c, str) else None, r if isinstance(r, str) else None)
                                  for c, r in zip(requests["code"], requests["reason"], strict=True)],
                                 index=requests.index, dtype="string")
    frame["message"] = requests["message"].astype("string")
    for name in ("history_record_id", "task_id", "token"):
        frame[name] = requests[name].astype("string")  # token: the masked label; the ledger holds nothing else
    frame["origin"] = requests["origin"].astype("string")  # the simulator or the host it was sent to
    frame["simulated"] = requests["origin"].map(is_simulated).astype("bool")
    frame["cache_hit"] = (requests["shared_from"] == "cache").astype("bool")
    assets = _assets_by_key(tables.assets).reindex(requests.index)
    for name in LIST_COLUMNS:
        frame[name] = [value if isinstance(value, list) else [] for value in assets[name]]
    frame["asset_count"] = frame["asset_paths"].map(len).astype("int64")
    frame["asset_bytes"] = frame["asset_sizes"].map(lambda sizes: int(sum(s or 0 for s in sizes))).astype("int64")
    for name in TIME_COLUMNS:
        frame[name] = pd.to_datetime(requests[name].astype("float64"), unit="s", utc=True)
    for name in QUEUE_COLUMNS:
        values = requests[name] if name in requests.columns else pd.Series(None, index=requests.index)
        frame[name] = values.astype("float64")
    timings = stage_times(tables.events).reindex(requests.index)
    for stage in STAGES:
        frame[f"{stage}_seconds"] = timings[f"{stage}_seconds"].astype("float64")
    for name in ("submits", "polls", "retries"):
        frame[name] = requests[name].astype("int64")
    attempts = tables.attempts
    per_key = attempts.groupby("key")["outcome"]
    frame["attempts"] = per_key.size().reindex(requests.index, fill_value=0).astype("int64")
    frame["failed_attempts"] = (attempts[attempts["outcome"] != "ok"].groupby("key").size()
                                .reindex(requests.index, fill_value=0).astype("int64"))
    frame["estimated_credits"] = requests["estimated_credits"].astype("float64")
    # Credits are spent when the service accepted the submit (it gave a record id); a cache hit spends nothing.
    accepted = requests["history_record_id"].notna() & ~frame["cache_hit"]
    frame["credits_spent"] = frame["estimated_credits"].where(accepted, 0.0)
    return frame.reset_index(drop=True)


def comparable_rows(results: pd.DataFrame) -> list[dict[str, Any]]:
    """The results' run-independent columns, sorted by key, as plain data (see :data:`COMPARABLE_COLUMNS`)."""
    subset = results.loc[:, list(COMPARABLE_COLUMNS)].sort_values("key")
    rows: list[dict[str, Any]] = []
    for record in subset.to_dict(orient="records"):
        rows.append({str(name): _plain_value(v) for name, v in record.items()})
    return rows


def _plain_value(value: Any) -> Any:
    """A cell as plain Python data: lists for arrays (as read back from parquet), None for missing values."""
    if isinstance(value, list | tuple) or (hasattr(value, "tolist") and getattr(value, "ndim", 0) > 0):
        return [_plain_value(v) for v in value]
    if is_missing(value):
        return None
    return value.item() if hasattr(value, "item") else value
