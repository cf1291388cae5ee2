"""Reliability: session tokens never reach a file, a log line, an error message or a status report.

Runs go through the command line in a subprocess, with tokens from ``JIMENG_SESSIONID`` (one, or a pool of two) and
from ``--token-file``, against a simulator on 127.0.0.1 named with ``--base-url``. They include the unhappy paths,
where messages are most likely to quote what was sent: a token refused with a login error, content filtered
requests, credits running out, a permission stop, a host that refuses connections, and tokens a cookie cannot
carry. Afterwards every file of every output folder (the ledger, its WAL, the log, the assets) and of the result
cache, byte for byte, and everything the commands printed, are searched for each token in every encoding a leak
could take: raw, URL-encoded, base64, hex, UTF-16, and any 12-character piece of it beyond the four characters its
mask shows.
"""

from __future__ import annotations

import base64
import socket
import urllib.parse
from pathlib import Path

import pytest
from conftest import png
from reliability_helpers import cli_env, run_cli_process
from run_helpers import simulator, write_manifest

from jimeng_batch.protocol.tokens import mask

pytestmark = pytest.mark.slow

# Base64-like, as real session cookies may be, so that URL-encoding and the raw form differ.
TOKEN_A = "Zx9qS3cr3tA+tok/en=0d1e2f3a4b5c6d7e8f"
TOKEN_B = "Yw8pS3cr3tB+tok/en=9c8b7a6f5e4d3c2b1a"
MANIFEST = """
    jobs:
      - name: pictures
        type: image
        resolution: 1k
        prompt: [a red kite, a blue boat, a forbidden thing]
      - name: blend
        type: image_to_image
        resolution: 1k
        prompt: make it winter
        references: [ref.png]
"""
COMMON = ["--poll-interval", "0.02", "--quiet", "--preflight", "warn", "--max-retries", "2"]


def leaked_forms(token: str) -> dict[str, bytes]:
    """Every form in which ``token`` (or a telling piece of it) could show up in bytes."""
    raw = token.encode()
    forms = {
        "raw": raw,
        "url-encoded": urllib.parse.quote(token, safe="").encode(),
        "url-encoded (plus)": urllib.parse.quote_plus(token).encode(),
        "base64": base64.b64encode(raw).rstrip(b"="),
        "urlsafe base64": base64.urlsafe_b64encode(raw).rstrip(b"="),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
        "utf-16": token.encode("utf-16-le"),
    }
    # Any 12 characters of it that go beyond the 4 its mask shows (`Zx9q…(37)`).
    for start in range(1, len(token) - 11):
        forms[f"piece {start}:{start + 12}"] = raw[start:start + 12]
    return forms


FORMS = {f"{name} of token {label}": form for label, token in (("A", TOKEN_A), ("B", TOKEN_B))
         for name, form in leaked_forms(token).items()}


def assert_no_token(data: bytes | str, where: str) -> None:
    blob = data.encode("utf-8", "replace") if isinstance(data, str) else data
    found = [name for name, form in FORMS.items() if form in blob]
    assert not found, f"{where} contains {found}"


def assert_no_token_in_folder(folder: Path) -> int:
    files = [path for path in folder.rglob("*") if path.is_file()]
    for path in files:
        assert_no_token(path.read_bytes(), str(path))
    return len(files)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    write_manifest(tmp_path, MANIFEST)
    png(tmp_path / "ref.png")
    return tmp_path


def run(args: list[str], env: dict[str, str], printed: list[str]) -> int:
    done = run_cli_process(args, env, timeout=120)
    printed.extend([done.stdout, done.stderr])
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode


def check_status(out: Path, env: dict[str, str], printed: list[str]) -> None:
    for extra in ([], ["--json"]):
        done = run_cli_process(["status", str(out), *extra], env)
        assert done.returncode == 0, done.stderr
        printed.extend([done.stdout, done.stderr])


