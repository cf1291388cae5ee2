"""`resume` runs the recorded run again: every option `run` was given, a flag given again overriding that one only.

Each test starts a run that stops early (a budget of 1 credit, or a pre-flight stop), then resumes it the way a
user would, with nothing but the output folder, and checks that the resumed run behaved like the first.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from conftest import run_main
from run_helpers import IMAGES, TOKEN, simulator, write_manifest

FAST = ["--poll-interval", "0.01", "--quiet"]


@pytest.fixture(autouse=True)
def _clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("JIMENG_SESSIONID", "JIMENG_BASE_URL", "JIMENG_IMAGEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # never the user's own cache


def states(out: Path) -> dict[str, int]:
    db = sqlite3.connect(out / "ledger.sqlite")
    try:
        return dict(db.execute("SELECT state, COUNT(*) FROM requests GROUP BY state").fetchall())
    finally:
        db.close()


def test_resume_sends_to_the_runs_host_with_its_token_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed `--base-url` run went to JIMENG_BASE_URL instead; a `--token-file` run found no token."""
    manifest = write_manifest(tmp_path, IMAGES)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{TOKEN}\n")
    with simulator() as chosen, simulator() as elsewhere:
        code, _, err = run_main(["run", str(manifest), "--out", "out", "--base-url", chosen.base_url,
                                 "--token-file", str(tokens), "--budget", "1", "--no-cache", *FAST], capsys)
        assert code == 3, err
        monkeypatch.setenv("JIMENG_BASE_URL", elsewhere.base_url)
        code, _, err = run_main(["resume", "out", "--budget", "100"], capsys)
        assert code == 0, err
        assert len(chosen.stats()["charges_by_submit_id"]) == 5
        assert elsewhere.stats()["requests"] == {}
    assert states(tmp_path / "out") == {"downloaded": 5}


def test_resume_uses_the_runs_simulator_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A resumed `--sim --sim-config` run ran on a default simulator instead."""
    manifest = write_manifest(tmp_path, IMAGES)
    config = tmp_path / "sim.yaml"
    config.write_text("images_per_request: 2\n")
    code, _, err = run_main(["run", str(manifest), "--out", "out", "--sim", "--sim-config", str(config),
                             "--budget", "1", "--no-cache", *FAST], capsys)
    assert code == 3, err
    code, _, err = run_main(["resume", "out", "--budget", "100"], capsys)
    assert code == 0, err
    db = sqlite3.connect(tmp_path / "out" / "ledger.sqlite")
    try:
        per_request = dict(db.execute("SELECT key, COUNT(*) FROM assets GROUP BY key").fetchall())
    finally:
        db.close()
    assert sorted(per_request.values()) == [2] * 5


def test_resume_uses_the_runs_cache_path_and_ttl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A resumed run used the default cache and TTL instead of `--cache-path` and `--cache-ttl`."""
    manifest = write_manifest(tmp_path, IMAGES)
    cache = tmp_path / "shared" / "cache.sqlite"
    with_cache = ["--cache-path", str(cache), "--cache-ttl", "forever", *FAST]
    code, _, err = run_main(["run", str(manifest), "--out", "out", "--sim", "--budget", "0", *with_cache], capsys)
    assert code == 3, err
    assert states(tmp_path / "out") == {"skipped": 5}
    # Another folder fills the shared cache; its entries are then made older than the default TTL.
    code, _, err = run_main(["run", str(manifest), "--out", "other", "--sim", *with_cache], capsys)
    assert code == 0, err
    db = sqlite3.connect(cache)
    try:
        with db:
            db.execute("UPDATE results_by_origin SET completed_at = ?", (time.time() - 10_000,))
    finally:
        db.close()
    code, _, err = run_main(["resume", "out", "--budget", "100"], capsys)
    assert code == 0, err
    db = sqlite3.connect(tmp_path / "out" / "ledger.sqlite")
    try:
        shared = [row[0] for row in db.execute("SELECT shared_from FROM requests")]
    finally:
        db.close()
    assert shared == ["cache"] * 5
    assert not (tmp_path / "xdg-cache").exists()


def test_resume_keeps_the_runs_preflight(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed `--preflight stop` run went back to `warn` and spent credits the accounts could not cover."""
    manifest = write_manifest(tmp_path, IMAGES)
    monkeypatch.setenv("JIMENG_SESSIONID", TOKEN)
    with simulator(default_credits=1) as server:
        monkeypatch.setenv("JIMENG_BASE_URL", server.base_url)
        code, _, err = run_main(["run", str(manifest), "--out", "out", "--preflight", "stop", "--no-cache", *FAST],
                                capsys)
        assert code == 3 and "preflight" in err, err
        code, _, err = run_main(["resume", "out"], capsys)
        assert code == 3 and "preflight" in err, err
        assert server.stats()["charges_by_submit_id"] == {}
        # Given again, a flag overrides that option only: the run goes ahead on the same host.
        code, _, err = run_main(["resume", "out", "--preflight", "off"], capsys)
        assert code == 3 and "credits" in err, err
        assert len(server.stats()["charges_by_submit_id"]) == 1


def test_resume_keeps_report_off_until_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--no-report` was forgotten by `resume`, which wrote the report anyway."""
    manifest = write_manifest(tmp_path, IMAGES)
    code, _, err = run_main(["run", str(manifest), "--out", "out", "--sim", "--no-report", "--budget", "1",
                             "--no-cache", *FAST], capsys)
    assert code == 3, err
    code, _, err = run_main(["resume", "out", "--budget", "2"], capsys)
    assert code == 3, err
    assert not (tmp_path / "out" / "report.html").exists()
    code, _, err = run_main(["resume", "out", "--budget", "100", "--report"], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "report.html").is_file()
    assert states(tmp_path / "out") == {"downloaded": 5}


def test_resume_keeps_budget_and_fail_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The budget applies to each run of the folder again; `--fail-on none` still lets a blocked request pass."""
    manifest = write_manifest(tmp_path, """
        jobs:
          - name: pics
            type: image
            model: jimeng-4.0
            resolution: 1k
            prompt: [a forbidden kite, a blue boat, a green hill, a white cat]
    """)
    code, _, err = run_main(["run", str(manifest), "--out", "out", "--sim", "--budget", "2", "--fail-on", "none",
                             "--no-cache", "--no-report", *FAST], capsys)
    assert code == 3, err
    assert states(tmp_path / "out") == {"blocked": 1, "downloaded": 1, "skipped": 2}
    code, _, err = run_main(["resume", "out"], capsys)
    assert code == 0, err  # the same budget again: two more, and `none` lets the blocked one pass
    assert states(tmp_path / "out") == {"blocked": 1, "downloaded": 3}
    code, _, err = run_main(["resume", "out", "--fail-on", "blocked"], capsys)
    assert code == 1, err
    code, _, err = run_main(["resume", "out"], capsys)
    assert code == 1, err  # the flag given last is what the folder remembers now
