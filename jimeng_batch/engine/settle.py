"""What a run settles in its ledger before it sends anything, each change said to the person running it.

- Requests never sent that the manifest (and shard) no longer names are set aside as ``removed``; ones it names
  again are planned again. Requests already sent stay: they are paid for.
- ``--retry-failed`` / ``--retry-blocked`` / ``--retry-invalid`` / ``--resubmit-lost`` plan those requests again,
  under a new ``submit_id`` (the service would answer the old one with the old record), saying what they will cost.
- Downloaded files are checked (sizes; with ``--verify`` their sha256 too) and what differs is downloaded again.
"""

from __future__ import annotations

from pathlib import Path

from jimeng_batch.engine.config import RunConfig
from jimeng_batch.engine.ledger import Ledger
from jimeng_batch.engine.states import State
from jimeng_batch.intake.expand import SUBMIT_ID_NAMESPACE
from jimeng_batch.protocol.ids import uuid5_text

_REPLAN = (("retry_failed", State.FAILED, "failed"), ("retry_blocked", State.BLOCKED, "blocked"),
           ("retry_invalid", State.INVALID, "invalid"), ("resubmit_lost", State.LOST, "lost"))


def next_submit_id(submit_id: str) -> str:
    """The submit_id of a request sent again on purpose: derived from the last one, so still reproducible."""
    return uuid5_text(SUBMIT_ID_NAMESPACE, f"{submit_id}:again")


def settle(ledger: Ledger, config: RunConfig, out_dir: Path, *, planned_anew: bool) -> list[str]:
    """Settle the ledger for a run; the lines to tell the person running it."""
    notes: list[str] = []
    if planned_anew and ledger.plan_id is not None:
        removed, restored = ledger.set_aside_unplanned(ledger.plan_id)
        if removed:
            notes.append(f"{removed} request(s) no longer in the manifest were set aside (never sent)")
        if restored:
            notes.append(f"{restored} request(s) back in the manifest are planned again")
    for flag, state, name in _REPLAN:
        if not getattr(config, flag):
            continue
        rows = list(ledger.in_states([state]))
        credits = sum(row.estimated_credits for row in rows)
        for row in rows:
            ledger.set_state(row.key, State.PLANNED, detail=f"--{flag.replace('_', '-')}: planned again",
                             submit_id=next_submit_id(row.submit_id), history_record_id=None, task_id=None,
                             token=None, account=None, code=None, reason=None, message=None)
        notes.append(f"re-planning {len(rows)} {name} request(s): about {credits:g} credit(s)")
    damaged = ledger.verify_assets(out_dir, hashes=config.verify)
    for key in damaged:
        current = ledger.get(key)
        if current is not None and current.state == State.DOWNLOADED:
            ledger.set_state(key, State.SUCCEEDED, detail="a downloaded file is missing or damaged: download again")
    if config.verify:
        files = sum(damaged.values())
        notes.append(f"{files} file(s) differ from the ledger; downloading them again" if files
                     else "every file matches the ledger")
    elif damaged:
        notes.append(f"{len(damaged)} request(s) have files missing or cut short; downloading them again")
    return notes
