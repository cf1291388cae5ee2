"""The bounds on every call: how long it may take in all, and how much it may bring back. One place, one value.

A gateway that trickles a byte a second, or answers with 300 MB, must cost a bounded time and bounded memory:

- an API call (connect, send, every read) ends within ``call_deadline`` seconds in all, not only between reads;
- an API answer over ``max_answer_bytes`` is refused (it is read in chunks and dropped past the bound);
- a download may take ``download_floor`` seconds plus one second per ``download_rate`` bytes (of its announced
  size, or of what has arrived so far), so a large video gets the time it needs and a trickle does not;
- an asset over ``max_asset_bytes`` fails that request with a clear reason (the service sends images of a few MB
  and videos of tens of MB).

``RunConfig`` carries each as a setting of the same name (``--call-deadline`` ...), so a user on a slow link can
raise them; tests lower them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a timeout is made: `plan` and `validate` never call the service
    import httpx


@dataclass(frozen=True, kw_only=True, slots=True)
class CallLimits:
    call_deadline: float = 120.0  # seconds, a whole API call
    max_answer_bytes: int = 16 * 1024 * 1024
    download_floor: float = 120.0  # seconds every download may take, whatever its size
    download_rate: int = 256 * 1024  # bytes per second a download is allowed to be as slow as, beyond the floor
    max_asset_bytes: int = 1024 * 1024 * 1024
    # Between two reads, and to connect: what httpx itself enforces (the deadlines above bound the whole).
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def download_deadline(self, size: int) -> float:
        """Seconds a download of ``size`` bytes may take."""
        return self.download_floor + size / self.download_rate

    @property
    def timeout(self) -> httpx.Timeout:
        import httpx

        return httpx.Timeout(connect=self.connect_timeout, read=self.read_timeout, write=self.read_timeout,
                             pool=None)


DEFAULT_LIMITS = CallLimits()
