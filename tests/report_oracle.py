"""The whole-table report as it was before reports streamed (tests only): every ledger table read into pandas, the
results frame of all requests at once, and the results files written from it. The streamed report must write the
same files; this is what it is compared to."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from metrics_oracle import compute_metrics

from jimeng_batch.engine.ledger import Ledger, is_simulated
from jimeng_batch.engine.states import FINAL_STATES, State
from jimeng_batch.outputs.results import (
    JSON_PARAM_COLUMNS,
    LIST_COLUMNS,
    OUTPUT_COLUMNS,
    PARAM_COLUMNS,
    QUEUE_COLUMNS,
    STAGES,
    TIME_COLUMNS,
    is_missing,
    meaning_of,
)
from jimeng_batch.protocol import catalog


@dataclass(frozen=True)
class LedgerTables:
    """The ledger's tables, as read."""

    runs: pd.DataFrame
    requests: pd.DataFrame
    events: pd.DataFrame
    attempts: pd.DataFrame
    assets: pd.DataFrame


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
