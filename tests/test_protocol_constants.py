"""Protocol constants a user can change without a release: flags, environment, files, manifests; and `protocol show`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_main

from jimeng_batch.protocol import catalog

MANIFEST = """
    version: 1
    jobs:
      - type: image
        prompt: a lighthouse
        model: jimeng-4.0
"""


def _first_request(out: str) -> dict[str, object]:
    record = json.loads(out.splitlines()[0])
    request = record["request"]
    assert isinstance(request, dict)
    return request


def _query(out: str) -> dict[str, str]:
    query = _first_request(out)["query"]
    assert isinstance(query, dict)
    return query


def _draft_version(out: str) -> str:
    body = _first_request(out)["body"]
    assert isinstance(body, dict)
    return str(json.loads(body["draft_content"])["version"])


@pytest.fixture
def manifest(write: Callable[..., Path]) -> Path:
    return write("m.yaml", MANIFEST)


def test_protocol_profile_applies_to_a_yaml_manifest(manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["plan", str(manifest), "--format", "jsonl", "--protocol-profile", "document"], capsys)
    assert code == 0
    assert _query(out)["da_version"] == catalog.PROTOCOL_PROFILES["document"].da_version
    assert _draft_version(out) == catalog.PROTOCOL_PROFILES["document"].draft_version


def test_one_constant_from_the_command_line(manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["plan", str(manifest), "--format", "jsonl", "--protocol", "da_version=3.3.99",
                             "--protocol", "web_version=7.6.0"], capsys)
    assert code == 0
    assert (_query(out)["da_version"], _query(out)["web_version"]) == ("3.3.99", "7.6.0")


def test_one_constant_from_the_environment(manifest: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIMENG_PROTOCOL_DA_VERSION", "3.3.77")
    code, out, _ = run_main(["plan", str(manifest), "--format", "jsonl"], capsys)
    assert code == 0 and _query(out)["da_version"] == "3.3.77"


def test_precedence_flag_over_environment_over_manifest_over_profile(
        write: Callable[..., Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = write("m.yaml", MANIFEST + """
    protocol:
      da_version: "3.3.10"
      web_version: "7.0.1"
      app_version: "8.5.0"
""")
    monkeypatch.setenv("JIMENG_PROTOCOL_DA_VERSION", "3.3.20")
    monkeypatch.setenv("JIMENG_PROTOCOL_WEB_VERSION", "7.0.2")
    code, out, _ = run_main(["plan", str(path), "--format", "jsonl", "--protocol", "da_version=3.3.30"], capsys)
    assert code == 0
    query = _query(out)
    assert (query["da_version"], query["web_version"]) == ("3.3.30", "7.0.2")
    code, out, _ = run_main(["protocol", "show", str(path), "--protocol", "da_version=3.3.30", "--json"], capsys)
    assert code == 0
    shown = json.loads(out)
    sources = {key: entry["source"] for key, entry in shown["constants"].items()}
    assert sources["da_version"] == "flag --protocol"
    assert sources["web_version"] == "environment JIMENG_PROTOCOL_WEB_VERSION"
    assert sources["app_version"] == "manifest protocol:"
    assert sources["os"] == "profile live"
    assert shown["constants"]["app_version"]["value"] == "8.5.0"


@pytest.mark.parametrize("args", [["--protocol", "da_versoin=3.3.21"], ["--protocol", "da_version"],
                                  ["--protocol", "da_version=not a version"]])
def test_bad_constants_on_the_command_line_are_exit_2(manifest: Path, capsys: pytest.CaptureFixture[str],
                                                      args: list[str]) -> None:
    code, out, err = run_main(["plan", str(manifest), *args], capsys)
    assert code == 2, (out, err)
    assert "da_vers" in err and "Traceback" not in err
    if "versoin" in args[1]:
        assert "allowed" in err and "web_version" in err


def test_an_unknown_environment_constant_is_exit_2(manifest: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIMENG_PROTOCOL_DA_VERISON", "3.3.21")
    code, _, err = run_main(["validate", str(manifest)], capsys)
    assert code == 2 and "JIMENG_PROTOCOL_DA_VERISON" in err and "da_version" in err


def test_the_live_profile_carries_the_newest_da_version() -> None:
    assert catalog.PROTOCOL_PROFILES["live"].da_version == "3.3.21"
    assert catalog.PROTOCOL_PROFILES["document"].da_version == "3.3.2"
