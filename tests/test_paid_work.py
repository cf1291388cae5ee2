"""What a run promises about money and results, each case as a user met it: a rehearsal never passes for the real
thing, the manifest decides what is sent, an account keeps its work, a transient failure after payment is never a
write-off, an outage stops the run, one run per folder, a rehearsal survives a kill, and the small leaks."""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_main
from reliability_helpers import cli, cli_env, query
from run_helpers import IMAGES, TOKEN, TOKEN_B, NoWait, drive, fast_options, sha256_of, simulator, write_manifest
from test_kill_resume import wait_for_a_submit

FAST = ["--poll-interval", "0.01", "--quiet"]
SAME_LABEL = "tokA" + "z" * 28  # the same first four characters and length as TOKEN: the same masked label


@pytest.fixture(autouse=True)
def _clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("JIMENG_SESSIONID", "JIMENG_BASE_URL", "JIMENG_IMAGEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def closed_port() -> Iterator[str]:
    """A base URL whose port is bound and never listens: every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{probe.getsockname()[1]}"


def states(out: Path) -> dict[str, int]:
    return dict(query(out / "ledger.sqlite", "SELECT state, COUNT(*) FROM requests GROUP BY state"))


def column(out: Path, name: str) -> list[Any]:
    return [row[0] for row in query(out / "ledger.sqlite", f"SELECT {name} FROM requests ORDER BY ord")]


def charged(stats: dict[str, Any]) -> Counter[str]:
    return Counter(stats["charges_by_submit_id"])


MANY = """
    jobs:
      - {name: many, type: image, resolution: 1k, prompt: "picture {n}",
         vars: {n: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}}
"""


# -- 1. a rehearsal never passes for the real thing ---------------------------------------------------------------


def test_a_rehearsals_results_are_not_served_to_a_live_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch, closed_port: str) -> None:
    manifest = write_manifest(tmp_path, MANY)
    cache = ["--cache-path", str(tmp_path / "shared.sqlite"), "--cache-ttl", "forever"]
    code, _, err = run_main(["run", str(manifest), "--out", "rehearsal", "--sim", *cache, *FAST], capsys)
    assert code == 0, err
    monkeypatch.setenv("JIMENG_SESSIONID", TOKEN)
    code, _, err = run_main(["run", str(manifest), "--out", "live", "--base-url", closed_port, *cache, *FAST,
                             "--preflight", "off", "--no-report", "--max-retries", "0"], capsys)
    assert code == 3 and "cannot reach" in err, err
    assert "downloaded" not in states(tmp_path / "live")
    assert not list((tmp_path / "live").glob("assets/*"))


def test_simulated_runs_keep_a_cache_of_their_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    assert run_main(["run", str(manifest), "--out", "one", "--sim", *FAST], capsys)[0] == 0
    assert not (tmp_path / "xdg" / "jimeng-batch" / "cache.sqlite").exists()  # the user's cache is left alone
    assert run_main(["run", str(manifest), "--out", "two", "--sim", *FAST], capsys)[0] == 0
    assert column(tmp_path / "two", "shared_from") == ["cache"] * 5  # another rehearsal may reuse a rehearsal


def test_a_folder_never_mixes_a_rehearsal_with_live_results(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    code, _, err = run_main(["run", str(manifest), "--out", "out", "--sim", "--no-cache", "--budget", "2", *FAST],
                            capsys)
    assert code == 3, err
    monkeypatch.setenv("JIMENG_SESSIONID", TOKEN)
    with simulator() as live:
        code, _, err = run_main(["run", str(manifest), "--out", "out", "--base-url", live.base_url, "--no-cache",
                                 *FAST], capsys)
        assert code == 2 and "holds results from the simulator" in err and "--allow-mixed-origins" in err, err
        code, _, err = run_main(["resume", "out", "--no-sim", "--base-url", live.base_url], capsys)
        assert code == 2 and "holds results from the simulator" in err, err
        assert live.stats()["requests"] == {}
        code, _, err = run_main(["run", str(manifest), "--out", "out", "--base-url", live.base_url, "--no-cache",
                                 "--allow-mixed-origins", *FAST], capsys)
        assert code == 0, err
    origins = Counter(column(tmp_path / "out", "origin"))
    assert sorted(origins.values()) == [2, 3] and any(o.startswith("simulator") for o in origins), origins


def test_every_output_says_where_results_came_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    assert run_main(["run", str(manifest), "--out", "out", "--sim", "--no-cache", *FAST], capsys)[0] == 0
    out = tmp_path / "out"
    assert (out / "report.md").read_text().splitlines()[0].lower().startswith("**simulated")
    assert "simulated" in (out / "report.html").read_text().lower()
    assert json.loads((out / "metrics.json").read_text())["simulated"] is True
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {row["origin"].split(":")[0] for row in rows} == {"simulator"}
    code, _, err = run_main(["export", "out", "--to", "dataset"], capsys)
    assert code == 2 and "come from the simulator" in err and "--allow-simulated" in err, err
    code, _, err = run_main(["export", "out", "--to", "dataset", "--allow-simulated"], capsys)
    assert code == 0, err
    card = (tmp_path / "dataset" / "README.md").read_text().lower()
    assert "simulated" in card
    metadata = [json.loads(line) for line in (tmp_path / "dataset" / "train" / "metadata.jsonl").read_text()
                .splitlines()]
    assert all(record["simulated"] is True and record["origin"].startswith("simulator") for record in metadata)


def test_export_and_merge_refuse_to_mix_origins(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    assert run_main(["run", str(manifest), "--out", "sim", "--sim", "--no-cache", "--no-report", *FAST],
                    capsys)[0] == 0
    monkeypatch.setenv("JIMENG_SESSIONID", TOKEN)
    other = write_manifest(tmp_path, "jobs:\n  - {type: image, resolution: 1k, prompt: [x, y]}\n", "other.yaml")
    with simulator() as live:
        assert run_main(["run", str(other), "--out", "live", "--base-url", live.base_url, "--no-cache",
                         "--no-report", *FAST], capsys)[0] == 0
    code, _, err = run_main(["merge", "sim", "live", "--into", "merged"], capsys)
    assert code == 2 and "origins" in err and "--allow-mixed-origins" in err, err
    code, _, err = run_main(["merge", "sim", "live", "--into", "merged", "--allow-mixed-origins", "--no-report",
                             "--allow-different"], capsys)  # two manifests, too
    assert code == 0, err
    code, _, err = run_main(["export", "merged", "--to", "dataset", "--allow-simulated"], capsys)
    assert code == 2 and "origins" in err, err
    assert run_main(["export", "merged", "--to", "dataset", "--allow-mixed-origins", "--allow-simulated"],
                    capsys)[0] == 0


# -- 2. the manifest decides what is sent -------------------------------------------------------------------------


SHRUNK = """
    jobs:
      - name: pics
        type: image
        model: jimeng-4.0
        resolution: 1k
        prompt: [a red kite, a white cat]
"""


def test_requests_removed_from_the_manifest_are_never_sent(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    monkeypatch.setenv("JIMENG_SESSIONID", TOKEN)
    with simulator() as server:
        common = ["--out", "out", "--base-url", server.base_url, "--no-cache", "--no-report", *FAST]
        assert run_main(["run", str(manifest), *common, "--budget", "2"], capsys)[0] == 3  # kite and boat done
        write_manifest(tmp_path, SHRUNK)
        code, out, _ = run_main(["plan", str(manifest), "--folder", "out"], capsys)
        assert code == 0 and "2 request(s) in out's ledger are no longer in the manifest" in out, out
        code, _, err = run_main(["run", str(manifest), *common], capsys)
        assert code == 0, err
        assert "2 request(s) no longer in the manifest were set aside (never sent)" in err
        assert len(charged(server.stats())) == 3  # kite, boat (paid before) and cat: never hill or dog
        assert states(tmp_path / "out") == {"downloaded": 3, "removed": 2}
        write_manifest(tmp_path, IMAGES)  # back in the manifest: planned and sent again
        assert run_main(["run", str(manifest), *common], capsys)[0] == 0
        assert states(tmp_path / "out") == {"downloaded": 5}
        assert set(charged(server.stats()).values()) == {1} and len(charged(server.stats())) == 5


# -- 3. accounts are identities, not labels ------------------------------------------------------------------------


def _killed_mid_flight(tmp_path: Path, manifest: Path, server_url: str, token: str) -> Path:
    """A run on ``token`` killed once a submit is accepted: jobs are left in flight on that account."""
    out = tmp_path / "out"
    env = cli_env(JIMENG_SESSIONID=token)
    process = subprocess.Popen(cli("run", str(manifest), "--out", str(out), "--base-url", server_url, "--quiet",
                                   "--no-cache", "--no-report", "--poll-interval", "0.05", "--preflight", "off"),
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_a_submit(process, out / "ledger.sqlite")
    process.send_signal(signal.SIGKILL)
    process.communicate()
    return out


@pytest.mark.parametrize("other", [TOKEN_B, SAME_LABEL], ids=["another-account", "same-masked-label"])
def test_work_charged_on_an_account_waits_for_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch, other: str) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(latency={"generation": 1.0}, max_in_flight=None) as server:
        out = _killed_mid_flight(tmp_path, manifest, server.base_url, TOKEN)
        in_flight = [s for s in column(out, "state") if s in ("submitting", "submitted", "running")]
        assert in_flight
        monkeypatch.setenv("JIMENG_SESSIONID", other)
        common = ["--base-url", server.base_url, "--no-report", "--preflight", "off"]
        code, _, err = run_main(["resume", "out", *common], capsys)
        assert code == 1 and "waiting for account tokA…(32)" in err, err
        assert not [c for c in charged(server.stats()).values() if c > 1]  # nothing charged twice
        assert set(column(out, "state")) <= {"submitting", "submitted", "running", "downloaded", "planned",
                                             "skipped", "succeeded"}
        monkeypatch.setenv("JIMENG_SESSIONID", f"{TOKEN},{other}")
        code, _, err = run_main(["resume", "out", *common], capsys)
        assert code == 0, err
        stats = server.stats()
    assert states(out) == {"downloaded": 5}
    assert set(charged(stats).values()) == {1}  # every job paid once, on one account
    accounts = set(column(out, "account"))
    assert len(accounts) == 2 and all(re.fullmatch("[0-9a-f]{16}", a) for a in accounts)  # one-way ids, not labels


def test_reassign_orphans_gives_up_on_a_missing_account(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(latency={"generation": 1.0}, max_in_flight=None) as server:
        out = _killed_mid_flight(tmp_path, manifest, server.base_url, TOKEN)
        monkeypatch.setenv("JIMENG_SESSIONID", TOKEN_B)
        code, _, err = run_main(["resume", "out", "--base-url", server.base_url, "--no-report", "--preflight", "off",
                                 "--reassign-orphans"], capsys)
        assert code == 0 and "reassigning" in err, err
    assert states(out) == {"downloaded": 5}


# -- 4. nothing paid for is written off by a transient failure ----------------------------------------------------


def test_an_asset_host_outage_leaves_the_requests_to_download_later(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(faults={"asset_error_probability": 1.0}) as server:
        first = drive(manifest, server, out=tmp_path / "out")
        first.ledger.close()
        assert first.result.counts == {"succeeded": 5}, first.result.counts  # paid for, kept: not failed
        assert set(column(tmp_path / "out", "reason")) == {"server"}
        server.state.set_faults({"asset_error_probability": 0})
        second = drive(manifest, server, out=tmp_path / "out")
        stats = server.stats()
    assert second.result.counts == {"downloaded": 5}
    assert set(charged(stats).values()) == {1}


@pytest.mark.parametrize("faults", [
    pytest.param({"truncated_asset_probability": 1.0}, id="truncated"),
    pytest.param({"asset_error_probability": 1.0, "asset_error_statuses": [404]}, id="asset-404"),
])
def test_a_download_that_keeps_failing_stays_succeeded(tmp_path: Path, faults: dict[str, Any]) -> None:
    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image, resolution: 1k, prompt: a}\n")
    with simulator(faults=faults) as server:
        run = drive(manifest, server, out=tmp_path / "out")
    assert run.result.counts == {"succeeded": 1} and run.exit_code == 1


def test_downloads_follow_redirects(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(faults={"asset_redirect": True}) as server:
        run = drive(manifest, server, out=tmp_path / "out")
    assert run.result.counts == {"downloaded": 5}


def test_http_404_on_api_calls_is_retried(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(seed=3, faults={"http_error_probability": 0.3, "http_error_statuses": [404]}) as server:
        run = drive(manifest, server, out=tmp_path / "out", options=fast_options(max_retries=20))
        stats = server.stats()
    assert stats["errors"].get("http_404", 0) > 0
    assert run.result.counts == {"downloaded": 5}


class FakeTime:
    """One clock for the executor and the simulator, moved forward only by the executor's sleeps."""

    def __init__(self) -> None:
        import time

        from jimeng_batch.sim import FakeClock

        self.clock = FakeClock(time.time())
        self.sleep = NoWait(advance=self.clock.advance)


def test_a_record_that_shows_up_late_is_waited_for(tmp_path: Path) -> None:
    """Absent for 90 s after a charged submit (longer than the old 60 s grace): found, downloaded, not written off."""
    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image, resolution: 1k, prompt: a}\n")
    time = FakeTime()
    with simulator(faults={"not_found_after_submit_s": 90}, max_clock_skew_s=None, clock=time.clock) as server:
        run = drive(manifest, server, out=tmp_path / "out", clock=time.clock, sleep=time.sleep,
                    options=fast_options(lost_after=1800.0))
    assert run.result.counts == {"downloaded": 1}


