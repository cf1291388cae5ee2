"""The outcome table, row by row, and the README's copy of it."""

from __future__ import annotations

import pytest
from conftest import REPO

from jimeng_batch.protocol.outcomes import (
    RULES,
    Action,
    TokenEffect,
    classify,
    render_markdown,
)


@pytest.mark.parametrize(
    ("source", "code", "action", "reason", "token"),
    [
        pytest.param("ret", "2001", Action.STOP, "credits", TokenEffect.EXHAUSTED, id="doc-credits"),
        pytest.param("ret", "2002", Action.INVALID, "params", TokenEffect.NONE, id="doc-params"),
        pytest.param("ret", "2003", Action.FAILED, "model", TokenEffect.NONE, id="doc-model-unavailable"),
        pytest.param("ret", "2004", Action.RETRY, "busy", TokenEffect.NONE, id="doc-busy"),
        pytest.param("ret", "2005", Action.STOP, "permission", TokenEffect.NONE, id="doc-permission"),
        pytest.param("fail_code", "2038", Action.BLOCKED, "content", TokenEffect.NONE, id="doc-content-filtered"),
        pytest.param("ret", "1006", Action.STOP, "credits", TokenEffect.EXHAUSTED, id="live-credits"),
        pytest.param("ret", "5000", Action.STOP, "credits", TokenEffect.EXHAUSTED, id="live-credits-old"),
        pytest.param("ret", "1015", Action.STOP, "login", TokenEffect.QUARANTINE, id="live-login"),
        pytest.param("ret", "3018", Action.STOP, "permission", TokenEffect.NONE, id="live-permission"),
        pytest.param("ret", "3000", Action.STOP, "region", TokenEffect.NONE, id="live-region"),
        pytest.param("ret", "1002", Action.INVALID, "params", TokenEffect.NONE, id="live-params"),
        pytest.param("ret", "4013", Action.RETRY_AFTER, "risk", TokenEffect.NONE, id="live-risk"),
        pytest.param("ret", "1019", Action.FAILED, "anti-bot", TokenEffect.NONE, id="live-anti-bot"),
        pytest.param("fail_code", "2047", Action.BLOCKED, "content", TokenEffect.NONE, id="live-violation"),
        pytest.param("http", 401, Action.STOP, "login", TokenEffect.QUARANTINE, id="http-401"),
        pytest.param("http", 429, Action.RETRY_AFTER, "rate", TokenEffect.NONE, id="http-429"),
        pytest.param("http", 503, Action.RETRY, "server", TokenEffect.NONE, id="http-503"),
        pytest.param("http", 418, Action.FAILED, "http", TokenEffect.NONE, id="http-other-4xx"),
        pytest.param("transport", "timeout", Action.RETRY, "network", TokenEffect.NONE, id="timeout"),
        pytest.param("ret", "777", Action.RETRY, "unknown", TokenEffect.NONE, id="unknown-ret"),
        pytest.param("fail_code", "9", Action.FAILED, "generation", TokenEffect.NONE, id="unknown-fail-code"),
    ],
)
def test_each_code_has_one_action(source: str, code: object, action: Action, reason: str,
                                  token: TokenEffect) -> None:
    rule = classify(source, code)  # type: ignore[arg-type]
    assert (rule.action, rule.reason, rule.token) == (action, reason, token)


def test_the_table_has_each_code_once() -> None:
    keys = [(rule.source, rule.code) for rule in RULES]
    assert len(keys) == len(set(keys))


def test_every_retry_after_has_a_delay() -> None:
    assert all(rule.delay for rule in RULES if rule.action is Action.RETRY_AFTER)


def test_the_readme_prints_the_table() -> None:
    assert render_markdown() in (REPO / "README.md").read_text(encoding="utf-8")
