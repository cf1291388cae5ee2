"""The whole-table report as it was before reports streamed (tests only): every ledger table read into pandas, the
results frame of all requests at once, and the results files written from it. The streamed report must write the
same files; this is what it is compared to."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
from metrics_oracle import compute_metrics

from jimeng_batch.engine.ledger import Ledger
from jimeng_batch.outputs.results import LIST_COLUMNS, LedgerTables, results_frame


def read_tables(out_dir: Path) -> LedgerTables:
    """Every table of ``out_dir``'s ledger, whole."""
    db = sqlite3.connect(f"{Ledger.path_in(out_dir).resolve().as_uri()}?mode=ro", uri=True)
    try:
        frames = {name: pd.read_sql_query(f"SELECT {columns} FROM {name} ORDER BY {order}", db)
                  for name, columns, order in (
                      ("runs", "*", "id"), ("requests", "*", "ord"), ("events", "key, state, at", "id"),
                      ("attempts", "key, kind, outcome, code, http_status, seconds", "id"),
                      ("assets", "*", "key, idx"))}
        for name, column in (("events", "state"), ("attempts", "kind"), ("attempts", "outcome")):
            frames[name][column] = frames[name][column].astype("category")
    finally:
        db.close()
    return LedgerTables(**frames)


def whole_results(out_dir: Path) -> pd.DataFrame:
    return results_frame(read_tables(out_dir))


def whole_metrics(out_dir: Path) -> dict[str, Any]:
    tables = read_tables(out_dir)
    return compute_metrics(results_frame(tables), tables.attempts, tables.runs)


def _flat(results: pd.DataFrame) -> pd.DataFrame:
    flat = results.copy()
    for name in LIST_COLUMNS:
        flat[name] = flat[name].map(lambda values: json.dumps(values, ensure_ascii=False))
    return flat


def write_whole(results: pd.DataFrame, into: Path, chunk: int = 10_000) -> None:
    """results.parquet, results.csv and results.jsonl of a whole frame, as the report wrote them."""
    into.mkdir(parents=True, exist_ok=True)
    results.to_parquet(into / "results.parquet", index=False, engine="pyarrow")
    with (into / "results.csv").open("w", encoding="utf-8", newline="") as handle:
        for start in range(0, max(len(results), 1), chunk):
            _flat(results.iloc[start:start + chunk]).to_csv(handle, index=False, header=start == 0,
                                                            lineterminator="\n",
                                                            date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    with (into / "results.jsonl").open("w", encoding="utf-8", newline="\n") as handle:
        for start in range(0, len(results), chunk):
            text = results.iloc[start:start + chunk].to_json(orient="records", lines=True, date_format="iso",
                                                           force_ascii=False)
            handle.write(text if text.endswith("\n") else text + "\n")
