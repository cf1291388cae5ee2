"""report.html in a real browser: a simulated run with images (and blocked requests) and a video, the demo
(jobs/demo.yaml), a first/last-frame video run (jobs/video_frames.yaml) and a run of 220 requests, each opened
headless in chromium from disk.

How: chromium's ``--dump-dom`` of a copy of the page with two scripts added (one first in ``<head>`` that records
console errors, uncaught exceptions and resources that fail to load; one run on load that makes every thumbnail
load, waits for it to decode, checks the video posters, works the filters and writes its findings as JSON into the
DOM), with ``--virtual-time-budget`` so that the scripts finish before the DOM is printed; then a ``--screenshot`` of
the page itself, saved in the run's folder (and in ``$REPORT_SCREENSHOTS`` when set: CI keeps them). No new
dependency: only the browser. Without chromium the test skips, except in CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from report_helpers import LARGE_REQUESTS, large_manifest, mixed_manifest, sim_run, video_manifest, write

JOBS = Path(__file__).parent.parent / "jobs"

RECORDER = """<script>
window.__problems = [];
console.error = function () { window.__problems.push("console: " + Array.from(arguments).join(" ")); };
window.addEventListener("error", function (event) {
  var target = event.target || {};
  window.__problems.push(target.src ? "failed to load " + target.src : "error: " + event.message);
}, true);
</script>"""
CHECKER = """<script>
window.addEventListener("load", async function () {
  var found = {problems: window.__problems};
  var images = Array.from(document.querySelectorAll("img"));
  found.lazy = images.filter(function (i) { return i.loading === "lazy"; }).length;
  // Each source loaded afresh (the page's lazy images load only when scrolled to): loads are what keep
  // chromium's virtual time from running out, and naturalWidth > 0 says the file decoded.
  function width(source) {
    return new Promise(function (done) {
      var probe = new Image();
      probe.addEventListener("load", function () { done(probe.naturalWidth); });
      probe.addEventListener("error", function () { done(0); });
      probe.src = source;
    });
  }
  var widths = await Promise.all(images.map(function (i) { return width(i.src); }));
  found.images = images.length;
  found.broken = images.filter(function (i, n) { return !(widths[n] > 0); }).map(function (i) { return i.src; });
  found.posters = [];
  for (var video of document.querySelectorAll("video")) {
    found.posters.push(await width(video.poster));
  }
  function visible() {
    return Array.from(document.querySelectorAll("#gallery .card"))
      .filter(function (c) { return c.offsetParent !== null; }).length;
  }
  function choose(id, value, kind) {
    var element = document.getElementById(id); element.value = value;
    element.dispatchEvent(new Event(kind || "change"));
    return visible();
  }
  found.all = visible();
  found.blocked = choose("f-state", "blocked"); choose("f-state", "");
  found.downloaded = choose("f-state", "downloaded"); choose("f-state", "");
  var models = Array.from(document.getElementById("f-model").options).slice(1).map(function (o) { return o.value; });
  found.byModel = {};
  models.forEach(function (m) { found.byModel[m] = choose("f-model", m); }); choose("f-model", "");
  var jobs = Array.from(document.getElementById("f-job").options).slice(1).map(function (o) { return o.value; });
  found.byJob = {};
  jobs.forEach(function (j) { found.byJob[j] = choose("f-job", j); }); choose("f-job", "");
  found.search = choose("f-text", window.__search, "input"); choose("f-text", "", "input");
  var out = document.createElement("pre"); out.id = "browser-findings";
  out.textContent = JSON.stringify(found); document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); CI installs it")
    return path


def _browse(chromium: str, profile: Path, page: Path, *mode: str) -> str:
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=10000", *mode,
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _open(chromium: str, out: Path, search: str, tmp: Path, *, screenshot: bool = True) -> dict[str, object]:
    """The findings of the checking script on a copy of ``out``'s report, and a screenshot of the report."""
    page = (out / "report.html").read_text(encoding="utf-8")
    checked = out / "report.check.html"
    setup = RECORDER + f"<script>window.__search = {json.dumps(search)};</script>"
    checked.write_text(page.replace("<head>", "<head>" + setup, 1).replace("</body>", CHECKER + "</body>", 1),
                       encoding="utf-8")
    dom = _browse(chromium, tmp / "profile", checked, "--dump-dom")
    assert '<pre id="browser-findings">' in dom, dom[-2000:]
    findings: dict[str, object] = json.loads(dom.split('<pre id="browser-findings">')[1].split("</pre>")[0]
                                             .replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
                                             .replace("&quot;", '"'))
    checked.unlink()
    if not screenshot:
        return findings
    shot = out / "report-screenshot.png"
    _browse(chromium, tmp / "profile", out / "report.html", f"--screenshot={shot}", "--window-size=1280,1600")
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("REPORT_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / f"{out.name}.png")
    return findings


def _cards(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "results.parquet")


RUNS: dict[str, Callable[[Path], tuple[Path, int]]] = {
    "mixed": lambda folder: (mixed_manifest(folder), 1),  # blocked prompts fail the run
    "demo": lambda folder: (write(folder, "demo.yaml", (JOBS / "demo.yaml").read_text(encoding="utf-8")), 0),
    "video": lambda folder: (video_manifest(folder), 0),
    "large": lambda folder: (large_manifest(folder), 1),
}
FAST = ["--concurrency", "32", *(f"--{kind}-per-second=1000" for kind in ("submits", "polls", "downloads"))]


@pytest.fixture
def run_folder(tmp_path: Path) -> Callable[[str], Path]:
    """The output folder of one of :data:`RUNS`, run when a test asks for it (each test runs only its own: under
    pytest-xdist the tests of this module may go to different workers)."""

    def run(name: str) -> Path:
        manifest, expected = RUNS[name](tmp_path)
        assert sim_run(tmp_path, manifest, name, *(FAST if name == "large" else [])) == expected
        return tmp_path / name

    return run


def test_the_report_of_a_run_with_images_and_video_works_in_a_browser(run_folder: Callable[[str], Path],
                                                                      tmp_path: Path) -> None:
    chromium = _chromium()
    out = run_folder("mixed")
    found = _open(chromium, out, "kite", tmp_path)
    results = _cards(out)
    assert found["problems"] == [], found["problems"]
    thumbnails = int(results.loc[results["type"] == "image", "asset_count"].sum()) + 2  # and the video's two frames
    assert found["images"] == thumbnails + 3 and found["lazy"] == thumbnails  # + the three plots, inline
    assert found["broken"] == [] and found["posters"] == [192]  # the first frame, as a thumbnail
    assert found["all"] == len(results) == 9
    assert found["blocked"] == 4 and found["downloaded"] == 5
    assert found["byModel"] == {"jimeng-3.1": 4, "jimeng-4.0": 4, "jimeng-video-3.0": 1}
    assert found["byJob"] == {"clip": 1, "pics": 8} and found["search"] == 4  # "a red kite": 2 models x 2 ratios


def test_the_report_of_the_demo_works_in_a_browser(run_folder: Callable[[str], Path], tmp_path: Path) -> None:
    chromium = _chromium()
    found = _open(chromium, run_folder("demo"), "watercolor", tmp_path, screenshot=False)
    assert found["problems"] == [] and found["broken"] == [] and found["lazy"] == 8 * 4
    # (no request is blocked, so the state filter offers no "blocked": choosing it leaves every card shown)
    assert found["all"] == found["downloaded"] == 8 and found["search"] == 4
    assert found["byModel"] == {"jimeng-3.1": 4, "jimeng-4.0": 4}


def test_the_report_of_a_video_run_works_in_a_browser(run_folder: Callable[[str], Path], tmp_path: Path) -> None:
    chromium = _chromium()
    found = _open(chromium, run_folder("video"), "dolly", tmp_path, screenshot=False)
    assert found["problems"] == [] and found["broken"] == []
    assert found["posters"] == [192, 192] and found["all"] == found["downloaded"] == found["search"] == 2


def test_the_report_of_a_large_run_works_in_a_browser(run_folder: Callable[[str], Path], tmp_path: Path) -> None:
    chromium = _chromium()
    out = run_folder("large")
    found = _open(chromium, out, "scene 10", tmp_path, screenshot=False)  # scene 10 and scene 100 ... 109
    assert found["problems"] == [] and found["broken"] == []
    assert found["all"] == LARGE_REQUESTS and found["blocked"] == 2 and found["downloaded"] == LARGE_REQUESTS - 2
    assert found["search"] == 11 and found["lazy"] == LARGE_REQUESTS - 2
    assert (out / "report.html").stat().st_size < 1_000_000
