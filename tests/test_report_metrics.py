"""metrics.json computed by SQL over the streamed results equals the whole-table pandas computation (the oracle,
kept in tests/metrics_oracle.py) on random results: counts, groups, error tables and percentiles exactly, means and
sums to within rounding."""

from __future__ import annotations

import math
import sqlite3
from typing import Any

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_oracle import columns_of, compute_metrics

from jimeng_batch.engine.states import STATES
from jimeng_batch.outputs.metrics import MetricsBuilder, lerp, quantile_position
from jimeng_batch.outputs.report import box_stats

# Figures that come of additions (a sum, a mean): SQLite adds in another order than numpy.
ROUNDED = {"mean", "creditsSpent", "creditsEstimated", "spent", "estimated", "avgResponseTime",
           "requestsPerMinute", "creditsPerImage"}
seconds = st.one_of(st.none(), st.floats(0, 5000, allow_nan=False), st.sampled_from([0.0, 1.5, 2.0]))


def _same(new: Any, old: Any, where: str = "") -> None:
    if isinstance(old, dict):
        assert isinstance(new, dict) and list(new) == list(old), where
        for key in old:
            _same(new[key], old[key], f"{where}.{key}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), where
        for index, (a, b) in enumerate(zip(new, old, strict=True)):
            _same(a, b, f"{where}[{index}]")
    elif isinstance(old, float) and where.rsplit(".", 1)[-1] in ROUNDED:
        assert math.isclose(new, old, rel_tol=1e-12, abs_tol=1e-9), (where, new, old)
    else:
        assert new == old and type(new) is type(old), (where, new, old)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    state = draw(st.sampled_from([*STATES, "downloaded", "failed"]))
    video = draw(st.booleans())
    stamp = draw(st.one_of(st.none(), st.floats(1.7e9, 1.7e9 + 20_000, allow_nan=False)))
    code = draw(st.one_of(st.none(), st.sampled_from(["2038", "1180", "busy", "500", ""])))
    return {
        "state": state, "type": "video" if video else "image",
        "model": draw(st.sampled_from(["jimeng-4.0", "jimeng-3.1", "jimeng-video-3.0", None])),
        "resolution": draw(st.sampled_from(["1k", "2k", "720p"])),
        "origin": draw(st.sampled_from([None, "simulator", "jimeng.jianying.com"])),
        "code": code, "reason": draw(st.sampled_from([None, "content filtered", "http"])) if code else None,
        "cache_hit": draw(st.booleans()), "retries": draw(st.integers(0, 3)), "submits": draw(st.integers(0, 3)),
        "images": None if video else draw(st.one_of(st.none(), st.integers(1, 4))),
        "asset_count": draw(st.integers(0, 4)),
        "asset_variants": draw(st.lists(st.sampled_from(["high", "preview", None]), max_size=2)) if video else [],
        "credits_spent": draw(st.sampled_from([0.0, 0.5, 1.0, 3.0, 0.1])),
        "estimated_credits": draw(st.sampled_from([0.0, 0.5, 1.0, 3.0, 0.1])),
        **{f"{stage}_seconds": draw(seconds) for stage in ("submit", "queue", "generation", "download",
                                                           "end_to_end")},
        "first_queue_position": draw(st.one_of(st.none(), st.integers(0, 50).map(float))),
        "first_forecast_queue_seconds": draw(seconds),
        "downloaded_at": stamp, "finished_at": draw(st.sampled_from([stamp, None])),
        "first_frame": draw(st.sampled_from([None, '{"kind": "file", "ref": "a.png"}', '{"kind": "uri"}'])),
        "end_frame": None,
        "references": draw(st.sampled_from([None, '[{"kind": "file", "ref": "b.png"}, {"kind": "file"}]'])),
    }


COLUMNS = ["state", "type", "model", "resolution", "origin", "code", "reason", "cache_hit", "retries", "submits",
           "images", "asset_count", "asset_variants", "credits_spent", "estimated_credits", "submit_seconds",
           "queue_seconds", "generation_seconds", "download_seconds", "end_to_end_seconds", "first_queue_position",
           "first_forecast_queue_seconds", "downloaded_at", "finished_at", "first_frame", "end_frame", "references"]
ONE = {"state": "downloaded", "type": "image", "model": "jimeng-4.0", "resolution": "1k", "origin": None,
       "code": None, "reason": None, "cache_hit": False, "retries": 0, "submits": 1, "images": 4, "asset_count": 4,
       "asset_variants": [], "credits_spent": 1.0, "estimated_credits": 1.0,
       **{name: None for name in COLUMNS if name.endswith("_seconds") or name.startswith("first_")},
       "downloaded_at": 1.7e9, "finished_at": 1.7e9, "end_frame": None, "references": None}


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for name in ("code", "reason", "origin", "first_frame", "end_frame", "references"):
        frame[name] = frame[name].astype("string")
    frame["images"] = frame["images"].astype("Int64")
    for name in ("retries", "submits", "asset_count"):
        frame[name] = frame[name].astype("int64")
    frame["cache_hit"] = frame["cache_hit"].astype("bool")
    for name in ("downloaded_at", "finished_at"):
        frame[name] = pd.to_datetime(frame[name].astype("float64"), unit="s", utc=True)
    for name in [c for c in COLUMNS if c.endswith("_seconds") or c == "first_queue_position"]:
        frame[name] = frame[name].astype("float64")
    return frame


attempts = st.lists(st.tuples(st.sampled_from(["submit", "poll", "download", "upload"]),
                              st.sampled_from(["ok", "ok", "error", "timeout"]),
                              st.sampled_from([None, "2004", "5xx"]), st.sampled_from([None, 500, 502]),
                              st.floats(0, 30, allow_nan=False)), max_size=30)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(requests(), max_size=40), calls=attempts, batch=st.integers(1, 50))
