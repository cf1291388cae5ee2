"""The run configuration: its precedence, its copy in the ledger, and resume loading it whole, field by field."""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import run_main
from run_helpers import IMAGES, TOKEN, write_manifest

from jimeng_batch.engine.config import FIELD_NAMES, RunConfig, resolve_config
from jimeng_batch.engine.runner import configure, configure_resume
from jimeng_batch.engine.states import State
from jimeng_batch.errors import ConfigError
from jimeng_batch.intake.manifest import SpreadsheetOptions, load_manifest
from jimeng_batch.intake.sharding import Shard
from jimeng_batch.protocol.constants import ProtocolChoice

# A value for every field that differs from its default (paths absolute, as resolve_config makes them).
CHANGED: dict[str, Any] = {
    "sheet": SpreadsheetOptions(region="us", type="video", defaults={"model": "jimeng-video-3.0"},
                                protocol_profile="document"),
    "protocol": ProtocolChoice(profile="document", file=Path("/protocol/p.yaml"), flags={"da_version": "3.3.30"},
                               environment={"web_version": "7.6.0"},
                               environment_names={"web_version": "JIMENG_PROTOCOL_WEB_VERSION"}),
    "sim": True, "sim_config": Path("/configs/sim.yaml"), "base_url": "http://127.0.0.1:9", "imagex_url":
        "http://127.0.0.1:10", "token_file": Path("/secrets/tokens.txt"), "concurrency": 7, "submits_per_second": 2.5,
    "polls_per_second": 3.0, "downloads_per_second": 4.0, "uploads_per_second": 0.5, "max_unfinished": 64,
    "max_retries": 9, "backoff_base": 0.25, "backoff_max": 30.0, "retry_after_cap": 120.0, "jitter_seed": 42,
    "poll_interval": 0.5, "lost_after": 90.0, "budget": 12.5, "claim_daily": True, "preflight": "stop",
    "account_catalog": "off", "fresh_catalog": True, "use_cache": False,
    "cache_path": Path("/caches/c.sqlite"), "cache_ttl": math.inf, "shard": Shard(2, 3),
    "fail_on": frozenset({State.FAILED}), "report": False, "download": False, "log_format": "json",
    "allow_mixed_origins": True,
    "allow_unsupported": True,
    "retry_failed": True, "retry_blocked": True, "retry_invalid": True, "resubmit_lost": True,
    "reassign_orphans": True, "verify": True, "call_deadline": 30.0, "max_answer_bytes": 1000,
    "download_floor": 10.0, "download_rate": 1000, "max_asset_bytes": 2000, "max_requests": 50,
}


def test_every_field_has_a_changed_value() -> None:
    assert set(CHANGED) == FIELD_NAMES
    defaults = RunConfig()
    assert all(getattr(defaults, name) != value for name, value in CHANGED.items())


def test_the_ledgers_copy_round_trips_through_json() -> None:
    config = RunConfig(**CHANGED)
    stored = json.loads(json.dumps(config.to_json()))
    assert stored["cache_ttl"] == "forever" and stored["shard"] == "2/3" and stored["fail_on"] == ["failed"]
    assert RunConfig.from_json(stored) == config
    assert RunConfig.from_json({}) == RunConfig()  # fields an older ledger lacks take their defaults


def test_precedence_flag_then_environment_then_manifest_then_default(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, """
        limits: {concurrency: 5, max_retries: 2, polls_per_second: 4}
        budget: 40
        cache: {ttl: forever, path: cache/here.sqlite}
        jobs:
          - {type: image, prompt: a}
    """)
    manifest = load_manifest(path)
    environ = {"JIMENG_BASE_URL": "http://127.0.0.1:7", "JIMENG_IMAGEX_URL": "http://127.0.0.1:8"}
    config = resolve_config(manifest, {"concurrency": 2, "base_url": None}, environ)
    assert config.concurrency == 2  # the flag over the manifest
    assert (config.max_retries, config.polls_per_second, config.budget) == (2, 4, 40)  # the manifest
    assert config.cache_ttl == math.inf and config.cache_path == (tmp_path / "cache" / "here.sqlite").resolve()
    assert (config.base_url, config.imagex_url) == ("http://127.0.0.1:7", "http://127.0.0.1:8")  # the environment
    assert config.preflight == "warn" and config.submits_per_second is None  # the defaults
    flagged = resolve_config(manifest, {"base_url": "http://127.0.0.1:6"}, environ)
    assert flagged.base_url == "http://127.0.0.1:6"  # the flag over the environment
    plain = resolve_config(load_manifest(write_manifest(tmp_path, "jobs: [{type: image, prompt: a}]\n", "p.yaml")),
                           {}, {"XDG_CACHE_HOME": "/nowhere"})
    assert plain.cache_ttl == 300 and plain.concurrency == 3 and plain.max_retries == 5


