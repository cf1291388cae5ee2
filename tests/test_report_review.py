"""report.html as a review tool and report.md's header (issue 14's report bullets): every request in the gallery
with all its files, failures named, the run's origin, manifest, version, duration and exit, cache hits, video
media, captions with ratio and seed, links to the full-size files, and a throughput axis that reads well."""

from __future__ import annotations

import json
import re
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from metrics_oracle import columns_of
from PIL import Image
from report_helpers import cli, mixed_manifest, sim_run, write

from jimeng_batch.engine.ledger import Ledger
from jimeng_batch.intake.manifest import load_manifest
from jimeng_batch.intake.plan import iter_distinct
from jimeng_batch.outputs.metrics import MetricsBuilder
from jimeng_batch.outputs.report import MD_FAILURE_ROWS, render_html, render_markdown, throughput_figure
from jimeng_batch.protocol.request_spec import RequestSpec


class _Cards(HTMLParser):
    """The gallery's cards (their data attributes, images, videos and links) and every element's text."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, object]] = []
        self.depth = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "div" and values.get("class") == "card":
            self.cards.append({**values, "img": [], "video": [], "a": [], "text": []})
            self.depth = 1
            return
        if self.depth and tag == "div":
            self.depth += 1
        if self.depth and tag in ("img", "video", "a"):
            self.cards[-1][tag].append(values)  # type: ignore[union-attr]

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag == "div":
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.depth:
            self.cards[-1]["text"].append(data)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mixed run (8 image requests of 4 images, 4 of them blocked, and a video), then the same manifest again
    into another folder, served from the result cache."""
    folder = tmp_path_factory.mktemp("review")
    manifest = mixed_manifest(folder)
    assert sim_run(folder, manifest, "mixed") == 1  # the blocked prompts fail the run (default --fail-on)
    assert sim_run(folder, manifest, "again") == 1
    return folder


def _page(out: Path) -> tuple[str, _Cards]:
    text = (out / "report.html").read_text(encoding="utf-8")
    parser = _Cards()
    parser.feed(text)
    parser.close()
    return text, parser


def test_the_gallery_has_every_request_with_all_its_images(runs: Path) -> None:
    out = runs / "mixed"
    text, page = _page(out)
    results = pd.read_parquet(out / "results.parquet")
    files = int(results["asset_count"].sum())
    assert len(page.cards) == len(results) == 9 and files == 17
    assert f"Gallery: 9 request(s), {files} file(s)" in text and "(60 images)" not in text
    for card, (_, row) in zip(page.cards, results.sort_values("ord").iterrows(), strict=True):
        assert (card["data-state"], card["data-job"], card["data-model"]) == (row["state"], row["job"], row["model"])
        links = [a["href"] for a in card["a"]]  # type: ignore[union-attr]
        assert sorted(set(links)) == sorted(row["asset_paths"])  # a link to each full-size file, relative
        for link in links:
            assert not Path(link).is_absolute() and (out / link).is_file()
        if row["type"] == "image":
            thumbnails = card["img"]
            assert len(thumbnails) == row["asset_count"]  # type: ignore[arg-type]
            for image in thumbnails:  # type: ignore[union-attr]
                assert image["loading"] == "lazy" and image["src"].startswith("report_files/")
                with Image.open(out / image["src"]) as thumb:
                    assert thumb.format == "JPEG" and max(thumb.size) <= 192
    assert "data:image/jpeg" not in text  # no inline thumbnails: a large run's page stays small


def test_captions_say_ratio_resolution_and_seed(runs: Path) -> None:
    out = runs / "mixed"
    _, page = _page(out)
    results = pd.read_parquet(out / "results.parquet").sort_values("ord")
    for card, (_, row) in zip(page.cards, results.iterrows(), strict=True):
        caption = " ".join(card["text"])  # type: ignore[arg-type]
        assert row["prompt"] in caption and f"seed {row['seed']}" in caption
        assert f"resolution {row['resolution']}" in caption
        if row["type"] == "image":
            assert f"ratio {row['ratio']}" in caption
    ratios = {" ".join(c["text"]).split("ratio ")[1].split(" ")[0] for c in page.cards  # type: ignore[arg-type]
              if c["data-job"] == "pics"}
    assert ratios == {"1:1", "16:9"}


