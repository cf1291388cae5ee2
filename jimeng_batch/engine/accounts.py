"""Work bound to accounts: what a run takes up again from the ledger before it admits anything new.

A request sent with an account (the ledger keeps a one-way id of the token, ``Token.account``) stays with that
account: its record lives there and its credits were spent there. So at the start of a run:

- ``submitting`` requests (sent, answer unknown) are reconciled by ``submit_id`` with their own account before
  anything is sent again; the service either has them (``submitted``) or never got them (``planned`` again, or
  ``removed`` when the manifest no longer names them);
- ``submitted``, ``running``, ``succeeded`` and ``lost`` requests are followed on their own account;
- a request whose account has no token in this run's pool waits, state unchanged, and is reported as waiting for
  that account; it is never sent again with another one. ``--reassign-orphans`` is the explicit way out: each such
  request is looked for by ``submit_id`` on every token of the pool, followed where it is found, and planned again
  (to be paid again) where it is found nowhere.

Rows written before the ledger recorded accounts name their token by its masked label only; they are matched to
the pool's token with that label when exactly one has it, and wait otherwise.

A request sent somewhere (``requests.origin``: the API host, which its region and the base URL chose) is followed
there only: a run that sends its region elsewhere (another base URL, allowed into the folder by
``--allow-mixed-origins``) leaves it as it is, for a run that sends where it was sent. Each region of a run has its
own origin: a request is compared with its own region's.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from typing import TYPE_CHECKING

from jimeng_batch.engine.ledger import RequestRow, same_service
from jimeng_batch.engine.states import State
from jimeng_batch.protocol.client import HistoryRecord
from jimeng_batch.protocol.tokens import Token

if TYPE_CHECKING:
    from jimeng_batch.engine.executor import Executor

log = logging.getLogger("jimeng_batch.run")

HISTORY_BATCH = 50  # ids per get_history_by_ids call when reconciling
FOLLOWED = (State.SUBMITTED, State.RUNNING, State.SUCCEEDED, State.LOST)
# A planned request that was sent before (its answer lost, its record perhaps not shown yet) keeps its account.
BOUND_PLANNED = (State.PLANNED, State.SKIPPED)


class Accounts:
    """The requests a run inherits, by account."""

    def __init__(self, executor: Executor) -> None:
        self.x = executor
        self.waiting: Counter[str] = Counter()  # masked label of a missing account -> requests waiting for it
        self.elsewhere: Counter[str] = Counter()  # origin -> requests sent there, which this run does not send to
        self._orphans: list[RequestRow] = []

    def sent_elsewhere(self, row: RequestRow) -> bool:
        """Whether ``row`` was sent to another place than this run sends its region to (it is followed there only)."""
        return row.origin is not None and not same_service(row.origin, self.x.origin_of(self.x.region_of(row)))

    def _away(self, row: RequestRow) -> None:
        self.elsewhere[str(row.origin)] += 1

    def token_of(self, row: RequestRow) -> Token | None:
        """The pool's token for the account ``row`` was sent with."""
        pool = self.x.pool
        if row.account is not None:
            return pool.token(row.account)
        return pool.by_label(row.token)  # a row from before accounts were recorded

    def _missing(self, row: RequestRow) -> None:
        if self.x.config.reassign_orphans:
            self._orphans.append(row)
        else:
            self.waiting[row.token or "an unknown account"] += 1

    async def reconcile(self) -> None:
        """Ask the service about every request whose submit may or may not have arrived, before resending any."""
        by_token: dict[str, tuple[Token, list[RequestRow]]] = {}
        for row in self.x.ledger.in_states([State.SUBMITTING]):
            token = self.token_of(row)
            if self.sent_elsewhere(row):
                self._away(row)
            elif token is None:
                self._missing(row)
            else:
                by_token.setdefault(token.account, (token, []))[1].append(row)
        for token, group in by_token.values():
            await self._ask(token, group, final=True)  # what it had is followed by resume_in_flight, next

    async def _ask(self, token: Token, group: list[RequestRow], *, final: bool) -> list[RequestRow]:
        """Look ``group`` up by submit_id on ``token``; what the service had is bound to it (and, for orphans,
        followed at once). The rest is returned, or, when ``final``, planned again (or set aside when the manifest
        no longer names it)."""
        unknown: list[RequestRow] = []
        x = self.x
        for start in range(0, len(group), HISTORY_BATCH):
            chunk = group[start:start + HISTORY_BATCH]
            found = await x._history(token, [row.submit_id for row in chunk])
            if found is None:
                continue  # could not ask: the rows stay as they are for the next run
            for row in chunk:
                record: HistoryRecord | None = found.get(row.submit_id)
                if record is not None and record.history_record_id:
                    bound = x._set(row, State.SUBMITTED if row.state != State.SUCCEEDED else row.state,
                                   history_record_id=record.history_record_id, token=token.label,
                                   account=token.account, detail="reconciled: the service had it" if final
                                   else f"reassigned: the service had it on {token.label}")
                    if not final:
                        x.spawn(x.finish(bound, token, lease=x.lease(token) if bound.state == State.SUBMITTED
                                         else None))
                elif final:
                    self._never_received(row)
                else:
                    unknown.append(row)
        return unknown

    def _never_received(self, row: RequestRow) -> None:
        x = self.x
        plan = x.ledger.plan_id
        if plan is not None and row.planned_in != plan:
            x._set(row, State.REMOVED, detail="never received, and no longer in the manifest: set aside")
        else:
            x._set(row, State.PLANNED, detail="reconciled: never received, safe to send again")

    async def resume_in_flight(self) -> None:
        """Follow what earlier runs left in flight, each request on its own account."""
        x = self.x
        for row in x.ledger.in_states(FOLLOWED):
            token = self.token_of(row)
            if self.sent_elsewhere(row):
                self._away(row)
            elif token is None:
                self._missing(row)
            elif row.state == State.SUCCEEDED:
                x.spawn(x.finish(row, token, lease=None))
            else:
                x.spawn(x.finish(row, token, lease=x.lease(token)))
        for row in x.ledger.in_states(BOUND_PLANNED):
            if row.account is not None and self.sent_elsewhere(row):
                self._away(row)
            elif row.account is not None and self.token_of(row) is None:
                self._missing(row)
        for label, count in self.waiting.items():
            log.warning("%d request(s) waiting for account %s: its token is not in this run's pool", count, label)
        for origin, count in self.elsewhere.items():
            going = ", ".join(sorted(set(x.origins.values())))
            message = (f"{count} request(s) sent to {origin} are left as they are: this run sends to {going}; a "
                       "run that sends there (its region, its base URL) follows them")
            log.warning(message)
            print(message, file=sys.stderr)
        if self._orphans:
            await self._reassign()

    async def _reassign(self) -> None:
        """``--reassign-orphans``: look for each orphan on every token of its region; plan again what is found
        nowhere."""
        orphans = self._orphans
        print(f"reassigning {len(orphans)} request(s) of accounts not in the pool: looked for on every token "
              "first; those found nowhere are sent again", file=sys.stderr)
        for token in self.x.pool.tokens:
            # Each token is asked about its own region's requests only: another region's are on other hosts.
            region = self.x.clients.region_of(token)
            theirs = [row for row in orphans if self.x.region_of(row) == region]
            if theirs:
                unknown = await self._ask(token, theirs, final=False)
                orphans = [row for row in orphans if self.x.region_of(row) != region or row in unknown]
            if not orphans:
                return
        for row in orphans:
            self.x._set(row, State.PLANNED, token=None, account=None, history_record_id=None,
                        detail="reassigned: not found on any account of the pool; to be sent again")
