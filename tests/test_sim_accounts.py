"""The simulator's account endpoints: the liveness check (and the SG host's 404), the daily claim's day, its
refusals, and the shape of its answers (protocol reference 1.4, 2.6)."""

from __future__ import annotations

import json

import pytest
from sim_helpers import OTHER_TOKEN, TOKEN, simulator

from jimeng_batch.errors import ConfigError
from jimeng_batch.sim import FakeClock, SimConfig, config_from_mapping

INFO = "/passport/account/info/v2"
RECEIVE = "/commerce/v1/benefits/credit_receive"
ZONE = {"time_zone": "Asia/Shanghai"}


def test_account_info_is_alive_for_known_accounts_and_a_login_error_otherwise() -> None:
    with simulator(SimConfig(profile="live", strict_accounts=True, accounts={TOKEN: 5})) as sim:
        answer = sim.caller.api(INFO, {}, mweb=False)
        assert answer["ret"] == "0" and isinstance(answer["data"]["user_id"], int)
        assert sim.caller.api(INFO, {}, mweb=False)["data"] == answer["data"]  # stable per account
        assert TOKEN not in str(answer)
        assert sim.as_account(OTHER_TOKEN).api(INFO, {}, mweb=False) == {
            "ret": "1015", "errmsg": "login error: unknown sessionid", "data": None}
        refused = sim.as_account(TOKEN, headers_override={"Sign": "0" * 32}).api(INFO, {}, mweb=False)
        assert refused["ret"] == "3018"


def test_account_info_can_answer_404_as_the_sg_host_does() -> None:
    with simulator(SimConfig(passport_not_found=True)) as sim:
        response = sim.caller.post(INFO, {}, mweb=False)
        assert response.status_code == 404
        assert sim.caller.credits()["ret"] == "0"  # the balance still answers: the client's fallback
        assert sim.server.stats()["errors"] == {"http_404": 1}


def test_the_claim_day_is_the_shanghai_day() -> None:
    clock = FakeClock(1_767_283_199.0)  # 2026-01-01 15:59:59 UTC: 23:59:59 in Shanghai
    with simulator(SimConfig(accounts={TOKEN: 0}, daily_credits=66), clock=clock) as sim:
        assert sim.caller.api(RECEIVE, ZONE, mweb=False)["data"]["receive_quota"] == 66
        expiring = sim.caller.credits()["data"]["expiring_credits"]
        assert expiring == [{"credit_amount": 66, "expire_time": 1_767_283_200}]  # the grant ends with the day
        assert sim.caller.api(RECEIVE, ZONE, mweb=False)["data"]["is_first_receive"] is False
        clock.advance(1)  # midnight in Shanghai, 16:00 UTC: a new day
        again = sim.caller.api(RECEIVE, ZONE, mweb=False)["data"]
        assert again == {"is_first_receive": True, "receive_quota": 66, "has_popup": True, "receive_inter_days": 1}


@pytest.mark.parametrize("body", [{}, {"time_zone": ""}, {"time_zone": 8}, ["Asia/Shanghai"]],
                         ids=["missing", "empty", "number", "not-an-object"])
def test_a_claim_without_its_time_zone_is_a_param_error(body: object) -> None:
    with simulator(SimConfig()) as sim:
        answer = sim.caller.api(RECEIVE, body, mweb=False)
        assert answer["ret"] == "34010100" and answer["errmsg"].startswith("param error: time_zone")
        assert sim.caller.credits()["data"]["credit"]["gift_credit"] == 0


@pytest.mark.parametrize(("code", "message"), [("34010100", "param error"), ("-4", "shark check reject")])
def test_claims_of_an_account_can_be_refused(code: str, message: str) -> None:
    with simulator(SimConfig(claim_errors={TOKEN: code})) as sim:
        assert sim.caller.api(RECEIVE, ZONE, mweb=False) == {"ret": code, "errmsg": message, "data": None}
        assert sim.as_account(OTHER_TOKEN).api(RECEIVE, ZONE, mweb=False)["data"]["receive_quota"] == 50
        assert sim.server.stats()["errors"] == {code: 1}


@pytest.mark.parametrize(("data", "fragment"), [
    ({"claim_errors": {TOKEN: "500"}}, "claim_errors: '500' is not a claim refusal; allowed: 34010100, -4"),
    ({"daily_credits": -1}, "daily_credits must be 0 or more"),
    ({"passport_not_found": "yes"}, "passport_not_found: must be true or false"),
])
def test_account_settings_are_checked(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_mapping(data)
    assert fragment in str(error.value)


def test_the_balance_answer_has_the_live_shape() -> None:
    with simulator(SimConfig(accounts={TOKEN: 7})) as sim:
        answer = sim.caller.credits()
        assert answer["ret"] == "0" and json.loads(answer["response"]) == answer["data"]
        assert len(answer["sign"]) == 32 and TOKEN not in str(answer)
        assert answer["data"] == {"credit": {"gift_credit": 0, "purchase_credit": 7, "vip_credit": 0},
                                  "expiring_credits": [], "credits_detail": {"gift_credits": []}}
