"""The whole-table pandas computation of metrics.json, as it was before reports streamed: the oracle the
streamed metrics are compared to (tests only).

Metrics of a batch, from its results: the API document's five, and where time went, which errors, what it cost.

Pure functions of frames (no I/O, no clock). The document's metrics keep its names:

- ``totalRequests``: every request of the batch (the ledger's distinct requests, whatever their state);
- ``successRequests``: requests whose files were downloaded;
- ``failedRequests``: requests that ended ``failed``, ``blocked`` or ``invalid``;
- ``avgResponseTime``: the mean end-to-end time (first submit to final state) of the requests that reached a final
  state after a submit, in milliseconds as in the document's code (``Date.now()`` differences); null when none;
- ``modelUsage``: model name -> the number of requests for it that reached a final state.

Beyond them, ``images``: the images the image requests should make and the files downloaded for them, and the
estimated credits per image.

Requests still ``planned``, ``skipped`` or in flight count in ``totalRequests`` only; ``byState`` has them all.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, cast

import pandas as pd

from jimeng_batch.engine.ledger import is_simulated
from jimeng_batch.engine.states import FINAL_STATES, STATES, TERMINAL_FAILURES

# The tables (percentiles, buckets, comparable keys) and the runs' summary are the tool's own: only the
# per-request computation is the oracle's.
from jimeng_batch.outputs.metrics import (
    _BUCKETS,
    COMPARABLE_GROUP_KEYS,
    COMPARABLE_KEYS,
    MAX_BUCKETS,
    PERCENTILES,
    runs_summary,
)
from jimeng_batch.outputs.results import STAGES, is_missing, meaning_of
from jimeng_batch.protocol import catalog


def _number(value: Any) -> float | None:
    """A float for JSON (None for NaN and missing)."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def latency_summary(values: pd.Series) -> dict[str, Any]:
    """count, mean, p50, p90, p99 and max of a series of seconds (NaNs left out)."""
    present = values.dropna().astype("float64")
    if present.empty:
        return {"count": 0, "mean": None, **{f"p{p}": None for p in PERCENTILES}, "max": None}
    quantiles = present.quantile([p / 100 for p in PERCENTILES])
    return {"count": int(present.size), "mean": _number(present.mean()),
            **{f"p{p}": _number(quantiles[p / 100]) for p in PERCENTILES}, "max": _number(present.max())}


def state_counts(results: pd.DataFrame) -> dict[str, int]:
    """Requests by state, in lifecycle order, leaving out states no request is in."""
    counts = results["state"].value_counts()
    return {state: int(counts[state]) for state in STATES if state in counts.index}


def group_metrics(results: pd.DataFrame) -> dict[str, Any]:
    """Counts, success rate, stage latencies, retries and credits of a set of requests."""
    counts = state_counts(results)
    succeeded = counts.get("downloaded", 0)
    failed = sum(counts.get(state, 0) for state in TERMINAL_FAILURES)
    finished = succeeded + failed
    return {
        "requests": len(results),
        "byState": counts,
        "succeeded": succeeded,
        "failed": failed,
        # Of the requests that reached a final state: skipped and unfinished ones say nothing about the service.
        "successRate": (succeeded / finished) if finished else None,
        "cacheHits": int(results["cache_hit"].sum()),
        "latencySeconds": {stage: latency_summary(results[f"{stage}_seconds"]) for stage in STAGES},
        "retries": int(results["retries"].sum()),
        "submits": int(results["submits"].sum()),
        "creditsSpent": float(results["credits_spent"].sum()),
        "creditsEstimated": float(results["estimated_credits"].sum()),
        "queue": queue_metrics(results),
        **image_metrics(results),
    }


def image_metrics(results: pd.DataFrame) -> dict[str, Any]:
    """Images the image requests should make (their `images`, else the service's default of 4) and made
    (files downloaded), and the estimated credits per image: their estimated cost over the images expected."""
    images = results[results["type"] != "video"]
    expected = int(images["images"].sum()) if not images.empty else 0
    return {
        "imagesExpected": expected,
        "imagesDownloaded": int(images["asset_count"].sum()) if not images.empty else 0,
        "creditsPerImage": catalog.credits_per_image(float(images["estimated_credits"].sum()), expected),
    }


