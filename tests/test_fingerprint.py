"""A fingerprint per installation, fixed per token: webId, _tea_web_id and uid_tt; and the browser headers."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import httpx
import pytest

from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.client import JimengClient
from jimeng_batch.protocol.fingerprint import Fingerprint, config_dir, load_fingerprint
from jimeng_batch.protocol.tokens import Token

TOKEN_A = Token("aaaa0123456789abcdef0123456789ef")
TOKEN_B = Token("bbbb0123456789abcdef0123456789ef")


def _sent(fingerprint: Fingerprint | None, tokens: list[Token], region: str = "cn",
          versions: catalog.ProtocolVersions | None = None) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ret": "0", "data": {}})

    async def main() -> None:
        async with JimengClient(region=catalog.REGIONS[region], versions=versions or catalog.PROTOCOL_PROFILES["live"],
                                web_id="7000000000000000000", fingerprint=fingerprint,
                                transport=httpx.MockTransport(handler)) as client:
            for token in tokens:
                await client.call("/mweb/v1/get_history_by_ids", {"history_ids": []}, token)

    asyncio.run(main())
    return seen


def _cookie(request: httpx.Request, name: str) -> str:
    for part in request.headers["cookie"].split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    raise AssertionError(f"no {name} in the cookie")


def _identity(request: httpx.Request) -> tuple[str, str, str]:
    return request.url.params["webId"], _cookie(request, "_tea_web_id"), _cookie(request, "uid_tt")


def test_the_test_suite_never_writes_to_the_real_home() -> None:
    assert Path(os.environ["JIMENG_BATCH_CONFIG_DIR"]).resolve() != (Path.home() / ".config" / "jimeng-batch")
    assert config_dir(os.environ) == Path(os.environ["JIMENG_BATCH_CONFIG_DIR"])


def test_two_installations_get_different_web_ids(tmp_path: Path) -> None:
    first = load_fingerprint({"JIMENG_BATCH_CONFIG_DIR": str(tmp_path / "one")})
    second = load_fingerprint({"JIMENG_BATCH_CONFIG_DIR": str(tmp_path / "two")})
    (a1,) = _sent(first, [TOKEN_A])
    (a2,) = _sent(second, [TOKEN_A])
    assert _identity(a1)[0] != _identity(a2)[0]
    assert _identity(a1)[2] != _identity(a2)[2]


def test_one_installation_keeps_its_web_id_across_runs(tmp_path: Path) -> None:
    environ = {"JIMENG_BATCH_CONFIG_DIR": str(tmp_path / "cfg")}
    first = _sent(load_fingerprint(environ), [TOKEN_A, TOKEN_A])
    again = _sent(load_fingerprint(environ), [TOKEN_A])
    assert _identity(first[0]) == _identity(first[1]) == _identity(again[0])
    web_id, tea_web_id, uid = _identity(first[0])
    assert web_id == tea_web_id and len(web_id) == 19 and web_id.isdigit() and web_id != "7000000000000000000"
    assert len(uid) == 32 and int(uid, 16) >= 0
    assert _cookie(first[0], "uid_tt_ss") == uid
    files = list((tmp_path / "cfg").iterdir())
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert TOKEN_A.value not in files[0].read_text()


def test_two_tokens_of_one_installation_get_different_ones(tmp_path: Path) -> None:
    a, b = _sent(load_fingerprint({"JIMENG_BATCH_CONFIG_DIR": str(tmp_path)}), [TOKEN_A, TOKEN_B])
    assert _identity(a)[0] != _identity(b)[0] and _identity(a)[2] != _identity(b)[2]


def test_a_web_id_given_is_the_web_id_of_every_token(tmp_path: Path) -> None:
    fingerprint = load_fingerprint({"JIMENG_BATCH_CONFIG_DIR": str(tmp_path)}, web_id="7123456789012345678")
    a, b = _sent(fingerprint, [TOKEN_A, TOKEN_B])
    assert _identity(a)[:2] == _identity(b)[:2] == ("7123456789012345678", "7123456789012345678")
    assert _identity(a)[2] != _identity(b)[2]


def test_jimeng_web_id_names_the_web_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from conftest import run_main

    manifest = tmp_path / "m.yaml"
    manifest.write_text("jobs:\n  - {type: image, prompt: a lighthouse}\n", encoding="utf-8")
    monkeypatch.setenv("JIMENG_WEB_ID", "7123456789012345678")
    code, out, _ = run_main(["plan", str(manifest), "--format", "jsonl"], capsys)
    assert code == 0 and json.loads(out.splitlines()[0])["request"]["query"]["webId"] == "7123456789012345678"
    code, out, _ = run_main(["protocol", "show", "--json"], capsys)
    assert json.loads(out)["constants"]["web_id"]["source"] == "environment JIMENG_WEB_ID"


@pytest.mark.parametrize("value", ["12", "abc", "7123456789012345678x"])
def test_a_bad_jimeng_web_id_is_a_clear_error(tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import run_main

    from jimeng_batch.errors import ConfigError

    with pytest.raises(ConfigError, match="web_id"):
        load_fingerprint({"JIMENG_BATCH_CONFIG_DIR": str(tmp_path)}, web_id=value)
    monkeypatch.setenv("JIMENG_WEB_ID", value)
    code, _, err = run_main(["protocol", "show"], capsys)
    assert code == 2 and "JIMENG_WEB_ID" in err and "Traceback" not in err


def test_a_damaged_installation_file_is_a_clear_error(tmp_path: Path) -> None:
    from jimeng_batch.errors import ConfigError

    load_fingerprint({"JIMENG_BATCH_CONFIG_DIR": str(tmp_path)})
    (file,) = tmp_path.iterdir()
    file.write_text("{not json")
    with pytest.raises(ConfigError, match=file.name):
        load_fingerprint({"JIMENG_BATCH_CONFIG_DIR": str(tmp_path)})


def test_international_requests_still_send_no_web_id(tmp_path: Path) -> None:
    (request,) = _sent(load_fingerprint({"JIMENG_BATCH_CONFIG_DIR": str(tmp_path)}), [TOKEN_A], region="us")
    assert "webId" not in request.url.params


def test_the_browser_headers_are_sent(tmp_path: Path) -> None:
    (cn,) = _sent(None, [TOKEN_A])
    (jp,) = _sent(None, [TOKEN_A], region="jp")
    live = catalog.PROTOCOL_PROFILES["live"]
    for name in ("user-agent", "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform", "sec-fetch-site",
                 "sec-fetch-mode", "sec-fetch-dest", "accept-language", "accept-encoding", "cache-control",
                 "pragma", "priority"):
        assert cn.headers.get(name), name
    assert cn.headers["sec-ch-ua"] == live.sec_ch_ua and "Chromium" in cn.headers["sec-ch-ua"]
    assert cn.headers["user-agent"] == live.user_agent
    assert cn.headers["accept-language"].startswith("zh-CN")
    assert jp.headers["accept-language"].startswith("ja")
    changed = live.with_overrides({"user_agent": "UA/1", "accept_language": "fr-FR"})
    (custom,) = _sent(None, [TOKEN_A], versions=changed)
    assert (custom.headers["user-agent"], custom.headers["accept-language"]) == ("UA/1", "fr-FR")


def test_a_submit_carries_the_tokens_web_id_not_the_plans_stand_in(tmp_path: Path) -> None:
    """The plan's query holds a stand-in webId (plans do not depend on the installation); the client sends the
    token's own."""
    fingerprint = load_fingerprint({"JIMENG_BATCH_CONFIG_DIR": str(tmp_path)})
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ret": "0", "data": {}})

    async def main() -> None:
        async with JimengClient(region=catalog.REGIONS["cn"], versions=catalog.PROTOCOL_PROFILES["live"],
                                web_id="7000000000000000000", fingerprint=fingerprint,
                                transport=httpx.MockTransport(handler)) as client:
            await client.call("/mweb/v1/aigc_draft/generate", {}, TOKEN_A,
                              query={"aid": "513695", "webId": "7000000000000000000", "da_version": "3.3.21"})

    asyncio.run(main())
    assert seen[0].url.params["webId"] == fingerprint.identity(TOKEN_A.account).web_id != "7000000000000000000"


def test_plans_do_not_depend_on_the_installation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import run_main

    manifest = tmp_path / "m.yaml"
    manifest.write_text("jobs:\n  - {type: image, prompt: a lighthouse}\n", encoding="utf-8")
    plans = []
    for name in ("one", "two"):
        monkeypatch.setenv("JIMENG_BATCH_CONFIG_DIR", str(tmp_path / name))
        load_fingerprint(os.environ)  # each installation has drawn its own
        code, out, _ = run_main(["plan", str(manifest), "--format", "jsonl"], capsys)
        assert code == 0
        plans.append(out)
    assert plans[0] == plans[1]


def test_a_config_folder_that_cannot_be_used_is_a_clear_error(tmp_path: Path) -> None:
    from jimeng_batch.errors import ConfigError

    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"installation\.json") as raised:
        load_fingerprint({"JIMENG_BATCH_CONFIG_DIR": str(tmp_path / "file" / "below")})
    assert raised.value.exit_code == 2
