"""run.log has every step: each state change the ledger records, each retry, upload and download, each stop, a header
and an end line per run, appended across runs; one line an event, never a payload or a token; JSON lines on demand.

Before, a 60-request run with retried calls and 12 blocked requests logged 3 lines, and a 150-request run 2.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import png
from run_helpers import TOKEN, drive, fast_options, simulator, write_manifest

from jimeng_batch import api
from jimeng_batch._version import __version__
from jimeng_batch.engine.executor import Executor
from jimeng_batch.engine.states import State
from jimeng_batch.protocol.tokens import Scrubber, Token

FAST = {"backoff_base": 0.0, "jitter_seed": 1, "poll_interval": 0.01, "use_cache": False, "report": False}
SECRET = "zzzz0123456789abcdef0123456789ab"  # a session token: never in the log, in any form


@dataclass
class Folder:
    out: Path
    manifest: Path
    first: str = ""  # the log as the first run left it

    @property
    def log(self) -> str:
        return (self.out / "run.log").read_text(encoding="utf-8")

    def rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.out / "ledger.sqlite")
        try:
            return db.execute(query, args).fetchall()
        finally:
            db.close()


def _sixty(folder: Path) -> Path:
    """60 requests: 44 images, 12 the simulator's content filter blocks, 4 from a local reference (one upload)."""
    png(folder / "ref.png")
    prompts = [f"a kite number {i}" for i in range(44)] + [f"a forbidden thing {i}" for i in range(12)]
    text = ("jobs:\n  - name: kites\n    type: image\n    model: jimeng-4.0\n    resolution: 1k\n    prompt:\n"
            + "".join(f"      - {p}\n" for p in prompts)
            + "  - name: refs\n    type: image_to_image\n    resolution: 1k\n    references: [ref.png]\n"
              "    prompt: [one, two, three, four]\n")
    return write_manifest(folder, text)