def test_a_record_that_never_shows_up_is_lost_not_failed(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image, resolution: 1k, prompt: a}\n")
    time = FakeTime()
    with simulator(faults={"not_found_after_submit_s": 4000}, max_clock_skew_s=None, clock=time.clock) as server:
        first = drive(manifest, server, out=tmp_path / "out", clock=time.clock, sleep=time.sleep,
                      options=fast_options(lost_after=1800.0))
        first.ledger.close()
        assert first.result.counts == {"lost": 1} and first.exit_code == 1
        time.clock.advance(3000)  # now the service shows it: the next run checks again, and finds it
        second = drive(manifest, server, out=tmp_path / "out", clock=time.clock, sleep=time.sleep)
        stats = server.stats()
    assert second.result.counts == {"downloaded": 1}
    assert set(charged(stats).values()) == {1}


def test_retry_failed_replans_failed_requests_only(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = write_manifest(tmp_path, """
        jobs:
          - {name: a, type: image, model: jimeng-4.0, resolution: 1k, prompt: [a kite, a forbidden cat]}
          - {name: b, type: image, model: jimeng-3.1, resolution: 1k, prompt: a boat}
    """)
    monkeypatch.setenv("JIMENG_SESSIONID", TOKEN)
    with simulator(unavailable_models=["jimeng-3.1"]) as broken:
        common = ["--out", "out", "--no-cache", "--no-report", *FAST]
        assert run_main(["run", str(manifest), *common, "--base-url", broken.base_url], capsys)[0] == 1
    assert sorted(column(tmp_path / "out", "state")) == ["blocked", "downloaded", "failed"]
    with simulator() as fixed_service:
        common = ["--out", "out", "--no-cache", "--no-report", "--base-url", fixed_service.base_url,
                  "--allow-mixed-origins", *FAST]
        assert run_main(["run", str(manifest), *common], capsys)[0] == 1  # nothing re-sent without being asked
        assert fixed_service.stats()["requests"].get("generate", 0) == 0
        code, _, err = run_main(["run", str(manifest), *common, "--retry-failed"], capsys)
        assert "re-planning 1 failed request(s): about 1 credit(s)" in err, err
        assert code == 1  # the blocked one is still blocked
        assert sorted(column(tmp_path / "out", "state")) == ["blocked", "downloaded", "downloaded"]


# -- 5. an outage stops the run instead of failing it -------------------------------------------------------------


class Unreachable:
    """Where ``drive`` sends its calls: a port nothing listens on."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url


def test_an_unreachable_host_stops_the_run_and_fails_nothing(tmp_path: Path, closed_port: str) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    run = drive(manifest, Unreachable(closed_port), out=tmp_path / "out")  # type: ignore[arg-type]
    assert run.exit_code == 3 and run.result.stop_reason == "unreachable"
    assert run.result.stop_message is not None and run.result.stop_message.startswith(f"cannot reach {closed_port}")
    assert run.result.counts == {"skipped": 5}  # nothing was sent (connections refused): planned again next time


def test_an_outage_on_the_command_line_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch, closed_port: str) -> None:
    manifest = write_manifest(tmp_path, MANY)
    monkeypatch.setenv("JIMENG_SESSIONID", TOKEN)
    code, _, err = run_main(["run", str(manifest), "--out", "out", "--base-url", closed_port, "--max-retries", "0",
                             "--no-cache", "--no-report", *FAST], capsys)
    assert code == 3 and f"cannot reach {closed_port}" in err, err
    assert states(tmp_path / "out") == {"skipped": 12}


# -- 6. one run per output folder -----------------------------------------------------------------------------------


def test_a_second_writer_is_refused_and_status_tells_a_dead_run(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    out = tmp_path / "out"
    with simulator(latency={"generation": 5.0}) as server:
        env = cli_env(JIMENG_SESSIONID=TOKEN)
        process = subprocess.Popen(cli("run", str(manifest), "--out", str(out), "--base-url", server.base_url,
                                       "--quiet", "--no-cache", "--no-report", "--preflight", "off"),
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for_a_submit(process, out / "ledger.sqlite")
        code, _, err = run_main(["run", str(manifest), "--out", "out", "--sim", *FAST], capsys)
        assert code == 2 and f"is being written by another jimeng-batch run (pid {process.pid}" in err, err
        code, _, err = run_main(["report", "out"], capsys)
        assert code == 2 and "being written" in err, err
        code, text, _ = run_main(["status", "out"], capsys)
        assert code == 0 and "last run: running" in text, text
        process.send_signal(signal.SIGKILL)
        process.communicate()
    code, text, _ = run_main(["status", "out"], capsys)
    assert code == 0 and f"last run: interrupted (process {process.pid} is gone)" in text, text


# -- 7. a rehearsal rehearses kill and resume ----------------------------------------------------------------------


def test_a_killed_simulated_run_resumes_like_a_real_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    (tmp_path / "sim.yaml").write_text("latency: {generation: 1.0}\nimages_per_request: 1\n")
    out = tmp_path / "out"
    process = subprocess.Popen(cli("run", str(manifest), "--out", str(out), "--sim", "--sim-config",
                                   str(tmp_path / "sim.yaml"), "--quiet", "--no-cache", "--no-report",
                                   "--poll-interval", "0.05"),
                               env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_a_submit(process, out / "ledger.sqlite")
    process.send_signal(signal.SIGKILL)
    process.communicate()
    code, _, err = run_main(["resume", "out"], capsys)
    assert code == 0, err
    assert states(out) == {"downloaded": 5}
    state_files = list(out.glob(".sim*"))
    assert state_files, "the simulator keeps its state in the output folder"
    db = sqlite3.connect(state_files[0])
    try:
        per_submit = db.execute("SELECT submit_id, COUNT(*) FROM records GROUP BY submit_id").fetchall()
    finally:
        db.close()
    assert len(per_submit) == 5 and {n for _, n in per_submit} == {1}


# -- 8. the small leaks ------------------------------------------------------------------------------------------------


def test_a_record_failing_for_credits_exhausts_its_token(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, """
        jobs:
          - name: pics
            type: image
            resolution: 1k
            prompt: [a broke kite, a blue boat, a green hill]
    """)
    with simulator(content_filter={"words": ["broke"], "fail_code": "1006"}) as server:
        run = drive(manifest, server, out=tmp_path / "out", tokens=[TOKEN, TOKEN_B],
                    options=fast_options(concurrency=1))
    exhausted = [label for label, state in run.result.token_states.items() if state.startswith("exhausted")]
    assert exhausted == [TOKEN[:4] + "…(32)"]
    assert Counter(run.states().values()) == {"failed": 1, "downloaded": 2}


def test_verify_finds_a_file_changed_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    common = ["--out", "out", "--sim", "--no-cache", "--no-report", *FAST]
    assert run_main(["run", str(manifest), *common], capsys)[0] == 0
    path, sha = query(tmp_path / "out" / "ledger.sqlite", "SELECT path, sha256 FROM assets ORDER BY path")[0]
    data = bytearray((tmp_path / "out" / path).read_bytes())
    data[-20] ^= 0xFF  # the same size, another content
    (tmp_path / "out" / path).write_bytes(bytes(data))
    code, _, err = run_main(["run", str(manifest), *common, "--verify"], capsys)
    assert code == 0 and "1 file(s) differ from the ledger" in err, err
    assert sha256_of(tmp_path / "out" / path) == sha


def test_a_server_that_echoes_the_cookie_never_puts_the_token_in_a_file(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    with simulator(seed=4, faults={"echo_session": True, "busy_probability": 0.5}) as server:
        run = drive(manifest, server, out=tmp_path / "out", options=fast_options(max_retries=20))
        assert server.stats()["errors"]
    run.ledger.close()
    assert run.result.counts == {"downloaded": 5}
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert TOKEN.encode() not in data, path


def test_a_lost_answer_whose_record_shows_late_is_never_sent_with_another_account(tmp_path: Path) -> None:
    """The submit is charged but its answer is lost, and the service does not show the record yet when asked: the
    request stays with its account (the next run, with another token only, waits) instead of being sent elsewhere."""
    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image, resolution: 1k, prompt: a}\n")
    with simulator(faults={"lost_response_probability": 1.0, "not_found_after_submit_s": 3600}) as server:
        first = drive(manifest, server, out=tmp_path / "out", tokens=[TOKEN], options=fast_options(max_retries=0))
        first.ledger.close()
        assert first.result.counts == {"submitting": 1}  # may have arrived: asked about by the next run
        server.state.set_faults({"lost_response_probability": 0})
        second = drive(manifest, server, out=tmp_path / "out", tokens=[TOKEN_B])
        stats = server.stats()
    assert second.result.waiting == {TOKEN[:4] + "…(32)": 1}
    assert len(charged(stats)) == 1 and set(charged(stats).values()) == {1}
