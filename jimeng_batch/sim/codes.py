"""Which ``ret`` code and message the simulator answers with, per profile: the one table of outcomes.

The ``document`` profile speaks the API document's codes (2001 credits, 2002 parameters, 2004 busy, 2005
permission); the ``live`` profile speaks the codes the live service has been seen to send (1006, 1002, 3018, 4013).
Neither source has a login code other than the live 1015, so both profiles use it. Where the live service has no
observed code for a situation (busy, the in-flight cap) the live profile answers with its risk-control code 4013,
which is what a client sees there when it pushes too hard.

Everything else in the simulator names an outcome by its *concept* (``"credits"``, ``"param"``...) and looks the
code up here; a config may override single codes (``error_codes:``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Profile = Literal["document", "live"]
PROFILES: tuple[Profile, ...] = ("document", "live")

Concept = Literal[
    "param",  # malformed request or draft; the message names the field
    "credits",  # not enough credits for this request
    "busy",  # injected "service busy"
    "permission",  # stale version, bad or missing Sign, missing `os`
    "login",  # missing or unknown sessionid cookie
    "model_unavailable",  # a model the config marks as unavailable
    "in_flight_cap",  # the account already has max_in_flight unfinished jobs
    "rate_limited",  # the account sends more requests per second than allowed
    "anti_bot",  # a model whose submits need a browser-made a_bogus (live profile only: ret 1019)
]
CONCEPTS: tuple[Concept, ...] = (
    "param", "credits", "busy", "permission", "login", "model_unavailable", "in_flight_cap", "rate_limited",
    "anti_bot",
)

CONTENT_FILTERED_FAIL_CODE = "2038"  # the record's fail_code at status 30, in both profiles


@dataclass(frozen=True, slots=True)
class Outcome:
    """A business error: the ``ret`` string and the ``errmsg`` prefix."""

    ret: str
    errmsg: str


CODE_TABLE: Mapping[Profile, Mapping[Concept, Outcome]] = MappingProxyType(
    {
        "document": MappingProxyType(
            {
                "param": Outcome("2002", "参数错误"),
                "credits": Outcome("2001", "积分不足"),
                "busy": Outcome("2004", "服务繁忙"),
                "permission": Outcome("2005", "权限不足"),
                "login": Outcome("1015", "login error"),
                "model_unavailable": Outcome("2003", "模型不可用"),
                "in_flight_cap": Outcome("2004", "服务繁忙: 并行任务已达上限"),
                "rate_limited": Outcome("2004", "服务繁忙: 请求过于频繁"),
                # The document knows no anti-bot check; the document profile never answers this.
                "anti_bot": Outcome("1019", "shark not pass"),
            }
        ),
        "live": MappingProxyType(
            {
                "param": Outcome("1002", "common error"),
                "credits": Outcome("1006", "Not enough credits left"),
                "busy": Outcome("4013", "生成失败，疑似存在异常行为，请重新尝试"),
                "permission": Outcome("3018", "permission denied"),
                "login": Outcome("1015", "login error"),
                "model_unavailable": Outcome("1002", "common error: model not available"),
                "in_flight_cap": Outcome("4013", "并行任务已达上限"),
                "rate_limited": Outcome("4013", "生成失败，疑似存在异常行为，请重新尝试"),
                "anti_bot": Outcome("1019", "shark not pass"),
            }
        ),
    }
)


# How the live service has refused the daily claim (protocol reference 2.6 and 3): the same in both profiles, since the
# document has no claim at all. A config names one of these codes per account (``claim_errors:``).
CLAIM_REFUSALS: Mapping[str, Outcome] = MappingProxyType(
    {
        "34010100": Outcome("34010100", "param error"),
        "-4": Outcome("-4", "shark check reject"),
    }
)


def outcome(profile: Profile, concept: Concept, overrides: Mapping[str, str] | None = None) -> Outcome:
    """The code and message for ``concept`` in ``profile``, with a config's ``error_codes`` override applied."""
    base = CODE_TABLE[profile][concept]
    if overrides and concept in overrides:
        return Outcome(str(overrides[concept]), base.errmsg)
    return base
