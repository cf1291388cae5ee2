"""`doctor`, `credits [--claim]` and `run --claim-daily`, over real HTTP against the simulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import run_main
from run_helpers import IMAGES, TOKEN, TOKEN_B, simulator

from jimeng_batch.engine.config import RunConfig
from jimeng_batch.engine.doctor import Target, claim_state, credit_lines, examine
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.client import CreditBalance, JimengClient
from jimeng_batch.protocol.tokens import Scrubber, Token
from jimeng_batch.sim import FakeClock, SimServer

TOKEN_C = "tokC0123456789abcdef0123456789ab"
NOON = 1_767_240_000.0  # 2026-01-01 04:00 UTC, 12:00 in Shanghai: far from the claim day's ends


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set the pool of tokens (JIMENG_SESSIONID) for the command line."""

    def set_pool(*tokens: str) -> None:
        monkeypatch.setenv("JIMENG_SESSIONID", ",".join(tokens))

    monkeypatch.delenv("JIMENG_BASE_URL", raising=False)
    return set_pool


@pytest.fixture(scope="module")
def strict() -> Iterator[SimServer]:
    """The live profile, two accounts it knows (TOKEN, TOKEN_B); any other session is dead (1015)."""
    with simulator(profile="live", strict_accounts=True, accounts={TOKEN: 100, TOKEN_B: 0}) as server:
        yield server


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    """Run a command with --json: its exit code, the parsed JSON and stderr; no token is ever in the output."""
    code, out, err = run_main([*args, "--json"], capsys)
    for token in (TOKEN, TOKEN_B, TOKEN_C):
        assert token not in out + err
    return code, json.loads(out), err


def by_token(data: Any) -> dict[str, Any]:
    return {entry["token"]: entry for entry in data["tokens"]}


A, B, C = Token(TOKEN).label, Token(TOKEN_B).label, Token(TOKEN_C).label


# -- doctor ----------------------------------------------------------------------------------------------------------