def test_failed_requests_are_named_with_prompt_code_and_message(runs: Path) -> None:
    text, _ = _page(runs / "mixed")
    table = text.split('<table class="failures">')[1].split("</table>")[0]
    rows = re.findall(r"<tr><td>blocked</td><td>pics</td><td>a forbidden cat</td><td>2038</td><td>content</td>"
                      r"<td>content filtered</td>", table)
    assert len(rows) == 4
    markdown = (runs / "mixed" / "report.md").read_text(encoding="utf-8")
    assert markdown.count("| blocked | pics | a forbidden cat | 2038 | content filtered |") == 4


def test_the_header_says_origin_manifest_version_times_and_exit(runs: Path) -> None:
    out = runs / "mixed"
    text, _ = _page(out)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    run = metrics["runs"][-1]
    assert run["origin"].startswith("simulator:") and run["tokens"] == ["simu…(33)"]
    header = text.split('<dl class="head" id="header">')[1].split("</dl>")[0]
    assert "simulated (jimeng-batch&#39;s built-in simulator)" in header
    assert "mixed.yaml" in header and run["manifestSha256"] in header and len(run["manifestSha256"]) == 64
    assert "<dt>jimeng-batch</dt><dd>0.1.0</dd>" in header and "live (the default)" in header
    assert re.search(r"<dt>duration</dt><dd>\d+\.\d s</dd>", header)
    assert re.search(r"<dt>started</dt><dd>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</dd>", header)
    assert "exit 1: 4 blocked (--fail-on includes blocked)" in header
    markdown = (out / "report.md").read_text(encoding="utf-8")
    for line in ("- **Origin**: simulated", "mixed.yaml", f"`{run['manifestSha256'][:16]}…`",
                 "- **jimeng-batch** 0.1.0", "**duration**", "- **exit 1: 4 blocked (--fail-on includes blocked)**",
                 "simu…(33)"):
        assert line in markdown, line
    assert re.search(r"Review every request in `[^`]*mixed/report\.html`", markdown)


