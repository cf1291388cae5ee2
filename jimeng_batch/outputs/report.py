"""The report of an output folder: results files, ``metrics.json``, ``report.md`` and a self-contained ``report.html``.

Everything is computed from the ledger (see :mod:`jimeng_batch.outputs.results` and
:mod:`jimeng_batch.outputs.metrics`), so
``jimeng-batch report OUTDIR`` gives the same files whenever it is run, and a run writes them when it ends. Each
file is written to a temporary name and renamed into place, so a reader never sees half a report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from jimeng_batch.engine.ledger import is_simulated
from jimeng_batch.intake.sources import display_path
from jimeng_batch.outputs.metrics import compute_metrics
from jimeng_batch.outputs.results import (
    LIST_COLUMNS,
    STAGES,
    read_tables,
    results_frame,
)

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
RESULT_FILES = ("results.parquet", "results.csv", "results.jsonl")
MAX_THUMBNAILS = 60
THUMBNAIL_SIDE = 160
MD_ERROR_ROWS = 8


@dataclass(frozen=True)
class Report:
    """What a report wrote, and the metrics it computed."""

    out_dir: Path
    files: tuple[Path, ...]
    metrics: dict[str, Any]
    markdown: str


def write_report(out_dir: Path, *, step_summary: bool = True, title: str | None = None) -> Report:
    """Compute the report of ``out_dir``'s ledger and write every file; append ``report.md`` to
    ``$GITHUB_STEP_SUMMARY`` when that is set (and ``step_summary``). ``title``: what the reports are titled
    (default: the folder's name)."""
    title = title or out_dir.name
    tables = read_tables(out_dir)
    results = results_frame(tables)
    metrics = compute_metrics(results, tables.attempts, tables.runs)
    markdown = render_markdown(metrics, title)
    written = [
        _write_file(out_dir / "results.parquet", lambda path: results.to_parquet(path, index=False,
                                                                                  engine="pyarrow")),
        _write_file(out_dir / "results.csv", lambda path: _write_csv(results, path)),
        _write_file(out_dir / "results.jsonl", lambda path: _write_jsonl(results, path)),
        _write_bytes(out_dir / "metrics.json",
                     lambda: (json.dumps(metrics, indent=2, ensure_ascii=False) + "\n").encode("utf-8")),
        _write_bytes(out_dir / "report.md", lambda: markdown.encode("utf-8")),
        _write_bytes(out_dir / "report.html", lambda: render_html(results, metrics, out_dir, title).encode("utf-8")),
    ]
    summary_path = os.environ.get(SUMMARY_ENV)
    if step_summary and summary_path:
        # GitHub Actions collects the step's summary from this file; other steps may have written to it too.
        with open(summary_path, "a", encoding="utf-8") as handle:
            handle.write(markdown + "\n")
    return Report(out_dir, tuple(written), metrics, markdown)


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


def _write_csv(results: pd.DataFrame, path: Path, chunk: int = 10_000) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        for start in range(0, max(len(results), 1), chunk):
            _flat(results.iloc[start:start + chunk]).to_csv(handle, index=False, header=start == 0,
                                                            lineterminator="\n",
                                                            date_format="%Y-%m-%dT%H:%M:%S.%fZ")


def _write_jsonl(results: pd.DataFrame, path: Path, chunk: int = 10_000) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for start in range(0, len(results), chunk):
            text = results.iloc[start:start + chunk].to_json(orient="records", lines=True, date_format="iso",
                                                           force_ascii=False)
            handle.write(text if text.endswith("\n") else text + "\n")


def _write_bytes(path: Path, produce: Callable[[], bytes]) -> Path:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(produce())
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


# -- results files ----------------------------------------------------------------------------------------------


def _flat(results: pd.DataFrame) -> pd.DataFrame:
    """List columns as JSON text (a CSV cell holds one value)."""
    flat = results.copy()
    for name in LIST_COLUMNS:
        flat[name] = flat[name].map(lambda values: json.dumps(values, ensure_ascii=False))
    return flat


def read_results(out_dir: Path) -> pd.DataFrame:
    """The results table a report wrote (``results.parquet``)."""
    return pd.read_parquet(out_dir / "results.parquet", engine="pyarrow")


# -- Markdown -----------------------------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


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


def render_markdown(metrics: dict[str, Any], title: str) -> str:
    """A short summary for a CI job page: outcome, states, time per stage, errors, credits, per model."""
    overall = metrics["overall"]
    ok = metrics["failedRequests"] == 0 and metrics["successRequests"] == metrics["totalRequests"]
    simulated = _simulated(metrics)
    lines = [*([f"**Simulated run**: {simulated}.", ""] if simulated else []),
        f"## jimeng-batch: {_cell(title)} {'✅' if ok else '⚠️'}",
        "",
        *([f"Origin: {_origins(metrics)}.", ""] if metrics.get("origins") else []),
        f"**{metrics['successRequests']}** of **{metrics['totalRequests']}** requests succeeded, "
        f"**{metrics['failedRequests']}** failed; success rate {_pct(overall['successRate'])}; "
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
    lines += ["", "Files: `results.parquet` `results.csv` `results.jsonl` `metrics.json` `report.html`. "
              "Credits are estimates from the catalog's cost table.", ""]
    return "\n".join(lines)


# -- HTML ---------------------------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
td.n{text-align:right}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}
.sheet{display:flex;flex-wrap:wrap;gap:8px}.sheet figure{margin:0;width:160px;font-size:11px}
.sheet img{width:160px;height:160px;object-fit:contain;background:#eee}img.plot{max-width:100%}
.simulated{background:#fff3cd;border:1px solid #e0b000;padding:8px 12px}
"""


def _table(header: list[str], rows: list[list[object]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=n' if i in numeric else ''}>{html.escape(str(v))}</td>"
                         for i, v in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(data: bytes, mime: str, alt: str, css: str = "") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    klass = f' class="{css}"' if css else ""
    return f'<img{klass} alt="{html.escape(alt)}" src="data:{mime};base64,{encoded}">'


def render_html(results: pd.DataFrame, metrics: dict[str, Any], out_dir: Path, title: str | None = None) -> str:
    """One self-contained page: summary, tables, plots (inline PNG) and a contact sheet (inline JPEG)."""
    overall = metrics["overall"]
    title = title or out_dir.name
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>jimeng-batch report: "
             f"{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
             *([f"<p class=simulated><strong>Simulated run</strong>: {html.escape(simulated)}.</p>"]
               if (simulated := _simulated(metrics)) else []),
             f"<h1>jimeng-batch report: {html.escape(title)}</h1>",
             *([f"<p>Origin: {html.escape(_origins(metrics).replace('`', ''))}.</p>"] if metrics.get("origins")
               else []),
             f"<p>{metrics['successRequests']} of {metrics['totalRequests']} requests succeeded, "
             f"{metrics['failedRequests']} failed; success rate {_pct(overall['successRate'])}; credits spent ≈ "
             f"{metrics['credits']['spent']:g} of {metrics['credits']['estimated']:g} estimated (estimates from the "
             "catalog's cost table).</p>",
             *([f"<p>{html.escape(_images_line(metrics))}</p>"] if metrics["images"]["expected"] else []),
             *[f"<p>{html.escape(line.replace('`', ''))}</p>" for line in _service_lines(metrics)],
             "<h2>States</h2>",
             _table(["state", "requests"], [[s, n] for s, n in metrics["byState"].items()], {1}),
             "<h2>Latency by stage (seconds)</h2>",
             _table(["stage", "count", "mean", "p50", "p90", "p99", "max"],
                    [[stage, stats["count"], *[_fmt(stats[k]) for k in ("mean", "p50", "p90", "p99", "max")]]
                     for stage, stats in overall["latencySeconds"].items()], {1, 2, 3, 4, 5, 6}),
             "<h2>By model</h2>",
             _table(["model", "requests", "images", "succeeded", "failed", "success rate", "p50 end to end",
                     "credits spent"],
                    [[m, s["requests"], _images_cell(s), s["succeeded"], s["failed"], _pct(s["successRate"]),
                      _fmt(s["latencySeconds"]["end_to_end"]["p50"]), f"{s['creditsSpent']:g}"]
                     for m, s in metrics["byModel"].items()], {1, 2, 3, 4, 5, 6, 7})]
    if metrics["errors"]:
        parts += ["<h2>Errors</h2>",
                  _table(["code", "reason", "meaning", "state", "requests"],
                         [[e["code"], e["reason"] or "", e["meaning"] or "", e["state"], e["count"]]
                          for e in metrics["errors"]], {4})]
    if metrics["transientErrors"]:
        parts += ["<h2>Retried calls</h2>",
                  _table(["call", "outcome", "code", "HTTP", "meaning", "count"],
                         [[e["kind"], e["outcome"], e["code"] or "", e["httpStatus"] or "", e["meaning"] or "",
                           e["count"]] for e in metrics["transientErrors"]], {5})]
    plots = _plots(results, metrics)
    if plots:
        parts.append("<h2>Plots</h2>")
        parts += [_img(png, "image/png", alt, "plot") for alt, png in plots]
    sheet = _contact_sheet(results, out_dir)
    if sheet:
        shown = len(sheet)
        parts.append(f"<h2>Contact sheet ({shown} image{'s' if shown != 1 else ''})</h2><div class=sheet>")
        parts += [f"<figure>{_img(jpeg, 'image/jpeg', caption)}<figcaption>{html.escape(caption)}</figcaption>"
                  "</figure>" for caption, jpeg in sheet]
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _plots(results: pd.DataFrame, metrics: dict[str, Any]) -> list[tuple[str, bytes]]:
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

    stages = [(stage, results[f"{stage}_seconds"].dropna().to_numpy(dtype="float64")) for stage in STAGES]
    stages = [(stage, values) for stage, values in stages if values.size]
    if stages:
        figure = Figure(figsize=(8, 3.5))
        axes = figure.add_subplot()
        axes.boxplot([values for _, values in stages], tick_labels=[s.replace("_", " ") for s, _ in stages],
                     showfliers=True)
        axes.set_ylabel("seconds")
        axes.set_title("Latency by stage")
        save(figure, "Latency distribution per stage")
    buckets = metrics["throughput"]["buckets"]
    if buckets:
        figure = Figure(figsize=(8, 3))
        axes = figure.add_subplot()
        positions = list(range(len(buckets)))
        succeeded = [b["succeeded"] for b in buckets]
        failed = [b["failed"] for b in buckets]
        axes.bar(positions, succeeded, label="succeeded", color="#3a7")
        axes.bar(positions, failed, bottom=succeeded, label="failed", color="#c44")
        axes.set_xlabel(f"time ({metrics['throughput']['bucketSeconds']} s buckets from "
                        f"{buckets[0]['start'][:19]} UTC)")
        axes.set_ylabel("requests finished")
        axes.set_title("Throughput over time")
        axes.legend()
        save(figure, "Throughput over time")
    by_model = metrics["byModel"]
    if by_model:
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
        if any(left):  # nothing finished yet (a planned-only folder): no bars, so no legend to draw
            axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        save(figure, "Outcomes by model")
    return plots


def _contact_sheet(results: pd.DataFrame, out_dir: Path) -> list[tuple[str, bytes]]:
    """Up to :data:`MAX_THUMBNAILS` downloaded images, as small JPEGs with a caption (job, model, prompt)."""
    from PIL import Image, UnidentifiedImageError

    thumbnails: list[tuple[str, bytes]] = []
    images = results[(results["state"] == "downloaded") & (results["type"] != "video")]
    for record in images.to_dict(orient="records"):
        for index, path in enumerate(record["asset_paths"]):
            if len(thumbnails) >= MAX_THUMBNAILS:
                return thumbnails
            try:
                with Image.open(out_dir / path) as image:
                    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
                    buffer = io.BytesIO()
                    image.convert("RGB").save(buffer, format="JPEG", quality=80)
            except (OSError, UnidentifiedImageError):
                continue  # a file moved away since the run: the tables still list it
            prompt = str(record["prompt"])
            caption = f"{record['job']} · {record['model']} · #{index}: {prompt[:60]}"
            thumbnails.append((caption, buffer.getvalue()))
    return thumbnails
