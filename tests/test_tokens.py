"""Tokens as the open clients write them (protocol reference §1.1, ``[proxyURL@][region-]sessionid``).

Unit tests of the parser (region prefixes, proxies with credentials, IPv6 proxies, malformed entries, duplicates)
and of the per-region base URL; then runs through the command line against two simulators over real HTTP, each
behind a small recording front, and a forwarding proxy written here: each token's calls reach its own region's
host with that region's app id, without the prefix in the cookie, and the proxied token's calls (API, credits,
uploads, downloads) all go through its proxy, the others' none.
"""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import png, run_main
from http_fronts import files_holding, recording_front
from run_helpers import drive, fast_options, simulator, write_manifest

from jimeng_batch.engine.config import RunConfig, base_urls
from jimeng_batch.errors import ConfigError
from jimeng_batch.protocol.tokens import Scrubber, Token, for_region, load_tokens, parse_tokens

SID_A = "a1b2c3d4e5f60718293a4b5c6d7e8f90"  # 32 hex characters, as a real CN sessionid
SID_B = "b2c3d4e5f60718293a4b5c6d7e8f90a1"
SID_C = "c3d4e5f60718293a4b5c6d7e8f90a1b2"
PASSWORD = "pa@ss-w0rd:secret"  # an '@' and a ':' in the proxy's password


# -- the parser ------------------------------------------------------------------------------------------------------


def test_a_plain_token_keeps_its_label_and_account() -> None:
    [token] = parse_tokens(SID_A)
    assert (token.value, token.region, token.proxy) == (SID_A, None, None)
    assert token.label == "a1b2…(32)" and token.account == Token(SID_A).account


@pytest.mark.parametrize("prefix", ["us", "hk", "jp", "sg", "cn", "US"])
def test_a_region_prefix_names_the_region_and_is_not_part_of_the_cookie(prefix: str) -> None:
    [token] = parse_tokens(f"{prefix}-{SID_A}")
    region = prefix.lower()
    assert (token.value, token.region) == (SID_A, region)
    assert token.label == f"{region}:a1b2…(32)" and str(token) == token.label
    assert token.account == Token(SID_A).account  # the same session, whatever the prefix


def test_a_dash_that_is_no_region_prefix_is_part_of_the_token() -> None:
    [token] = parse_tokens("abcd-ef0123456789")
    assert (token.value, token.region) == ("abcd-ef0123456789", None)


def test_a_proxy_with_credentials_is_split_on_the_last_at_and_never_shown() -> None:
    [token] = parse_tokens(f"http://user:{PASSWORD}@proxy.example:8080@us-{SID_B}")
    assert (token.value, token.region) == (SID_B, "us")
    assert token.proxy == "http://user:pa%40ss-w0rd%3Asecret@proxy.example:8080"
    assert token.proxy_label == "http://proxy.example:8080"
    assert token.label == "us:b2c3…(32)"
    assert PASSWORD not in repr(token) and SID_B not in repr(token) and "secret" not in repr(token)
    assert httpx.URL(token.proxy).password == PASSWORD  # what httpx will send, decoded once


def test_ipv6_and_https_proxies() -> None:
    first, second = parse_tokens(f"http://[::1]:3128@{SID_A}\nHTTPS://u:p@[2001:db8::7]:443/@sg-{SID_B}\n")
    assert (first.proxy, first.proxy_label, first.region) == ("http://[::1]:3128", "http://[::1]:3128", None)
    assert second.proxy == "https://u:p@[2001:db8::7]:443" and second.proxy_label == "https://[2001:db8::7]:443"
    assert second.region == "sg"