def test_relative_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_manifest(tmp_path, "jobs: [{type: image, prompt: a}]\n")
    config = resolve_config(load_manifest(path), {"token_file": Path("t.txt"), "cache_path": Path("c/x.sqlite")}, {})
    assert config.token_file == tmp_path / "t.txt" and config.cache_path == tmp_path / "c" / "x.sqlite"


@pytest.mark.parametrize(("values", "message"), [
    pytest.param({"concurrency": 0}, "concurrency must be between 1 and 1000", id="concurrency"),
    pytest.param({"polls_per_second": -1.0}, "polls_per_second must be a positive number", id="rate"),
    pytest.param({"max_retries": 101}, "max_retries must be between 0 and 100", id="retries"),
    pytest.param({"budget": math.nan}, "budget must be a number of credits", id="nan-budget"),
    pytest.param({"poll_interval": math.inf}, "poll_interval must be a positive number", id="poll-interval"),
    pytest.param({"preflight": "maybe"}, "preflight must be one of warn, stop, off", id="preflight"),
    pytest.param({"cache_ttl": -1.0}, "cache_ttl must be 0 or more seconds", id="ttl"),
    pytest.param({"fail_on": frozenset({State.DOWNLOADED})}, "fail_on may name failed, blocked", id="fail-on"),
])
def test_bad_values_are_config_errors(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig(**values)


def test_unknown_options_are_named(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, "jobs: [{type: image, prompt: a}]\n")
    with pytest.raises(ConfigError, match=r"unknown run option.*polls_per_sec.*allowed: .*backoff_base"):
        configure(path, {"polls_per_sec": 3})
    with pytest.raises(ConfigError, match=r"unknown run option.*nope"):
        RunConfig().replace(nope=1)


def _stored_config(out: Path) -> dict[str, Any]:
    db = sqlite3.connect(out / "ledger.sqlite")
    try:
        options = json.loads(db.execute("SELECT options FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0])
    finally:
        db.close()
    config: dict[str, Any] = options["config"]
    return config


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run started with a flag for every run option, its token from a file."""
    base = tmp_path_factory.mktemp("recorded")
    manifest = write_manifest(base, IMAGES)
    (base / "sim.yaml").write_text("images_per_request: 1\n")
    (base / "tokens.txt").write_text(TOKEN + "\n")
    from jimeng_batch.cli import main

    args = ["run", str(manifest), "--out", str(base / "out"), "--sim", "--sim-config", str(base / "sim.yaml"),
            "--concurrency", "2", "--submits-per-second", "50", "--polls-per-second", "60", "--downloads-per-second",
            "70", "--uploads-per-second", "80", "--max-retries", "4", "--poll-interval", "0.01", "--budget", "100",
            "--preflight", "off", "--cache-ttl", "forever", "--cache-path", str(base / "cache.sqlite"),
            "--fail-on", "failed,invalid", "--no-report", "--shard", "1/1", "--token-file", str(base / "tokens.txt"),
            "--quiet", "--protocol-profile", "document", "--protocol", "da_version=3.3.30"]
    try:
        main(args)  # returns when the run exits 0
    except SystemExit as done:
        raise AssertionError(f"the run exited {done.code}") from None
    return base


def test_the_ledger_holds_every_option_and_no_token(recorded_run: Path) -> None:
    stored = _stored_config(recorded_run / "out")
    assert set(stored) == FIELD_NAMES
    paths = {"sim_config": None, "cache_path": None, "token_file": None}
    assert stored | paths == RunConfig(
        sim=True, concurrency=2, submits_per_second=50.0, polls_per_second=60.0, downloads_per_second=70.0,
        uploads_per_second=80.0, max_retries=4, poll_interval=0.01, budget=100.0, preflight="off",
        cache_ttl=math.inf, fail_on=frozenset({State.FAILED, State.INVALID}), report=False, shard=Shard(1, 1),
        protocol=ProtocolChoice(profile="document", flags={"da_version": "3.3.30"}),
    ).to_json() | paths
    assert Path(stored["sim_config"]) == recorded_run / "sim.yaml"
    assert Path(stored["cache_path"]) == recorded_run / "cache.sqlite"
    assert Path(stored["token_file"]) == recorded_run / "tokens.txt"  # where the token is, never the token
    written = [path for path in (recorded_run / "out").rglob("*") if path.is_file()]
    assert any(path.name.startswith("ledger.sqlite") for path in written)
    for path in written:
        assert TOKEN.encode() not in path.read_bytes(), path


FLAGS_GIVEN_AGAIN = [
    pytest.param("base_url", ["--base-url", "http://127.0.0.1:5"], "http://127.0.0.1:5", id="base-url"),
    pytest.param("token_file", ["--token-file", "/t.txt"], Path("/t.txt"), id="token-file"),
    pytest.param("concurrency", ["--concurrency", "9"], 9, id="concurrency"),
    pytest.param("submits_per_second", ["--submits-per-second", "5"], 5.0, id="submits-per-second"),
    pytest.param("polls_per_second", ["--polls-per-second", "6"], 6.0, id="polls-per-second"),
    pytest.param("downloads_per_second", ["--downloads-per-second", "7"], 7.0, id="downloads-per-second"),
    pytest.param("uploads_per_second", ["--uploads-per-second", "8"], 8.0, id="uploads-per-second"),
    pytest.param("max_retries", ["--max-retries", "0"], 0, id="max-retries"),
    pytest.param("poll_interval", ["--poll-interval", "3"], 3.0, id="poll-interval"),
    pytest.param("budget", ["--budget", "7"], 7.0, id="budget"),
    pytest.param("preflight", ["--preflight", "stop"], "stop", id="preflight"),
    pytest.param("claim_daily", ["--claim-daily"], True, id="claim-daily"),
    pytest.param("account_catalog", ["--account-catalog", "require"], "require", id="account-catalog"),
    pytest.param("fresh_catalog", ["--fresh-catalog"], True, id="fresh-catalog"),
    pytest.param("use_cache", ["--no-cache"], False, id="no-cache"),
    pytest.param("cache_ttl", ["--cache-ttl", "60"], 60.0, id="cache-ttl"),
    pytest.param("cache_path", ["--cache-path", "/elsewhere.sqlite"], Path("/elsewhere.sqlite"), id="cache-path"),
    pytest.param("fail_on", ["--fail-on", "none"], frozenset(), id="fail-on"),
    pytest.param("report", ["--report"], True, id="report"),
    pytest.param("log_format", ["--log-format", "json"], "json", id="log-format"),
    pytest.param("sim", ["--no-sim"], False, id="no-sim"),
    pytest.param("allow_mixed_origins", ["--allow-mixed-origins"], True, id="allow-mixed-origins"),
    pytest.param("allow_unsupported", ["--allow-unsupported"], True, id="allow-unsupported"),
    pytest.param("retry_failed", ["--retry-failed"], True, id="retry-failed"),
    pytest.param("retry_blocked", ["--retry-blocked"], True, id="retry-blocked"),
    pytest.param("retry_invalid", ["--retry-invalid"], True, id="retry-invalid"),
    pytest.param("resubmit_lost", ["--resubmit-lost"], True, id="resubmit-lost"),
    pytest.param("reassign_orphans", ["--reassign-orphans"], True, id="reassign-orphans"),
    pytest.param("verify", ["--verify"], True, id="verify"),
    pytest.param("call_deadline", ["--call-deadline", "5"], 5.0, id="call-deadline"),
    pytest.param("max_answer_bytes", ["--max-answer-bytes", "999"], 999, id="max-answer-bytes"),
    pytest.param("download_floor", ["--download-floor", "9"], 9.0, id="download-floor"),
    pytest.param("download_rate", ["--download-rate", "99"], 99, id="download-rate"),
    pytest.param("max_asset_bytes", ["--max-asset-bytes", "1234"], 1234, id="max-asset-bytes"),
    # The protocol options are one field: what is given again replaces that part of it only.
    pytest.param("protocol", ["--protocol", "web_version=7.7.0"],
                 ProtocolChoice(profile="document", flags={"da_version": "3.3.30", "web_version": "7.7.0"}),
                 id="protocol"),
    pytest.param("protocol", ["--protocol-profile", "live"],
                 ProtocolChoice(profile="live", flags={"da_version": "3.3.30"}), id="protocol-profile"),
]
PROTOCOL_OPTIONS = {"protocol_profile", "protocol_assignments", "protocol_file"}  # the `protocol` field's options


def test_resume_loads_the_run_whole(recorded_run: Path) -> None:
    stored = RunConfig.from_json(_stored_config(recorded_run / "out"))
    _, loaded = configure_resume(recorded_run / "out", {})
    assert loaded == stored


def test_resume_does_not_repeat_one_run_actions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--retry-failed and the like act on the run they are given to: a resume must not pay for them again."""
    manifest = write_manifest(tmp_path, IMAGES)
    args = ["run", str(manifest), "--out", str(tmp_path / "out"), "--sim", "--no-cache", "--no-report",
            "--poll-interval", "0.01",
            "--quiet", "--retry-failed", "--verify", "--reassign-orphans", "--allow-mixed-origins"]
    assert run_main(args, capsys)[0] == 0
    assert _stored_config(tmp_path / "out")["retry_failed"] is True  # recorded with the run it was given to
    _, resumed = configure_resume(tmp_path / "out", {})
    assert not (resumed.retry_failed or resumed.verify or resumed.reassign_orphans)
    assert resumed.allow_mixed_origins  # a setting, not an action: remembered


@pytest.mark.parametrize(("field", "flag", "value"), FLAGS_GIVEN_AGAIN)
def test_a_flag_given_to_resume_replaces_that_field_only(recorded_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                         field: str, flag: list[str], value: Any) -> None:
    """What `resume` runs with: the stored run, with the one field the flag names replaced."""
    from jimeng_batch import api, cli

    seen: dict[str, RunConfig] = {}

    def capture(manifest: Any, config: RunConfig, **_: Any) -> Any:
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(api, "run_batch", capture)  # `resume` imports it from the API when it runs
    with pytest.raises(SystemExit):
        cli.main(["resume", str(recorded_run / "out"), "--quiet", *flag])
    stored = RunConfig.from_json(_stored_config(recorded_run / "out"))
    assert seen["config"] == dataclasses.replace(stored, **{field: value})


def test_every_run_flag_is_tested_given_again() -> None:
    """Each option of `run` that is a run setting is remembered; the table above covers the ones a resume takes."""
    from jimeng_batch.cli import resume

    names = {param.name for param in resume.params} - {"out_dir", "quiet", "sim_config"}
    assert PROTOCOL_OPTIONS <= names  # --protocol-file given again: test_resume_reads_a_protocol_file_given_again
    assert names - PROTOCOL_OPTIONS | {"protocol"} == {field for field, *_ in (p.values for p in FLAGS_GIVEN_AGAIN)}


def test_a_legacy_run_record_is_resumed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ledger written before runs stored their configuration whole (the `overrides` format) still resumes."""
    manifest = write_manifest(tmp_path, IMAGES)
    code, _, err = run_main(["run", str(manifest), "--out", str(tmp_path / "out"), "--sim", "--no-cache",
                             "--budget", "1", "--quiet", "--poll-interval", "0.01", "--no-report"], capsys)
    assert code == 3, err
    db = sqlite3.connect(tmp_path / "out" / "ledger.sqlite")
    try:
        with db:
            legacy = {"manifest": str(manifest), "sim": True, "use_cache": False, "tokens": [],
                      "overrides": {"poll_interval": 0.01, "budget": 2}, "fail_on": ["failed"],
                      "sheet_options": {"region": "cn", "type": "image", "defaults": {}, "protocol_profile": "live"}}
            db.execute("UPDATE runs SET options = ?", (json.dumps(legacy),))
    finally:
        db.close()
    _, config = configure_resume(tmp_path / "out", {})
    assert (config.sim, config.use_cache, config.poll_interval, config.budget) == (True, False, 0.01, 2)
    assert config.fail_on == frozenset({State.FAILED})
