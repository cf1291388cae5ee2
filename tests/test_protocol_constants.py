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


CAPTURES = Path(__file__).parent / "data" / "captures"
FAKE_SESSION = "FAKE0sessionid0not0a0real0token"


@pytest.mark.parametrize("name", ["generate.har", "generate.curl.txt", "generate.fetch.txt"])
def test_protocol_import_reads_a_capture_and_never_its_cookie(name: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    capture = CAPTURES / name
    assert FAKE_SESSION in capture.read_text(encoding="utf-8")  # the capture has a cookie: it must stay there
    out_file = tmp_path / "protocol.yaml"
    code, out, err = run_main(["protocol", "import", str(capture), "--out", str(out_file)], capsys)
    assert code == 0, err
    written = out_file.read_text(encoding="utf-8")
    for text in (written, out, err):
        assert FAKE_SESSION not in text and "7411111111111111111" not in text  # no cookie, no browser webId
    assert "the Cookie header was not read" in out
    from jimeng_batch.protocol.constants import read_protocol_file

    imported = read_protocol_file(out_file).values
    assert imported["da_version"] == "3.3.9" and imported["app_version"] == "8.4.0"
    assert imported["draft_version"] == "3.3.9" and imported["platform"] == "7"
    assert imported["sec_ch_ua"] == '"Not A(Brand";v="8", "Chromium";v="132", "Google Chrome";v="132"'
    assert imported["accept_language"] == "zh-CN,zh;q=0.9" and "Chrome/132" in imported["user_agent"]
    # The captured draft beside ours: the web app's gen_option (a sibling of generate) is missing from ours, the
    # prompt (non-ASCII, escaped differently by each form) and every parameter are the same; ids are left out.
    lines = out.splitlines()
    assert any(line.split()[:2] == ["missing", "body.draft_content.component_list[0].abilities.gen_option:"]
               for line in lines), out
    assert not any(".prompt" in line or ".seed" in line or line.strip().startswith("different") for line in lines)
    assert not any(line.rstrip(":").endswith((".id", ".created_time_in_ms")) for line in lines)


def test_an_imported_protocol_file_is_used_by_a_manifest_and_by_the_command_line(
        write: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write("p.yaml", 'da_version: "3.3.15"\nweb_version: "7.1.0"\n')
    path = write("m.yaml", MANIFEST + """
    protocol:
      file: p.yaml
      web_version: "7.2.0"
""")
    code, out, _ = run_main(["plan", str(path), "--format", "jsonl"], capsys)
    assert code == 0 and (_query(out)["da_version"], _query(out)["web_version"]) == ("3.3.15", "7.2.0")
    write("q.yaml", 'da_version: "3.3.16"\nweb_version: "7.3.0"\n')
    code, out, _ = run_main(["plan", str(path), "--format", "jsonl", "--protocol-file", "q.yaml",
                             "--protocol", "web_version=7.4.0"], capsys)
    assert code == 0 and (_query(out)["da_version"], _query(out)["web_version"]) == ("3.3.16", "7.4.0")


@pytest.mark.parametrize(("text", "expected"), [
    ("hello", "expected a HAR file"),
    ('{"log": {}}', "expected log.entries"),
    ("curl -H 'a: b'", "names no URL"),
    ('fetch("https://x", not json)', "copy as fetch"),
])
def test_a_bad_capture_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                        expected: str) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text(text, encoding="utf-8")
    code, _, err = run_main(["protocol", "import", str(bad), "--out", str(tmp_path / "p.yaml")], capsys)
    assert code == 2 and "bad.txt" in err and expected in err and "Traceback" not in err
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize(("text", "expected"), [
    ("da_versoin: '3.3.21'\n", "unknown protocol constant"), ("da_version: 3.4\n", "quoted string"),
    ("- a\n", "a mapping of constants"), ("profile: newest\n", "not one of"),
])
def test_a_bad_protocol_file_is_a_clear_error(write: Callable[..., Path], capsys: pytest.CaptureFixture[str],
                                              text: str, expected: str) -> None:
    path = write("m.yaml", MANIFEST)
    write("p.yaml", text)
    code, _, err = run_main(["validate", str(path), "--protocol-file", "p.yaml"], capsys)
    assert code == 2 and "p.yaml" in err and expected in err, err


def test_a_run_stores_its_constants_and_resume_keeps_them(write: Callable[..., Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from jimeng_batch.engine.runner import configure_resume

    path = write("m.yaml", MANIFEST)
    monkeypatch.setenv("JIMENG_PROTOCOL_WEB_VERSION", "7.6.0")
    code, _, err = run_main(["run", str(path), "--sim", "--out", str(tmp_path / "out"), "--quiet", "--no-cache",
                             "--no-report", "--poll-interval", "0.01", "--protocol", "da_version=3.3.30"], capsys)
    assert code == 0, err
    monkeypatch.setenv("JIMENG_PROTOCOL_WEB_VERSION", "7.9.9")  # the shell that resumes changes nothing stored
    manifest, _ = configure_resume(tmp_path / "out", {})
    versions = manifest.settings.protocol
    assert (versions.da_version, versions.web_version) == ("3.3.30", "7.6.0")
    assert manifest.settings.protocol_sources["web_version"] == "environment JIMENG_PROTOCOL_WEB_VERSION"


def test_resume_reads_a_protocol_file_given_again(write: Callable[..., Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from jimeng_batch.engine.runner import configure_resume
    from jimeng_batch.protocol.constants import ProtocolChoice

    path = write("m.yaml", MANIFEST)
    monkeypatch.setenv("JIMENG_PROTOCOL_WEB_VERSION", "7.6.0")
    code, _, err = run_main(["run", str(path), "--sim", "--out", str(tmp_path / "out"), "--quiet", "--no-cache",
                             "--no-report", "--poll-interval", "0.01", "--protocol", "da_version=3.3.30"], capsys)
    assert code == 0, err
    protocol_file = write("p.yaml", 'da_version: "3.3.40"\nweb_version: "7.7.0"\napp_version: "8.5.0"\n')
    manifest, config = configure_resume(tmp_path / "out", {"protocol": ProtocolChoice.build(file=protocol_file)})
    versions = manifest.settings.protocol
    # --protocol (stored) over --protocol-file (given again) over the environment (stored).
    assert (versions.da_version, versions.web_version, versions.app_version) == ("3.3.30", "7.7.0", "8.5.0")
    assert config.protocol.file == protocol_file.resolve()


def test_the_simulator_accepts_the_live_constants_and_a_run_sends_the_ones_given(
        write: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jimeng_batch.sim.config import DEFAULT_MIN_DA_VERSION

    def version(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split("."))

    assert version(catalog.PROTOCOL_PROFILES["live"].da_version) >= version(DEFAULT_MIN_DA_VERSION["live"])
    path = write("m.yaml", MANIFEST)
    sim_config = write("sim.yaml", "profile: live\n")
    code, _, err = run_main(["run", str(path), "--sim", "--sim-config", str(sim_config), "--out", str(tmp_path / "out"),
                             "--quiet", "--no-cache", "--no-report", "--poll-interval", "0.01",
                             "--protocol", "da_version=3.3.7"], capsys)
    assert code == 3 and "stopped early: permission" in err, err  # the stale constant reached the service (3018)
    code, _, err = run_main(["run", str(path), "--sim", "--sim-config", str(sim_config), "--out", str(tmp_path / "ok"),
                             "--quiet", "--no-cache", "--no-report", "--poll-interval", "0.01"], capsys)
    assert code == 0, err  # the live profile's constants and headers pass the live simulator's checks


def test_the_python_api_takes_constants_too(manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import jimeng_batch as jb
    from jimeng_batch.errors import ConfigError

    monkeypatch.setenv("JIMENG_PROTOCOL_WEB_VERSION", "7.6.0")
    record = next(jb.plan(manifest, protocol={"da_version": "3.3.44"}, protocol_profile="document").records())
    query = record["request"]["query"]
    assert (query["da_version"], query["web_version"]) == ("3.3.44", "7.6.0")
    assert json.loads(record["request"]["body"]["draft_content"])["version"] == "3.3.2"  # the document profile's
    with pytest.raises(ConfigError, match="unknown protocol constant"):
        jb.validate(manifest, protocol={"da_versoin": "3.3.44"})


@pytest.mark.parametrize("draft", [
    {"component_list": [{"abilities": {"gen_video": {"text_to_video_params": {
        "model_req_key": "dreamina_ic_generate_video_model_vgfm_3.0", "video_gen_inputs": [{"duration_ms": "x"}]}}}}]},
    {"component_list": [{"abilities": {"generate": {"core_param": {"model": "no_such_model"}}}}]},
    {"component_list": "not a list"},
])
def test_a_draft_of_another_form_is_said_and_the_constants_still_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], draft: dict[str, object]) -> None:
    text = (CAPTURES / "generate.har").read_text(encoding="utf-8")
    har = json.loads(text)
    request = har["log"]["entries"][1]["request"]
    body = json.loads(request["postData"]["text"])
    body["draft_content"] = json.dumps(draft)
    request["postData"]["text"] = json.dumps(body)
    capture = tmp_path / "odd.har"
    capture.write_text(json.dumps(har), encoding="utf-8")
    code, out, err = run_main(["protocol", "import", str(capture), "--out", str(tmp_path / "p.yaml")], capsys)
    assert code == 0, err
    assert "draft not compared:" in out and "Traceback" not in out + err
    assert "da_version: 3.3.9" in (tmp_path / "p.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize("form", ["flag", "environment"])
def test_a_constant_given_reaches_every_call_of_a_yaml_and_a_csv_run(
        form: str, write: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A service that accepts nothing older than da_version 3.3.50 answers every mweb call (submits, polls, the
    upload token of a local reference) without it with 3018: a run that finishes carried it on every one of them,
    for a YAML manifest and a CSV one alike; without the constant the same runs stop at the first call."""
    from conftest import png
    from run_helpers import simulator

    png(tmp_path / "ref.png")
    yaml_manifest = write("m.yaml", """
        jobs:
          - {type: image, prompt: a lighthouse, model: jimeng-4.0}
          - {type: image_to_image, prompt: in winter, model: jimeng-4.0, references: [ref.png]}
    """)
    csv_manifest = tmp_path / "rows.csv"
    csv_manifest.write_text("prompt,model\na kite,jimeng-4.0\na boat,jimeng-4.0\n", encoding="utf-8")
    given = ["--protocol", "da_version=3.3.50"] if form == "flag" else []
    common = ["--quiet", "--no-cache", "--no-report", "--poll-interval", "0.01", "--preflight", "off"]
    monkeypatch.setenv("JIMENG_SESSIONID", "t" * 32)
    with simulator(profile="live", min_da_version="3.3.50") as server:
        for path in (yaml_manifest, csv_manifest):
            out = tmp_path / f"out-{path.stem}"
            monkeypatch.delenv("JIMENG_PROTOCOL_DA_VERSION", raising=False)
            code, _, err = run_main(["run", str(path), "--base-url", server.base_url, "--out", str(out / "without"),
                                     *common], capsys)
            assert code == 3 and "permission" in err, err  # the profile's own da_version is refused
            if form == "environment":
                monkeypatch.setenv("JIMENG_PROTOCOL_DA_VERSION", "3.3.50")
            code, _, err = run_main(["run", str(path), "--base-url", server.base_url, "--out", str(out / "with"),
                                     *common, *given], capsys)
            assert code == 0, err
        stats = server.stats()
    assert stats["uploads"] >= 1  # the upload flow's mweb call (get_upload_token) carried it too
