"""The result cache: identical requests (same key) within a time-to-live share one submission.

The API document's caching rule keys a result by the request and keeps it five minutes. The key here is the
request key (model, every generation parameter, the content hash of each reference image, the sample index; no
ids, times or tokens), so ``count: 4`` stays four different samples, and the result's origin (the simulator,
or the host that made it): a rehearsal's result is never served to a run against another origin. Within one
output folder the ledger already runs each key once; this cache, a small SQLite file that several runs and
manifests can share, lets a finished result and its downloaded files be reused elsewhere while its entry is
younger than the TTL (``forever`` keeps it). A hit is copied (hard-linked where possible) into the new output
folder and checked by sha256.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from jimeng_batch.engine.ledger import AssetRecord

DEFAULT_TTL = 300.0


def default_cache_path(*, simulated: bool = False) -> Path:
    """The user's result cache; rehearsals (``--sim``) get one of their own and never touch the real one."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jimeng-batch" / ("sim-cache.sqlite" if simulated else "cache.sqlite")


@dataclass(frozen=True, slots=True)
class CachedResult:
    """A finished result: the output folder that holds its files, and their records (paths relative to it)."""

    folder: Path
    assets: tuple[AssetRecord, ...]

    def file(self, asset: AssetRecord) -> Path:
        return self.folder / asset.path


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
        # (An earlier version's table, `results`, had no origin: its entries are never served.)
        self.db.execute("CREATE TABLE IF NOT EXISTS results_by_origin (key TEXT NOT NULL, origin TEXT NOT NULL, "
                        "completed_at REAL NOT NULL, assets TEXT NOT NULL, PRIMARY KEY (key, origin))")

    def close(self) -> None:
        self.db.close()

    def lookup(self, key: str, origin: str) -> CachedResult | None:
        """The cached result of ``key`` from ``origin`` if fresh and every file is still there, unchanged in size."""
        row = self.db.execute("SELECT completed_at, assets FROM results_by_origin WHERE key = ? AND origin = ?",
                              (key, origin)).fetchone()
        if row is None:
            return None
        completed_at, text = row
        if not math.isinf(self.ttl) and self._clock() - completed_at > self.ttl:
            return None
        try:
            entry = json.loads(text)
            found = CachedResult(Path(entry["folder"]), tuple(AssetRecord(**data) for data in entry["assets"]))
        except (ValueError, KeyError, TypeError):
            return None  # an entry written by an earlier version: a miss, refilled when the result is done
        for asset in found.assets:
            path = found.file(asset)
            if not path.is_file() or path.stat().st_size != asset.size:
                return None
        return found

    def store(self, key: str, origin: str, folder: Path, assets: list[AssetRecord]) -> None:
        """Remember ``key``'s files from ``origin``, which are in the output folder ``folder``."""
        entry = {"folder": str(folder.resolve()), "assets": [asdict(a) for a in assets]}
        self.db.execute("INSERT OR REPLACE INTO results_by_origin VALUES (?, ?, ?, ?)",
                        (key, origin, self._clock(), json.dumps(entry)))
