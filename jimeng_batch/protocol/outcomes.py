"""The one table that decides what happens on every API outcome.

Every ``ret`` code, record ``fail_code``, HTTP status and transport failure maps to one :class:`Rule`: an action
(retry with backoff, retry after a delay, a terminal state for the request, or stop submitting) and what it does
to the session token that got it. The table holds the API document's codes and the ones the live service has been
seen to send (see the protocol reference, section 3). The README prints it (``render_markdown``), and a test keeps
the two the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from jimeng_batch.errors import APIError, RequestFailedError, RetryableAPIError, StopSubmittingError

Source = Literal["ret", "fail_code", "http", "asset", "transport", "local"]


class Action(StrEnum):
    """What the executor does next."""

    RETRY = "retry"  # the same call again, after exponential backoff with jitter (bounded)
    RETRY_AFTER = "retry_after"  # the same call again after a fixed delay (or the response's Retry-After)
    BLOCKED = "blocked"  # terminal for this request: the content was filtered
    INVALID = "invalid"  # terminal for this request: the service refused its parameters
    FAILED = "failed"  # terminal for this request: it cannot succeed as it is
    STOP = "stop"  # no new submits (with this token, or at all); in-flight jobs are still finished


class TokenEffect(StrEnum):
    """What an outcome says about the session token that got it."""

    NONE = "none"
    QUARANTINE = "quarantine"  # the login is gone: never use this token again this run
    EXHAUSTED = "exhausted"  # no credits left on this account: no more submits with it


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table."""

    source: Source
    code: str
    meaning: str
    action: Action
    reason: str  # a short category for reports and exit codes: credits, login, permission, region, busy, ...
    origin: str  # "document", "live" or "http"
    token: TokenEffect = TokenEffect.NONE
    delay: float | None = None  # seconds, for RETRY_AFTER

    @property
    def stops_everything(self) -> bool:
        """A stop that no other token can get around (a protocol or region problem, not an account's)."""
        return self.action is Action.STOP and self.token is TokenEffect.NONE


RISK_CONTROL_DELAY = 60.0  # the reference: "back off hard" on risk control

RULES: tuple[Rule, ...] = (
    # The API document's codes.
    Rule("ret", "2001", "insufficient credits", Action.STOP, "credits", "document", TokenEffect.EXHAUSTED),
    Rule("ret", "2002", "parameter error", Action.INVALID, "params", "document"),
    Rule("ret", "2003", "model unavailable (live: image risk check failed)", Action.FAILED, "model", "document"),
    Rule("ret", "2004", "service busy", Action.RETRY, "busy", "document"),
    Rule("ret", "2005", "permission denied", Action.STOP, "permission", "document"),
    Rule("fail_code", "2038", "content filtered", Action.BLOCKED, "content", "document"),
    Rule("ret", "2038", "content filtered", Action.BLOCKED, "content", "document"),
    # What the live service has been seen to send.
    Rule("ret", "1006", "not enough credits left", Action.STOP, "credits", "live", TokenEffect.EXHAUSTED),
    Rule("ret", "5000", "insufficient credits (credit prededuct)", Action.STOP, "credits", "live",
         TokenEffect.EXHAUSTED),
    Rule("ret", "1015", "login error: session expired or invalid", Action.STOP, "login", "live",
         TokenEffect.QUARANTINE),
    Rule("ret", "3018", "permission denied: stale version constants or Sign", Action.STOP, "permission", "live"),
    Rule("ret", "3000", "region not allowed for this IP", Action.STOP, "region", "live"),
    Rule("ret", "1002", "common error: malformed draft or parameters", Action.INVALID, "params", "live"),
    Rule("ret", "4013", "risk control: suspicious behaviour", Action.RETRY_AFTER, "risk", "live",
         delay=RISK_CONTROL_DELAY),
    Rule("ret", "1019", "anti-bot check failed (shark not pass); needs a browser-made a_bogus", Action.FAILED,
         "anti-bot", "live"),
    Rule("ret", "-4", "shark check reject", Action.RETRY_AFTER, "risk", "live", delay=RISK_CONTROL_DELAY),
    Rule("ret", "34010100", "param error: the daily credit claim was refused", Action.FAILED, "claim", "live"),
    Rule("fail_code", "2047", "content violation", Action.BLOCKED, "content", "live"),
    Rule("fail_code", "1006", "not enough credits left", Action.FAILED, "credits", "live", TokenEffect.EXHAUSTED),
    Rule("fail_code", "2039", "not enough credits left", Action.FAILED, "credits", "live", TokenEffect.EXHAUSTED),
    # HTTP statuses and the network.
    Rule("http", "401", "unauthorised", Action.STOP, "login", "http", TokenEffect.QUARANTINE),
    Rule("http", "403", "forbidden", Action.STOP, "permission", "http"),
    # Only a token's own proxy answers 407 (the service never does): nothing reached the service, and no call with
    # that token will pass until its proxy credentials are fixed.
    Rule("http", "407", "proxy authentication required: the token's proxy refused its credentials", Action.STOP,
         "proxy", "http", TokenEffect.QUARANTINE),
    Rule("http", "404", "not found (a gateway, or a path that moved): tried again", Action.RETRY, "server", "http"),
    Rule("http", "408", "request timeout", Action.RETRY, "network", "http"),
    Rule("http", "429", "too many requests", Action.RETRY_AFTER, "rate", "http", delay=5.0),
    Rule("http", "5xx", "server error", Action.RETRY, "server", "http"),
    # Asset URLs are signed and expire (about 2 h on the live service); the host answers an expired or revoked one
    # with one of these. The download lists the job again for fresh URLs and tries once more.
    Rule("asset", "401", "asset URL refused: listed again for a fresh URL", Action.RETRY, "expired", "http"),
    Rule("asset", "403", "asset URL expired: listed again for a fresh URL", Action.RETRY, "expired", "http"),
    Rule("asset", "404", "asset not found at its URL: listed again for a fresh URL", Action.RETRY, "expired", "http"),
    Rule("asset", "410", "asset URL gone: listed again for a fresh URL", Action.RETRY, "expired", "http"),
    Rule("transport", "connect", "could not connect (nothing was sent)", Action.RETRY, "network", "http"),
    Rule("transport", "timeout", "no answer in time", Action.RETRY, "network", "http"),
    Rule("transport", "connection", "connection failed or dropped", Action.RETRY, "network", "http"),
    # What this tool concludes on its own, with no code from the service.
    Rule("local", "malformed", "an answer of a shape the client cannot use (HTML, a wrong type, cut short)",
         Action.RETRY, "malformed", "local"),
    Rule("local", "too-large", "an asset larger than the limit (--max-asset-bytes)", Action.FAILED, "too-large",
         "local"),
    Rule("local", "no-files", "the job finished without its files: asked again, then left for the next run",
         Action.RETRY, "no-files", "local"),
    Rule("local", "upload", "a local reference image could not be uploaded (gone, changed or unreadable)",
         Action.FAILED, "upload", "local"),
    Rule("local", "not-found", "the service has not shown the submitted record", Action.FAILED, "not-found",
         "local"),
    Rule("local", "timeout", "the job did not finish in time (poll timeout)", Action.FAILED, "network", "local"),
)

