"""The results table: one row per request with everything known about it, read from the ledger a batch at a time.

:func:`iter_batches` reads ``ledger.sqlite`` (read-only); :func:`results_columns`, which builds a batch from the
ledger's rows, is a pure function of them, so reports are reproducible from a ledger alone. A batch is plain Python
columns (:data:`Columns`): the report writes its files from them without pandas, whose import alone was about
40 MiB of a report's memory. pandas frames of the same values (:func:`results_frame`, :func:`results_table`) are for the
Python API and the export.

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

import contextlib
import functools
import importlib.abc
import importlib.metadata
import json
import math
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa  # type: ignore[import-untyped]

from jimeng_batch.engine.ledger import Ledger, is_simulated
from jimeng_batch.engine.states import FINAL_STATES
from jimeng_batch.errors import LedgerError
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.outcomes import (
    RULES,
    UNKNOWN_FAIL,
    UNKNOWN_HTTP,
    UNKNOWN_RET,
    Rule,
)

if TYPE_CHECKING:
    import pandas as pd

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

# The pandas dtype of each column (pandas' own name for it), written into results.parquet's metadata so that
# pandas reads the file back with these dtypes whatever a batch held: text is `str` where every request has one,
# the nullable `string` where a request may have none; `Int64`, `Float64` and `boolean` are nullable numbers.
_NULLABLE_TEXT = ("negative_prompt", "ratio", "aspect_ratio", *JSON_PARAM_COLUMNS, "code", "reason", "meaning",
                  "message", "history_record_id", "task_id", "token", "origin")
_DTYPES = {"ord": "int64", "sample": "int64", "row": "Int64", "seed": "Int64", "duration": "Int64", "fps": "Int64",
           "images": "Int64", "seed_given": "boolean", "sample_strength": "Float64", "intelligent_ratio": "bool",
           "simulated": "bool", "cache_hit": "bool", "asset_count": "int64", "asset_bytes": "int64",
           **{name: "string" for name in _NULLABLE_TEXT}, **{name: "object" for name in LIST_COLUMNS},
           **{name: "datetime64[ns]" for name in TIME_COLUMNS}, **{name: "float64" for name in QUEUE_COLUMNS},
           **{f"{stage}_seconds": "float64" for stage in STAGES},
           **{name: "int64" for name in ("submits", "polls", "retries", "attempts", "failed_attempts")},
           "estimated_credits": "float64", "credits_spent": "float64"}


def _pandas_type(kind: pa.DataType) -> str:
    """The ``pandas_type`` pyarrow records for an Arrow type (what ``Table.from_pandas`` would write)."""
    if pa.types.is_list(kind):
        return f"list[{'unicode' if pa.types.is_string(kind.value_type) else kind.value_type}]"
    if pa.types.is_timestamp(kind):
        return "datetimetz"
    return {_INT: "int64", _FLOAT: "float64", _BOOL: "bool"}.get(kind, "object")


def _pandas_metadata() -> bytes:
    """results.parquet's ``pandas`` metadata, as ``Table.from_pandas`` writes it: built here so that writing the
    file needs no pandas (its import alone is about 40 MiB of a report's memory)."""
    columns = [{"name": name, "field_name": name, "pandas_type": _pandas_type(RESULTS_SCHEMA.field(name).type),
                "numpy_type": _DTYPES.get(name, "str"),
                "metadata": {"timezone": "UTC"} if name in TIME_COLUMNS else None} for name in RESULT_COLUMNS]
    try:
        pandas_version = importlib.metadata.version("pandas")
    except importlib.metadata.PackageNotFoundError:  # the file still reads; pandas only warns on an old version
        pandas_version = "3.0.0"
    return json.dumps({"index_columns": [], "column_indexes": [], "columns": columns, "attributes": {},
                       "creator": {"library": "pyarrow", "version": pa.__version__},
                       "pandas_version": pandas_version}).encode("utf-8")


# results.parquet's schema: every row group has it, and pandas reads it back with the dtypes above.
PARQUET_SCHEMA = RESULTS_SCHEMA.with_metadata({b"pandas": _pandas_metadata()})

# A batch of the results table: column name -> one value per request, in plan order, as plain Python values
# (None where there is none; times as integer nanoseconds since the epoch, UTC, the Arrow column's unit).
Columns = dict[str, list[Any]]

# Requests per batch when the results are streamed: a batch (its requests, events, attempts and assets, and its
# results columns) is the only per-request data a report holds at a time: a batch of 2,000 as plain Python lists
# is about 10 MiB.
BATCH_REQUESTS = 2_000

# A batch's files (its requests' other tables come joined to them: see :data:`_MARKS`).
_ASSETS_SQL = "SELECT * FROM assets WHERE key IN (SELECT value FROM json_each(?)) ORDER BY key, idx"
_ASSET_LISTS = {"path": "asset_paths", "sha256": "asset_sha256", "size": "asset_sizes", "width": "asset_widths",
                "height": "asset_heights", "format": "asset_formats", "variant": "asset_variants",
                "fallback_reason": "asset_fallback_reasons"}


@contextlib.contextmanager
def system_allocator() -> Iterator[None]:
    """Have Arrow allocate with the system allocator meanwhile: its default pool (mimalloc) keeps what a batch
    freed for itself, some 15 MiB more at the peak of a report; glibc gives it back to the next batch. The pool
    the process had is put back after, so a program that writes a report keeps its own (each buffer keeps the
    pool it came from, so those made meanwhile are freed where they were allocated)."""
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


class _HidePandas(importlib.abc.MetaPathFinder):
    """An import finder that refuses pandas (see :func:`arrow_without_pandas`)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ImportError("pandas is not imported for a report")


def arrow_without_pandas() -> None:
    """Keep pyarrow from importing pandas for a report: the first time pyarrow is given Python lists it imports
    pandas (to ask whether they are pandas objects), some 50 MiB of a report's memory for nothing, since a report
    gives it nothing else. So, when pandas is not imported yet, pyarrow is asked once with pandas hidden and
    remembers it has none; it tries pandas again (and finds it) the first time anything asks for a conversion to
    or from pandas, so the process keeps every use of pandas (tested)."""
    if "pandas" in sys.modules:
        return
    hide = _HidePandas()
    sys.meta_path.insert(0, hide)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(hide)


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


def run_rows(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """The ledger's runs (one per run: a handful), as dicts of the ``runs`` table's columns."""
    try:
        cursor = db.execute("SELECT * FROM runs ORDER BY id")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]
    except sqlite3.Error as exc:
        raise LedgerError(f"{_file_of(db)}: not a usable ledger ({exc})") from exc


def read_runs(db: sqlite3.Connection) -> pd.DataFrame:
    """The ledger's runs as a frame (for the export's dataset card)."""
    import pandas as pd

    rows = run_rows(db)
    if rows:
        return pd.DataFrame(rows)
    names = [column[1] for column in db.execute("PRAGMA table_info(runs)")]
    return pd.DataFrame(columns=names)


def time_ns(seconds: float | None) -> int | None:
    """POSIX seconds (the ledger's times) as integer nanoseconds, as pandas converts them (``to_datetime(...,
    unit="s")``: whole seconds, then the fraction rounded to nanoseconds), so results keep their old values."""
    if seconds is None:
        return None
    whole = int(seconds)
    return whole * 1_000_000_000 + int(round(seconds - whole, 9) * 1_000_000_000)


def posix_seconds(ns: int) -> float:
    """A time of the results as POSIX seconds, to the microsecond (pandas' ``Timestamp.timestamp()``)."""
    return round(ns / 1e9, 6)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# Per request key, the times stages are measured between, from its events: the first of each state, the first final
# state, the first send, and the send that was accepted (the last `submitting` at or before the first `submitted`).
# Made once per report in TEMP tables by two passes over `events` (a GROUP BY, then the submits before the first
# acceptance), so batches read them with their requests instead of fetching each batch's events.
_MARKS = ("submitted", "first_send", "running", "succeeded", "downloaded", "ended", "accepted")
_FINALS_SQL = "(" + ", ".join(f"'{state}'" for state in sorted(FINAL_STATES)) + ")"
_MARKS_SQL = (
    "DROP TABLE IF EXISTS temp.report_marks",
    "DROP TABLE IF EXISTS temp.report_accepted",
    "DROP TABLE IF EXISTS temp.report_tries",
    "CREATE TABLE temp.report_marks (key TEXT PRIMARY KEY, submitted REAL, first_send REAL, running REAL, "
    "succeeded REAL, downloaded REAL, ended REAL)",
    "INSERT INTO temp.report_marks SELECT key, "  # noqa: S608 - the states are constants here, never data
    "MIN(CASE WHEN state = 'submitted' THEN at END), MIN(CASE WHEN state = 'submitting' THEN at END), "
    "MIN(CASE WHEN state = 'running' THEN at END), MIN(CASE WHEN state = 'succeeded' THEN at END), "
    f"MIN(CASE WHEN state = 'downloaded' THEN at END), MIN(CASE WHEN state IN {_FINALS_SQL} THEN at END) "
    "FROM events GROUP BY key",
    "CREATE TABLE temp.report_accepted (key TEXT PRIMARY KEY, accepted REAL)",
    "INSERT INTO temp.report_accepted SELECT e.key, MAX(e.at) FROM events e JOIN temp.report_marks m "
    "ON m.key = e.key WHERE e.state = 'submitting' AND e.at <= m.submitted GROUP BY e.key",
    # Calls per request, and those that did not end `ok` (no outcome counts as not ok)
    "CREATE TABLE temp.report_tries (key TEXT PRIMARY KEY, tries INTEGER, failed INTEGER)",
    "INSERT INTO temp.report_tries SELECT key, COUNT(*), SUM(outcome IS NOT 'ok') FROM attempts GROUP BY key",
)
_REQUESTS_SQL = ("SELECT r.*, m.submitted AS mark_submitted, m.first_send AS mark_first_send, "
                 "m.running AS mark_running, m.succeeded AS mark_succeeded, m.downloaded AS mark_downloaded, "
                 "m.ended AS mark_ended, "
                 "a.accepted AS mark_accepted, t.tries AS mark_tries, t.failed AS mark_failed "
                 "FROM requests r LEFT JOIN temp.report_marks m ON m.key = r.key "
                 "LEFT JOIN temp.report_accepted a ON a.key = r.key LEFT JOIN temp.report_tries t ON t.key = r.key "
                 "ORDER BY r.ord")


def make_marks(db: sqlite3.Connection) -> None:
    """The TEMP tables of stage marks and call counts of every request of ``db``'s ledger (see :data:`_MARKS`)."""
    for sql in _MARKS_SQL:
        db.execute(sql)


def stage_columns(marks: dict[str, list[Any]]) -> dict[str, list[float | None]]:
    """The seconds spent in each stage (None where a stage did not happen), one per request, from the requests'
    marks (a list per name of :data:`_MARKS`): the one definition of the stages (see the module's docstring)."""
    generation = list(map(_less, marks["succeeded"], marks["running"]))
    return {"submit_seconds": list(map(_less, marks["submitted"], marks["accepted"])),
            "queue_seconds": list(map(_less, marks["running"], marks["submitted"])),
            # without a poll that saw it running: from the submit (the time queued included)
            "generation_seconds": [seconds if seconds is not None else _less(succeeded, submitted) for
                                   seconds, succeeded, submitted in
                                   zip(generation, marks["succeeded"], marks["submitted"], strict=True)],
            "download_seconds": list(map(_less, marks["downloaded"], marks["succeeded"])),
            "end_to_end_seconds": list(map(_less, marks["ended"], marks["first_send"]))}


def stage_times(db: sqlite3.Connection) -> dict[str, dict[str, float | None]]:
    """Per request key with events in ``db``'s ``events`` table: its stage times (:func:`stage_columns`)."""
    make_marks(db)
    rows = db.execute("SELECT m.key, m.submitted, m.first_send, m.running, m.succeeded, m.downloaded, m.ended, "
                      "a.accepted FROM temp.report_marks m LEFT JOIN temp.report_accepted a ON a.key = m.key"
                      ).fetchall()
    keys = [row[0] for row in rows]
    times = stage_columns({name: [row[1 + index] for row in rows] for index, name in enumerate(_MARKS)})
    return {key: {stage: values[place] for stage, values in times.items()} for place, key in enumerate(keys)}


def _less(end: float | None, start: float | None) -> float | None:
    return None if end is None or start is None else float(end) - float(start)


def _asset_lists(rows: list[tuple[Any, ...]], names: list[str]) -> dict[str, dict[str, list[Any]]]:
    """Per request key: its files' lists (paths, sha256, sizes...) in file order, from its ``assets`` rows."""
    at = {name: index for index, name in enumerate(names)}
    out: dict[str, dict[str, list[Any]]] = {}
    for row in rows:
        lists = out.setdefault(row[at["key"]], {new: [] for new in _ASSET_LISTS.values()})
        for old, new in _ASSET_LISTS.items():
            # a ledger from before a column existed (reports open ledgers read-only, unmigrated): None
            lists[new].append(row[at[old]] if old in at else None)
    return out


def _params(texts: list[str]) -> Columns:
    """The parameter columns of a batch, from the requests' ``params`` JSON."""
    decoded = [json.loads(text) for text in texts]
    data: Columns = {name: [p.get(name) for p in decoded] for name in PARAM_COLUMNS}
    for name in JSON_PARAM_COLUMNS:
        data[name] = [None if p.get(name) is None else json.dumps(p[name], ensure_ascii=False, sort_keys=True)
                      for p in decoded]
    data["images"] = [None if p.get("type") == "video" else p.get("images", catalog.DEFAULT_IMAGES_PER_REQUEST)
                      for p in decoded]
    data["intelligent_ratio"] = [bool(p.get("intelligent_ratio")) for p in decoded]
    for name in ("negative_prompt", "ratio", "aspect_ratio"):
        data[name] = [_text(value) for value in data[name]]
    data["sample_strength"] = [_float(value) for value in data["sample_strength"]]
    return data


def results_columns(requests: Columns, assets: list[tuple[Any, ...]], asset_names: list[str]) -> Columns:
    """One batch of the results table (every column of :data:`RESULT_COLUMNS`, in that order): one value per
    request of ``requests`` (the columns of the ledger's ``requests`` table, with each request's stage marks, as
    ``mark_<name>`` for each of :data:`_MARKS`, and its calls, ``mark_tries`` and ``mark_failed``), from it and its
    assets (rows with the columns ``asset_names``)."""
    count = len(requests["key"])

    def given(name: str) -> list[Any]:  # a column an older ledger may not have: None for every request
        return requests[name] if name in requests else [None] * count

    params = _params(requests["params"])
    files = _asset_lists(assets, asset_names)
    no_files: dict[str, list[Any]] = {new: [] for new in _ASSET_LISTS.values()}
    column: Columns = dict(stage_columns({name: requests[f"mark_{name}"] for name in _MARKS}))
    for name in RESULT_COLUMNS:
        if name in params:
            column[name] = params[name]
        elif name in ("key", "submit_id", "job", "state"):
            column[name] = requests[name]
        elif name in ("ord", "sample", "submits", "polls", "retries"):
            column[name] = list(map(int, requests[name]))
        elif name in ("code", "reason", "message", "history_record_id", "task_id", "token", "origin"):
            # token: the masked label; the ledger holds nothing else
            column[name] = list(map(_text, given(name)))
        elif name in TIME_COLUMNS:
            column[name] = [time_ns(_float(value)) for value in given(name)]
        elif name in QUEUE_COLUMNS or name == "estimated_credits":
            column[name] = list(map(_float, given(name)))
        elif name in LIST_COLUMNS:
            column[name] = [files.get(key, no_files)[name] for key in requests["key"]]
    column["manifest"] = requests["source_file"]
    column["row"] = [None if value is None else int(value) for value in requests["source_row"]]
    column["meaning"] = [meaning_of(c if isinstance(c, str) else None, r if isinstance(r, str) else None)
                         for c, r in zip(requests["code"], requests["reason"], strict=True)]
    column["simulated"] = list(map(is_simulated, given("origin")))
    cache_hits = column["cache_hit"] = [shared == "cache" for shared in given("shared_from")]
    column["asset_count"] = list(map(len, column["asset_paths"]))
    column["asset_bytes"] = [int(sum(size or 0 for size in sizes)) for sizes in column["asset_sizes"]]
    column["attempts"] = [int(tries or 0) for tries in requests["mark_tries"]]
    column["failed_attempts"] = [int(failed or 0) for failed in requests["mark_failed"]]
    # Credits are spent when the service accepted the submit (it gave a record id); a cache hit spends nothing.
    column["credits_spent"] = [estimated if record is not None and not hit else 0.0 for estimated, record, hit in
                               zip(column["estimated_credits"], column["history_record_id"], cache_hits,
                                   strict=True)]
    return {name: column[name] for name in RESULT_COLUMNS}


def iter_batches(db: sqlite3.Connection, batch: int | None = None) -> Iterator[Columns]:
    """The results table in batches of requests, in plan order (see :func:`results_columns`); at least one batch,
    empty when there are no requests. The only per-request data held is the batch's (and the TEMP tables of
    :func:`make_marks`, which SQLite keeps on disk beyond its page cache)."""
    size = batch or BATCH_REQUESTS
    try:
        make_marks(db)
        asset_names = [column[1] for column in db.execute("PRAGMA table_info(assets)")]
        cursor = db.execute(_REQUESTS_SQL)
        names = [column[0] for column in cursor.description]
        yielded = False
        while True:
            rows = cursor.fetchmany(size)
            if not rows and yielded:
                return
            # The rows turned into columns in one step (zip, in C), not a dict per request
            requests: Columns = dict(zip(names, map(list, zip(*rows, strict=True)), strict=True)) if rows else \
                {name: [] for name in names}
            assets = db.execute(_ASSETS_SQL, (json.dumps(requests["key"]),)).fetchall()
            yielded = True
            yield results_columns(requests, assets, asset_names)
            if len(rows) < size:
                return
    except sqlite3.Error as exc:
        raise LedgerError(f"{_file_of(db)}: not a usable ledger ({exc})") from exc


def arrow_table(columns: Columns) -> pa.Table:
    """A batch of results as an Arrow table of :data:`PARQUET_SCHEMA` (its rows of results.parquet): the same
    types whatever values a batch happens to hold, and pandas' dtypes in its metadata."""
    return pa.Table.from_pydict(columns, schema=PARQUET_SCHEMA)


def results_frame(columns: Columns, offset: int = 0) -> pd.DataFrame:
    """A batch of results as a pandas frame (index from ``offset``): the dtypes results.parquet reads back with,
    lists as Python lists."""
    import pandas as pd

    frame: pd.DataFrame = arrow_table(columns).to_pandas()
    frame.index = pd.RangeIndex(offset, offset + len(frame))
    for name in LIST_COLUMNS:  # Arrow gives numpy arrays; the results' users index and compare Python lists
        frame[name] = pd.Series(columns[name], index=frame.index, dtype=object)
    return frame


def iter_results(db: sqlite3.Connection, batch: int | None = None) -> Iterator[pd.DataFrame]:
    """The results table in batches of requests as pandas frames (plan order; see :func:`results_frame`), each
    with the same columns and dtypes; the first may be the only one, and empty."""
    offset = 0
    for columns in iter_batches(db, batch):
        frame = results_frame(columns, offset)
        offset += len(frame)
        yield frame


def results_table(out_dir: Path) -> pd.DataFrame:
    """The whole results table as one frame (the Python API's ``results``): the streamed batches, concatenated."""
    import pandas as pd

    db = connect(out_dir)
    try:
        return pd.concat(list(iter_results(db)))
    finally:
        db.close()


def rows_of(columns: Columns, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
    """Requests ``start`` to ``stop`` of a batch as one dict each (column -> value)."""
    names = list(columns)
    return [dict(zip(names, values, strict=True))
            for values in zip(*(columns[name][start:stop] for name in names), strict=True)]


def is_missing(value: object) -> bool:
    """None, NaN, or pandas' NA or NaT: a cell with no value (lists are values, even empty ones). pandas' markers
    are told by their type's name: this module does not import pandas for a report."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


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
