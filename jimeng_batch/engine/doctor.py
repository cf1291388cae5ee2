"""The accounts of a pool, checked before credits are spent (``doctor``), their balances and the daily claim
(``credits``, ``run --claim-daily``).

For each token, named by its masked label only: is the session alive (``/passport/account/info/v2``; where a host
answers that path with HTTP 404, as the SG host does, a balance read proves it instead), the region it is used for,
its balance, whether today's claim looks available, and one signed call that costs nothing, made with the effective
protocol constants, so that a stale ``da_version`` or ``Appvr`` (``3018 permission denied``) is found before a
submit is refused for it.

Every answer is read by the client through ``protocol/answers.py``; what cannot be read, and every refusal, becomes
a reason for that token (scrubbed of the pool's tokens and made printable), never a crash and never a reason to skip
the other tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from jimeng_batch.engine.clients import Clients, token_region
from jimeng_batch.engine.config import RunConfig
from jimeng_batch.errors import APIError, printable
from jimeng_batch.intake.manifest import Manifest
from jimeng_batch.intake.plan import plan_web_id
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.catalog import ProtocolVersions
from jimeng_batch.protocol.client import ACCOUNT_INFO_PATH, Claim, CreditBalance, JimengClient
from jimeng_batch.protocol.drafts import default_web_id
from jimeng_batch.protocol.tokens import Scrubber, Token

ClaimState = Literal["available", "claimed", "unknown"]
ProtocolState = Literal["accepted", "refused", "unknown"]
DAY = 86400.0

# Exit codes of both commands: every token fine, some not, none (nothing can be generated: stop).
EXIT_OK, EXIT_SOME, EXIT_NONE = 0, 1, 3


@dataclass(frozen=True, slots=True)
class Target:
    """Where the checks go and what they send: the region, its version constants and the webId."""

    region: str
    versions: ProtocolVersions
    web_id: str

    @classmethod
    def of(cls, manifest: Manifest | None, region: str | None = None,
           versions: ProtocolVersions | None = None) -> Target:
        """The manifest's region and protocol settings (``region`` given replaces its region), else the defaults
        (``versions``: the constants resolved without a manifest, else the default profile's)."""
        if manifest is None:
            chosen = region or catalog.DEFAULT_REGION
            versions = versions or catalog.PROTOCOL_PROFILES[catalog.DEFAULT_PROTOCOL_PROFILE]
            return cls(chosen, versions, versions.web_id or default_web_id(chosen))
        settings = manifest.settings
        if region is None or region == settings.region:
            return cls(settings.region, settings.protocol, plan_web_id(manifest))
        return cls(region, settings.protocol, settings.protocol.web_id or default_web_id(region))

    def constants(self) -> dict[str, str]:
        v = self.versions
        return {"da_version": v.da_version, "app_version": v.app_version, "web_version": v.web_version}


def stale_message(target: Target, reason: str) -> str:
    """What to say when the service refuses the protocol constants, and how to change them."""
    v = target.versions
    return (f"the service refused the protocol constants (da_version {v.da_version}, appvr {v.app_version}, "
            f"web_version {v.web_version}): {reason}; set current ones with --protocol da_version=X.Y.Z (and "
            "app_version=...), or under protocol: in the manifest")


def claim_state(balance: CreditBalance, now: float) -> ClaimState:
    """Whether today's claim looks available, from the balance alone (asking the claim would make it).

    The day's grant is gift credit that expires with the day, and the service lists it under ``expiring_credits``
    with its ``expire_time``. So: credits due to expire within a day mean today's claim was made; no gift and
    nothing expiring means it was not; gift credits with no such expiry cannot be told apart (``unknown``). A grant
    spent to nothing reads as available: claiming again then answers "already claimed", which costs nothing.
    """
    if balance.expiring > 0 and 0 < balance.expiring_first <= now + DAY:
        return "claimed"
    if balance.gift > 0 or balance.expiring > 0:
        return "unknown"
    return "available"


def balance_dict(balance: CreditBalance | None) -> dict[str, int] | None:
    if balance is None:
        return None
    return {"gift": balance.gift, "purchase": balance.purchase, "vip": balance.vip, "expiring": balance.expiring,
            "total": balance.total}


@dataclass(frozen=True, slots=True)
class AccountCheck:
    """What ``doctor`` found for one token."""

    label: str
    region: str
    alive: bool | None  # None: could not tell
    alive_by: str  # "account_info", "user_credit" (the 404 fallback), or "" when not known
    balance: CreditBalance | None
    claim: ClaimState
    protocol: ProtocolState
    problems: tuple[str, ...] = ()

    @property
    def can_generate(self) -> bool:
        """Alive, its constants accepted, and not known to be out of credits."""
        empty = self.balance is not None and self.balance.total <= 0
        return bool(self.alive) and self.protocol == "accepted" and not empty

    def as_dict(self) -> dict[str, Any]:
        return {"token": self.label, "region": self.region, "alive": self.alive, "alive_by": self.alive_by or None,
                "balance": balance_dict(self.balance), "claim": self.claim, "protocol": self.protocol,
                "can_generate": self.can_generate, "problems": list(self.problems)}


def pool_exit_code(fine: Iterable[bool]) -> int:
    """0 when every token is fine, 3 when none is, 1 otherwise."""
    flags = list(fine)
    if flags and all(flags):
        return EXIT_OK
    return EXIT_NONE if not any(flags) else EXIT_SOME


@dataclass(frozen=True, slots=True)
class DoctorReport:
    target: Target
    checks: tuple[AccountCheck, ...]
    stale: str | None  # the refusal of the protocol constants, said once for the pool

    @property
    def exit_code(self) -> int:
        return pool_exit_code(check.can_generate for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"region": self.target.region, "protocol": self.target.constants(),
                "tokens": [check.as_dict() for check in self.checks], "stale_protocol": self.stale,
                "can_generate": sum(check.can_generate for check in self.checks), "exit_code": self.exit_code}


def _reason(error: APIError, scrub: Callable[[str], str]) -> str:
    """An error as it may be shown: no token in it, nothing that could repaint the terminal."""
    return printable(scrub(str(error)))


def _is(error: APIError, reason: str) -> bool:
    return error.rule.reason == reason


async def check_account(client: JimengClient, token: Token, target: Target, scrub: Callable[[str], str],
                        now: float) -> tuple[AccountCheck, str | None]:
    """One token's checks (liveness, balance, the protocol probe), and the stale-constants message if refused."""
    problems: list[str] = []
    alive: bool | None = None
    alive_by = ""
    stale: str | None = None
    protocol: ProtocolState = "unknown"

    def refused(error: APIError) -> bool:
        """Login and permission refusals say something of the whole token; note them and say whether it was one."""
        nonlocal alive, protocol, stale
        if _is(error, "login"):
            alive = False
            problems.append(f"login: {_reason(error, scrub)}")
            return True
        if _is(error, "permission"):
            protocol = "refused"
            stale = stale or stale_message(target, _reason(error, scrub))
            problems.append(f"permission: {_reason(error, scrub)}")
            return True
        return False

    fallback = False
    try:
        await client.account_info(token)
        alive, alive_by = True, "account_info"
    except APIError as error:
        if error.http_status == 404:
            fallback = True  # the SG host has no such path: a balance read proves the session instead
        elif not refused(error):
            problems.append(f"could not check the session: {_reason(error, scrub)}")
    balance: CreditBalance | None = None
    if alive is not False:
        try:
            balance = await client.user_credit(token)
            if fallback:
                alive, alive_by = True, "user_credit"
        except APIError as error:
            if not refused(error):
                problems.append(f"could not read the balance of {token.label}: {_reason(error, scrub)}")
    if fallback and alive is None and protocol != "refused":
        problems.append(f"could not check the session: {ACCOUNT_INFO_PATH} answered HTTP 404 and the balance, "
                        "which would prove it instead, could not be read")
    if alive is not False and protocol != "refused":
        try:
            await client.probe(token)
            protocol = "accepted"
        except APIError as error:
            if not refused(error):
                problems.append(f"could not check the protocol constants: {_reason(error, scrub)}")
    if balance is not None and balance.total <= 0:
        problems.append("no credits left")
    claim: ClaimState = claim_state(balance, now) if balance is not None else "unknown"
    check = AccountCheck(token.label, token_region(token, target.region), alive, alive_by, balance, claim,
                         protocol, tuple(problems))
    return check, stale


async def examine(client_for: Callable[[Token], JimengClient], tokens: list[Token], target: Target,
                  scrub: Callable[[str], str], *, clock: Callable[[], float] = time.time) -> DoctorReport:
    """``doctor`` over the pool, one token after the other (a few calls each), each through its own client (its
    proxy's, or direct)."""
    checks: list[AccountCheck] = []
    stale: str | None = None
    for token in tokens:
        check, refused = await check_account(client_for(token), token, target, scrub, clock())
        checks.append(check)
        stale = stale or refused
    return DoctorReport(target, tuple(checks), stale)


# -- balances and the daily claim --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreditLine:
    """One token's balance and, when asked, its claim: what it gave, or why it was refused."""

    label: str
    balance: CreditBalance | None  # after the claim, when one was made
    claim_state: ClaimState
    claimed: bool = False  # a claim was asked for
    claim: Claim | None = None  # the service's answer to it
    claim_code: str = ""  # the refusal's code
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def claim_outcome(self) -> str:
        """``claimed N``, ``already claimed today``, ``refused (ret C)``, ``not claimed`` or empty."""
        if not self.claimed:
            return ""
        if self.claim is None:
            return f"refused (ret {self.claim_code})" if self.claim_code else "not claimed"
        return f"claimed {self.claim.receive_quota}" if self.claim.granted else "already claimed today"

    def describe(self) -> str:
        """One line for a run's log: what the claim gave and the balance after."""
        after = f"; balance {self.balance.total}" if self.balance is not None else ""
        text = f"daily claim on {self.label}: {self.claim_outcome or 'not made'}{after}"
        return text + (f" ({'; '.join(self.problems)})" if self.problems else "")

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"token": self.label, "balance": balance_dict(self.balance),
                                "claim_state": self.claim_state, "problems": list(self.problems), "ok": self.ok}
        if self.claimed:
            answer = self.claim
            data["claim"] = {
                "outcome": self.claim_outcome, "code": self.claim_code or None,
                "is_first_receive": answer.is_first_receive if answer else None,
                "receive_quota": answer.receive_quota if answer else None,
                "receive_inter_days": answer.receive_inter_days if answer else None,
            }
        return data


