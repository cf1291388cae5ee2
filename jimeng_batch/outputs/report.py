"""The report of an output folder: results files, ``metrics.json``, ``report.md`` and a self-contained ``report.html``.

Everything is computed from the ledger (see :mod:`jimeng_batch.outputs.results` and
:mod:`jimeng_batch.outputs.metrics`), so
``jimeng-batch report OUTDIR`` gives the same files whenever it is run, and a run writes them when it ends. Each
file is written to a temporary name and renamed into place, so a reader never sees half a report.
"""

from __future__ import annotations

import base64
import csv
import ctypes
import gc
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]

from jimeng_batch.engine.ledger import is_simulated
from jimeng_batch.engine.states import FAIL_ON_STATES, UNFINISHED_STATES
from jimeng_batch.errors import printable
from jimeng_batch.intake.sources import display_path
from jimeng_batch.outputs.metrics import MetricsBuilder, box_stats
from jimeng_batch.outputs.results import (
    LIST_COLUMNS,
    PARQUET_SCHEMA,
    RESULT_COLUMNS,
    STAGES,
    TIME_COLUMNS,
    Columns,
    arrow_table,
    arrow_without_pandas,
    connect,
    is_missing,
    iter_batches,
    run_rows,
    system_allocator,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

# One request of the results table: column -> value (a report's rows are plain values; a frame's records work too).
Row = Mapping[str, Any]

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
RESULT_FILES = ("results.parquet", "results.csv", "results.jsonl")
THUMBNAIL_SIDE = 192
MD_ERROR_ROWS = 8
MD_FAILURE_ROWS = 50
# report.html shows at most this many gallery cards (the first requests in plan order) and failed requests (the
# first in plan order): a page of 100,000 cards and their thumbnails would not open; results.csv has every request.
HTML_ROWS = 1_000


@dataclass(frozen=True)
class Report:
    """What a report wrote, and the metrics it computed."""

    out_dir: Path
    files: tuple[Path, ...]
    metrics: dict[str, Any]
    markdown: str


def write_report(out_dir: Path, *, step_summary: bool = True, title: str | None = None) -> Report:
    """Compute the report of ``out_dir``'s ledger and write every file; append ``report.md`` to
    ``$GITHUB_STEP_SUMMARY`` when that is set (and ``step_summary``). ``title`` names the reports (default: the
    folder's name; a merge passes the manifest's).

    One pass over the ledger, a batch of requests at a time: each batch is appended to the three results files
    and to the metrics' work table, and the first :data:`HTML_ROWS` requests and failures are kept for the pages;
    nothing else per request is held."""
    arrow_without_pandas()
    db = connect(out_dir)
    try:
        runs = run_rows(db)
        builder = MetricsBuilder(db)
        shown = _Shown()
        with system_allocator(), _ResultFiles(out_dir) as files:
            for batch in iter_batches(db):
                files.add(batch)
                builder.add(batch)
                shown.add(batch)
        metrics = builder.finish(runs)
        boxes = builder.box_stats()
    finally:
        db.close()
    _give_back_memory()
    title = title or out_dir.name
    gallery, failures = shown.gallery, shown.failures
    failed = sum(metrics["byState"].get(state, 0) for state in FAILURE_STATES)
    markdown = render_markdown(metrics, title, results=failures, html_path=display_path(out_dir / "report.html"),
                               failures_total=failed)
    written = [
        *files.paths,
        _write_bytes(out_dir / "metrics.json",
                     lambda: (json.dumps(metrics, indent=2, ensure_ascii=False) + "\n").encode("utf-8")),
        _write_bytes(out_dir / "report.md", lambda: markdown.encode("utf-8")),
        _write_bytes(out_dir / "report.html", lambda: render_html(gallery, metrics, out_dir, title, runs=runs,
                                                                     failures=failures, failures_total=failed,
                                                                     boxes=boxes).encode("utf-8")),
    ]
    summary_path = os.environ.get(SUMMARY_ENV)
    if step_summary and summary_path:
        # GitHub Actions collects the step's summary from this file; other steps may have written to it too.
        with open(summary_path, "a", encoding="utf-8") as handle:
            handle.write(markdown + "\n")
    return Report(out_dir, tuple(written), metrics, markdown)


def _give_back_memory() -> None:
    """Return the batches' freed memory to the system before the pages are drawn (Matplotlib's import alone is
    some 50 MiB): glibc keeps freed heap mapped otherwise, and the peak would be the sum of both stages."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim this way
            pass


class _Shown:
    """The first :data:`HTML_ROWS` requests (the gallery) and failed requests (the failures table), in plan
    order, as batches go by."""

    def __init__(self) -> None:
        self.gallery: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []

    def add(self, batch: Columns) -> None:
        states = batch["state"]
        room = HTML_ROWS - len(self.gallery)
        self.gallery += _rows_at(batch, range(min(room, len(states))))
        room = HTML_ROWS - len(self.failures)
        if room > 0:
            failed = [index for index, state in enumerate(states) if state in FAILURE_STATES]
            self.failures += _rows_at(batch, failed[:room])


def _rows_at(batch: Columns, indices: Iterable[int]) -> list[dict[str, Any]]:
    """Requests of a batch, by their place in it, as one dict each."""
    return [{name: values[index] for name, values in batch.items()} for index in indices]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time_text(ns: int | None, digits: int, seconds: dict[int, str]) -> str | None:
    """A time of the results (nanoseconds) as ISO 8601 UTC text with ``digits`` of the second's fraction, cut (not
    rounded) as pandas writes it: 6 in results.csv, 3 in results.jsonl. ``seconds``: the whole seconds' text
    formatted so far (a cache the caller drops with its batch: a cache for the whole report would pin the memory of
    every batch it was filled in)."""
    if ns is None:
        return None
    whole, rest = divmod(ns, 1_000_000_000)
    text = seconds.get(whole)
    if text is None:
        text = seconds[whole] = f"{_EPOCH + timedelta(seconds=whole):%Y-%m-%dT%H:%M:%S}"
    return f"{text}.{rest // 10 ** (9 - digits):0{digits}d}Z"


def _list_text(values: list[Any]) -> str:
    """A list of the results as JSON text for a CSV cell (what ``json.dumps`` writes), text and numbers encoded
    directly: a report writes eight lists per request, and the encoder's setup per call was most of the cost."""
    parts = []
    for value in values:
        if isinstance(value, str):
            parts.append(_encode_text(value))
        elif value is None:
            parts.append("null")
        elif type(value) is int:
            parts.append(str(value))
        else:
            return _LIST_JSON.encode(values)
    return f"[{', '.join(parts)}]"


