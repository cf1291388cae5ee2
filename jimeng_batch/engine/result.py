"""What a run ended with, and the exit-code policy that judges it (applied by the command line)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jimeng_batch.engine.states import FAIL_ON_STATES, STATES, TERMINAL_FAILURES, UNFINISHED_STATES, State

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
    last_error: str | None = None  # the last error the run met, as the display showed it (scrubbed, one line)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Verdict:
    """The exit code of a run and why it is that, in the words of the end-of-run line."""

    code: int
    why: str

    def line(self) -> str:
        return f"exit {self.code}: {self.why}"


def _counted(counts: Mapping[State, int], states: Collection[State]) -> str:
    return ", ".join(f"{counts[state]} {state}" for state in states if counts.get(state, 0))


def verdict(result: RunResult, fail_on: Collection[State] = FAIL_ON_STATES) -> Verdict:
    """The exit code, judged once for the code and its explanation: 0 when the run did all it had to; 1 when a
    request ended in a state of ``fail_on`` (``skipped`` covers what was left unsent) or was left unfinished; 3 for
    an early stop; 130 when interrupted."""
    if result.interrupted:
        return Verdict(EXIT_INTERRUPTED, "interrupted; run again to go on where it stopped")
    if result.stop_reason in STOP_REASONS_EXIT_3:
        return Verdict(EXIT_STOPPED, f"stopped for safety ({result.stop_reason}): "
                                     f"{result.stop_message or result.stop_reason}")
    counts = result.counts
    reasons = []
    failing = [state for state in TERMINAL_FAILURES if state in fail_on and counts.get(state, 0)]
    if failing:
        reasons.append(f"{_counted(counts, failing)} (--fail-on includes {', '.join(failing)})")
    unsent = _counted(counts, (State.SKIPPED, State.PLANNED)) if State.SKIPPED in fail_on else ""
    if unsent:
        reasons.append(f"{unsent} not sent (--fail-on includes skipped)")
    # A job left in flight, lost or not downloaded always fails the run: nothing hides work paid for and not
    # delivered.
    unfinished = _counted(counts, [state for state in STATES if state in UNFINISHED_STATES])
    if unfinished:
        reasons.append(f"{unfinished} paid for and not finished (run again to finish them)")
    if reasons:
        return Verdict(EXIT_FAILED, "; ".join(reasons))
    let_through = _counted(counts, [*TERMINAL_FAILURES, State.SKIPPED])
    done = counts.get(State.DOWNLOADED, 0)
    if let_through:
        return Verdict(EXIT_OK, f"{done} downloaded; {let_through} let through "
                                f"(--fail-on {','.join(s for s in FAIL_ON_STATES if s in fail_on) or 'none'})")
    return Verdict(EXIT_OK, f"all {done} downloaded" if done else "nothing to do")


def exit_code(result: RunResult, fail_on: Collection[State] = FAIL_ON_STATES) -> int:
    """The exit code of :func:`verdict`."""
    return verdict(result, fail_on).code
