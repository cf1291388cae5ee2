"""Files the pipeline writes and checks, shared by every stage: a streaming sha256 and a verified copy.

Downloads, the result cache, merges and exports all put a file at a new place only once its content is known to be
the one the ledger recorded, and never leave a half-written file under the final name.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

from jimeng_batch.errors import ConfigError, OutputError

CHUNK = 1 << 20
# The disk is the trouble, not the place chosen: nothing about the command is wrong.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def make_folder(folder: Path, option: str) -> None:
    """Create ``folder`` (and its parents) for writing. A place where no folder can be made (read-only, not
    allowed, a file, /proc) is a wrong choice of ``option``: ConfigError, exit 2; a full disk is OutputError."""
    shown = os.path.relpath(folder) if not os.path.relpath(folder).startswith("..") else str(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise ConfigError(f"{shown}: is a file; {option} must name a folder") from exc
    except OSError as exc:
        if exc.errno in _FULL:
            raise OutputError(f"{shown}: cannot create the folder ({exc.strerror})") from exc
        raise ConfigError(f"{shown}: cannot create a folder here ({exc.strerror}); choose a folder you can write "
                          f"({option})") from exc


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks (a video need not fit in memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def copy_verified(source: Path, target: Path, sha256: str) -> bool:
    """Put ``source`` at ``target`` (a hard link where the file system allows) if its content hash matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:
        shutil.copyfile(source, partial)
    if file_sha256(partial) != sha256:
        partial.unlink(missing_ok=True)
        return False
    os.replace(partial, target)
    return True
