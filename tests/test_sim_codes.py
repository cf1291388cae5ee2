"""The one table of outcomes: complete for both profiles, overridable, and matching the sources it cites."""

from __future__ import annotations

import pytest

from jimeng_batch.sim.codes import CODE_TABLE, CONCEPTS, PROFILES, outcome


def test_every_outcome_has_a_code_in_every_profile() -> None:
    for profile in PROFILES:
        assert set(CODE_TABLE[profile]) == set(CONCEPTS)
        for concept in CONCEPTS:
            result = CODE_TABLE[profile][concept]
            assert result.ret.isdigit() and result.errmsg


@pytest.mark.parametrize(
    ("concept", "document", "live"),
    [
        pytest.param("param", "2002", "1002", id="param"),
        pytest.param("credits", "2001", "1006", id="credits"),
        pytest.param("busy", "2004", "4013", id="busy"),
        pytest.param("permission", "2005", "3018", id="permission"),
        pytest.param("login", "1015", "1015", id="login"),
        pytest.param("model_unavailable", "2003", "1002", id="model-unavailable"),
        pytest.param("in_flight_cap", "2004", "4013", id="in-flight-cap"),
        pytest.param("rate_limited", "2004", "4013", id="rate-limited"),
    ],
)
def test_codes_per_profile(concept: str, document: str, live: str) -> None:
    assert outcome("document", concept).ret == document  # type: ignore[arg-type]
    assert outcome("live", concept).ret == live  # type: ignore[arg-type]


def test_override_changes_the_code_and_keeps_the_message() -> None:
    overridden = outcome("live", "rate_limited", {"rate_limited": "429"})
    assert overridden.ret == "429"
    assert overridden.errmsg == CODE_TABLE["live"]["rate_limited"].errmsg
    assert outcome("live", "busy", {"rate_limited": "429"}).ret == "4013"
