"""The simulator's state file: a simulator started again on it is the same service (records, balances, uploads),
and the file never holds a session token. Plus the faults a later run must survive: asset-host errors, truncated
bodies, redirects, a server that echoes the cookie, and faults changed while it runs."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sim_helpers import OTHER_TOKEN, TOKEN, Harness, image_envelope, png_bytes, simulator

from jimeng_batch.errors import ConfigError
from jimeng_batch.sim import FakeClock, SimConfig
from jimeng_batch.sim.config import Faults, Latency, fixed


def test_a_restarted_simulator_knows_its_records_and_balances(tmp_path: Path) -> None:
    state = tmp_path / "sim.sqlite"
    clock = FakeClock()
    config = SimConfig(latency=Latency(generation=fixed(10.0)))
    with simulator(config, state_path=state, clock=clock) as sim:
        answer = sim.caller.submit(image_envelope("submit-1"))
        history_id = answer["data"]["aigc_data"]["history_record_id"]
        uri = sim.caller.upload(png_bytes())["Results"][0]["Uri"]
        before = sim.server.stats()
    assert TOKEN.encode() not in state.read_bytes()
    clock.advance(20.0)  # the job finished while no simulator was running
    with simulator(config, state_path=state, clock=clock) as sim:
        polled = sim.caller.poll(history_ids=[history_id])["data"][history_id]
        assert polled["status"] == 50 and len(polled["item_list"]) == 4
        again = sim.caller.submit(image_envelope("submit-1"))  # idempotent across the restart
        assert again["data"]["aigc_data"]["history_record_id"] == history_id
        other = sim.caller.submit(image_envelope("submit-2"))  # a new submit: the next id, charged
        assert int(other["data"]["aigc_data"]["history_record_id"]) == int(history_id) + 1
        after = sim.server.stats()
        assert sim.as_account(OTHER_TOKEN).credits()["data"]["credit"]["purchase_credit"] == 1000
    assert after["charges_by_submit_id"] == {"submit-1": 1, "submit-2": 1}
    label = next(iter(before["credits_balance"]))
    assert after["credits_balance"][label] == before["credits_balance"][label] - 1
    assert uri.startswith("tos-")


def test_a_state_file_of_another_seed_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "sim.sqlite"
    with simulator(SimConfig(seed=1), state_path=state):
        pass
    with pytest.raises(ConfigError, match="made with seed 1, not 2"), simulator(SimConfig(seed=2), state_path=state):
        pass


def _finished_asset_url(sim: Harness) -> tuple[httpx.Client, str]:
    answer = sim.caller.submit(image_envelope("asset-1"))
    history_id = answer["data"]["aigc_data"]["history_record_id"]
    record = sim.caller.poll(history_ids=[history_id])["data"][history_id]
    return sim.client, record["item_list"][0]["image"]["large_images"][0]["image_url"]


@pytest.mark.parametrize(("faults", "check"), [
    pytest.param(Faults(asset_error_probability=1.0), lambda r: r.status_code == 503, id="asset-503"),
    pytest.param(Faults(asset_redirect=True),
                 lambda r: r.status_code == 302 and r.headers["location"].endswith("&moved=1"), id="redirect"),
])
def test_asset_host_faults(faults: Faults, check: object) -> None:
    with simulator(SimConfig(faults=faults)) as sim:
        client, url = _finished_asset_url(sim)
        response = client.get(url)
        assert check(response)  # type: ignore[operator]
        if faults.asset_redirect:
            assert client.get(response.headers["location"]).status_code == 200


def test_a_truncated_asset_breaks_off_part_way() -> None:
    with simulator(SimConfig(faults=Faults(truncated_asset_probability=1.0))) as sim:
        client, url = _finished_asset_url(sim)
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(url)


def test_faults_can_be_changed_while_it_runs() -> None:
    with simulator() as sim:
        client, url = _finished_asset_url(sim)
        assert client.get(url).status_code == 200
        assert client.post("/_sim/faults", json={"asset_error_probability": 1.0}).status_code == 200
        assert client.get(url).status_code == 503
        assert client.post("/_sim/faults", json={"asset_error_probability": 0}).status_code == 200
        assert client.get(url).status_code == 200
        refused = client.post("/_sim/faults", json={"asset_eror_probability": 1})
        assert refused.status_code == 400 and "unknown key" in refused.text


def test_a_hostile_server_echoes_the_cookie_in_its_errors() -> None:
    with simulator(SimConfig(faults=Faults(echo_session=True), strict_accounts=True)) as sim:
        answer = sim.caller.submit(image_envelope("echo-1"))
    assert answer["ret"] != "0" and TOKEN in answer["errmsg"]
