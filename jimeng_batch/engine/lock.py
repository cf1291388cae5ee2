"""One writer per output folder: an advisory lock that the operating system releases when its process dies.

``run``, ``resume``, ``merge --into`` and ``report`` hold an exclusive ``flock`` on ``.jimeng-batch.lock`` in the
folder while they write it; a second writer is refused with who holds it. Readers (``status``) take no lock, and
use :func:`holder` to tell a run that is still going from one whose process is gone.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from jimeng_batch.errors import ConfigError, OutputError
from jimeng_batch.intake.sources import display_path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: folders are not locked (documented)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".jimeng-batch.lock"


class FolderBusy(ConfigError):
    """Another jimeng-batch process is writing the folder."""


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    started_at: float
    command: str

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at))
        return f"pid {self.pid}, started at {started}"


class FolderLock:
    """Held from :meth:`acquire` until :meth:`release` (or the process's end, whatever ends it)."""

    def __init__(self, folder: Path, command: str) -> None:
        self.folder = folder
        self.command = command
        self._handle: IO[str] | None = None

    def acquire(self) -> FolderLock:
        if fcntl is None:  # pragma: no cover
            return self
        path = self.folder / LOCK_NAME
        try:
            handle = path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"{display_path(self.folder)}: cannot be written ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read(handle)
            handle.close()
            who = f" ({holder.describe()})" if holder else ""
            raise FolderBusy(f"{display_path(self.folder)} is being written by another jimeng-batch run{who}; "
                             "wait for it to end, or use another output folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "started_at": time.time(), "command": self.command}))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor releases the flock
            self._handle = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(handle: IO[str]) -> Holder | None:
    handle.seek(0)
    try:
        data = json.loads(handle.read() or "{}")
        return Holder(int(data["pid"]), float(data["started_at"]), str(data.get("command", "")))
    except (ValueError, KeyError, TypeError):
        return None


def holder(folder: Path) -> Holder | None:
    """Who holds the folder's lock now; None when no live process does (it ended, or was killed)."""
    path = folder / LOCK_NAME
    if fcntl is None or not path.is_file():
        return None
    with path.open("r", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read(handle) or Holder(0, 0.0, "")
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None