@pytest.mark.parametrize(("entry", "said"), [
    pytest.param(f"http://proxy.example@{SID_A}", "the proxy names no port", id="no-port"),
    pytest.param(f"http://proxy.example:99999@{SID_A}", "not a number from 1 to 65535", id="port-too-large"),
    pytest.param(f"http://proxy.example:80x@{SID_A}", "not a number from 1 to 65535", id="port-not-a-number"),
    pytest.param(f"http://[::1:3128@{SID_A}", "malformed [IPv6] address", id="ipv6-unclosed"),
    pytest.param(f"ftp://u:{PASSWORD}@proxy.example:21@{SID_A}", "scheme must be one of http, https", id="ftp"),
    pytest.param(f"http://:8080@{SID_A}", "the proxy names no host", id="no-host"),
    pytest.param(f"http://proxy.example:8080/path@{SID_A}", "has a path, query or fragment", id="path"),
    pytest.param(f"user@{SID_A}", "is not a proxy URL", id="no-scheme"),
    pytest.param("http://proxy.example:8080", "without '@' and a session id after it", id="no-token"),
    pytest.param("http://proxy.example:8080@", "no session id after the proxy", id="nothing-after"),
    pytest.param("us-", "no session id after the region prefix", id="only-a-prefix"),
    pytest.param(f"http://proxy.example:8080@us-{SID_A};x", "which a cookie cannot carry", id="semicolon"),
])
def test_a_malformed_entry_names_the_file_and_line_never_the_token(tmp_path: Path, entry: str, said: str) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(f"# the pool\n{SID_C}\n\n{entry}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_tokens(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: line 4") and said in message, message
    assert SID_A not in message and SID_C not in message and PASSWORD not in message and "secret" not in message


def test_the_environment_names_the_entry_by_its_number() -> None:
    with pytest.raises(ConfigError, match=r"^JIMENG_SESSIONID: token 2: the proxy names no port"):
        load_tokens(None, {"JIMENG_SESSIONID": f"{SID_A}, http://h@{SID_B}"})


def test_duplicates() -> None:
    same = parse_tokens(f"us-{SID_A}\nus-{SID_A}\n{SID_B},{SID_B}\n")
    assert [(t.value, t.region) for t in same] == [(SID_A, "us"), (SID_B, None)]
    with pytest.raises(ConfigError) as raised:
        parse_tokens(f"{SID_C}\nus-{SID_A}\nhttp://h:1@us-{SID_A}\n", source="pool")
    assert str(raised.value).startswith("pool: line 3: the session id of line 2 (us:a1b2…(32)) again")
    assert SID_A not in str(raised.value)
    # Same mask, different sessions: each label names one token.
    twins = parse_tokens(f"us-{SID_A}\nus-{SID_A[:4]}{SID_B[4:]}\n")
    assert [t.label for t in twins] == ["us:a1b2…(32)", "us:a1b2…(32)#2"]


def test_the_scrubber_takes_out_the_proxy_credentials() -> None:
    [token] = parse_tokens(f"http://user:{PASSWORD}@proxy.example:8080@us-{SID_B}")
    scrub = Scrubber([token])
    said = scrub(f"proxy error at {token.proxy}: 407 for {PASSWORD} with sessionid={SID_B}")
    assert PASSWORD not in said and "pa%40ss" not in said and SID_B not in said
    assert "http://proxy.example:8080" in said and "us:b2c3…(32)" in said


def test_a_region_keeps_its_own_tokens_and_those_without_a_prefix() -> None:
    tokens = parse_tokens(f"us-{SID_A}\n{SID_B}\ncn-{SID_C}\n")
    usable, others = for_region(tokens, "us")
    assert [t.value for t in usable] == [SID_A, SID_B] and [t.value for t in others] == [SID_C]


def test_a_base_url_for_every_region_or_one_per_region() -> None:
    assert base_urls("http://gw:1") == {"*": "http://gw:1"}
    assert base_urls("us=http://gw:1, CN = http://gw:2/") == {"us": "http://gw:1", "cn": "http://gw:2/"}
    mapped = RunConfig(base_url="us=http://gw:1,cn=http://gw:2")
    assert (mapped.region_base_url("us"), mapped.region_base_url("cn"), mapped.region_base_url("sg")) == (
        "http://gw:1", "http://gw:2", None)
    assert RunConfig(base_url="http://gw:1").region_base_url("sg") == "http://gw:1"
    assert RunConfig().region_base_url("us") is None
    for value, said in [("us=http://gw:1,xx=http://gw:2", "entry 2 names the region 'xx'; regions: cn, us"),
                        ("us=http://gw:1,http://gw:2", "entry 2 'http://gw:2' is not REGION=URL"),
                        ("us=http://gw:1,us=http://gw:2", "names the region us a second time"),
                        ("us=gw:1", "entry us= 'gw:1' is not a usable address")]:
        with pytest.raises(ConfigError) as raised:
            RunConfig(base_url=value)
        assert "base_url (--base-url or JIMENG_BASE_URL)" in str(raised.value) and said in str(raised.value), (
            str(raised.value))


