"""The result cache: identical requests (same key) within a time-to-live share one submission.

The API document's caching rule keys a result by the request and keeps it five minutes. The key here is the
request key (model, every generation parameter, the content hash of each reference image, the sample index; no
ids, times or tokens), so ``count: 4`` stays four different samples. Within one output folder the ledger already
runs each key once; this cache, a small SQLite file that several runs and manifests can share, lets a finished
result and its downloaded files be reused elsewhere while its entry is younger than the TTL (``forever`` keeps
it). A hit is copied (hard-linked where possible) into the new output folder and checked by sha256.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_TTL = 300.0


def default_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jimeng-batch" / "cache.sqlite"


@dataclass(frozen=True, slots=True)
class CachedAsset:
    index: int
    kind: str
    path: str  # absolute
    sha256: str
    size: int
    width: int | None
    height: int | None
    format: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ResultCache:
    """Finished results by request key, shared between runs."""

    def __init__(self, path: Path, ttl: float = DEFAULT_TTL, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.ttl = ttl
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, completed_at REAL NOT NULL, "
                        "assets TEXT NOT NULL)")

    def close(self) -> None:
        self.db.close()

    def lookup(self, key: str) -> list[CachedAsset] | None:
        """The cached assets of ``key`` if fresh and every file is still there, unchanged in size."""
        row = self.db.execute("SELECT completed_at, assets FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        completed_at, text = row
        if not math.isinf(self.ttl) and self._clock() - completed_at > self.ttl:
            return None
        assets = [CachedAsset(**data) for data in json.loads(text)]
        for asset in assets:
            path = Path(asset.path)
            if not path.is_file() or path.stat().st_size != asset.size:
                return None
        return assets

    def store(self, key: str, assets: list[CachedAsset]) -> None:
        self.db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?)",
                        (key, self._clock(), json.dumps([asdict(a) for a in assets])))


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
