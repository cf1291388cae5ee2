"""The reliability scenario of paid work (see paid_scenario.py): killed ten times under faults, the manifest shrunk,
the token pool changed, an outage of the asset host; it ends with every request the final manifest names
downloaded, nothing charged twice, nothing charged that the manifest had dropped, and --verify content."""

from __future__ import annotations

from pathlib import Path

import pytest
from paid_scenario import run_scenario


@pytest.mark.slow
def test_paid_work_survives_kills_shrinks_pool_changes_and_an_outage(tmp_path: Path) -> None:
    # A 10-second outage here, to keep the suite short; bench/bench_reliability.py runs the 30-second one (five seeds,
    # figures in BENCHMARKS.md). The outage spans several runs either way: they start every few hundred ms.
    figures = run_scenario(tmp_path, kills=10, outage_s=10.0)
    assert figures.kills == 10
    assert figures.in_flight_kills >= 5, figures
    assert figures.outage_attempts >= 2  # runs met the outage
    assert figures.final_code == 0, figures.final_stderr
    assert figures.verify_code == 0 and "every file matches the ledger" in figures.verify_stderr, figures.verify_stderr
    states = {key: state for key, (state, _) in figures.requests.items()}
    assert all(states[key] == "downloaded" for key in figures.final_keys), states
    assert "failed" not in states.values()
    charges = figures.stats["charges_by_submit_id"]
    assert set(charges.values()) == {1}, {k: v for k, v in charges.items() if v != 1}  # no submit_id paid twice
    key_of = {submit_id: key for key, (_, submit_id) in figures.requests.items()}
    dropped_and_charged = {key_of[s] for s in charges} - figures.final_keys
    assert dropped_and_charged <= figures.sent_before_shrink, dropped_and_charged  # nothing sent after the shrink
    errors = figures.stats["errors"]
    assert errors.get("asset_http_503", 0) > 0 and sum(errors.values()) > errors["asset_http_503"], errors