# -- runs over real HTTP ---------------------------------------------------------------------------------------------

MANIFEST = """
    region: {region}
    jobs:
      - name: pictures
        type: image
        model: jimeng-4.0
        resolution: 1k
        prompt: [a red kite, a blue boat, a green hill, a white cat, a black dog, a grey owl]
      - name: winter
        type: image_to_image
        model: jimeng-4.0
        resolution: 1k
        prompt: [make it winter, make it night]
        references: [ref.png]
"""
COMMON = ["--poll-interval", "0.02", "--quiet", "--no-cache", "--concurrency", "1", "--no-report"]


@pytest.mark.usefixtures("clean_env")
def test_each_token_goes_to_its_regions_host_and_the_proxied_one_through_its_proxy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    png(tmp_path / "ref.png")
    us_manifest = write_manifest(tmp_path, MANIFEST.format(region="us"), "us.yaml")
    cn_manifest = write_manifest(tmp_path, MANIFEST.format(region="cn"), "cn.yaml")
    with simulator() as sim_us, simulator() as sim_cn, \
            recording_front(sim_us.base_url) as (us_host, at_us), \
            recording_front(sim_cn.base_url) as (cn_host, at_cn), \
            recording_front(via="test-proxy") as (proxy, at_proxy):
        port = urlsplit(proxy).port
        pool = tmp_path / "tokens.txt"
        pool.write_text(f"us-{SID_A}\nhttp://user:{PASSWORD}@127.0.0.1:{port}@us-{SID_B}\ncn-{SID_C}\n",
                        encoding="utf-8")
        routes = ["--token-file", str(pool), "--base-url", f"us={us_host},cn={cn_host}"]
        code, _, err = run_main(["run", str(us_manifest), "--out", "out-us", *routes, *COMMON], capsys)
        assert code == 0, err
        assert "token cn:c3d4…(32) is for region cn; this manifest's region is us: not used" in err
        us_calls, proxy_calls = list(at_us), list(at_proxy)
        assert at_cn == []  # the cn token's region is not this run's: nothing was sent with it, nor to its host

        code, _, err = run_main(["run", str(cn_manifest), "--out", "out-cn", *routes, *COMMON], capsys)
        assert code == 0, err
        assert "token us:a1b2…(32) is for region us" in err and "token us:b2c3…(32) is for region us" in err
        assert at_us == us_calls and at_proxy == proxy_calls  # the us tokens were not used
        sim_us_stats, sim_cn_stats = sim_us.stats(), sim_cn.stats()

    # The us host saw the us tokens only, without their prefix, with the international app id and region US.
    api = [seen for seen in us_calls if seen.cookie]
    assert {seen.session() for seen in api} == {SID_A, SID_B}
    assert all("us-" not in seen.cookie and SID_C not in seen.cookie for seen in api)
    mweb = [seen for seen in api if urlsplit(seen.url).path.startswith("/mweb/")]
    assert mweb and all(seen.query["aid"] == "513641" and seen.query["region"] == "US" for seen in mweb)
    assert all(seen.headers["appid"] == "513641" for seen in api)
    assert {urlsplit(seen.url).path for seen in api if seen.session() == SID_B} >= {
        "/mweb/v1/aigc_draft/generate", "/mweb/v1/get_history_by_ids", "/mweb/v1/get_upload_token",
        "/commerce/v1/benefits/user_credit"}
    # Every call of the proxied token went through the proxy, and no call of another token did.
    assert all(("via" in seen.headers) == (seen.session() == SID_B) for seen in api)
    assert [seen.session() for seen in proxy_calls if seen.cookie] == [
        seen.session() for seen in us_calls if "via" in seen.headers and seen.cookie]
    assert all(seen.url.startswith(us_host + "/") for seen in proxy_calls)  # absolute-form, to the us host
    expected = "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    assert {seen.headers.get("proxy-authorization") for seen in proxy_calls} == {expected}
    # Uploads to ImageX and the downloads of its jobs' files went through it too (no cookie on those).
    uploads_via_proxy = [s for s in proxy_calls if "Action=" in s.url or "/upload/" in s.url]
    assert uploads_via_proxy
    downloads = [seen for seen in us_calls if seen.method == "GET" and "/_sim/assets/" in seen.url]
    assert len(downloads) == sim_us_stats["downloads"] == 8
    assert 0 < sum("via" in seen.headers for seen in downloads) < 8
    # The cn host saw the cn token only, with the CN app id.
    cn_api = [seen for seen in at_cn if seen.cookie]
    assert {seen.session() for seen in cn_api} == {SID_C} and sim_cn_stats["downloads"] == 8
    assert all(seen.query["aid"] == "513695" for seen in cn_api if urlsplit(seen.url).path.startswith("/mweb/"))
    # The ledger records where each request was sent, and no file holds a session id or the proxy's password.
    import sqlite3

    for folder, host in (("out-us", us_host), ("out-cn", cn_host)):
        db = sqlite3.connect(tmp_path / folder / "ledger.sqlite")
        try:
            origins = {row[0] for row in db.execute("SELECT origin FROM requests")}
            labels = {row[0] for row in db.execute("SELECT token FROM requests")}
        finally:
            db.close()
        assert origins == {host}
        assert labels == ({"us:a1b2…(32)", "us:b2c3…(32)"} if folder == "out-us" else {"cn:c3d4…(32)"})
        for secret in (SID_A, SID_B, SID_C, PASSWORD, "pa%40ss"):
            assert files_holding(tmp_path / folder, secret) == []