class _ResultFiles:
    """results.parquet (a row group per batch), results.csv and results.jsonl, written batch by batch to
    temporary names and renamed into place once all are whole (a reader never sees half a file).

    Written from the batch's plain columns with pyarrow, the csv module and json (no pandas): results.csv is what
    pandas' ``to_csv`` wrote (it uses the csv module itself), results.jsonl holds the same values as its
    ``to_json``, floats written exactly (``repr``) rather than to 10 decimals."""

    def __init__(self, out_dir: Path) -> None:
        self.paths = tuple(out_dir / name for name in RESULT_FILES)
        self.temporary = tuple(path.with_name(f".{path.name}.tmp") for path in self.paths)
        self.parquet: pq.ParquetWriter | None = None

    def __enter__(self) -> _ResultFiles:
        self.parquet = pq.ParquetWriter(self.temporary[0], PARQUET_SCHEMA)
        self.csv_file = self.temporary[1].open("w", encoding="utf-8", newline="")
        self.csv = csv.writer(self.csv_file, lineterminator="\n")
        self.csv.writerow(RESULT_COLUMNS)
        self.jsonl = self.temporary[2].open("w", encoding="utf-8", newline="\n")
        return self

    def add(self, batch: Columns) -> None:
        if not batch["key"]:
            return
        assert self.parquet is not None
        self.parquet.write_table(arrow_table(batch))
        csv_columns = dict(batch)
        json_columns = dict(batch)
        for name in LIST_COLUMNS:  # a CSV cell holds one value: the list as JSON text
            csv_columns[name] = [_list_text(values) if values else "[]" for values in batch[name]]
        seconds: dict[int, str] = {}  # a batch's times fall in a few hundred distinct seconds
        for name in TIME_COLUMNS:
            csv_columns[name] = [_time_text(ns, 6, seconds) for ns in batch[name]]
            json_columns[name] = [_time_text(ns, 3, seconds) for ns in batch[name]]
        self.csv.writerows(zip(*(csv_columns[name] for name in RESULT_COLUMNS), strict=True))
        encode = _LINE_JSON.encode
        self.jsonl.writelines(encode(dict(zip(RESULT_COLUMNS, values, strict=True))) + "\n"
                              for values in zip(*(json_columns[name] for name in RESULT_COLUMNS), strict=True))

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            self.csv_file.close()
            self.jsonl.close()
            if self.parquet is not None:
                self.parquet.close()
            if error is None:
                for temporary, path in zip(self.temporary, self.paths, strict=True):
                    temporary.replace(path)
        finally:
            for temporary in self.temporary:
                temporary.unlink(missing_ok=True)


