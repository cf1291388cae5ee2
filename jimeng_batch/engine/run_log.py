"""The run log, ``run.log`` in the output folder: every step of a run, one line each, appended across runs.

A step is one event of the run: a request's state change (as the ledger records it), a request left where it is and
why, a retried call, an upload, a downloaded file, a stop, a run's start and end. Each is one ``logging`` call
whose record carries a :class:`Step` (its event, key, state and a few small fields); everything else logged on
``jimeng_batch`` (warnings, notes) is a line too. What is logged is what a person or a script needs to follow the
run, never a payload: no request body, no server answer beyond its one-line message, cut to :data:`MAX_TEXT`.

Two forms (``--log-format``): ``text``, for people,
``2026-01-02T03:04:05.678Z INFO state KEY submitted: ... [token=abcd…(32)]``, and ``json``, one object a line with
the fixed fields ``time``, ``run``, ``level``, ``event``, ``key``, ``state``, ``detail`` (null where none) and the
step's own (``reason``, ``code``, ``message``, ``kind``, ``attempt``, ``wait``...). Each run begins with a header
line (event ``run``, state ``started``: its id, start, manifest, jimeng-batch version, origin) and ends with one
(state ``finished``, ``stopped``, ``interrupted`` or ``failed``, and the exit code).

No token is ever written: every line passes through the run's token scrubber (:class:`~jimeng_batch.protocol.
tokens.Scrubber`) and is made printable on one line (:func:`~jimeng_batch.errors.printable`) as it is formatted.
Lines are written as they happen, without an fsync of their own (the ledger is the record that must survive a
crash; the log is its account for people), so logging costs a run one ``logging`` call per step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from jimeng_batch.errors import OutputError, printable

LOG_NAME = "run.log"
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
MAX_TEXT = 240  # characters of a detail or a server's message a line keeps: one line, never a payload
STEP = "step"  # the attribute of a log record that carries its Step

log = logging.getLogger("jimeng_batch.run")


@dataclass(frozen=True, slots=True)
class Step:
    """What a log record says about the run beyond its message: which event, of which request, in which state."""

    event: str  # run, state, stays, retry, upload, download, stop (a plain log line has none: "log")
    key: str | None = None
    state: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)  # small values only: codes, counts, masked labels
    said: frozenset[str] = frozenset()  # fields the message already says: left out of a text line


def step(event: str, key: str | None = None, state: str | None = None, *, said: tuple[str, ...] = (),
         **fields: Any) -> dict[str, Step]:
    """The ``extra`` of a logging call for one step; fields that are None are left out, and those ``said`` by the
    message are in the JSON form only."""
    return {STEP: Step(event, key, state, {name: value for name, value in fields.items() if value is not None},
                       frozenset(said))}


def enabled() -> bool:
    """Whether steps are being logged (a run log is open): callers skip preparing their fields otherwise."""
    return log.isEnabledFor(logging.INFO)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


_second: tuple[int, str] = (-1, "")  # the last second formatted: steps come many a second


def _time(created: float) -> str:
    """UTC, to the millisecond: the same in every time zone a run or its CI job may be in."""
    global _second
    whole, cached = int(created), _second  # read once: another thread's run may replace it meanwhile
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{int(created * 1000) % 1000:03d}Z"


class RunLogFormatter(logging.Formatter):
    """One line per record, in the form of ``fmt``; ``run`` is the id of the run being logged (None before the
    ledger has given it one).

    Every text of a record, its message and its fields, has every form of the pool's tokens taken out by
    ``scrub`` (a server's text may quote them), is made printable on one line, and only then cut to
    :data:`MAX_TEXT` (a token cut in half would no longer be found).
    """

    def __init__(self, fmt: LogFormat = "text", scrub: Callable[[str], str] = str) -> None:
        super().__init__()
        self.form = fmt
        self.scrub = scrub
        self.run: int | None = None

    def _clean(self, text: str) -> str:
        return _cut(printable(self.scrub(text)))

    def format(self, record: logging.LogRecord) -> str:
        found = getattr(record, STEP, None)
        found = found if isinstance(found, Step) else Step("log")
        detail = self._clean(record.getMessage()) or None
        fields = {name: self._clean(value) if isinstance(value, str) else value
                  for name, value in found.fields.items()}
        if detail is not None and fields.get("message") == detail:
            del fields["message"]  # said once
        if self.form == "json":
            line = {"time": _time(record.created), "run": self.run, "level": record.levelname.lower(),
                    "event": found.event, "key": found.key, "state": found.state, "detail": detail, **fields}
            return json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str)
        head = f"{_time(record.created)} {record.levelname}"
        if found.event == "log":
            return f"{head} {detail or ''}"
        if found.event == "run":
            head += f" run {self.run}"
        else:
            head += " " + " ".join(part for part in (found.event, found.key) if part)
        if found.state:
            head += f" {found.state}"
        if detail:
            head += f": {detail}"
        shown = [f"{name}={_value(value)}" for name, value in fields.items() if name not in found.said]
        if shown:
            head += " [" + " ".join(shown) + "]"
        return head


def _value(value: Any) -> str:
    """A field's value in a text line: as it is, or quoted when it holds a space."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(text, ensure_ascii=False) if not text or " " in text or '"' in text else text


class _Handler(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        """A line that cannot be written (a full disk) is dropped without a traceback: the ledger, whose writes
        fail the same way, says so properly."""


class RunLog:
    """The open run log of one run (see :func:`file_log`)."""

    def __init__(self, formatter: RunLogFormatter) -> None:
        self._formatter = formatter

    def begin(self, run: int, *, manifest: str, manifest_sha256: str, version: str, origin: str,
              started_at: float, tokens: int) -> None:
        """The run's header line: which run, when, of what, by which version, to where (never a token: only how
        many the pool has)."""
        self._formatter.run = run
        log.info("", extra=step("run", state="started", at=_time(started_at), manifest=manifest,
                                manifest_sha256=manifest_sha256, version=version, origin=origin, tokens=tokens,
                                log=self._formatter.form))

    @staticmethod
    def end(status: str, exit_code: int, counts: Mapping[str, int], why: str | None = None) -> None:
        """The run's last line: how it ended (finished, stopped, interrupted, failed), its exit code, why it
        stopped, and the folder's requests by state."""
        shown = ", ".join(f"{state} {n}" for state, n in counts.items()) or "no requests"
        level = logging.INFO if status == "finished" else logging.WARNING
        log.log(level, shown, extra=step("run", state=status, exit_code=exit_code, reason=why))


@contextlib.contextmanager
def file_log(folder: Path, scrub: Callable[[str], str] = str, fmt: LogFormat = "text") -> Iterator[RunLog]:
    """Log the run to ``run.log`` in the output folder, appended to what earlier runs wrote (tokens are never
    logged: only their masked labels)."""
    try:
        handler = _Handler(folder / LOG_NAME, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{folder / LOG_NAME}: cannot write the run log ({exc.strerror or exc})") from exc
    formatter = RunLogFormatter(fmt, scrub)
    handler.setFormatter(formatter)
    logger = logging.getLogger("jimeng_batch")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield RunLog(formatter)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