async def credit_line(client: JimengClient, token: Token, scrub: Callable[[str], str], *, claim: bool,
                      now: float) -> CreditLine:
    """One token's claim (when asked) and then its balance; a refusal of either is said, never raised."""
    problems: list[str] = []
    answer: Claim | None = None
    code = ""
    if claim:
        try:
            answer = await client.credit_receive(token)
        except APIError as error:
            code = (error.code or "") if error.rule.source == "ret" else ""  # the service's own refusal code
            problems.append(f"claim: {_reason(error, scrub)}")
    balance: CreditBalance | None = None
    try:
        balance = await client.user_credit(token)
    except APIError as error:
        problems.append(f"could not read the balance of {token.label}: {_reason(error, scrub)}")
    state: ClaimState = claim_state(balance, now) if balance is not None else "unknown"
    return CreditLine(token.label, balance, state, claim, answer, code, tuple(problems))


async def credit_lines(client_for: Callable[[Token], JimengClient], tokens: list[Token], scrub: Callable[[str], str],
                       *, claim: bool, clock: Callable[[], float] = time.time) -> list[CreditLine]:
    """Every token's balance, and with ``claim`` its daily claim first, each through its own client; one token's
    refusal stops no other's."""
    return [await credit_line(client_for(token), token, scrub, claim=claim, now=clock()) for token in tokens]