def test_no_token_in_files_logs_messages_or_status(workspace: Path) -> None:
    manifest = str(workspace / "m.yaml")
    cache = ["--cache-path", str(workspace / "cache" / "results.sqlite")]
    token_file = workspace / "tokens.txt"
    token_file.write_text(f"# two accounts\n{TOKEN_A}\n\n{TOKEN_B}\n")
    printed: list[str] = []
    outs: list[Path] = []

    def out(name: str) -> str:
        outs.append(workspace / name)
        return str(outs[-1])

    # One token from the environment: a content-filtered request, an upload of a local reference.
    with simulator() as server:
        env = cli_env(JIMENG_SESSIONID=TOKEN_A)
        code = run(["run", manifest, "--out", out("one"), "--base-url", server.base_url, *COMMON, *cache], env,
                   printed)
        assert code == 1  # the filtered request is blocked
        assert server.stats()["uploads"] == 1
        # resume, with the token still set; then status
        assert run(["resume", str(outs[-1]), "--base-url", server.base_url, "--quiet"], env, printed) == 1
        check_status(outs[-1], env, printed)

    # A pool of two from the environment, one of which the service refuses (login error): quarantined, the other
    # goes on.
    with simulator(strict_accounts=True, accounts={TOKEN_B: 100}) as server:
        env = cli_env(JIMENG_SESSIONID=f"{TOKEN_A},{TOKEN_B}")
        code = run(["run", manifest, "--out", out("pool"), "--base-url", server.base_url, *COMMON, "--no-cache"],
                   env, printed)
        assert code == 1
        log = (workspace / "pool" / "run.log").read_text()
        assert f"token {mask(TOKEN_A)} quarantined" in log  # the masked label names the token
        check_status(outs[-1], env, printed)

    # Both from --token-file, with too few credits: the credit stop, with in-flight jobs finished.
    with simulator(accounts={TOKEN_A: 1, TOKEN_B: 1}) as server:
        env = cli_env()
        code = run(["run", manifest, "--out", out("credits"), "--base-url", server.base_url, "--token-file",
                    str(token_file), "--concurrency", "1", *COMMON, "--no-cache"], env, printed)
        assert code == 3
        check_status(outs[-1], env, printed)

    # A permission stop (the service refuses the client's version), with the token in the environment.
    with simulator(min_app_version="99.0.0") as server:
        env = cli_env(JIMENG_SESSIONID=TOKEN_B)
        code = run(["run", manifest, "--out", out("permission"), "--base-url", server.base_url, *COMMON,
                    "--no-cache"], env, printed)
        assert code == 3
        check_status(outs[-1], env, printed)

    # A host that refuses connections: every call fails, and says so.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening: connections are refused
        env = cli_env(JIMENG_SESSIONID=TOKEN_A)
        code = run(["run", manifest, "--out", out("refused"), "--base-url", closed, "--poll-interval", "0.02",
                    "--quiet", "--max-retries", "0", "--no-cache"], env, printed)
        assert code != 0
        check_status(outs[-1], env, printed)

    # Tokens a cookie cannot carry are refused by position and mask, never by value.
    for bad in (TOKEN_A + "ö", TOKEN_A[:10] + "\x01" + TOKEN_A[10:], TOKEN_A[:10] + " " + TOKEN_A[10:]):
        env = cli_env(JIMENG_SESSIONID=f"{TOKEN_B},{bad}")
        done = run_cli_process(["run", manifest, "--out", str(workspace / "bad"), "--base-url", "http://127.0.0.1:9",
                                "--quiet"], env)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"JIMENG_SESSIONID: token 2 ({TOKEN_A[:4]}…("), done.stderr
        printed.extend([done.stdout, done.stderr])
    assert not (workspace / "bad").exists()

    for text in printed:
        assert_no_token(text, f"printed output:\n{text}")
    checked = sum(assert_no_token_in_folder(folder) for folder in outs)
    checked += assert_no_token_in_folder(workspace / "cache")
    assert checked > 10
    for folder in outs:
        assert (folder / "run.log").stat().st_size > 0 and (folder / "ledger.sqlite").is_file()


def test_the_search_would_find_a_leak(tmp_path: Path) -> None:
    """The check above is not vacuous: each way of writing a token down is caught."""
    for form in (TOKEN_A, urllib.parse.quote(TOKEN_A, safe=""), base64.b64encode(TOKEN_A.encode()).decode(),
                 TOKEN_A.encode().hex(), "sessionid=" + TOKEN_A[:-3], "…" + TOKEN_A[4:16] + "…"):
        with pytest.raises(AssertionError):
            assert_no_token(f"log line {form} end", "a log")
    with pytest.raises(AssertionError):
        assert_no_token(b"\x00" + TOKEN_B.encode("utf-16-le") + b"\x00", "a binary file")
    assert_no_token(f"token {mask(TOKEN_A)} quarantined; {mask(TOKEN_B)} exhausted", "a log")  # masks are fine