def write_run_report(out_dir: Path) -> Report | None:
    """The report files at the end of a run; a failure here is a warning on stderr, never the run's exit code."""
    try:
        return write_report(out_dir)
    except Exception as exc:  # noqa: BLE001 - the run's outcome is already in the ledger and must not be lost
        print(f"warning: the report could not be written ({type(exc).__name__}: {exc}); "
              f"`jimeng-batch report {display_path(out_dir)}` tries again", file=sys.stderr)
        return None


def _write_file(path: Path, write: Callable[[Path], object]) -> Path:
    """Have ``write`` write a temporary file, then rename it into place (whole or not at all), streaming:
    the results of a large batch are never held as one string."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        write(temporary)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _write_bytes(path: Path, produce: Callable[[], bytes]) -> Path:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(produce())
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


# -- results files ----------------------------------------------------------------------------------------------


# json.dumps with an option builds an encoder per call: a report encodes a line and eight lists per request.
_LIST_JSON = json.JSONEncoder(ensure_ascii=False)
_encode_text: Callable[[str], str] = json.encoder.encode_basestring
_LINE_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # results.jsonl's lines, compact as pandas'



def read_results(out_dir: Path) -> pd.DataFrame:
    """The results table a report wrote (``results.parquet``)."""
    import pandas as pd

    return pd.read_parquet(out_dir / "results.parquet", engine="pyarrow")


# -- Markdown -----------------------------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _cell(text: object) -> str:
    return printable(str(text)).replace("|", "\\|").replace("<", "&lt;")


SIMULATED_NOTE = ("results from jimeng-batch's built-in simulator (a rehearsal: noise images, no credits spent), "
                  "not from the service")


def _origins(metrics: dict[str, Any]) -> str:
    """Where the results come from, as `origin` (N requests), ..."""
    return ", ".join(f"`{origin}` ({count} request{'s' if count != 1 else ''})"
                     for origin, count in metrics["origins"].items())


def _simulated(metrics: dict[str, Any]) -> str | None:
    """What a report of simulated results says first, or None for the service's own."""
    if not metrics.get("simulated"):
        return None
    live = [origin for origin in metrics.get("origins", {}) if not is_simulated(origin)]
    return SIMULATED_NOTE + (f"; some come from {', '.join(live)}" if live else "")


def _service_lines(metrics: dict[str, Any]) -> list[str]:
    """What polls saw of the service's queue, and which versions of the videos were downloaded (when there are any):
    one sentence each, for both reports."""
    lines = []
    queue = metrics["overall"].get("queue", {})
    if queue.get("requestsSeenQueued"):
        place = queue["firstPosition"]["p50"]
        lines.append(f"Service queue: {queue['requestsSeenQueued']} request(s) seen queued; first place seen p50 "
                     f"{'–' if place is None else f'{place:g}'}, forecast queue time p50 "
                     f"{_seconds(queue['forecastQueueSeconds']['p50'])}, actual queue stage p50 "
                     f"{_seconds(queue['queueSeconds']['p50'])}.")
    versions = metrics.get("videoVersions") or {}
    if versions:
        lines.append("Videos downloaded: " + ", ".join(f"{count} {name}" for name, count in versions.items())
                     + " (high: the download version from get_local_item_list; preview: its fallback, with the "
                       "reason in the results' `asset_fallback_reasons`).")
    return lines


