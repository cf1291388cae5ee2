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
    └── APIError                     the service said no; ``.code`` and ``.request_key`` say what and for which
        ├── RetryableAPIError        try the same request again later
        ├── StopSubmittingError      no new submits this run (credits, login, permission, region)
        └── RequestFailedError       give up on this request only (blocked, invalid)

Library errors are wrapped at the boundary with ``raise ... from exc`` so that the cause stays visible to a debugger
but never reaches the user as a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
]


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
        return f"{self.location}: {message}"


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
    """The service answered with an error."""

    def __init__(self, message: str, *, code: str | None = None, request_key: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_key = request_key


class RetryableAPIError(APIError):
    """The same request may succeed if tried again later."""


class StopSubmittingError(APIError):
    """No new submits may be sent this run: credits, login, permission or region."""


class RequestFailedError(APIError):
    """This request will not succeed as it is (content filtered, invalid parameters)."""