@pytest.mark.usefixtures("clean_env")
def test_a_pool_without_a_token_of_the_manifests_region_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path, "region: hk\njobs: [{type: image, resolution: 1k, prompt: a}]\n")
    monkeypatch.setenv("JIMENG_SESSIONID", f"us-{SID_A},http://u:{PASSWORD}@127.0.0.1:9@cn-{SID_B}")
    code, out, err = run_main(["run", str(manifest), "--base-url", "http://127.0.0.1:9", "--quiet"], capsys)
    assert code == 2, err
    assert "JIMENG_SESSIONID: no token for region hk, the manifest's region: every token's prefix names another " \
           "region (cn, us)" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    for secret in (SID_A, SID_B, PASSWORD):
        assert secret not in out + err


@pytest.mark.usefixtures("clean_env")
def test_a_malformed_proxy_on_the_command_line_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path, "jobs: [{type: image, resolution: 1k, prompt: a}]\n")
    pool = tmp_path / "tokens.txt"
    pool.write_text(f"{SID_A}\nsocks4://u:{PASSWORD}@127.0.0.1:1080@{SID_B}\n", encoding="utf-8")
    code, out, err = run_main(["run", str(manifest), "--token-file", str(pool), "--base-url",
                               "http://127.0.0.1:9", "--quiet"], capsys)
    assert code == 2, err
    assert f"{pool}: line 2: the proxy's scheme must be one of http, https" in err and "Traceback" not in err
    for secret in (SID_A, SID_B, PASSWORD):
        assert secret not in out + err