def _images_line(metrics: dict[str, Any]) -> str:
    """How many images came of the images expected, and the estimated credits per image."""
    images = metrics["images"]
    per_image = images["creditsPerImage"]
    return (f"{images['downloaded']} of {images['expected']} images downloaded"
            + (f"; ≈ {per_image:.3g} credits per image (estimated)." if per_image is not None else "."))


def _images_cell(stats: dict[str, Any]) -> str:
    """A group's images: downloaded / expected, or – for video."""
    return f"{stats['imagesDownloaded']} / {stats['imagesExpected']}" if stats["imagesExpected"] else "–"


def render_markdown(metrics: dict[str, Any], title: str, *, results: Sequence[Row] | None = None,
                    html_path: str = "report.html", failures_total: int | None = None) -> str:
    """A short summary for a CI job page: the header (origin, manifest, version, times, exit and why), outcome,
    states, time per stage, the failed requests (the first :data:`MD_FAILURE_ROWS` of ``results``;
    ``failures_total``: how many there are in all, when ``results`` holds only the first), errors, credits, per
    model, and where report.html is."""
    overall = metrics["overall"]
    ok = metrics["failedRequests"] == 0 and metrics["successRequests"] == metrics["totalRequests"]
    simulated = _simulated(metrics)
    header = run_header(metrics) if results is not None else None
    lines = [*([f"**Simulated run**: {simulated}.", ""] if simulated else []),
        f"## jimeng-batch: {_cell(title)} {'✅' if ok else '⚠️'}",
        "",
        *([*_header_lines(header), ""] if header else []),
        *([f"Origin: {_origins(metrics)}.", ""] if metrics.get("origins") else []),
        f"**{metrics['successRequests']}** of **{metrics['totalRequests']}** requests succeeded, "
        f"**{metrics['failedRequests']}** failed, blocked or invalid; success rate {_pct(overall['successRate'])}; "
        f"credits spent ≈ {metrics['credits']['spent']:g} (estimated for the whole batch: "
        f"{metrics['credits']['estimated']:g}).",
        *([_images_line(metrics), ""] if metrics["images"]["expected"] else [""]),
        "| state | requests |", "|---|---:|",
        *[f"| {state} | {count} |" for state, count in metrics["byState"].items()],
        "",
        "| stage | p50 | p90 | p99 |", "|---|---:|---:|---:|",
    ]
    for stage in STAGES:
        stats = overall["latencySeconds"][stage]
        if stats["count"]:
            lines.append(f"| {stage.replace('_', ' ')} | {_seconds(stats['p50'])} | {_seconds(stats['p90'])} | "
                         f"{_seconds(stats['p99'])} |")
    for line in _service_lines(metrics):
        lines += ["", line]
    lines += ["", "| model | requests | images | succeeded | failed | success rate | credits spent |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for model, stats in metrics["byModel"].items():
        lines.append(f"| {_cell(model)} | {stats['requests']} | {_images_cell(stats)} | {stats['succeeded']} | "
                     f"{stats['failed']} | {_pct(stats['successRate'])} | {stats['creditsSpent']:g} |")
    errors = metrics["errors"]
    if errors:
        lines += ["", "| code | meaning | state | requests |", "|---|---|---|---:|"]
        for error in errors[:MD_ERROR_ROWS]:
            lines.append(f"| `{_cell(error['code'])}` | {_cell(error['meaning'] or error['reason'] or '')} | "
                         f"{error['state']} | {error['count']} |")
        if len(errors) > MD_ERROR_ROWS:
            lines.append(f"\n… and {len(errors) - MD_ERROR_ROWS} more codes in metrics.json")
    failures = failure_rows(results) if results is not None else []
    total = max(failures_total or 0, len(failures))
    if failures:
        lines += ["", f"Failed, blocked, invalid and skipped requests ({total}):", "",
                  "| state | job | prompt | code | meaning | message |", "|---|---|---|---|---|---|"]
        for row in failures[:MD_FAILURE_ROWS]:
            lines.append(f"| {row['state']} | {_cell(row['job'])} | {_cell(row['prompt'][:80])} | "
                         f"{_cell(row['code'])} | {_cell(row['meaning'] or row['reason'])} | "
                         f"{_cell(row['message'][:120])} |")
        if total > MD_FAILURE_ROWS:
            lines.append(f"\n… and {total - MD_FAILURE_ROWS} more in report.html and the results files")
    lines += ["", f"Review every request in `{_cell(html_path)}`. Files: `results.parquet` `results.csv` "
              "`results.jsonl` `metrics.json`. Credits are estimates from the catalog's cost table.", ""]
    return "\n".join(lines)


# -- the header of both reports ------------------------------------------------------------------------------------


def run_header(metrics: dict[str, Any]) -> dict[str, Any]:
    """Where the results come from, which manifest, version and profile, when, with which tokens (masked labels),
    and how the last run exited and why: from the metrics (the ledger's runs, the states)."""
    runs = metrics.get("runs") or []
    last = runs[-1] if runs else {}
    origins = list(metrics.get("origins") or {}) or [r["origin"] for r in runs if r.get("origin")]
    started = min((r["startedAt"] for r in runs if r.get("startedAt")), default=None)
    finished = max((r["finishedAt"] for r in runs if r.get("finishedAt")), default=None)
    seconds = None
    if started and finished:
        seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    tokens = sorted({label for r in runs for label in r.get("tokens") or []})
    simulated = [o for o in origins if is_simulated(o)]
    live = [o for o in origins if not is_simulated(o)]
    origin = ", ".join([*(["simulated (jimeng-batch's built-in simulator)"] if simulated else []),
                        *(f"live ({host})" for host in live)]) or "nothing sent yet"
    return {
        "origin": origin, "hosts": origins,
        "manifest": last.get("manifest") or "–", "sha256": last.get("manifestSha256"),
        "version": last.get("toolVersion") or "–",
        "profile": last.get("protocolProfile") or "live (the default)",
        "started": _when(started), "finished": _when(finished),
        "duration": "–" if seconds is None else _duration(seconds), "runs": len(runs),
        "tokens": ", ".join(tokens) or "–",
        "exit_code": last.get("exitCode"), "exit": exit_why(last, metrics["byState"]),
    }


def _when(iso: str | None) -> str:
    return "–" if iso is None else datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f} s"


