"""Shards: `--shard K/N` parsing, a stable partition of the requests by key, and `plan --shard`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import run_main
from run_helpers import write_manifest

from jimeng_batch.errors import ConfigError
from jimeng_batch.intake.manifest import load_manifest
from jimeng_batch.intake.plan import iter_distinct
from jimeng_batch.intake.sharding import Shard, parse_shard
from jimeng_batch.protocol.request_spec import RequestSpec

ROWS = """
    jobs:
      - {type: image, resolution: 1k, prompt: "a {thing}", vars: {thing: [%s]}}
"""


def keys(path: Path, shard: Shard | None = None) -> list[str]:
    return [item.key for item in iter_distinct(load_manifest(path), shard) if isinstance(item, RequestSpec)]


@pytest.mark.parametrize(("text", "shard"), [
    pytest.param("1/1", Shard(1, 1), id="one"),
    pytest.param("2/3", Shard(2, 3), id="middle"),
    pytest.param(" 3 / 3 ", Shard(3, 3), id="spaces"),
])
def test_shard_specs(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard
    assert str(shard) == text.replace(" ", "")


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("3", "is not K/N", id="no-slash"),
    pytest.param("a/b", "is not K/N", id="not-numbers"),
    pytest.param("-1/3", "is not K/N", id="negative"),
    pytest.param("0/3", "between 1 and 3", id="zero"),
    pytest.param("4/3", "between 1 and 3", id="past-the-end"),
    pytest.param("1/0", "between 1 and 10000", id="no-shards"),
])
def test_bad_shard_specs(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_shard(text)
    assert info.value.exit_code == 2


def test_shards_partition_the_requests(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, ROWS % ", ".join(f"t{i}" for i in range(40)))
    everything = keys(path)
    parts = [keys(path, Shard(k, 3)) for k in (1, 2, 3)]
    assert sorted(key for part in parts for key in part) == sorted(everything)
    assert all(parts), "forty keys and not one in some shard: the hash is not spreading them"
    for part in parts:  # each shard keeps plan order
        assert part == [key for key in everything if key in set(part)]


def test_adding_rows_moves_no_request_to_another_shard(tmp_path: Path) -> None:
    before = write_manifest(tmp_path, ROWS % ", ".join(f"t{i}" for i in range(20)), "a.yaml")
    after = write_manifest(tmp_path, ROWS % ", ".join(["new0", *(f"t{i}" for i in range(20)), "new1"]), "b.yaml")
    for k in (1, 2, 3, 4):
        old, new = set(keys(before, Shard(k, 4))), set(keys(after, Shard(k, 4)))
        assert old <= new
        assert not old & set().union(*(keys(after, Shard(j, 4)) for j in (1, 2, 3, 4) if j != k))


def test_plan_shows_a_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_manifest(tmp_path, ROWS % ", ".join(f"t{i}" for i in range(12)))
    totals = []
    for k in (1, 2):
        code, out, _ = run_main(["plan", str(path), "--shard", f"{k}/2", "--format", "json"], capsys)
        assert code == 0
        summary = json.loads(out)
        assert summary["shard"] == f"{k}/2"
        totals.append(summary["distinct_requests"])
        code, out, _ = run_main(["plan", str(path), "--shard", f"{k}/2", "--format", "jsonl"], capsys)
        assert [json.loads(line)["key"] for line in out.splitlines()] == keys(path, Shard(k, 2))
    assert sum(totals) == 12
    code, out, _ = run_main(["plan", str(path), "--shard", "1/2"], capsys)
    assert code == 0 and f"{totals[0]} distinct request(s)" in out


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_bad_shard_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    path = write_manifest(tmp_path, ROWS % "x")
    extra = ["--sim", "--out", str(tmp_path / "out")] if command == "run" else []
    code, _, err = run_main([command, str(path), "--shard", "5/4", *extra], capsys)
    assert code == 2 and "--shard: the shard must be between 1 and 4, not 5" in err
    assert not (tmp_path / "out").exists()


def test_a_shard_is_remembered_by_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_manifest(tmp_path, ROWS % ", ".join(f"t{i}" for i in range(6)))
    common = ["--poll-interval", "0.01", "--quiet", "--no-cache", "--no-report"]
    code, _, err = run_main(["run", str(path), "--sim", "--out", "out", "--shard", "2/2", *common], capsys)
    assert code == 0, err
    code, _, err = run_main(["resume", "out", *common], capsys)
    assert code == 0, err
    db = sqlite3.connect(tmp_path / "out" / "ledger.sqlite")
    try:
        stored = [row[0] for row in db.execute("SELECT key FROM requests ORDER BY ord")]
        options = db.execute("SELECT options FROM runs ORDER BY id")
        shards = [json.loads(row[0])["config"].get("shard") for row in options]
    finally:
        db.close()
    assert stored == keys(path, Shard(2, 2)) and shards == ["2/2", "2/2"]
