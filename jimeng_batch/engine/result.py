"""What a run ended with, and the exit-code policy that judges it (applied by the command line)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jimeng_batch.engine.states import FAIL_ON_STATES, TERMINAL_FAILURES, UNFINISHED_STATES, State

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_STOPPED = 3
EXIT_INTERRUPTED = 130
# Stops that end a run early for a reason the user must act on: they exit 3 whatever --fail-on says.
STOP_REASONS_EXIT_3 = frozenset({"credits", "login", "permission", "region", "budget", "preflight", "unreachable",
                                 "catalog"})


@dataclass(frozen=True)
class RunResult:
    """How a run of an output folder ended: the ledger's counts then, and why it stopped if it did."""

    out_dir: Path
    counts: Mapping[State, int]  # every request of the folder, by state
    stop_reason: str | None = None  # why submitting stopped early: credits, login, budget, interrupted, ...
    interrupted: bool = False
    admitted_credits: float = 0.0  # the estimated credits of what this run admitted
    token_states: Mapping[str, str] = field(default_factory=dict)  # masked label -> active, exhausted (credits)...
    in_flight_high_water: Mapping[str, int] = field(default_factory=dict)  # masked label -> most jobs at once
    stop_message: str | None = None  # what a person should read about the stop ("cannot reach HOST: ...")
    waiting: Mapping[str, int] = field(default_factory=dict)  # masked label -> requests bound to a missing account

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def exit_code(result: RunResult, fail_on: Collection[State] = FAIL_ON_STATES) -> int:
    """0 when the run did all it had to; 1 when a request ended in a state of ``fail_on`` (``skipped`` covers
    what was left unsent) or was left unfinished; 3 for an early stop; 130 when interrupted."""
    if result.interrupted:
        return EXIT_INTERRUPTED
    if result.stop_reason in STOP_REASONS_EXIT_3:
        return EXIT_STOPPED
    counts = result.counts
    failed = sum(counts.get(state, 0) for state in TERMINAL_FAILURES if state in fail_on)
    unsent = sum(counts.get(s, 0) for s in (State.SKIPPED, State.PLANNED)) if State.SKIPPED in fail_on else 0
    # A job left in flight, lost or not downloaded always fails the run: nothing hides work paid for and not
    # delivered.
    unfinished = sum(counts.get(state, 0) for state in UNFINISHED_STATES)
    return EXIT_FAILED if failed or unsent or unfinished else EXIT_OK