# -- the connection and the entry points -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def connected_clients(config: RunConfig, target: Target, tokens: list[Token]) -> AsyncIterator[Clients]:
    """The clients for ``target``, one per (region, proxy) of the pool (as a run has them): each token to its own
    region's hosts (its prefix's, else the target's), or that region's base URL, or the built-in simulator
    (``sim``: one started for the duration, holding nothing afterwards)."""
    with contextlib.ExitStack() as stack:
        base_url: Callable[[str], str | None] = config.region_base_url
        if config.sim:
            from jimeng_batch.sim import running_simulator

            sim_url = stack.enter_context(running_simulator(config.simulator_settings())).base_url
            base_url = lambda _region: sim_url  # noqa: E731 - every region's calls go to the one simulator

        def web_id(region: str) -> str:
            return target.web_id if region == target.region else target.versions.web_id or default_web_id(region)

        async with Clients(region=catalog.REGIONS[target.region], versions=target.versions, web_id=web_id,
                           base_url=base_url, imagex_url=config.imagex_url, limits=config.call_limits(),
                           tokens=tokens) as clients:
            yield clients


def doctor(config: RunConfig, target: Target, tokens: list[Token]) -> DoctorReport:
    """Check every token of the pool (see :func:`examine`)."""

    async def main() -> DoctorReport:
        async with connected_clients(config, target, tokens) as clients:
            return await examine(clients.client, tokens, target, Scrubber(tokens))

    return asyncio.run(main())


def credits(config: RunConfig, target: Target, tokens: list[Token], *, claim: bool) -> list[CreditLine]:
    """Every token's balance, and with ``claim`` its daily claim first (see :func:`credit_lines`)."""

    async def main() -> list[CreditLine]:
        async with connected_clients(config, target, tokens) as clients:
            return await credit_lines(clients.client, tokens, Scrubber(tokens), claim=claim)

    return asyncio.run(main())