def test_doctor_every_token_alive_and_accepted(strict: SimServer, pool: Callable[..., None],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    pool(TOKEN)
    code, data, _ = cli(["doctor", "--base-url", strict.base_url, "--region", "cn"], capsys)
    assert code == 0
    entry = by_token(data)[A]
    assert entry["alive"] is True and entry["alive_by"] == "account_info"
    assert entry["balance"] == {"gift": 0, "purchase": 100, "vip": 0, "expiring": 0, "total": 100}
    assert entry["region"] == "cn" and entry["claim"] == "available" and entry["protocol"] == "accepted"
    assert entry["can_generate"] is True
    assert data["protocol"]["da_version"] == catalog.PROTOCOL_PROFILES["live"].da_version


def test_doctor_one_dead_token_is_exit_1(strict: SimServer, pool: Callable[..., None],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    pool(TOKEN, TOKEN_C)
    code, data, _ = cli(["doctor", "--base-url", strict.base_url], capsys)
    assert code == 1
    dead = by_token(data)[C]
    assert dead["alive"] is False and dead["can_generate"] is False
    assert dead["problems"] == ["login: /passport/account/info/v2: ret 1015 (login error: session expired or "
                                "invalid): login error: unknown sessionid"]
    assert by_token(data)[A]["can_generate"] is True


def test_doctor_all_dead_is_exit_3(strict: SimServer, pool: Callable[..., None],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    pool(TOKEN_C)
    code, data, _ = cli(["doctor", "--base-url", strict.base_url], capsys)
    assert code == 3 and data["can_generate"] == 0 and by_token(data)[C]["alive"] is False


def test_doctor_an_empty_account_cannot_generate(strict: SimServer, pool: Callable[..., None],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pool(TOKEN, TOKEN_B)
    code, data, _ = cli(["doctor", "--base-url", strict.base_url], capsys)
    assert code == 1 and by_token(data)[B]["problems"] == ["no credits left"]


def test_doctor_finds_a_stale_da_version_before_anything_is_spent(
        strict: SimServer, pool: Callable[..., None], write: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    """The manifest's protocol settings apply: the document's 3.3.2 is refused by the live profile (3018)."""
    pool(TOKEN)
    manifest = write("m.yaml", "protocol: {profile: document}\n" + textwrap.dedent(IMAGES))
    charged = strict.stats()["credits_charged"]
    code, data, err = cli(["doctor", str(manifest), "--base-url", strict.base_url], capsys)
    assert code == 3
    entry = by_token(data)[A]
    assert entry["alive"] is True and entry["protocol"] == "refused" and entry["can_generate"] is False
    assert "da_version 3.3.2" in data["stale_protocol"] and "--protocol da_version=" in data["stale_protocol"]
    assert "stopped for safety" in err and "da_version 3.3.2, appvr 8.4.0" in err
    assert "ret 3018 (permission denied" in err
    assert strict.stats()["credits_charged"] == charged


def test_doctor_checks_the_constants_given_on_the_command_line(strict: SimServer, pool: Callable[..., None],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """--protocol applies without a manifest too: the constant given is the one probed (and refused here)."""
    pool(TOKEN)
    code, data, err = cli(["doctor", "--base-url", strict.base_url, "--protocol", "da_version=3.3.1"], capsys)
    assert code == 3 and data["protocol"]["da_version"] == "3.3.1"
    assert by_token(data)[A]["protocol"] == "refused" and "da_version 3.3.1" in err


def test_doctor_leaves_out_tokens_of_another_region(strict: SimServer, pool: Callable[..., None],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A token whose prefix names another region is said and left out of a cn check."""
    pool(TOKEN, "us-" + TOKEN_B)
    code, data, err = cli(["doctor", "--base-url", strict.base_url, "--region", "cn"], capsys)
    assert code == 0 and list(by_token(data)) == [A]
    assert "us:" in err


def test_doctor_table_on_a_terminal(strict: SimServer, pool: Callable[..., None],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    pool(TOKEN, TOKEN_C)
    code, out, _ = run_main(["doctor", "--base-url", strict.base_url], capsys)
    assert code == 1
    assert "can generate" in out and f"{A}" in out and "1 of 2 token(s) can generate" in out
    assert f"  {C}: login: " in out and TOKEN_C not in out


@pytest.mark.parametrize(("tokens", "exit_code"), [((TOKEN,), 0), ((TOKEN, TOKEN_C), 1)], ids=["alive", "one-dead"])
def test_doctor_falls_back_to_the_balance_where_the_host_answers_404(
        tokens: tuple[str, ...], exit_code: int, pool: Callable[..., None],
        capsys: pytest.CaptureFixture[str]) -> None:
    """The SG host answers /passport/account/info/v2 with HTTP 404: a balance read proves the session."""
    with simulator(strict_accounts=True, accounts={TOKEN: 10}, passport_not_found=True) as server:
        pool(*tokens)
        code, data, _ = cli(["doctor", "--base-url", server.base_url, "--region", "sg"], capsys)
        assert server.stats()["errors"]["http_404"] == len(tokens)
    assert code == exit_code
    alive = by_token(data)[A]
    assert alive["alive"] is True and alive["alive_by"] == "user_credit" and alive["region"] == "sg"
    assert alive["problems"] == []
    if len(tokens) > 1:
        assert by_token(data)[C]["alive"] is False


def test_doctor_on_the_built_in_simulator(pool: Callable[..., None], monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("JIMENG_SESSIONID", raising=False)
    code, data, _ = cli(["doctor", "--sim"], capsys)
    assert code == 0 and data["tokens"][0]["protocol"] == "accepted"


# -- credits and the daily claim -------------------------------------------------------------------------------------


def test_a_claim_succeeds_then_says_already_claimed(pool: Callable[..., None],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock(NOON)
    with simulator(clock=clock, max_clock_skew_s=None, accounts={TOKEN: 100}, daily_credits=66) as server:
        pool(TOKEN)
        code, before, _ = cli(["credits", "--base-url", server.base_url], capsys)
        assert code == 0 and by_token(before)[A]["claim_state"] == "available" and "claim" not in by_token(before)[A]
        code, first, _ = cli(["credits", "--claim", "--base-url", server.base_url], capsys)
        assert code == 0
        entry = by_token(first)[A]
        assert entry["claim"] == {"outcome": "claimed 66", "code": None, "is_first_receive": True,
                                  "receive_quota": 66, "receive_inter_days": 1}
        assert entry["balance"]["total"] == 166 and entry["claim_state"] == "claimed"
        code, second, _ = cli(["credits", "--claim", "--base-url", server.base_url], capsys)
        assert code == 0
        assert by_token(second)[A]["claim"]["outcome"] == "already claimed today"
        assert by_token(second)[A]["balance"]["total"] == 166
        clock.advance(86400)  # the next day: a new claim, and yesterday's grant has expired from the display
        code, third, _ = cli(["credits", "--claim", "--base-url", server.base_url], capsys)
        assert by_token(third)[A]["claim"]["outcome"] == "claimed 66"


def test_claim_refusals_are_reported_per_token_and_stop_no_other(pool: Callable[..., None],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with simulator(accounts={TOKEN: 5, TOKEN_B: 5, TOKEN_C: 5},
                   claim_errors={TOKEN: "34010100", TOKEN_B: "-4"}) as server:
        pool(TOKEN, TOKEN_B, TOKEN_C)
        code, data, _ = cli(["credits", "--claim", "--base-url", server.base_url], capsys)
        assert code == 1
        entries = by_token(data)
        assert entries[A]["claim"]["outcome"] == "refused (ret 34010100)"
        assert entries[A]["problems"] == ["claim: /commerce/v1/benefits/credit_receive: ret 34010100 (param error: "
                                          "the daily credit claim was refused): param error"]
        assert entries[B]["claim"]["code"] == "-4"
        assert entries[B]["problems"] == ["claim: /commerce/v1/benefits/credit_receive: ret -4 (shark check "
                                          "reject): shark check reject"]
        assert entries[A]["balance"]["total"] == 5 and entries[B]["balance"]["total"] == 5
        assert entries[C]["claim"]["outcome"] == "claimed 50" and entries[C]["balance"]["total"] == 55
        pool(TOKEN, TOKEN_B)
        code, out, _ = run_main(["credits", "--claim", "--base-url", server.base_url], capsys)
        assert code == 3 and "refused (ret 34010100)" in out and "refused (ret -4)" in out


def test_run_claims_daily_before_the_preflight_and_resume_keeps_it(
        write: Callable[..., Path], pool: Callable[..., None], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("JIMENG_SESSIONID", raising=False)
    manifest = write("m.yaml", "jobs: [{type: image, model: jimeng-4.0, resolution: 1k, prompt: a red kite}]\n")
    common = ["--sim", "--poll-interval", "0.01", "--quiet", "--no-cache", "--no-report", "--out", "out"]
    code, _, err = run_main(["run", str(manifest), "--claim-daily", *common], capsys)
    assert code == 0
    assert "daily claim on simu…(33): claimed 50; balance 1050" in err
    assert "daily claim on simu…(33): claimed 50" in Path("out/run.log").read_text(encoding="utf-8")
    code, _, err = run_main(["resume", "out", "--quiet"], capsys)
    assert code == 0 and "daily claim on simu…(33): already claimed today" in err
    code, _, err = run_main(["resume", "out", "--quiet", "--no-claim-daily"], capsys)
    assert code == 0 and "daily claim" not in err


def test_claim_daily_is_a_stored_run_setting() -> None:
    config = RunConfig(claim_daily=True)
    assert RunConfig.from_json(config.to_json()).claim_daily is True
    assert RunConfig().claim_daily is False


# -- untrusted answers -----------------------------------------------------------------------------------------------


def _hostile(answers: dict[str, Any]) -> JimengClient:
    """A client whose every call is answered by ``answers[path]`` (a JSON body, or an HTTP status)."""

    def handle(request: httpx.Request) -> httpx.Response:
        answer = answers[request.url.path]
        if isinstance(answer, int):
            return httpx.Response(answer, text="no")
        return httpx.Response(200, json=answer)

    return JimengClient(region=catalog.REGIONS["cn"], versions=catalog.PROTOCOL_PROFILES["live"], web_id="1",
                        base_url="http://127.0.0.1:9", transport=httpx.MockTransport(handle))


TARGET = Target("cn", catalog.PROTOCOL_PROFILES["live"], "1")


def test_untrusted_shapes_become_a_reason_for_that_token() -> None:
    client = _hostile({
        "/passport/account/info/v2": {"ret": "0", "data": {"user_id": None}},
        "/commerce/v1/benefits/user_credit": {"ret": "0", "data": {"credit": "lots"}},
        "/mweb/v1/get_common_config": 500,
    })
    token = Token(TOKEN)
    report = asyncio.run(examine(lambda _token: client, [token], TARGET, Scrubber([token])))
    check = report.checks[0]
    assert check.alive is None and check.protocol == "unknown" and report.exit_code == 3
    assert check.problems == (
        "could not check the session: /passport/account/info/v2: malformed answer: data.user_id: missing (the "
        "session is not known as alive)",
        f"could not read the balance of {token.label}: /commerce/v1/benefits/user_credit: malformed answer: "
        "data.credit: text, not an object",
        *check.problems[2:],
    )
    assert len(check.problems) == 3
    assert check.problems[2].startswith("could not check the protocol constants: /mweb/v1/get_common_config: HTTP 500")


def test_an_unreadable_claim_answer_is_said_and_the_server_text_scrubbed() -> None:
    client = _hostile({
        "/commerce/v1/benefits/credit_receive": {"ret": "0", "data": {"is_first_receive": "yes"}},
        "/commerce/v1/benefits/user_credit": {"ret": "77", "errmsg": f"bad cookie sessionid={TOKEN}\x1b[2J"},
    })
    token = Token(TOKEN)
    line = asyncio.run(credit_lines(lambda _token: client, [token], Scrubber([token]), claim=True))[0]
    assert line.claim is None and line.claim_outcome == "not claimed" and not line.ok
    assert line.problems[0] == ("claim: /commerce/v1/benefits/credit_receive: malformed answer: "
                                "data.is_first_receive: text, not true or false")
    assert TOKEN not in line.problems[1] and token.label in line.problems[1] and "\\x1b[2J" in line.problems[1]


@pytest.mark.parametrize(("balance", "state"), [
    pytest.param(CreditBalance(purchase=10), "available", id="no-gift"),
    pytest.param(CreditBalance(gift=50, expiring=50, expiring_first=int(NOON) + 3600), "claimed", id="today"),
    pytest.param(CreditBalance(expiring=50, expiring_first=int(NOON) + 3600), "claimed", id="gift-shown-0"),
    pytest.param(CreditBalance(gift=5, expiring=5, expiring_first=int(NOON) + 30 * 86400), "unknown",
                 id="gift-of-a-month"),
    pytest.param(CreditBalance(gift=5), "unknown", id="gift-without-expiry"),
])
def test_claim_state_rule(balance: CreditBalance, state: str) -> None:
    assert claim_state(balance, NOON) == state


def test_a_404_host_whose_balance_cannot_be_read_leaves_the_session_unknown() -> None:
    client = _hostile({
        "/passport/account/info/v2": 404,
        "/commerce/v1/benefits/user_credit": 502,
        "/mweb/v1/get_common_config": {"ret": "0", "data": {}},
    })
    token = Token(TOKEN)
    check = asyncio.run(examine(lambda _token: client, [token], TARGET, Scrubber([token]))).checks[0]
    assert check.alive is None and check.protocol == "accepted" and not check.can_generate
    assert check.problems[-1] == ("could not check the session: /passport/account/info/v2 answered HTTP 404 and the "
                                  "balance, which would prove it instead, could not be read")


def test_an_unreadable_expiry_is_no_reason_to_lose_the_balance() -> None:
    client = _hostile({"/commerce/v1/benefits/user_credit": {"ret": "0", "data": {
        "credit": {"gift_credit": 0, "purchase_credit": 3, "vip_credit": 0},
        "expiring_credits": [{"credit_amount": 50, "expire_time": "tonight"}]}}})
    balance = asyncio.run(client.user_credit(Token(TOKEN)))
    assert balance.total == 53 and balance.expiring_first == 0 and claim_state(balance, NOON) == "unknown"


def test_a_server_quoting_the_cookie_never_shows_a_token(pool: Callable[..., None],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile server's errors quote the Cookie header: doctor and credits show the masked label instead."""
    with simulator(strict_accounts=True, accounts={TOKEN: 5}, faults={"echo_session": True},
                   claim_errors={TOKEN: "-4"}) as server:
        pool(TOKEN, TOKEN_C)
        code, data, _ = cli(["doctor", "--base-url", server.base_url], capsys)  # cli() asserts no token is shown
        assert code == 1 and f"sessionid={C}" in by_token(data)[C]["problems"][0]
        code, out, err = run_main(["credits", "--claim", "--base-url", server.base_url], capsys)
        assert code == 3 and f"sessionid={A}" in out and TOKEN not in out + err and TOKEN_C not in out + err
