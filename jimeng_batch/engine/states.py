"""The states of a request, in one enumeration used by the ledger, the executor, reports and ``status``.

::

    planned -> submitting -> submitted -> running -> succeeded -> downloaded
                                                  \\-> failed | blocked | invalid   (final: the service said no)
                            submitted -> lost     (never shown by the service; checked again by every run)
    planned -> skipped  (not admitted: stop, budget, interrupt, outage; planned again by the next run)
    planned | skipped -> removed  (the manifest no longer names it; never sent; planned again if it comes back)

A failure that may pass (network, 5xx, a download cut short, a record not shown yet) never ends a request that is
paid for: it stays where it was (``submitted``, ``running``, ``succeeded``) with the reason, for the next run.

``State`` is a ``StrEnum``: a state is stored in the ledger, printed and compared as its plain name.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Where a request stands."""

    PLANNED = "planned"  # in the ledger, not sent yet
    SUBMITTING = "submitting"  # about to be sent, or sent with no answer recorded: reconciled before a resend
    SUBMITTED = "submitted"  # accepted: the service returned its record id
    RUNNING = "running"  # a poll found the job out of the service's queue
    SUCCEEDED = "succeeded"  # generated; its files are still to be downloaded
    DOWNLOADED = "downloaded"  # every file on disk, checked, and in the assets table
    FAILED = "failed"  # the service or the network said no for good
    BLOCKED = "blocked"  # content filtered
    INVALID = "invalid"  # the service refused the parameters
    SKIPPED = "skipped"  # not sent this run (stop, budget, interrupt); planned again by the next
    REMOVED = "removed"  # the manifest no longer names it and it was never sent
    LOST = "lost"  # charged, and the service never showed its record: checked again by every run


STATES: tuple[State, ...] = tuple(State)
FINAL_STATES = frozenset({State.DOWNLOADED, State.FAILED, State.BLOCKED, State.INVALID})
TERMINAL_FAILURES = (State.FAILED, State.BLOCKED, State.INVALID)
IN_FLIGHT_STATES = frozenset({State.SUBMITTING, State.SUBMITTED, State.RUNNING})
# Paid for and not finished: a run leaving any of these exits 1, and the next run takes them up again.
UNFINISHED_STATES = frozenset({*IN_FLIGHT_STATES, State.SUCCEEDED, State.LOST})
# The final states `--fail-on` may name (skipped covers what was left unsent).
FAIL_ON_STATES = (State.FAILED, State.BLOCKED, State.INVALID, State.SKIPPED)