def queue_metrics(results: pd.DataFrame) -> dict[str, Any]:
    """What polls saw of the service's queue: how many requests were seen queued, their place at the first sight,
    the service's forecast of the queue time then, and how long the queue stage really took for those."""
    seen = results[results["first_queue_position"].notna() | results["first_forecast_queue_seconds"].notna()]
    return {"requestsSeenQueued": len(seen),
            "firstPosition": latency_summary(seen["first_queue_position"]),
            "forecastQueueSeconds": latency_summary(seen["first_forecast_queue_seconds"]),
            "queueSeconds": latency_summary(seen["queue_seconds"])}


def video_versions(results: pd.DataFrame) -> dict[str, int]:
    """Downloaded videos by version: the high-bitrate download version, or the preview (the results say why)."""
    counts: dict[str, int] = {}
    for kinds, variants in zip(results["type"], results["asset_variants"], strict=True):
        if kinds != "video":
            continue
        for variant in variants:
            name = str(variant) if variant else "unknown"
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _grouped(results: pd.DataFrame, column: str) -> dict[str, Any]:
    return {str(name): group_metrics(group) for name, group in results.groupby(column, sort=True)}


def error_table(results: pd.DataFrame) -> list[dict[str, Any]]:
    """Final error codes: code, reason, meaning, state and how many requests ended with it (most frequent first)."""
    failed = results[results["code"].notna()]
    rows = []
    for (code, reason, state), group in failed.groupby(["code", "reason", "state"], dropna=False, sort=True):
        reason_text = None if is_missing(reason) else str(reason)
        rows.append({"code": str(code), "reason": reason_text, "meaning": meaning_of(str(code), reason_text),
                     "state": str(state), "count": len(group)})
    return sorted(rows, key=lambda row: (-row["count"], row["code"], row["state"]))


def call_metrics(attempts: pd.DataFrame) -> dict[str, Any]:
    """Every call by kind (submit, poll, download, reconcile, ...): latency and outcomes."""
    out: dict[str, Any] = {}
    for kind, group in attempts.groupby("kind", sort=True):
        outcomes = group["outcome"].value_counts()
        out[str(kind)] = {"calls": len(group), "errors": int((group["outcome"] != "ok").sum()),
                          "outcomes": {str(k): int(v) for k, v in outcomes.sort_index().items()},
                          "latencySeconds": latency_summary(group["seconds"])}
    return out


def transient_errors(attempts: pd.DataFrame) -> list[dict[str, Any]]:
    """Calls that failed and were retried or gave up: by kind, outcome and code."""
    failed = attempts[attempts["outcome"] != "ok"]
    rows = []
    for (kind, outcome, code, status), group in failed.groupby(["kind", "outcome", "code", "http_status"],
                                                               dropna=False, sort=True):
        code_text = None if is_missing(code) else str(code)
        rows.append({"kind": str(kind), "outcome": str(outcome), "code": code_text,
                     "httpStatus": None if is_missing(status) else int(cast(float, status)),
                     "meaning": meaning_of(code_text, None), "count": len(group)})
    return sorted(rows, key=lambda row: (-row["count"], row["kind"], row["code"] or ""))


def _bucket_seconds(span: float) -> float:
    for size in _BUCKETS:
        if span / size <= MAX_BUCKETS:
            return size
    return _BUCKETS[-1]