def exit_why(run: dict[str, Any], by_state: dict[str, int]) -> str:
    """The last run's exit code and why it is what it is ("exit 1: 2 blocked (--fail-on includes blocked)")."""
    code = run.get("exitCode")
    if not run:
        return "not run yet (planned only)"
    if code is None:
        return f"no exit code recorded (the run is {run.get('status') or 'unfinished'}: running, or killed)"
    if code == 0:
        return "exit 0: every request ended as the run required"
    stop = run.get("stopReason")
    if code == 130:
        return "exit 130: interrupted"
    if code == 3:
        return f"exit 3: stopped for safety ({stop or 'see run.log'})"
    fail_on = set(run.get("failOn") or [])
    reasons = [f"{by_state[state]} {state} (--fail-on includes {state})"
               for state in FAIL_ON_STATES if by_state.get(state) and state in fail_on]
    if "skipped" in fail_on and by_state.get("planned"):
        reasons.append(f"{by_state['planned']} planned, never sent (--fail-on includes skipped)")
    # As the exit-code policy (engine/result.py) says: work in flight or not downloaded always fails a run.
    unfinished = sum(by_state.get(state, 0) for state in UNFINISHED_STATES)
    if unfinished:
        reasons.append(f"{unfinished} unfinished (in flight, lost or not downloaded)")
    return f"exit {code}: " + ("; ".join(reasons) or f"{stop or 'see run.log'}")


def _header_lines(header: dict[str, Any]) -> list[str]:
    """The header as Markdown lines."""
    sha = f" (sha256 `{header['sha256'][:16]}…`)" if header.get("sha256") else ""
    return [f"- **Origin**: {_cell(header['origin'])}",
            f"- **Manifest**: `{_cell(header['manifest'])}`{sha}",
            f"- **jimeng-batch** {_cell(header['version'])}, protocol profile {_cell(header['profile'])}",
            f"- **Started** {header['started']}, **finished** {header['finished']}, **duration** {header['duration']}"
            + (f" ({header['runs']} runs)" if header["runs"] > 1 else ""),
            f"- **Tokens**: {_cell(header['tokens'])}",
            f"- **{_cell(header['exit'])}**"]


