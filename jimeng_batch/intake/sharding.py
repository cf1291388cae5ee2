"""Shards: a stable split of a manifest's requests into N parts, by request key.

A request belongs to shard K of N when the first 16 hex digits of its key, read as a number, are ``K - 1`` modulo
N. The key is a hash of the request's parameters (never of its position), so the split does not depend on row
order, and adding rows to a manifest never moves an existing request to another shard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jimeng_batch.errors import ConfigError

MAX_SHARDS = 10_000
_FORMAT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def contains(self, key: str) -> bool:
        """Whether the request with this key belongs to this shard."""
        return int(key[:16], 16) % self.count == self.index - 1

    def contains_digest(self, digest: bytes) -> bool:
        """:meth:`contains` of a key given as its bytes (its first 8 are the 16 hex digits above)."""
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``K/N`` from the command line, with 1 <= K <= N; a :class:`ConfigError` (exit 2) otherwise."""
    match = _FORMAT.match(text)
    if match is None:
        raise ConfigError(f"--shard: '{text}' is not K/N (for example 1/3: the first of three shards)")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= count <= MAX_SHARDS:
        raise ConfigError(f"--shard: the number of shards must be between 1 and {MAX_SHARDS}, not {count}")
    if not 1 <= index <= count:
        raise ConfigError(f"--shard: the shard must be between 1 and {count}, not {index}")
    return Shard(index, count)
