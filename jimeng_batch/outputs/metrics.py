"""Metrics of a batch, from its results: the API document's five, and where time went, which errors, what it cost.

The document's metrics keep their names:

- ``totalRequests``: every request of the batch (the ledger's distinct requests, whatever their state);
- ``successRequests``: requests whose files were downloaded;
- ``failedRequests``: requests that ended ``failed``, ``blocked`` or ``invalid``;
- ``avgResponseTime``: the mean end-to-end time (first submit to final state) of the requests that reached a final
  state after a submit, in milliseconds as in the document's code (``Date.now()`` differences); null when none;
- ``modelUsage``: model name -> the number of requests for it that reached a final state.

Beyond them, ``images``: the images the image requests should make and the files downloaded for them, and the
estimated credits per image.

Computed in bounded memory: :class:`MetricsBuilder` takes the results batch by batch (:func:`results.iter_batches`)
and keeps the few columns metrics need in a TEMP table of the ledger's read-only connection (SQLite keeps it on
disk beyond its page cache), then answers with SQL aggregates. Percentiles are exact: the count of each group,
then the two neighbouring values by rank (one window query per column and grouping), interpolated as
``numpy.quantile``'s linear method does (what pandas ``quantile`` calls), so they equal the pandas figures
bit for bit. Means and sums are SQLite's; they may differ from a pandas sum in the last bits (the additions come in
another order), nothing more.
"""

# ruff: noqa: S608 - every query is built from this module's own table and column names, never from data

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jimeng_batch.engine.ledger import is_simulated
from jimeng_batch.engine.states import FINAL_STATES, STATES, TERMINAL_FAILURES
from jimeng_batch.outputs.results import (
    STAGES,
    Columns,
    connect,
    is_missing,
    iter_batches,
    meaning_of,
    posix_seconds,
    run_rows,
)
from jimeng_batch.protocol import catalog

PERCENTILES = (50, 90, 99)
# Sub-second sizes too: a fast run (the simulator, a cache) must not fall into one bucket.
_BUCKETS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
MAX_BUCKETS = 60

# The parts of metrics.json that do not depend on timing (see :func:`comparable`).
COMPARABLE_KEYS = ("totalRequests", "successRequests", "failedRequests", "modelUsage", "byState", "errors",
                   "credits")
COMPARABLE_GROUP_KEYS = ("requests", "byState", "succeeded", "failed", "successRate", "cacheHits",
                         "creditsSpent", "creditsEstimated", "imagesExpected", "imagesDownloaded")

# The per-request columns metrics use (the TEMP table's), with their SQLite types. `ended`: when the request
# reached its final state (downloaded_at for a download, else finished_at), as POSIX seconds; `sent_at`: that less
# its end-to-end time.
_ROWS = "temp.metric_rows"
_ROW_COLUMNS = (("state", "TEXT"), ("type", "TEXT"), ("model", "TEXT"), ("resolution", "TEXT"),
                ("origin", "TEXT"), ("code", "TEXT"), ("reason", "TEXT"), ("cache_hit", "INTEGER"),
                ("retries", "INTEGER"), ("submits", "INTEGER"), ("images", "INTEGER"), ("asset_count", "INTEGER"),
                ("credits_spent", "REAL"), ("estimated_credits", "REAL"),
                *((f"{stage}_seconds", "REAL") for stage in STAGES),
                ("first_queue_position", "REAL"), ("first_forecast_queue_seconds", "REAL"), ("ended", "REAL"),
                ("sent_at", "REAL"))
_FINAL = "(" + ", ".join(f"'{state}'" for state in sorted(FINAL_STATES)) + ")"
_FAILURES = "(" + ", ".join(f"'{state}'" for state in TERMINAL_FAILURES) + ")"
_SEEN_QUEUED = "(first_queue_position IS NOT NULL OR first_forecast_queue_seconds IS NOT NULL)"
_IMAGE_REQUESTS = "(type IS NULL OR type != 'video')"
_QUEUE_VALUES = (("firstPosition", "first_queue_position"),
                 ("forecastQueueSeconds", "first_forecast_queue_seconds"), ("queueSeconds", "queue_seconds"))
_QUANTILES = tuple(p / 100 for p in PERCENTILES)
# The groupings of metrics.json (overall, by model, by type, by resolution): their figures come in one pass each.
GROUPINGS = (None, "model", "type", "resolution")