# -- failures ---------------------------------------------------------------------------------------------------

FAILURE_STATES = FAIL_ON_STATES


def failure_rows(results: Sequence[Row]) -> list[dict[str, str]]:
    """Every request that failed, was blocked, invalid or skipped: its prompt, code, reason, meaning and message
    (server text: made printable here, escaped by the page's template or the Markdown cell)."""
    rows = []
    for record in results:
        if record["state"] not in FAILURE_STATES:
            continue
        rows.append({name: _text(record.get(name)) for name in ("key", "job", "state", "prompt", "code", "reason",
                                                                 "meaning", "message")})
    return rows


def _text(value: object) -> str:
    return "" if is_missing(value) else printable(str(value))


# -- HTML ---------------------------------------------------------------------------------------------------------

THUMBNAIL_DIR = "report_files"


def render_html(results: Sequence[Row], metrics: dict[str, Any], out_dir: Path, title: str | None = None, *,
                runs: Sequence[Row] | None = None, failures: Sequence[Row] | None = None,
                failures_total: int | None = None, boxes: list[dict[str, Any]] | None = None) -> str:
    """One page that opens from disk: the header, states, failures, a gallery of the requests (thumbnails in
    ``report_files/``, lazy-loaded; links to the full-size files), tables and plots (inline PNG).

    ``results``: the requests of the gallery (a report passes the first :data:`HTML_ROWS`; the page says how many of
    ``metrics['totalRequests']`` it shows); ``failures``: the failed requests to list (default: those of
    ``results``), ``failures_total`` of them in all; ``boxes``: the latency box plot's figures
    (:meth:`MetricsBuilder.box_stats`; default: from ``results``)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    environment = Environment(loader=PackageLoader("jimeng_batch.outputs", "templates"),
                              autoescape=select_autoescape(default=True, default_for_string=True))
    overall = metrics["overall"]
    cards = _cards(results, out_dir, _manifest_dirs(runs))
    choices = {name: sorted({str(card[name]) for card in cards}) for name in ("state", "job", "model")}
    latency = {"header": ["stage", "count", "mean", "p50", "p90", "p99", "max"],
               "rows": [[stage, stats["count"], *[_fmt(stats[k]) for k in ("mean", "p50", "p90", "p99", "max")]]
                        for stage, stats in overall["latencySeconds"].items()]}
    by_model = {"header": ["model", "requests", "images", "succeeded", "failed", "success rate", "p50 end to end",
                           "credits spent"],
                "rows": [[m, s["requests"], _images_cell(s), s["succeeded"], s["failed"], _pct(s["successRate"]),
                          _fmt(s["latencySeconds"]["end_to_end"]["p50"]), f"{s['creditsSpent']:g}"]
                         for m, s in metrics["byModel"].items()]}
    summary = (f"{metrics['successRequests']} of {metrics['totalRequests']} requests succeeded, "
               f"{metrics['failedRequests']} failed, blocked or invalid; "
               f"success rate {_pct(overall['successRate'])}; credits spent ≈ {metrics['credits']['spent']:g} of "
               f"{metrics['credits']['estimated']:g} estimated (estimates from the catalog's cost table).")
    notes = [*([_images_line(metrics)] if metrics["images"]["expected"] else []),
             *[line.replace("`", "") for line in _service_lines(metrics)]]
    if boxes is None:
        boxes = box_stats(results)
    plots = [(alt, "data:image/png;base64," + base64.b64encode(png).decode("ascii"))
             for alt, png in _plots(boxes, metrics)]
    listed = failure_rows(results if failures is None else failures)
    return environment.get_template("report.html.j2").render(
        title=title or out_dir.name, simulated=_simulated(metrics), header=run_header(metrics),
        summary=summary, notes=notes, reuse=metrics["reuse"], by_state=list(metrics["byState"].items()),
        failures=listed, failures_total=max(failures_total or 0, len(listed)), cards=cards,
        total=max(int(metrics["totalRequests"]), len(cards)), files=sum(len(c["links"]) for c in cards),
        choices=choices,
        latency=latency, by_model=by_model, errors=metrics["errors"], retried=metrics["transientErrors"],
        plots=plots)


_STAGE_LABELS = {"submit": "submit", "queue": "queue", "generation": "gen", "download": "dl", "end_to_end": "total"}


def _cards(results: Sequence[Row], out_dir: Path, manifest_dirs: list[Path]) -> list[dict[str, Any]]:
    """One card per request, in plan order: what it asked, how it ended, its files and thumbnails."""
    cards = []
    for record in sorted(results, key=lambda row: int(row["ord"])):
        paths = [str(p) for p in record["asset_paths"]]
        video = record["type"] == "video"
        params = [f"{name} {record[name]}" for name in ("ratio", "resolution", "seed", "duration", "aspect_ratio",
                                                          "fps") if not is_missing(record.get(name))]
        if not is_missing(record.get("images")):
            params.append(f"images {record['images']}")
        timings = [f"{_STAGE_LABELS[stage]} {_seconds(record[f'{stage}_seconds'])}" for stage in STAGES
                   if not is_missing(record[f"{stage}_seconds"])]
        code = _text(record.get("code"))
        error = " · ".join(part for part in (code and f"code {code}", _text(record.get("meaning")),
                                             _text(record.get("message"))) if part)
        card: dict[str, Any] = {
            "key": record["key"], "job": str(record["job"]), "model": str(record["model"]),
            "state": str(record["state"]), "type": str(record["type"]), "prompt": _text(record["prompt"]),
            "params": " · ".join(params), "timings": " · ".join(timings) or "not sent",
            "cache_hit": bool(record["cache_hit"]), "error": error, "links": paths, "thumbs": [],
            "video": [], "frames": [], "poster": None,
        }
        if video:
            card["video"] = paths
            card["frames"] = _frames({str(k): v for k, v in record.items()}, out_dir, manifest_dirs)
            card["poster"] = next((frame["thumb"] for frame in card["frames"] if frame["thumb"]), None) \
                or _placeholder(out_dir)
        else:
            for path in paths:
                thumb = _thumbnail(out_dir, out_dir / path, Path(path).stem)
                if thumb is not None:
                    card["thumbs"].append({"thumb": thumb, "full": path})
        cards.append(card)
    return cards


def _manifest_dirs(runs: Sequence[Row] | None) -> list[Path]:
    """Where a request's local reference files are found: beside the manifests the runs read (newest first)."""
    dirs: list[Path] = []
    for text in reversed([run.get("options") for run in runs or ()]):
        try:
            manifest = json.loads(text).get("manifest") if isinstance(text, str) else None
        except (ValueError, AttributeError):
            continue
        if isinstance(manifest, str) and Path(manifest).parent not in dirs:
            dirs.append(Path(manifest).parent)
    return dirs


