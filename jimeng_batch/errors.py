"""The exception tree of jimeng-batch.

Every error the tool raises on purpose derives from :class:`JimengBatchError`; the CLI turns any of them into a
clean message and an exit code, and lets nothing else through as a traceback unless ``JIMENG_BATCH_DEBUG`` is set.

::

    JimengBatchError                 exit 1 unless a subclass says otherwise
    ├── ManifestError                exit 2: the input cannot be used as it is
    │   └── SchemaError              exit 2: a list of located problems, all found in one pass
    ├── ConfigError                  exit 2: bad command-line options or settings
    ├── LedgerError                  exit 1: the output folder's ledger cannot be used or written
    ├── OutputError                  exit 1: the output folder cannot be written (full, read-only)
    └── APIError                     a call failed; ``.rule`` (the outcome table's row) says why and what next,
        │                            ``.code``, ``.http_status``, ``.request_key`` and ``.retry_after`` the details
        ├── RetryableAPIError        try the same call again later (busy, 5xx, network, a URL to refresh)
        ├── StopSubmittingError      no new submits with this token, or at all (credits, login, permission, region)
        └── RequestFailedError       give up on this request only (blocked, invalid, failed)

The client raises the :class:`APIError` subclass that its outcome's action calls for
(:func:`jimeng_batch.protocol.outcomes.error_for`), so a caller catches by what it will do next.

Library errors are wrapped at the boundary with ``raise ... from exc`` so that the cause stays visible to a debugger
but never reaches the user as a traceback.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the outcome table is protocol data; errors only name its row type
    from jimeng_batch.protocol.outcomes import Rule

__all__ = [
    "APIError",
    "ConfigError",
    "JimengBatchError",
    "LedgerError",
    "Location",
    "ManifestError",
    "OutputError",
    "Problem",
    "RequestFailedError",
    "RetryableAPIError",
    "SchemaError",
    "StopSubmittingError",
    "describe",
    "printable",
]

# What would break a one-line message, or make it lie about its text: control characters (a newline, the escape
# that starts a terminal sequence), line and paragraph separators, lone surrogates, and bidirectional overrides.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def printable(text: str) -> str:
    """``text`` safe to print on one line: what :data:`_HIDDEN_CATEGORIES` and :data:`_BIDI_CONTROLS` name is
    shown escaped (``\\n``, ``\\x1b``, ``\\u202e``); everything else, CJK and emoji included, as it is."""
    if text.isprintable():
        return text
    return "".join(
        ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        if unicodedata.category(ch) in _HIDDEN_CATEGORIES or ch in _BIDI_CONTROLS else ch
        for ch in text
    )


def describe(text: str, limit: int = 40) -> str:
    """A piece of input as a message quotes it: printable, in quotes, cut to about ``limit`` characters."""
    shown = printable(text)
    return f"'{shown if len(shown) <= limit else shown[:limit - 3] + '...'}'"


@dataclass(frozen=True, slots=True)
class Location:
    """Where a value came from: a YAML node (line/column) or a spreadsheet cell (row/column name)."""

    file: str
    line: int | None = None
    column: int | None = None
    row: int | None = None
    column_name: str | None = None

    def __str__(self) -> str:
        if self.row is not None:
            cell = f"row {self.row}"
            if self.column_name:
                cell += f", column {self.column_name}"
            return f"{self.file}:{cell}"
        if self.line is not None:
            return f"{self.file}:{self.line}:{self.column or 1}"
        return self.file

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line or self.row or 0, self.column or 0, self.column_name or "")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the input, with where it is."""

    location: Location
    message: str

    def __str__(self) -> str:
        message = self.message
        column = self.location.column_name
        if column and message.startswith(f"{column}: "):
            message = message[len(column) + 2:]  # the location already names the column
        return printable(f"{self.location}: {message}")  # input it quotes cannot break its line


class JimengBatchError(Exception):
    """Base of every error jimeng-batch raises on purpose."""

    exit_code = 1


class ManifestError(JimengBatchError):
    """A manifest or spreadsheet cannot be read or used."""

    exit_code = 2


class SchemaError(ManifestError):
    """The input has problems; all of them, each located, are in ``.problems``."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: p.location.sort_key())
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} found"
        super().__init__(head + "\n" + "\n".join(str(p) for p in self.problems))


class ConfigError(JimengBatchError):
    """A command-line option or setting is wrong."""

    exit_code = 2


class LedgerError(JimengBatchError):
    """The ledger in an output folder is missing, corrupted or from an unknown version."""


class OutputError(JimengBatchError):
    """The output folder cannot be written: full, read-only, gone."""


class APIError(JimengBatchError):
    """A call to the service (or an asset or upload host) failed; ``rule`` is the outcome table's row for it."""

    def __init__(self, message: str, *, rule: Rule, code: str | None = None, request_key: str | None = None,
                 retry_after: float | None = None, http_status: int | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.code = code
        self.request_key = request_key
        self.retry_after = retry_after
        self.http_status = http_status
        self.tries = 1  # how many times the call was made; set by the retry policy when it gives up


class RetryableAPIError(APIError):
    """The same call may succeed if made again later."""


class StopSubmittingError(APIError):
    """No new submits with this token (credits, login) or at all (permission, region)."""


class RequestFailedError(APIError):
    """This request will not succeed as it is (content filtered, invalid parameters, a refusal)."""