def _number(value: Any) -> float | None:
    """A float for JSON (None for NaN and missing)."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def quantile_position(count: int, quantile: float) -> tuple[int, int, float]:
    """Where ``numpy.quantile`` (linear method) takes a quantile of ``count`` sorted values: the 0-based places of
    the two neighbouring values and the weight of the second (numpy's own arithmetic, for the same figures)."""
    virtual = (count - 1) * quantile
    if virtual >= count - 1:
        return count - 1, count - 1, virtual - (count - 1)
    lower = math.floor(virtual)
    return lower, lower + 1, virtual - lower


def lerp(low: float, high: float, weight: float) -> float:
    """numpy's interpolation between neighbouring values (exact at both ends)."""
    difference = high - low
    return high - difference * (1 - weight) if weight >= 0.5 else low + difference * weight


def _empty_summary() -> dict[str, Any]:
    return {"count": 0, "mean": None, **{f"p{p}": None for p in PERCENTILES}, "max": None}


def _bucket_seconds(span: float) -> float:
    for size in _BUCKETS:
        if span / size <= MAX_BUCKETS:
            return size
    return _BUCKETS[-1]


class MetricsBuilder:
    """metrics.json of a ledger: :meth:`add` each batch of results, then :meth:`finish`. Holds no per-request data
    in Python; its table lives in ``db``'s TEMP schema (dropped with the connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.create_function("floordiv", 2, lambda a, b: a // b, deterministic=True)
        db.execute(f"DROP TABLE IF EXISTS {_ROWS}")
        db.execute(f"CREATE TABLE {_ROWS} ({', '.join(f'{name} {kind}' for name, kind in _ROW_COLUMNS)})")
        self._summaries: dict[tuple[Any, ...], list[dict[str, dict[str, Any]]]] = {}
        self._video_versions: dict[str, int] = {}
        self._references = 0

    # -- intake -------------------------------------------------------------------------------------------------

    def add(self, results: Columns) -> None:
        """One batch of the results table (any number of rows, the columns of :func:`results.results_columns`)."""
        states = results["state"]
        if not states:
            return
        ended: list[float | None] = []
        for state, downloaded, finished in zip(states, results["downloaded_at"], results["finished_at"],
                                               strict=True):
            stamp = downloaded if state == "downloaded" else finished
            ended.append(posix_seconds(stamp) if state in FINAL_STATES and stamp is not None else None)
        sent = [None if end is None or e2e is None else end - e2e
                for end, e2e in zip(ended, results["end_to_end_seconds"], strict=True)]
        columns = {**results, "ended": ended, "sent_at": sent}
        self.db.executemany(f"INSERT INTO {_ROWS} VALUES ({', '.join('?' * len(_ROW_COLUMNS))})",
                            zip(*(columns[name] for name, _ in _ROW_COLUMNS), strict=True))
        for kind, variants in zip(results["type"], results["asset_variants"], strict=True):
            if kind == "video":
                for variant in variants:
                    name = str(variant) if variant else "unknown"
                    self._video_versions[name] = self._video_versions.get(name, 0) + 1
        for index, (hit, submits) in enumerate(zip(results["cache_hit"], results["submits"], strict=True)):
            if hit or not submits:  # a cache hit sends nothing
                continue
            for column in ("first_frame", "end_frame", "references"):
                text = results[column][index]
                if text is None:
                    continue
                decoded = json.loads(str(text))
                images = decoded if isinstance(decoded, list) else [decoded]
                self._references += sum(1 for image in images
                                        if isinstance(image, dict) and image.get("kind") == "file")

    # -- SQL ------------------------------------------------------------------------------------------------------

    def _rows(self, sql: str, *params: Any) -> list[Any]:
        return self.db.execute(sql, params).fetchall()

    def summaries(self, value: str, *, group: str | None = None, where: str = "1",
                  table: str = _ROWS, quantiles: tuple[float, ...] = _QUANTILES
                  ) -> dict[str, dict[str, Any]]:
        """Per group (``''`` without one): count, mean, the quantiles (``p50``...) and max of ``value``, NULLs left
        out; groups with no value are absent. Over the metrics' rows, every grouping of :data:`GROUPINGS` is
        computed at once (one sorted pass over the values) and kept for the next call."""
        groups = GROUPINGS if table == _ROWS and group in GROUPINGS else (group,)
        memo = (value, where, table, quantiles, groups)
        if memo not in self._summaries:
            self._summaries[memo] = self._summaries_by(value, groups, where, table, quantiles)
        return self._summaries[memo][groups.index(group)]

    def _summaries_by(self, value: str, groups: tuple[str | None, ...], where: str, table: str,
                      quantiles: tuple[float, ...]) -> list[dict[str, dict[str, Any]]]:
        """:meth:`summaries` for each of ``groups``. Exact quantiles without holding the values: the count of each
        group first, so the ranks each quantile needs are known; then the values in order, each group's counted
        as they pass, and only those at a needed rank kept."""
        condition = f"({where}) AND {value} IS NOT NULL"
        stats = []
        for group in groups:
            key, known = (group, f" AND {group} IS NOT NULL") if group else ("''", "")
            stats.append(self._rows(f"SELECT {key}, COUNT(*), AVG({value}), MAX({value}) FROM {table} "
                                    f"WHERE {condition}{known} GROUP BY 1 ORDER BY 1"))
        places = [{name: [quantile_position(count, q) for q in quantiles] for name, count, _, _ in rows}
                  for rows in stats]
        wanted = [{name: {place for low, high, _ in spots for place in (low, high)} for name, spots in kind.items()}
                  for kind in places]
        picked: list[dict[tuple[Any, int], float]] = [{} for _ in groups]
        passed: list[dict[Any, int]] = [{} for _ in groups]
        keys = ", ".join(group or "''" for group in groups)
        for row in self.db.execute(f"SELECT {keys}, {value} FROM {table} WHERE {condition} ORDER BY {value}"):
            number = row[-1]
            for index, name in enumerate(row[:-1]):
                if name is None:
                    continue
                counts = passed[index]
                rank = counts.get(name, 0)
                counts[name] = rank + 1
                if rank in wanted[index][name]:
                    picked[index][(name, rank)] = number
        out: list[dict[str, dict[str, Any]]] = []
        for index, rows in enumerate(stats):
            figures: dict[str, dict[str, Any]] = {}
            for name, count, mean, top in rows:
                values = [lerp(picked[index][(name, low)], picked[index][(name, high)], weight)
                          for low, high, weight in places[index][name]]
                figures[str(name)] = {"count": int(count), "mean": _number(mean),
                                      **{f"p{round(q * 100):d}": _number(v)
                                         for q, v in zip(quantiles, values, strict=True)},
                                      "max": _number(top)}
            out.append(figures)
        return out

    def _groups(self, group: str | None) -> dict[str, dict[str, Any]]:
        """:func:`group_metrics` of every group of requests (by ``group``'s value; one group, ``''``, without)."""
        key = group or "''"
        where = f"{group} IS NOT NULL" if group else "1"
        base = self._rows(f"SELECT {key}, COUNT(*), COALESCE(SUM(cache_hit), 0), COALESCE(SUM(retries), 0), "
                          f"COALESCE(SUM(submits), 0), TOTAL(credits_spent), TOTAL(estimated_credits) "
                          f"FROM {_ROWS} WHERE {where} GROUP BY 1 ORDER BY 1")
        states: dict[str, dict[str, int]] = {}
        for name, state, count in self._rows(f"SELECT {key}, state, COUNT(*) FROM {_ROWS} "
                                             f"WHERE {where} GROUP BY 1, 2"):
            states.setdefault(str(name), {})[str(state)] = int(count)
        latency = {stage: self.summaries(f"{stage}_seconds", group=group) for stage in STAGES}
        seen = {str(name): int(count) for name, count in self._rows(
            f"SELECT {key}, COUNT(*) FROM {_ROWS} WHERE {where} AND {_SEEN_QUEUED} GROUP BY 1")}
        queue = {label: self.summaries(column, group=group, where=_SEEN_QUEUED)
                 for label, column in _QUEUE_VALUES}
        images = {str(name): (int(expected), int(made), float(credits)) for name, expected, made, credits in
                  self._rows(f"SELECT {key}, COALESCE(SUM(images), 0), COALESCE(SUM(asset_count), 0), "
                             f"TOTAL(estimated_credits) FROM {_ROWS} WHERE {where} AND {_IMAGE_REQUESTS} "
                             f"GROUP BY 1")}
        out: dict[str, dict[str, Any]] = {}
        for name, count, cache_hits, retries, submits, spent, estimated in base:
            name = str(name)
            by_state = {str(state): states[name][state] for state in STATES if state in states.get(name, {})}
            succeeded = by_state.get("downloaded", 0)
            failed = sum(by_state.get(state, 0) for state in TERMINAL_FAILURES)
            finished = succeeded + failed
            expected, made, image_credits = images.get(name, (0, 0, 0.0))
            out[name] = {
                "requests": int(count),
                "byState": by_state,
                "succeeded": succeeded,
                "failed": failed,
                # Of the requests that reached a final state: skipped and unfinished ones say nothing of the service.
                "successRate": (succeeded / finished) if finished else None,
                "cacheHits": int(cache_hits),
                "latencySeconds": {stage: latency[stage].get(name, _empty_summary()) for stage in STAGES},
                "retries": int(retries),
                "submits": int(submits),
                "creditsSpent": float(spent),
                "creditsEstimated": float(estimated),
                "queue": {"requestsSeenQueued": seen.get(name, 0),
                          **{label: queue[label].get(name, _empty_summary()) for label, _ in _QUEUE_VALUES}},
                "imagesExpected": expected,
                "imagesDownloaded": made,
                "creditsPerImage": catalog.credits_per_image(image_credits, expected),
            }
        return out

    def _overall(self) -> dict[str, Any]:
        groups = self._groups(None)
        if groups:
            return groups[""]
        return {"requests": 0, "byState": {}, "succeeded": 0, "failed": 0, "successRate": None, "cacheHits": 0,
                "latencySeconds": {stage: _empty_summary() for stage in STAGES}, "retries": 0, "submits": 0,
                "creditsSpent": 0.0, "creditsEstimated": 0.0,
                "queue": {"requestsSeenQueued": 0, **{label: _empty_summary() for label, _ in _QUEUE_VALUES}},
                "imagesExpected": 0, "imagesDownloaded": 0, "creditsPerImage": None}

    def error_table(self) -> list[dict[str, Any]]:
        """Final error codes: code, reason, meaning, state and how many requests ended with it (most frequent
        first)."""
        rows = []
        for code, reason, state, count in self._rows(
                f"SELECT code, reason, state, COUNT(*) FROM {_ROWS} WHERE code IS NOT NULL "
                "GROUP BY 1, 2, 3 ORDER BY code, reason IS NULL, reason, state"):
            reason_text = None if reason is None else str(reason)
            rows.append({"code": str(code), "reason": reason_text, "meaning": meaning_of(str(code), reason_text),
                         "state": str(state), "count": int(count)})
        return sorted(rows, key=lambda row: (-row["count"], row["code"], row["state"]))

    def transient_errors(self) -> list[dict[str, Any]]:
        """Calls that failed and were retried or gave up: by kind, outcome and code (every call of the ledger)."""
        rows = []
        for kind, outcome, code, status, count in self._rows(
                "SELECT kind, outcome, code, http_status, COUNT(*) FROM attempts WHERE outcome != 'ok' "
                "GROUP BY 1, 2, 3, 4 ORDER BY kind, outcome, code IS NULL, code, http_status IS NULL, "
                "http_status"):
            code_text = None if code is None else str(code)
            rows.append({"kind": str(kind), "outcome": str(outcome), "code": code_text,
                         "httpStatus": None if status is None else int(status),
                         "meaning": meaning_of(code_text, None), "count": int(count)})
        return sorted(rows, key=lambda row: (-row["count"], row["kind"], row["code"] or ""))

    def call_metrics(self) -> dict[str, Any]:
        """Every call by kind (submit, poll, download, reconcile, ...): latency and outcomes (every outcome any
        call had, with 0 where a kind had none of it)."""
        outcomes = [str(name) for (name,) in self._rows("SELECT DISTINCT outcome FROM attempts ORDER BY 1")]
        counts: dict[str, dict[str, int]] = {}
        for kind, outcome, count in self._rows("SELECT kind, outcome, COUNT(*) FROM attempts GROUP BY 1, 2"):
            counts.setdefault(str(kind), {})[str(outcome)] = int(count)
        latency = self.summaries("seconds", group="kind", table="attempts")
        out: dict[str, Any] = {}
        for kind in sorted(counts):
            by_outcome = {name: counts[kind].get(name, 0) for name in outcomes}
            out[kind] = {"calls": sum(by_outcome.values()),
                         "errors": sum(n for name, n in by_outcome.items() if name != "ok"),
                         "outcomes": by_outcome, "latencySeconds": latency.get(kind, _empty_summary())}
        return out

    def throughput(self) -> dict[str, Any]:
        """Requests reaching a final state over time, in buckets sized for at most :data:`MAX_BUCKETS` of them."""
        final = f"state IN {_FINAL} AND ended IS NOT NULL"
        count, first, last, first_sent = self._rows(
            f"SELECT COUNT(*), MIN(ended), MAX(ended), MIN(sent_at) FROM {_ROWS} WHERE {final}")[0]
        if not count:
            return {"bucketSeconds": None, "buckets": [], "requestsPerMinute": None}
        size = _bucket_seconds(float(last) - float(first))
        start = math.floor(float(first) / size) * size
        # From the first submit (the end less the end-to-end time), not from planning: a plan may wait days for its
        # run.
        begin = min(float(first_sent), float(first)) if first_sent is not None else float(first)
        counted = {int(index): (int(ok), int(bad)) for index, ok, bad in self._rows(
            f"SELECT floordiv(ended - ?, ?), SUM(state = 'downloaded'), SUM(state IN {_FAILURES}) "
            f"FROM {_ROWS} WHERE {final} GROUP BY 1", start, size)}
        buckets = [{"start": datetime.fromtimestamp(start + number * size, UTC).isoformat(),
                    "succeeded": counted.get(number, (0, 0))[0], "failed": counted.get(number, (0, 0))[1]}
                   for number in range(max(counted) + 1)]
        elapsed = float(last) - begin
        return {"bucketSeconds": size, "buckets": buckets,
                "requestsPerMinute": (count / elapsed * 60.0) if elapsed > 0 else None}

    def box_stats(self) -> list[dict[str, Any]]:
        """Per stage with any time: the quartiles, the whiskers (the furthest times within 1.5 IQR of the box) and
        the extreme times beyond them, for Matplotlib's ``Axes.bxp`` (the box plot of every time, not holding them)."""
        out = []
        for stage in STAGES:
            column = f"{stage}_seconds"
            stats = self.summaries(column, quantiles=(0.25, 0.5, 0.75)).get("")
            if stats is None:
                continue
            q1, median, q3 = stats["p25"], stats["p50"], stats["p75"]
            reach = 1.5 * (q3 - q1)
            low, high, least, most = self._rows(
                f"SELECT MIN(CASE WHEN {column} >= ? THEN {column} END), "
                f"MAX(CASE WHEN {column} <= ? THEN {column} END), MIN({column}), MAX({column}) FROM {_ROWS} "
                f"WHERE {column} IS NOT NULL", q1 - reach, q3 + reach)[0]
            fliers = sorted({value for value in (least, most) if value < low or value > high})
            out.append({"label": stage.replace("_", " "), "q1": q1, "med": median, "q3": q3, "whislo": low,
                        "whishi": high, "fliers": fliers})
        return out

    # -- the result -------------------------------------------------------------------------------------------

    def finish(self, runs: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything in ``metrics.json``, from every batch added."""
        overall = self._overall()
        origins = {str(origin): int(n) for origin, n in self._rows(
            f"SELECT origin, COUNT(*) FROM {_ROWS} WHERE origin IS NOT NULL GROUP BY 1 ORDER BY 1")}
        ran = [run["origin"] for run in runs if not is_missing(run.get("origin"))]
        (mean_seconds,) = self._rows(f"SELECT AVG(end_to_end_seconds) FROM {_ROWS} "
                                     f"WHERE state IN {_FINAL}")[0]
        model_usage = {str(model): int(count) for model, count in self._rows(
            f"SELECT model, COUNT(*) FROM {_ROWS} WHERE state IN {_FINAL} AND model IS NOT NULL "
            "GROUP BY 1 ORDER BY 1")}
        (retried,) = self._rows(f"SELECT COUNT(*) FROM {_ROWS} WHERE retries > 0")[0]
        (uploads,) = self._rows("SELECT COUNT(*) FROM attempts WHERE kind = 'upload' AND outcome = 'ok'")[0]
        return {
            # Where the results come from; `simulated` when any of them (or, before anything was sent, the last
            # run) came from the built-in simulator: such a report is a rehearsal, not the service's work.
            "simulated": any(is_simulated(o) for o in origins) or (not origins and bool(ran)
                                                                   and is_simulated(ran[-1])),
            "origins": origins,
            "totalRequests": overall["requests"],
            "successRequests": overall["succeeded"],
            "failedRequests": overall["failed"],
            "avgResponseTime": None if mean_seconds is None else _number(mean_seconds * 1000.0),
            "modelUsage": model_usage,
            "byState": overall["byState"],
            "overall": overall,
            "byModel": self._groups("model"),
            "byType": self._groups("type"),
            "byResolution": self._groups("resolution"),
            "errors": self.error_table(),
            "transientErrors": self.transient_errors(),
            "calls": self.call_metrics(),
            "retries": {"total": overall["retries"], "requestsRetried": int(retried)},
            "credits": {"spent": overall["creditsSpent"], "estimated": overall["creditsEstimated"],
                        "note": "estimates from the catalog's cost table: spent counts requests the service "
                                "accepted"},
            "images": {"expected": overall["imagesExpected"], "downloaded": overall["imagesDownloaded"],
                       "creditsPerImage": overall["creditsPerImage"],
                       "note": "expected: each image request's `images`, else the service's default of 4; credits "
                               "per image: the image requests' estimated credits over the images expected"},
            "videoVersions": dict(sorted(self._video_versions.items())),
            "reuse": {"cacheHits": overall["cacheHits"], "uploads": int(uploads),
                      "reusedUploads": max(self._references - int(uploads), 0)},
            "throughput": self.throughput(),
            "runs": runs_summary(runs),
        }


def runs_summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run recorded in the ledger: when, what, where it was sent, with which tokens (masked labels) and
    protocol profile, which states failed it (``--fail-on``), and how it ended."""
    out = []
    for run in runs:
        options = _options(run.get("options"))
        config: dict[str, Any] = options["config"] if isinstance(options.get("config"), dict) else {}
        protocol: dict[str, Any] = config["protocol"] if isinstance(config.get("protocol"), dict) else {}
        origin = run.get("origin")
        out.append({
            "id": int(run["id"]), "manifest": run["manifest"], "manifestSha256": run["manifest_sha256"],
            "toolVersion": run["tool_version"],
            "startedAt": _iso(run["started_at"]), "finishedAt": _iso(run["finished_at"]),
            "status": run["status"], "exitCode": None if is_missing(run["exit_code"]) else int(run["exit_code"]),
            "stopReason": None if is_missing(run["stop_reason"]) else run["stop_reason"],
            "origin": None if is_missing(origin) else str(origin),
            "tokens": [str(label) for label in options.get("tokens") or []],
            # None: the default profile (the live service's values, see protocol/catalog.py)
            "protocolProfile": protocol.get("profile"),
            "failOn": [str(state) for state in config.get("fail_on") or []],
        })
    return out


def _options(text: object) -> dict[str, Any]:
    """A run's recorded options (JSON the tool wrote; an older or damaged ledger's may be missing)."""
    if not isinstance(text, str):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _iso(value: Any) -> str | None:
    if is_missing(value):
        return None
    return datetime.fromtimestamp(float(value), UTC).isoformat()


def compute_metrics(out_dir: Path) -> dict[str, Any]:
    """Everything in ``metrics.json`` of ``out_dir``'s ledger (what a report computes, without writing files)."""
    db = connect(out_dir)
    try:
        builder = MetricsBuilder(db)
        for batch in iter_batches(db):
            builder.add(batch)
        return builder.finish(run_rows(db))
    finally:
        db.close()


def comparable(metrics: dict[str, Any]) -> dict[str, Any]:
    """The parts of a metrics dict that do not depend on timing: what two runs of one manifest must agree on."""
    out = {name: metrics[name] for name in COMPARABLE_KEYS}
    for group in ("byModel", "byType", "byResolution"):
        out[group] = {name: {key: stats[key] for key in COMPARABLE_GROUP_KEYS}
                      for name, stats in metrics[group].items()}
    return out


def box_stats(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The latency box plot's figures of these requests' stage times (the computation of a report, over them)."""
    names = [f"{stage}_seconds" for stage in STAGES]
    db = sqlite3.connect(":memory:")
    try:
        builder = MetricsBuilder(db)
        db.executemany(f"INSERT INTO {_ROWS} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                       [[None if is_missing(row.get(name)) else float(row[name]) for name in names] for row in rows])
        return builder.box_stats()
    finally:
        db.close()