def _frames(record: dict[str, Any], out_dir: Path, manifest_dirs: list[Path]) -> list[dict[str, Any]]:
    """A video request's first and last frames and references: a thumbnail of each local file still found beside
    the manifest, and what the manifest named."""
    frames = []
    for label, column in (("first frame", "first_frame"), ("last frame", "end_frame"), ("reference", "references")):
        value = record.get(column)
        if is_missing(value):
            continue
        decoded = json.loads(str(value))
        for image in decoded if isinstance(decoded, list) else [decoded]:
            if not isinstance(image, dict):
                continue
            ref, sha = str(image.get("ref", "")), image.get("sha256")
            thumb = None
            if image.get("kind") == "file" and isinstance(sha, str):
                for folder in manifest_dirs:
                    if (folder / ref).is_file():
                        thumb = _thumbnail(out_dir, folder / ref, f"ref-{sha[:16]}")
                        break
            frames.append({"label": label, "ref": printable(ref), "thumb": thumb})
    return frames


def _thumbnail(out_dir: Path, source: Path, name: str) -> str | None:
    """A small JPEG of ``source`` in ``report_files/`` (written once: an existing one is kept), as a path relative
    to the report; None when the file is gone or is not an image Pillow reads."""
    from PIL import Image, UnidentifiedImageError

    relative = f"{THUMBNAIL_DIR}/{name}.jpg"
    target = out_dir / relative
    if target.is_file():
        return relative
    target.parent.mkdir(exist_ok=True)
    try:
        with Image.open(source) as image:
            image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))  # a JPEG decodes at a fraction of its size
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), reducing_gap=2.0)
            converted = image.convert("RGB")
    except (OSError, UnidentifiedImageError):
        return None  # a file moved away since the run: the card still links to it
    _write_file(target, lambda path: converted.save(path, format="JPEG", quality=80))
    return relative