_BY_CODE: dict[tuple[str, str], Rule] = {(rule.source, rule.code): rule for rule in RULES}

UNKNOWN_RET = Rule("ret", "*", "an error code not in this table", Action.RETRY, "unknown", "http")
UNKNOWN_FAIL = Rule("fail_code", "*", "generation failed", Action.FAILED, "generation", "http")
UNKNOWN_HTTP = Rule("http", "4xx", "refused", Action.FAILED, "http", "http")


def classify(source: Source, code: str | int | None) -> Rule:
    """The rule for an outcome. Unknown ``ret`` codes are retried (bounded): they cost nothing when refused."""
    text = "" if code is None else str(code)
    rule = _BY_CODE.get((source, text))
    if rule is not None:
        return rule
    if source == "asset":
        # An asset host's other answers read like the API's, but no asset answer stops a token or the run: the
        # URL is signed and carries no session.
        http = classify("http", code)
        return http if http.action in (Action.RETRY, Action.RETRY_AFTER) else UNKNOWN_HTTP
    if source == "http":
        return _BY_CODE[("http", "5xx")] if text.startswith("5") else UNKNOWN_HTTP
    if source == "fail_code":
        return UNKNOWN_FAIL
    if source == "transport":
        return _BY_CODE[("transport", "connection")]
    return UNKNOWN_RET


def error_for(rule: Rule, message: str, **details: Any) -> APIError:
    """The exception its action calls for: retry later, stop submitting, or give up on the request."""
    if rule.action in (Action.RETRY, Action.RETRY_AFTER):
        return RetryableAPIError(message, rule=rule, **details)
    if rule.action is Action.STOP:
        return StopSubmittingError(message, rule=rule, **details)
    return RequestFailedError(message, rule=rule, **details)


def meaning(source: Source, code: str | int | None) -> str:
    return classify(source, code).meaning


def render_markdown() -> str:
    """The table as Markdown, for the README."""
    lines = [
        "| source | code | meaning | action | reason | token | seen in |",
        "|---|---|---|---|---|---|---|",
    ]
    for rule in (*RULES, UNKNOWN_RET, UNKNOWN_FAIL, UNKNOWN_HTTP):
        action = rule.action.value + (f" ({rule.delay:g} s)" if rule.delay else "")
        token = "" if rule.token is TokenEffect.NONE else rule.token.value
        lines.append(f"| {rule.source} | `{rule.code}` | {rule.meaning} | {action} | {rule.reason} | {token} | "
                     f"{rule.origin} |")
    return "\n".join(lines) + "\n"