@pytest.mark.usefixtures("clean_env")
def test_one_base_url_still_takes_every_call_and_the_issues_tokens_are_understood(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's two tokens: ``us-…`` was sent as the cookie verbatim, ``http://proxy:port@…`` likewise and
    direct. With one ``--base-url`` (as before), every call goes to it."""
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path, "region: us\njobs: [{type: image, resolution: 1k, prompt: [a, b, c, d]}]\n")
    with simulator() as sim, recording_front(sim.base_url) as (host, at_host), \
            recording_front(via="test-proxy") as (proxy, at_proxy):
        monkeypatch.setenv("JIMENG_SESSIONID", f"us-{SID_A},{proxy}@{SID_B}")
        monkeypatch.setenv("JIMENG_BASE_URL", host)
        code, _, err = run_main(["run", str(manifest), "--out", "out", *COMMON], capsys)
    assert code == 0, err
    sessions = {seen.session() for seen in at_host if seen.cookie}
    assert sessions == {SID_A, SID_B}
    assert {seen.session() for seen in at_proxy if seen.cookie} == {SID_B}
    assert all(("via" in seen.headers) == (seen.session() == SID_B) for seen in at_host if seen.cookie)


def test_a_request_is_followed_only_where_it_was_sent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The ledger's origin says where each request was sent; a run that sends elsewhere (another region's hosts,
    another base URL, let into the folder by --allow-mixed-origins) leaves it for a run that sends there."""
    manifest = write_manifest(tmp_path, "jobs: [{type: image, resolution: 1k, prompt: [a, b]}]\n")
    out = tmp_path / "out"
    with simulator() as first, simulator() as second:
        sent = drive(manifest, first, out=out, options=fast_options(download=False))
        assert sent.result.counts == {"succeeded": 2} and set(sent.column("origin").values()) == {first.base_url}
        sent.ledger.close()
        elsewhere = drive(manifest, second, out=out)
        elsewhere.ledger.close()
        assert elsewhere.result.counts == {"succeeded": 2}
        assert second.stats()["polls"] == 0 and second.stats()["submits_by_submit_id"] == {}
        assert f"2 request(s) sent to {first.base_url} are left as they are" in capsys.readouterr().err
        back = drive(manifest, first, out=out)
        back.ledger.close()
    assert back.result.counts == {"downloaded": 2}


@pytest.mark.usefixtures("clean_env")
def test_a_proxy_refusing_its_credentials_takes_its_token_out_and_fails_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A 407 comes from the token's own proxy, never from the service: nothing was sent, so no request fails; the
    token is quarantined for the run and the others do the work."""
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path, "jobs: [{type: image, resolution: 1k, prompt: [a, b, c, d]}]\n")
    with simulator() as sim, recording_front(refuse=407) as (proxy, at_proxy):
        port = urlsplit(proxy).port
        monkeypatch.setenv("JIMENG_SESSIONID", f"http://user:{PASSWORD}@127.0.0.1:{port}@{SID_B},{SID_A}")
        code, _, err = run_main(["run", str(manifest), "--out", "out", "--base-url", sim.base_url, *COMMON], capsys)
    assert code == 0, err
    assert at_proxy and all(seen.session() == SID_B for seen in at_proxy if seen.cookie)
    import sqlite3

    db = sqlite3.connect(tmp_path / "out" / "ledger.sqlite")
    try:
        rows = db.execute("SELECT state, token FROM requests").fetchall()
    finally:
        db.close()
    assert rows and all(row == ("downloaded", "a1b2…(32)") for row in rows), rows
    log = (tmp_path / "out" / "run.log").read_text(encoding="utf-8")
    assert "token b2c3…(32) quarantined: proxy authentication required" in log
    assert PASSWORD not in log + err and SID_B not in log + err


def test_a_proxy_that_cannot_be_reached_is_named_without_its_credentials() -> None:
    import asyncio
    import socket

    from jimeng_batch.errors import RetryableAPIError
    from jimeng_batch.protocol import catalog
    from jimeng_batch.protocol.client import JimengClient

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    [token] = parse_tokens(f"http://user:{PASSWORD}@127.0.0.1:{port}@{SID_A}")

    async def main() -> str:
        async with JimengClient(region=catalog.REGIONS["cn"], versions=catalog.PROTOCOL_PROFILES["live"],
                                web_id="1", base_url="http://127.0.0.1:9", proxy=token.proxy) as client:
            with pytest.raises(RetryableAPIError) as raised:
                await client.user_credit(token)
            return str(raised.value)

    message = asyncio.run(main())
    assert f"could not connect (nothing was sent) through the proxy http://127.0.0.1:{port}" in message, message
    assert PASSWORD not in message and "pa%40ss" not in message and SID_A not in message


def test_a_token_file_that_is_not_text_is_said_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tokens.bin"
    path.write_bytes(SID_A.encode() + b"\n\xd0\x00\xff" + SID_C.encode())
    with pytest.raises(ConfigError) as raised:
        load_tokens(path)
    message = str(raised.value)
    assert message == (f"{path}: not UTF-8 text (byte 33 of the file); a token file is text, one session token "
                       "per line")
    code, _, err = run_main(["credits", "--token-file", str(path)], capsys)
    assert code == 2 and "not UTF-8 text" in err and "internal error" not in err and SID_C not in err


def test_a_token_file_is_read_no_further_than_a_token_file_is_long(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    path.write_text(f"{SID_A}\n" * 40_000, encoding="utf-8")  # 1.3 MiB: the wrong file, say a log
    with pytest.raises(ConfigError, match=r"over 1024 KiB, more than a token file holds") as raised:
        load_tokens(path)
    assert SID_A not in str(raised.value)


def test_a_token_file_saved_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(f"{SID_A}\n", encoding="utf-8-sig")  # as Notepad saves "UTF-8 with BOM"
    assert [token.value for token in load_tokens(path)] == [SID_A]