def _placeholder(out_dir: Path) -> str:
    """The poster of a video with no local first frame: a dark frame with a play sign (Pillow reads no MP4)."""
    from PIL import Image, ImageDraw

    relative = f"{THUMBNAIL_DIR}/video-poster.png"
    target = out_dir / relative
    if not target.is_file():
        target.parent.mkdir(exist_ok=True)
        image = Image.new("RGB", (320, 180), (40, 40, 48))
        ImageDraw.Draw(image).polygon([(140, 60), (140, 120), (190, 90)], fill=(220, 220, 220))
        _write_file(target, lambda path: image.save(path, format="PNG"))
    return relative


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _plots(boxes: list[dict[str, Any]], metrics: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Latency distributions per stage, throughput over time, outcomes by model: PNG bytes with their titles."""
    # The object-oriented API with the Agg canvas: no pyplot, no global backend, nothing shown on a screen.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    plots: list[tuple[str, bytes]] = []

    def save(figure: Figure, title: str) -> None:
        FigureCanvasAgg(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
        plots.append((title, buffer.getvalue()))

    if boxes:
        figure = Figure(figsize=(8, 3.5))
        axes = figure.add_subplot()
        # From precomputed quartiles and whiskers (1.5 IQR): the times themselves are never all in memory.
        axes.bxp(boxes, showfliers=True)
        axes.set_ylabel("seconds")
        axes.set_title("Latency by stage")
        save(figure, "Latency distribution per stage")
    over_time = throughput_figure(metrics)
    if over_time is not None:
        save(over_time, "Throughput over time")
    by_model = metrics["byModel"]
    ended = ("downloaded", "failed", "blocked", "invalid", "skipped")
    if any(stats["byState"].get(state) for stats in by_model.values() for state in ended):  # else: an empty plot
        figure = Figure(figsize=(8, 0.6 + 0.5 * len(by_model)))
        axes = figure.add_subplot()
        names = list(by_model)
        left = [0.0] * len(names)
        colors = {"downloaded": "#3a7", "failed": "#c44", "blocked": "#e90", "invalid": "#a4c", "skipped": "#999"}
        for state in ("downloaded", "failed", "blocked", "invalid", "skipped"):
            widths = [float(by_model[name]["byState"].get(state, 0)) for name in names]
            if any(widths):
                axes.barh(names, widths, left=left, label=state, color=colors[state])
                left = [a + b for a, b in zip(left, widths, strict=True)]
        axes.set_xlabel("requests")
        axes.set_title("Outcomes by model")
        if any(left):  # a legend of nothing would warn
            axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        save(figure, "Outcomes by model")
    return plots


def throughput_figure(metrics: dict[str, Any]) -> Figure | None:
    """Requests finished per bucket on a time axis (seconds from the first bucket, bars as wide as a bucket, at
    least ten buckets of axis): a run that ends inside one bucket is one bar on a readable axis; None when no
    request has finished."""
    from matplotlib.figure import Figure

    buckets = metrics["throughput"]["buckets"]
    if not buckets:
        return None
    figure = Figure(figsize=(8, 3))
    axes = figure.add_subplot()
    size = float(metrics["throughput"]["bucketSeconds"])
    positions = [index * size for index in range(len(buckets))]
    succeeded = [b["succeeded"] for b in buckets]
    failed = [b["failed"] for b in buckets]
    axes.bar(positions, succeeded, width=size, align="edge", label="succeeded", color="#3a7")
    axes.bar(positions, failed, width=size, align="edge", bottom=succeeded, label="failed", color="#c44")
    axes.set_xlim(0.0, max(len(buckets), 10) * size)
    axes.set_xlabel(f"seconds from {buckets[0]['start'][:19]} UTC ({size:g} s buckets)")
    axes.set_ylabel("requests finished")
    axes.set_title("Throughput over time")
    axes.legend()
    return figure
