"""The states of a request, in one enumeration used by the ledger, the executor, reports and ``status``.

::

    planned -> submitting -> submitted -> running -> succeeded -> downloaded
                                                  \\-> failed | blocked | invalid
    planned -> skipped (not admitted: stop, budget, interrupt; planned again on the next run)

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


STATES: tuple[State, ...] = tuple(State)
FINAL_STATES = frozenset({State.DOWNLOADED, State.FAILED, State.BLOCKED, State.INVALID})
TERMINAL_FAILURES = (State.FAILED, State.BLOCKED, State.INVALID)
IN_FLIGHT_STATES = frozenset({State.SUBMITTING, State.SUBMITTED, State.RUNNING})
# The final states `--fail-on` may name (skipped covers what was left unsent).
FAIL_ON_STATES = (State.FAILED, State.BLOCKED, State.INVALID, State.SKIPPED)
