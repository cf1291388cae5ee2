"""Runs against a hostile server (tests/hostile_server.py): HTML with 200, bad gzip, wrong types in every field,
redirect loops, 404/302, oversized, trickling and hanging answers, on submits, polls, assets and the credit check.
Every case ends in bounded time with a classified outcome, no internal error, and no paid request written off."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_main
from hostile_server import (
    HANG,
    PNG,
    Handler,
    Step,
    answer,
    bad_gzip,
    flood,
    gzipped,
    hostile,
    json_answer,
    service,
    trickle,
)
from run_helpers import TOKEN, drive, fast_options, write_manifest
from test_paid_work import FakeTime

ONE = "jobs:\n  - {type: image, resolution: 1k, prompt: a}\n"
# Short bounds (these tests wait for real deadlines), and a real backoff on the fake clock the sleeps advance.
SHORT = {"call_deadline": 0.3, "download_floor": 0.3, "download_rate": 1 << 30, "max_answer_bytes": 1 << 20,
         "max_asset_bytes": 1 << 20, "backoff_base": 1.0}


def poll_with(record: Callable[[str], Any]) -> Handler:
    """Polls answered with ``record(history_id)`` for each id asked."""
    def handle(method: str, path: str, body: bytes) -> list[Step]:
        ids = json.loads(body).get("history_ids") or json.loads(body).get("submit_ids") or []
        return json_answer({"ret": "0", "data": {i: record(i) for i in ids}})
    return handle


def fixed(steps: list[Step]) -> Handler:
    return lambda method, path, body: steps


POLLS = [
    pytest.param(fixed([answer(b"<html><body>gateway</body></html>", headers={"Content-Type": "text/html"})]),
                 "malformed", id="html-with-200"),
    pytest.param(poll_with(lambda i: {"status": 50, "task": "finished"}), "malformed", id="task-a-string"),
    pytest.param(poll_with(lambda i: {"status": 50, "item_list": "none"}), "malformed", id="item-list-a-string"),
    pytest.param(poll_with(lambda i: {"status": 20, "forecast_cost_time": "soon"}), "malformed",
                 id="forecast-a-string"),
    pytest.param(poll_with(lambda i: {"status": [50]}), "malformed", id="status-a-list"),
    pytest.param(fixed(json_answer({"ret": "0", "data": ["not", "an", "object"]})), "malformed", id="data-a-list"),
    pytest.param(fixed(json_answer([1, 2, 3])), "malformed", id="answer-a-list"),
    pytest.param(fixed(bad_gzip()), "malformed", id="bad-gzip"),
    pytest.param(fixed([answer(b"", 404)]), "server", id="http-404"),
    pytest.param(fixed([answer(b"", 302, {"Location": "/elsewhere"})]), "http", id="http-302"),
    pytest.param(fixed(flood(3 << 20)), "malformed", id="oversized"),
    pytest.param(fixed(trickle(b'{"ret": "0", "data": {}}', 0.2)), "network", id="trickling"),
    pytest.param(fixed([HANG]), "network", id="hanging"),
    pytest.param(poll_with(lambda i: {"history_record_id": i, "status": 50, "item_list": [],
                                      "total_image_count": 1, "task": {"finish_time": 1}}), "no-files",
                 id="finished-without-files"),
]


@pytest.mark.parametrize(("poll", "reason"), POLLS)
def test_a_poll_that_cannot_be_used_leaves_the_paid_job_for_the_next_run(tmp_path: Path, poll: Handler,
                                                                          reason: str) -> None:
    manifest = write_manifest(tmp_path, ONE)
    time = FakeTime()
    with hostile(lambda box: service(box, poll=poll)) as server:
        run = drive(manifest, server, out=tmp_path / "out", clock=time.clock, sleep=time.sleep,  # type: ignore[arg-type]
                    options=fast_options(**SHORT))
    row = run.ledger.db.execute("SELECT state, reason, message FROM requests").fetchone()
    assert row[0] in ("submitted", "running"), row  # paid for: followed again by the next run, never failed
    assert row[1] == reason, row
    if reason in ("network", "server"):  # every poll failing so: the circuit breaker calls it an outage
        assert run.exit_code == 3 and run.result.stop_reason == "unreachable"
    else:
        assert run.exit_code == 1


SUBMITS = [
    pytest.param(fixed(json_answer({"ret": "0", "data": {"aigc_data": "accepted"}})), id="aigc-data-a-string"),
    pytest.param(fixed(json_answer({"ret": "0", "data": {"aigc_data": {"history_record_id": {"id": 1}}}})),
                 id="history-id-an-object"),
    pytest.param(fixed(bad_gzip()), id="bad-gzip"),
    pytest.param(fixed([answer(b"<html>", headers={"Content-Type": "text/html"})]), id="html-with-200"),
]


@pytest.mark.parametrize("submit", SUBMITS)
def test_a_submit_answer_that_cannot_be_read_is_asked_about_not_sent_elsewhere(tmp_path: Path,
                                                                               submit: Handler) -> None:
    """The service may have accepted it (its answer is unreadable): the request stays `submitting`, for the next
    run to ask about by submit_id before anything is sent again."""
    manifest = write_manifest(tmp_path, ONE)
    time = FakeTime()
    with hostile(lambda box: service(box, submit=submit,
                                     poll=fixed(json_answer({"ret": "0", "data": {}})))) as server:
        run = drive(manifest, server, out=tmp_path / "out", clock=time.clock, sleep=time.sleep,  # type: ignore[arg-type]
                    options=fast_options(max_retries=2, **SHORT))
        submits = server.count("aigc_draft/generate")
    row = run.ledger.db.execute("SELECT state, reason FROM requests").fetchone()
    assert row == ("submitting", "malformed"), row
    assert submits == 3  # tried again with the same submit_id (the service deduplicates), then left


ASSETS = [
    pytest.param(fixed(bad_gzip()), "succeeded", "malformed", id="bad-gzip"),
    pytest.param(fixed(trickle(PNG, 0.2)), "succeeded", "network", id="trickling"),
    pytest.param(fixed([HANG]), "succeeded", "network", id="hanging"),
    pytest.param(fixed([answer(b"", 302, {"Location": "/asset/1.png"})]), "succeeded", "network",
                 id="redirect-loop"),
    pytest.param(fixed([answer(b"<html>", headers={"Content-Type": "text/html"})]), "succeeded", "network",
                 id="html-instead-of-an-image"),
    pytest.param(fixed([b"HTTP/1.1 200 OK\r\nContent-Length: nonsense\r\n\r\n" + PNG]), "succeeded", "network",
                 id="bad-content-length"),
    pytest.param(fixed(flood(3 << 20)), "failed", "too-large", id="oversized"),
]


@pytest.mark.parametrize(("asset", "state", "reason"), ASSETS)
def test_an_asset_that_cannot_be_fetched(tmp_path: Path, asset: Handler, state: str, reason: str) -> None:
    manifest = write_manifest(tmp_path, ONE)
    time = FakeTime()
    with hostile(lambda box: service(box, asset=asset)) as server:
        run = drive(manifest, server, out=tmp_path / "out", clock=time.clock, sleep=time.sleep,  # type: ignore[arg-type]
                    options=fast_options(max_retries=1, **SHORT))
    row = run.ledger.db.execute("SELECT state, reason FROM requests").fetchone()
    assert row == (state, reason), row
    assert not list((tmp_path / "out").glob("assets/*"))


def test_gzip_that_is_gzip_is_read() -> None:
    """The other side of bad gzip: a well-encoded answer is decoded and used."""
    import asyncio

    from jimeng_batch.protocol import catalog
    from jimeng_batch.protocol.client import JimengClient
    from jimeng_batch.protocol.tokens import Token

    with hostile(lambda box: service(box, credit=fixed(gzipped(
            {"ret": "0", "data": {"credit": {"purchase_credit": 7}}})))) as server:
        async def main() -> int:
            async with JimengClient(region=catalog.REGIONS["cn"], versions=catalog.PROTOCOL_PROFILES["live"],
                                    web_id="1", base_url=server.base_url) as client:
                return (await client.user_credit(Token(TOKEN))).total

        assert asyncio.run(main()) == 7


CREDITS = [
    pytest.param(fixed(json_answer({"ret": "0", "data": [1, 2]})), "data: a list of 2, not an object",
                 id="data-a-list"),
    pytest.param(fixed(json_answer({"ret": "0", "data": "plenty"})), "data: text, not an object",
                 id="data-a-string"),
    pytest.param(fixed(json_answer({"ret": "0", "data": {"credit": {"gift_credit": "lots"}}})),
                 "data.credit.gift_credit: text, not a whole number", id="credit-a-word"),
    pytest.param(fixed([answer(b"", 404)]), "HTTP 404", id="http-404"),
    pytest.param(fixed([answer(b"", 302, {"Location": "/login"})]), "HTTP 302", id="http-302"),
]


@pytest.mark.parametrize(("credit", "said"), CREDITS)
def test_an_unreadable_balance_is_said_and_the_run_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch, credit: Handler,
                                                           said: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JIMENG_SESSIONID", TOKEN)
    manifest = write_manifest(tmp_path, ONE)
    with hostile(lambda box: service(box, credit=credit)) as server:
        code, _, err = run_main(["run", str(manifest), "--out", "out", "--base-url", server.base_url, "--quiet",
                                 "--no-cache", "--no-report", "--poll-interval", "0.01"], capsys)
        assert code == 0, err
        assert f"could not read the balance of {TOKEN[:4]}…(32)" in err and said in err, err
        assert "have 0" not in err
        code, _, err = run_main(["run", str(manifest), "--out", "stop", "--base-url", server.base_url, "--quiet",
                                 "--no-cache", "--no-report", "--preflight", "stop"], capsys)
        assert code == 3 and "could not be read; not starting" in err, err


def test_failing_polls_back_off_like_every_other_call(tmp_path: Path) -> None:
    """HTML on every poll: 1 s doubling to 60 s (with jitter) over the whole poll timeout, not a poll a second."""
    manifest = write_manifest(tmp_path, ONE)
    time = FakeTime()
    html = fixed([answer(b"<html>gateway</html>", headers={"Content-Type": "text/html"})])
    with hostile(lambda box: service(box, poll=html)) as server:
        run = drive(manifest, server, out=tmp_path / "out", clock=time.clock, sleep=time.sleep,  # type: ignore[arg-type]
                    options=fast_options(**{**SHORT, "backoff_max": 60.0}))
        polls = server.count("get_history_by_ids")
    waits = [s for s in time.sleep.calls if s >= 0.5]
    grown = [w for w in waits if w >= 30.0]  # 60 s with jitter of 0.5 to 1
    assert grown and max(waits) <= 60.0, waits
    assert 20 <= polls <= 60, polls  # 30 minutes: 1 + 2 + ... + 32 s, then one every 30 to 60 s (not ~1800)
    assert run.ledger.db.execute("SELECT state, reason FROM requests").fetchone() == ("submitted", "malformed")


def test_a_servers_text_reaches_the_terminal_escaped_and_without_tokens(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JIMENG_SESSIONID", TOKEN)
    manifest = write_manifest(tmp_path, ONE)
    credit = fixed(json_answer({"ret": "777", "errmsg": f"bad\x1b[2J\nnews for sessionid={TOKEN}"}))
    with hostile(lambda box: service(box, credit=credit)) as server:
        code, _, err = run_main(["run", str(manifest), "--out", "out", "--base-url", server.base_url, "--quiet",
                                 "--no-cache", "--no-report", "--max-retries", "0", "--poll-interval", "0.01"],
                                capsys)
    said = next(line for line in err.splitlines() if "could not read the balance" in line)
    assert "\x1b" not in err and "\\x1b[2J\\nnews" in said, err
    assert TOKEN not in err and TOKEN not in (tmp_path / "out" / "run.log").read_text(encoding="utf-8")
    assert code == 0, err


def test_an_asset_behind_a_valid_redirect_is_downloaded(tmp_path: Path) -> None:
    """The other side of the redirect loop: a CDN's one redirect is followed, and the file kept."""
    def asset(method: str, path: str, body: bytes) -> list[Step]:
        if path.startswith("/asset/1.png"):
            return [answer(b"", 302, {"Location": "/asset/moved.png"})]
        return [answer(PNG, headers={"Content-Type": "image/png"})]

    manifest = write_manifest(tmp_path, ONE)
    time = FakeTime()
    with hostile(lambda box: service(box, asset=asset)) as server:
        run = drive(manifest, server, out=tmp_path / "out", clock=time.clock, sleep=time.sleep,  # type: ignore[arg-type]
                    options=fast_options(**SHORT))
        fetched = server.count("/asset/moved.png")
    assert run.ledger.db.execute("SELECT state FROM requests").fetchone() == ("downloaded",)
    assert fetched == 1 and [p.read_bytes() for p in (tmp_path / "out").glob("assets/*")] == [PNG]