@pytest.fixture(scope="module")
def sixty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Folder]:
    """The 60-request run of the issue, with retried calls (the service busy, 5xx answers that quote the cookie),
    run with a token of the user's against the simulator; then resumed with ``--log-format json``."""
    folder = tmp_path_factory.mktemp("sixty")
    manifest = _sixty(folder)
    (folder / "sim.yaml").write_text("images_per_request: 1\nseed: 3\nfaults:\n  busy_probability: 0.15\n"
                                     "  http_error_probability: 0.05\n  echo_session: true\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JIMENG_SESSIONID", SECRET)
        patch.delenv("JIMENG_BASE_URL", raising=False)
        result = api.run(manifest, out=folder / "out", sim=True, quiet=True, sim_config=folder / "sim.yaml", **FAST)
    assert result.counts == {State.DOWNLOADED: 48, State.BLOCKED: 12}
    yield Folder(folder / "out", manifest, (folder / "out" / "run.log").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def resumed(sixty: Folder) -> Folder:
    """The 60-request run's folder, resumed with ``--log-format json``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JIMENG_SESSIONID", SECRET)
        api.resume(sixty.out, quiet=True, log_format="json")
    return sixty


def _text_lines(log: str) -> list[str]:
    return log.splitlines()


def test_the_sixty_request_run_logs_every_state_change_of_every_request(sixty: Folder) -> None:
    first = sixty.first
    events = sixty.rows("SELECT key, state FROM events WHERE run_id = 1")
    assert len(events) > 200  # every request went through several states
    logged = Counter()
    for line in _text_lines(first):
        parts = line.split(" ")
        if len(parts) >= 5 and parts[2] in ("state", "stays"):
            logged[(parts[3], parts[4].rstrip(":"))] += 1
    assert logged == Counter(events)
    assert len(first.splitlines()) > len(events)  # and more: retries, downloads, the header, the end


def test_every_retry_upload_and_download_is_a_line(sixty: Folder) -> None:
    first = sixty.first
    lines = _text_lines(first)
    retries = Counter(line.split(" ")[3].rstrip(":") for line in lines if line.split(" ")[2] == "retry")
    counted = {key: n for key, n in sixty.rows("SELECT key, retries FROM requests WHERE retries > 0")}
    assert counted and sum(counted.values()) >= 5  # the faults made calls retry
    assert dict(retries) == counted
    assert all("[reason=" in line and "code=" in line for line in lines if " retry " in line)
    uploads = [line for line in lines if line.split(" ")[2] == "upload"]
    assert len(uploads) == len(sixty.rows("SELECT * FROM uploads")) == 1
    assert "uploaded ref.png as " in uploads[0]
    downloads = Counter(line.split(" ")[3] for line in lines if line.split(" ")[2] == "download")
    assets = Counter(key for (key,) in sixty.rows("SELECT key FROM assets"))
    assert downloads == assets and sum(assets.values()) == 48
    blocked = [line for line in lines if line.split(" ")[2:5:2] == ["state", "blocked:"]]
    assert len(blocked) == 12 and all("reason=content code=2038" in line for line in blocked)


def test_each_run_has_a_header_and_an_end_and_runs_append(resumed: Folder) -> None:
    sixty = resumed
    log = sixty.log
    first = sixty.first
    assert log.startswith(first)  # the resume appended
    head = first.splitlines()[0]
    assert " INFO run 1 started [" in head
    for part in (f"{sixty.manifest.name} manifest_sha256=", f"version={__version__}",
                 "origin=simulator:", "tokens=1", "log=text"):
        assert part in head, head
    assert " run 1 finished: downloaded 48, blocked 12 [exit_code=1]" in first.splitlines()[-1]
    second = [json.loads(line) for line in log[len(first):].splitlines()]
    assert second[0]["event"] == "run" and second[0]["state"] == "started" and second[0]["run"] == 2
    assert second[0]["version"] == __version__ and second[0]["origin"].startswith("simulator:")
    assert second[0]["log"] == "json"  # the format asked of the resume, kept in its settings
    assert second[-1]["event"] == "run" and second[-1]["state"] == "finished" and second[-1]["exit_code"] == 1
    assert {line["run"] for line in second} == {2}
    stored = sixty.rows("SELECT options FROM runs WHERE id = 2")[0][0]
    assert json.loads(stored)["config"]["log_format"] == "json"


def test_no_token_in_the_log_in_any_form(resumed: Folder) -> None:
    from urllib.parse import quote

    log = resumed.log
    assert "zzzz…(32)" in log  # the token is named by its mask (the echoing server's text scrubbed)
    for form in (SECRET, quote(SECRET), SECRET[4:]):
        assert form not in log


def test_one_line_an_event_never_a_payload(resumed: Folder) -> None:
    lines = resumed.log.splitlines()
    assert sum(map(len, lines)) / len(lines) < 200
    assert max(map(len, lines)) < 700
    for marker in ("draft_content", "submit_id", "http_common_info", '"ret"'):
        assert all(marker not in line for line in lines), marker


@pytest.fixture(scope="module")
def hundred_fifty(tmp_path_factory: pytest.TempPathFactory) -> Folder:
    """The 150-request run of the issue, logged as JSON lines."""
    folder = tmp_path_factory.mktemp("onefifty")
    manifest = write_manifest(folder, "jobs:\n  - name: many\n    type: image\n    resolution: 1k\n    prompt:\n"
                              + "".join(f"      - picture {i}\n" for i in range(150)))
    (folder / "sim.yaml").write_text("images_per_request: 1\nmax_in_flight: null\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("JIMENG_SESSIONID", raising=False)
        patch.delenv("JIMENG_BASE_URL", raising=False)
        result = api.run(manifest, out=folder / "out", sim=True, quiet=True, sim_config=folder / "sim.yaml",
                         concurrency=10, log_format="json", **FAST)
    assert result.counts == {State.DOWNLOADED: 150}
    return Folder(folder / "out", manifest)


def test_the_json_form_parses_line_by_line_with_fixed_fields(hundred_fifty: Folder) -> None:
    lines = [json.loads(line) for line in hundred_fifty.log.splitlines()]
    fixed = ["time", "run", "level", "event", "key", "state", "detail"]
    assert all(list(line)[:7] == fixed for line in lines)
    assert all(line["run"] == 1 and line["time"].endswith("Z") for line in lines)
    changes = Counter((line["key"], line["state"]) for line in lines if line["event"] == "state")
    assert changes == Counter(hundred_fifty.rows("SELECT key, state FROM events"))
    per_request = Counter(line["state"] for line in lines if line["event"] == "state")
    assert per_request == {"submitting": 150, "submitted": 150, "succeeded": 150, "downloaded": 150} | (
        {"running": per_request["running"]} if per_request.get("running") else {})
    downloads = [line for line in lines if line["event"] == "download"]
    assert len(downloads) == 150 and all(line["bytes"] > 0 and line["detail"].startswith("assets/")
                                         for line in downloads)
    assert lines[0]["event"] == "run" and lines[0]["state"] == "started"
    assert lines[-1]["event"] == "run" and lines[-1]["state"] == "finished" and lines[-1]["exit_code"] == 0


def test_the_log_of_a_150_request_run_stays_small(hundred_fifty: Folder) -> None:
    size = (hundred_fifty.out / "run.log").stat().st_size
    lines = hundred_fifty.log.splitlines()
    assert len(lines) >= 750  # 4 state changes and a download a request, and the run's own lines
    assert size / len(lines) < 200, size / len(lines)


@pytest.mark.usefixtures("clean_env")
def test_a_budget_stop_is_logged_and_what_was_not_sent_is_skipped(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, "budget: 2\njobs:\n  - {type: image, resolution: 1k, prompt: [a, b, c, d]}\n")
    result = api.run(manifest, out=tmp_path / "out", sim=True, quiet=True, **FAST)
    assert result.stop_reason == "budget"
    lines = (tmp_path / "out" / "run.log").read_text(encoding="utf-8").splitlines()
    stops = [line for line in lines if line.split(" ")[2] == "stop:"]
    assert len(stops) == 1 and "WARNING" in stops[0] and "no new submits (budget)" in stops[0]
    assert sum(1 for line in lines if " state " in line and " skipped: " in line) == 2
    assert "run 1 stopped:" in lines[-1] and "exit_code=3" in lines[-1] and "reason=budget" in lines[-1]


@pytest.mark.usefixtures("clean_env")
def test_an_unreachable_host_is_a_stop_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("JIMENG_SESSIONID", TOKEN)
    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image, resolution: 1k, prompt: [a, b, c, d, e, f]}\n")
    result = api.run(manifest, out=tmp_path / "out", quiet=True, base_url=f"http://127.0.0.1:{port}",
                     preflight="off", account_catalog="off", **FAST)
    assert result.stop_reason == "unreachable"
    log = (tmp_path / "out" / "run.log").read_text(encoding="utf-8")
    assert f"stop: no new submits (unreachable): cannot reach http://127.0.0.1:{port}" in log
    assert log.count(" retry ") >= 5 and TOKEN not in log


def test_an_interrupt_is_a_stop_line(tmp_path: Path) -> None:
    """Ctrl-C drains the run like a stop: the executor says so in the log."""
    from jimeng_batch.engine.run_log import file_log

    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image, resolution: 1k, prompt: [a, b, c, d, e, f]}\n")

    def interrupt(executor: Executor, counts: Counter[State]) -> None:
        if not executor.interrupted:
            executor.interrupt()

    out = tmp_path / "out"
    out.mkdir()
    with simulator() as server, file_log(out, Scrubber([Token(TOKEN)]), "json"):
        driven = drive(manifest, server, out=out, on_change=interrupt, options=fast_options())
    driven.ledger.close()
    lines = [json.loads(line) for line in (out / "run.log").read_text(encoding="utf-8").splitlines()]
    stops = [line for line in lines if line["event"] == "stop"]
    assert [line["reason"] for line in stops] == ["interrupted"] and stops[0]["level"] == "warning"
    skipped = [line for line in lines if line["event"] == "state" and line["state"] == "skipped"]
    assert skipped and len(skipped) == driven.result.counts.get(State.SKIPPED, 0)


def test_a_line_is_scrubbed_before_it_is_cut(tmp_path: Path) -> None:
    """A server's long message quoting the token near the cut: the token is taken out first, never half-kept."""
    import logging

    from jimeng_batch.engine.run_log import MAX_TEXT, file_log, log, step

    message = "x" * (MAX_TEXT - 10) + SECRET + "\x1b[2J"
    with file_log(tmp_path, Scrubber([Token(SECRET)]), "text"):
        log.log(logging.WARNING, message, extra=step("stays", "k1", "submitted", message=message, code="500"))
    line = (tmp_path / "run.log").read_text(encoding="utf-8")
    assert line.count("\n") == 1 and "\x1b" not in line and SECRET[:12] not in line
    assert " WARNING stays k1 submitted: xxx" in line and "code=500" in line


@pytest.mark.usefixtures("clean_env")
def test_a_token_out_of_credits_is_a_stop_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sim.yaml").write_text(f"images_per_request: 1\naccounts: {{{TOKEN}: 2}}\n", encoding="utf-8")
    monkeypatch.setenv("JIMENG_SESSIONID", TOKEN)
    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image, resolution: 1k, prompt: [a, b, c, d, e, f]}\n")
    result = api.run(manifest, out=tmp_path / "out", sim=True, quiet=True, sim_config=tmp_path / "sim.yaml",
                     concurrency=1, preflight="off", account_catalog="off", **FAST)
    assert result.stop_reason == "credits"
    lines = (tmp_path / "out" / "run.log").read_text(encoding="utf-8").splitlines()
    assert any(" WARNING stop: no new submits (credits)" in line for line in lines), lines
    assert any("token tokA…(32) exhausted" in line for line in lines)
    assert "exit_code=3" in lines[-1] and "reason=credits" in lines[-1] and TOKEN not in "\n".join(lines)
