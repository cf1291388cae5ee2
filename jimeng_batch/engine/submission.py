"""One request on its way to an accepted submit: each try, the question asked after a lost answer, the retry.

The executor runs a :class:`Submission` through the retry policy: :meth:`Submission.send` is the call,
:meth:`Submission.reconcile` what is asked before sending again after an answer was lost (the service may have it
already), :meth:`Submission.requeue` what a retry records. A try whose answer was lost binds the request to its
account: the service may show the record only later, and the same ``submit_id`` sent with another account would be
charged again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jimeng_batch.engine.ledger import RequestRow
from jimeng_batch.engine.states import State
from jimeng_batch.errors import RetryableAPIError
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.client import Submitted
from jimeng_batch.protocol.drafts import build_request
from jimeng_batch.protocol.tokens import Token

# Failures after which the submit may have been received and charged: no answer, a server error, an answer that
# could not be read.
LOST_ANSWER_REASONS = frozenset({"network", "server", "malformed"})

if TYPE_CHECKING:
    from jimeng_batch.engine.executor import Executor


class Submission:
    """One request on its way to an accepted submit: its row as it now is, and what its tries found."""

    def __init__(self, executor: Executor, row: RequestRow) -> None:
        self.executor = executor
        self.row = row
        self.spec = row.spec()
        self.sends = 0
        self.uploaded: dict[str, str] = {}  # sha256 -> image_uri of the local images it names
        self.recovered = False  # a lost answer's submit was found on the service
        self.absent = False  # the service was asked after the last failure and does not have it
        # A try whose answer was lost may have been charged, even when the service does not show it yet (records
        # appear late): from then on the request stays with that account, never sent with another.
        self.maybe_received = row.account is not None

    async def send(self, token: Token) -> Submitted:
        x = self.executor
        self.sends += 1
        region = self.spec.region  # the request's own (its job's): its token and client are of that region
        self.row = x._set(self.row, State.SUBMITTING, token=token.label, account=token.account,
                          origin=x.origin_of(region), detail=f"attempt {self.sends}")
        x.ledger.bump(self.row.key, "submits")
        request = build_request(self.spec, catalog.REGIONS[region], x.versions, web_id=x.web_id_of(region),
                                created_ms=int(x.clock() * 1000), uploaded=self.uploaded)
        return await x.client_for(token).submit(request, token, request_key=self.row.key)

    async def reconcile(self, token: Token, error: RetryableAPIError) -> Submitted | None:
        """A submit that got no answer may have arrived and been charged: ask before sending it again."""
        if error.code == "connect" or error.rule.reason not in LOST_ANSWER_REASONS:
            self.absent = True  # nothing reached the service, or it answered and refused: nothing was charged
            return None
        self.maybe_received = True
        found = await self.executor._history(token, [self.row.submit_id], key=self.row.key)
        record = (found or {}).get(self.row.submit_id)
        if record is not None and record.history_record_id:
            self.recovered = True
            return Submitted(record.history_record_id, "", self.row.submit_id)
        self.absent = found is not None  # asked, and it does not have it (None: it could not be asked)
        return None

    def requeue(self, error: RetryableAPIError) -> None:
        bound = {} if self.maybe_received else {"account": None, "token": None}
        self.row = self.executor._set(self.row, State.PLANNED, detail=f"retry: {error.rule.meaning}", **bound)