def throughput(results: pd.DataFrame) -> dict[str, Any]:
    """Requests reaching a final state over time, in buckets sized for at most :data:`MAX_BUCKETS` of them."""
    ended = results["downloaded_at"].where(results["state"] == "downloaded", results["finished_at"])
    finished = results.assign(ended=ended)[results["state"].isin(FINAL_STATES) & ended.notna()]
    if finished.empty:
        return {"bucketSeconds": None, "buckets": [], "requestsPerMinute": None}
    seconds = finished["ended"].map(lambda t: t.timestamp())
    size = _bucket_seconds(float(seconds.max()) - float(seconds.min()))
    start = math.floor(float(seconds.min()) / size) * size
    # From the first submit (the end less the end-to-end time), not from planning: a plan may wait days for its run.
    sent = (seconds - finished["end_to_end_seconds"]).dropna()
    begin = min(float(sent.min()), float(seconds.min())) if not sent.empty else float(seconds.min())
    buckets = []
    index = ((seconds - start) // size).astype("int64")
    for number in range(int(index.max()) + 1):
        chosen = finished[index == number]
        buckets.append({"start": datetime.fromtimestamp(start + number * size, UTC).isoformat(),
                        "succeeded": int((chosen["state"] == "downloaded").sum()),
                        "failed": int(chosen["state"].isin(TERMINAL_FAILURES).sum())})
    elapsed = float(seconds.max()) - begin
    return {"bucketSeconds": size, "buckets": buckets,
            "requestsPerMinute": (len(finished) / elapsed * 60.0) if elapsed > 0 else None}


def reuse_metrics(results: pd.DataFrame, attempts: pd.DataFrame) -> dict[str, int]:
    """What was not done again: requests served from the result cache, and references to local files that an
    earlier upload (this run's or a former one's, same account and region) served instead of a new upload."""
    references = 0
    sent = results[~results["cache_hit"] & (results["submits"] > 0)]  # a cache hit sends (and uploads) nothing
    for column in ("first_frame", "end_frame", "references"):
        for text in sent[column].dropna():
            decoded = json.loads(str(text))
            images = decoded if isinstance(decoded, list) else [decoded]
            references += sum(1 for image in images if isinstance(image, dict) and image.get("kind") == "file")
    uploads = int(((attempts["kind"] == "upload") & (attempts["outcome"] == "ok")).sum()) if len(attempts) else 0
    return {"cacheHits": int(results["cache_hit"].sum()), "uploads": uploads,
            "reusedUploads": max(references - uploads, 0)}


def compute_metrics(results: pd.DataFrame, attempts: pd.DataFrame, runs: pd.DataFrame) -> dict[str, Any]:
    """Everything in ``metrics.json``."""
    final = results[results["state"].isin(FINAL_STATES)]
    sent = final["end_to_end_seconds"].dropna()
    overall = group_metrics(results)
    origins = {str(origin): int(n) for origin, n in results["origin"].dropna().value_counts().sort_index().items()}
    ran = [origin for origin in runs.get("origin", pd.Series(dtype="object")).dropna()]
    return {
        # Where the results come from; `simulated` when any of them (or, before anything was sent, the last run)
        # came from the built-in simulator: such a report is a rehearsal, not the service's work.
        "simulated": any(is_simulated(o) for o in origins) or (not origins and bool(ran) and is_simulated(ran[-1])),
        "origins": origins,
        "totalRequests": len(results),
        "successRequests": overall["succeeded"],
        "failedRequests": overall["failed"],
        "avgResponseTime": _number(sent.mean() * 1000.0) if not sent.empty else None,
        "modelUsage": {str(model): int(count) for model, count in final["model"].value_counts().sort_index().items()},
        "byState": overall["byState"],
        "overall": overall,
        "byModel": _grouped(results, "model"),
        "byType": _grouped(results, "type"),
        "byResolution": _grouped(results, "resolution"),
        "errors": error_table(results),
        "transientErrors": transient_errors(attempts),
        "calls": call_metrics(attempts),
        "retries": {"total": overall["retries"], "requestsRetried": int((results["retries"] > 0).sum())},
        "credits": {"spent": overall["creditsSpent"], "estimated": overall["creditsEstimated"],
                    "note": "estimates from the catalog's cost table: spent counts requests the service accepted"},
        "images": {"expected": overall["imagesExpected"], "downloaded": overall["imagesDownloaded"],
                   "creditsPerImage": overall["creditsPerImage"],
                   "note": "expected: each image request's `images`, else the service's default of 4; credits per "
                           "image: the image requests' estimated credits over the images expected"},
        "videoVersions": video_versions(results),
        "reuse": reuse_metrics(results, attempts),
        "throughput": throughput(results),
        "runs": runs_summary(runs.to_dict(orient="records")),
    }


def comparable(metrics: dict[str, Any]) -> dict[str, Any]:
    """The parts of a metrics dict that do not depend on timing: what two runs of one manifest must agree on."""
    out = {name: metrics[name] for name in COMPARABLE_KEYS}
    for group in ("byModel", "byType", "byResolution"):
        out[group] = {name: {key: stats[key] for key in COMPARABLE_GROUP_KEYS}
                      for name, stats in metrics[group].items()}
    return out


def columns_of(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """A frame's columns as a report's batch of results (``results.Columns``): plain Python values, None where a
    value is missing, times as integer nanoseconds."""
    out: dict[str, list[Any]] = {}
    for name in frame.columns:
        series = frame[name]
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            out[str(name)] = [None if pd.isna(v) else int(v.as_unit("ns").value) for v in series]
        else:
            out[str(name)] = [v if isinstance(v, list) or not is_missing(v) else None for v in series.tolist()]
    return out
