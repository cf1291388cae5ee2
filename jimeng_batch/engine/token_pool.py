"""The pool of session tokens: a cap on jobs in flight per token, and which tokens may still submit.

The API document's concurrency rule is three jobs at a time, queued: each token has ``cap`` slots, a job holds
one from its submit until its generation ends (success or failure), and requests wait for a slot in the order
they were planned. A request is sent only with a token of its region (a token's prefix, else the run's region):
each region's tokens share its requests the same way. A token is quarantined on a login error and marked
exhausted on a credit error; the others go on, and when none is left, submitting stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from jimeng_batch.protocol.outcomes import TokenEffect
from jimeng_batch.protocol.tokens import Token


class TokenState(StrEnum):
    """Whether a token may still submit this run."""

    ACTIVE = "active"
    QUARANTINED = "quarantined"  # its login is gone
    EXHAUSTED = "exhausted"  # its account has no credits left
    CLOSED = "closed"  # the run admits nothing more


@dataclass
class _Slot:
    token: Token
    free: int
    state: TokenState = TokenState.ACTIVE
    reason: str = ""
    in_flight: int = 0
    high_water: int = 0


class TokenPool:
    """Slots per token; create it inside the running event loop (it owns an asyncio.Condition)."""

    def __init__(self, tokens: list[Token], cap: int, region_of: Callable[[Token], str] | None = None) -> None:
        if not tokens:
            raise ValueError("a token pool needs at least one token")
        self.cap = cap
        self.region_of = region_of or (lambda token: token.region or "")
        # By account (a one-way id of the token), never by label: two tokens may share a mask.
        self._slots = {token.account: _Slot(token, cap) for token in tokens}
        self._changed = asyncio.Condition()

    def token(self, account: str | None) -> Token | None:
        """The pool's token of an account, if the pool has it."""
        slot = self._slots.get(account or "")
        return slot.token if slot else None

    def by_label(self, label: str | None) -> Token | None:
        """The token with this masked label, if exactly one has it (for rows recorded before accounts were)."""
        found = [slot.token for slot in self._slots.values() if slot.token.label == label]
        return found[0] if len(found) == 1 else None

    @property
    def tokens(self) -> list[Token]:
        return [slot.token for slot in self._slots.values()]

    @property
    def any_active(self) -> bool:
        return any(slot.state is TokenState.ACTIVE for slot in self._slots.values())

    def states_of(self, region: str) -> set[TokenState]:
        """The states of ``region``'s tokens."""
        return {slot.state for slot in self._slots.values() if self.region_of(slot.token) == region}

    def states(self) -> dict[str, TokenState]:
        """Each token's state, by masked label."""
        return {slot.token.label: slot.state for slot in self._slots.values()}

    def described(self) -> dict[str, str]:
        """Each token's state with the reason it left the pool, for people: ``exhausted (credits)``."""
        return {slot.token.label: slot.state + (f" ({slot.reason})" if slot.reason else "")
                for slot in self._slots.values()}

    def high_water(self) -> dict[str, int]:
        return {slot.token.label: slot.high_water for slot in self._slots.values()}

    async def acquire(self, only: Token | None = None, region: str | None = None) -> Token | None:
        """A slot on the active token with the most free slots (of ``region``, when given; or on ``only``); None
        once no such token may submit any more."""
        async with self._changed:
            while True:
                active = [slot for slot in self._slots.values() if slot.state is TokenState.ACTIVE
                          and (only is None or slot.token.account == only.account)
                          and (region is None or self.region_of(slot.token) == region)]
                if not active:
                    return None
                best = max(active, key=lambda slot: slot.free)
                if best.free > 0:
                    self._take(best)
                    return best.token
                await self._changed.wait()

    def hold(self, token: Token) -> None:
        """Count a job already in flight on ``token`` (resumed from a previous run) against its cap."""
        self._take(self._slots[token.account])

    def _take(self, slot: _Slot) -> None:
        slot.free -= 1
        slot.in_flight += 1
        slot.high_water = max(slot.high_water, slot.in_flight)

    async def release(self, token: Token) -> None:
        async with self._changed:
            slot = self._slots[token.account]
            slot.free += 1
            slot.in_flight -= 1
            self._changed.notify_all()

    async def mark(self, token: Token, effect: TokenEffect, reason: str) -> None:
        """Take a token out of the pool for the rest of the run."""
        if effect is TokenEffect.NONE:
            return
        async with self._changed:
            slot = self._slots[token.account]
            if slot.state is TokenState.ACTIVE:
                slot.state = TokenState.QUARANTINED if effect is TokenEffect.QUARANTINE else TokenState.EXHAUSTED
                slot.reason = reason
            self._changed.notify_all()

    async def close(self) -> None:
        """Wake every waiter: nothing more will be admitted."""
        async with self._changed:
            for slot in self._slots.values():
                if slot.state is TokenState.ACTIVE:
                    slot.state = TokenState.CLOSED
            self._changed.notify_all()