def test_cache_hits_and_reused_uploads_are_counted_and_marked(runs: Path) -> None:
    first, _ = _page(runs / "mixed")
    assert '<strong id="cache-hits">0</strong>' in first and "2 file(s) uploaded" in first
    again, page = _page(runs / "again")
    assert '<strong id="cache-hits">5</strong>' in again
    marked = [c for c in page.cards if "cache hit" in " ".join(c["text"])]  # type: ignore[arg-type]
    assert len(marked) == 5 and {c["data-state"] for c in marked} == {"downloaded"}
    metrics = json.loads((runs / "again" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["reuse"] == {"cacheHits": 5, "uploads": 0, "reusedUploads": 0}


def test_uploads_of_one_file_for_several_requests_are_reused(tmp_path: Path) -> None:
    manifest = mixed_manifest(tmp_path)
    write(tmp_path, "two.yaml", manifest.read_text(encoding="utf-8").split("  - name: clip")[0].replace(
        "jobs:\n", "jobs:\n  - {name: two, type: video, model: jimeng-video-3.0, prompt: [a, b], resolution: 720p,"
                   " first_frame: assets/first_frame.png}\n", 1).split("  - name: pics")[0])
    assert sim_run(tmp_path, tmp_path / "two.yaml", "out", "--no-cache") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["reuse"] == {"cacheHits": 0, "uploads": 1, "reusedUploads": 1}
    assert '<strong id="reused-uploads">1</strong>' in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")


def test_a_video_request_shows_its_video_poster_and_frames(runs: Path) -> None:
    out = runs / "mixed"
    _, page = _page(out)
    (card,) = [c for c in page.cards if c["data-job"] == "clip"]
    (video,) = card["video"]  # type: ignore[misc]
    assert "controls" in video and (out / video["src"]).is_file() and video["src"].endswith(".mp4")
    with Image.open(out / video["poster"]) as poster:  # the request's first frame, made small
        assert poster.size[0] > 0
    frames = [img for img in card["img"]]  # type: ignore[union-attr]
    assert len(frames) == 2 and video["poster"] == frames[0]["src"]
    caption = " ".join(card["text"])  # type: ignore[arg-type]
    assert "first frame: assets/first_frame.png" in caption and "last frame: assets/end_frame.png" in caption


def throughput(results: pd.DataFrame) -> dict[str, object]:
    """The report's throughput figures of these rows (the columns they lack: an image request sent once)."""
    rows = len(results)
    defaults = {"type": "image", "model": "m", "resolution": "1k", "cache_hit": False, "submits": 1, "retries": 0,
                "images": 1, "asset_count": 1, "asset_variants": [[]] * rows, "credits_spent": 0.0,
                "estimated_credits": 0.0, "first_frame": None, "end_frame": None, "references": None}
    frame = results.assign(**{name: value for name, value in defaults.items() if name not in results})
    for name in ("origin", "code", "reason", "submit_seconds", "queue_seconds", "generation_seconds",
                 "download_seconds", "first_queue_position", "first_forecast_queue_seconds"):
        frame[name] = None
    db = sqlite3.connect(":memory:")
    try:
        builder = MetricsBuilder(db)
        builder.add(columns_of(frame))
        return builder.throughput()
    finally:
        db.close()


def test_the_throughput_axis_is_time_even_when_every_request_ends_at_once() -> None:
    ended = pd.to_datetime([1_800_000_000.25, 1_800_000_000.5, 1_800_000_000.8], unit="s", utc=True)
    results = pd.DataFrame({"state": ["downloaded", "downloaded", "failed"], "downloaded_at": ended,
                            "finished_at": ended, "end_to_end_seconds": [0.2, 0.2, 0.2]})
    metrics = {"throughput": throughput(results)}
    assert metrics["throughput"]["bucketSeconds"] < 1 and len(metrics["throughput"]["buckets"]) > 1
    figure = throughput_figure(metrics)
    assert figure is not None
    low, high = figure.axes[0].get_xlim()
    assert low == 0.0 and high >= 10 * metrics["throughput"]["bucketSeconds"]  # seconds, not -0.4 to 0.4
    one = {"throughput": throughput(results.iloc[:1])}
    figure = throughput_figure(one)
    assert figure is not None and figure.axes[0].get_xlim()[0] == 0.0


def test_report_md_lists_the_first_failures_and_counts_the_rest(runs: Path) -> None:
    out = runs / "mixed"
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    results = pd.read_parquet(out / "results.parquet")
    blocked = results[results["state"] == "blocked"].iloc[0]
    many = pd.DataFrame([{**blocked.to_dict(), "key": f"k{n}", "prompt": f"bad | <b>{n}</b>\n"} for n in range(60)])
    markdown = render_markdown(metrics, "many", results=many.to_dict(orient="records"),
                               html_path="out/report.html")
    assert markdown.count("| blocked | pics | bad \\| &lt;b>") == MD_FAILURE_ROWS == 50
    assert "… and 10 more in report.html" in markdown and "<b>" not in markdown
    assert "Review every request in `out/report.html`" in markdown


def test_report_of_a_planned_only_folder_is_clean(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    manifest = load_manifest(write(tmp_path, "m.yaml", "jobs:\n  - {type: image, resolution: 1k, prompt: [a, b]}\n"))
    with Ledger.in_folder(tmp_path / "out") as ledger:  # planned, never run: as `plan` leaves a folder
        ledger.add_planned(i for i in iter_distinct(manifest) if isinstance(i, RequestSpec))
    assert cli(["report", str(tmp_path / "out")]) == 0  # the suite turns any warning into an error
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    text = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Gallery: 2 request(s), 0 file(s)" in text and "<h2>Plots</h2>" not in text  # nothing to plot yet


def test_server_text_is_escaped_and_made_printable(runs: Path, tmp_path: Path) -> None:
    out = runs / "mixed"
    results = pd.read_parquet(out / "results.parquet")
    hostile = "<script>alert(1)</script>\x1b[31m\u202e|"
    results.loc[results["state"] == "blocked", "message"] = hostile
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    page = render_html(results.to_dict(orient="records"), metrics, tmp_path, "t")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;\\x1b[31m\\u202e|" in page
    markdown = render_markdown(metrics, "t", results=results.to_dict(orient="records"))
    assert "&lt;script>alert(1)&lt;/script>\\x1b[31m\\u202e\\|" in markdown and "\x1b" not in markdown