def test_sql_metrics_equal_the_pandas_computation(rows: list[dict[str, Any]],
                                                  calls: list[tuple[Any, ...]], batch: int) -> None:
    results = _frame(rows)
    table = pd.DataFrame(calls, columns=["kind", "outcome", "code", "http_status", "seconds"])
    table.insert(0, "key", "k")
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE TABLE attempts (key TEXT, kind TEXT, outcome TEXT, code TEXT, http_status INTEGER, "
                   "seconds REAL)")
        db.executemany("INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?)", calls and [("k", *c) for c in calls])
        builder = MetricsBuilder(db)
        for start in range(0, len(results), batch):
            builder.add(columns_of(results.iloc[start:start + batch]))
        runs = pd.DataFrame(columns=["id", "origin"])
        got = builder.finish([])
    finally:
        db.close()
    oracle_attempts = table
    oracle_attempts["http_status"] = oracle_attempts["http_status"].astype("float64")
    for name in ("kind", "outcome"):
        oracle_attempts[name] = oracle_attempts[name].astype("category")
    _same(got, compute_metrics(results, oracle_attempts, runs))


@given(values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200),
       quantile=st.sampled_from([0.25, 0.5, 0.75, 0.9, 0.99, 0.0, 1.0]))
def test_quantiles_by_rank_are_pandas_quantiles_bit_for_bit(values: list[float], quantile: float) -> None:
    ordered = sorted(values)
    low, high, weight = quantile_position(len(values), quantile)
    assert lerp(ordered[low], ordered[high], weight) == pd.Series(values).quantile(quantile)


def test_the_box_plot_figures_are_matplotlibs() -> None:
    """The box plot drawn from SQL figures is the one Matplotlib would draw from every value."""
    from matplotlib.cbook import boxplot_stats

    values = [0.5, 1.0, 1.2, 1.3, 1.4, 2.0, 2.5, 9.0, 40.0, 0.01]
    frame = _frame([{**ONE, "submit_seconds": v} for v in values])
    (submit, *_) = box_stats(frame.to_dict(orient="records"))
    (expected,) = boxplot_stats(values)
    for key in ("q1", "med", "q3", "whislo", "whishi"):
        assert submit[key] == expected[key], key
    # Of the times beyond the whiskers, the furthest on each side (here: 40 s above, none below).
    assert set(submit["fliers"]) == {min(values), max(values)} & set(expected["fliers"]) == {40.0}
