"""Downloads: streamed to a temporary file, checked, then renamed into place, so nothing half-written is kept.

An asset is named by its request key and index (``assets/<key>-<index>.<ext>``). Its size is checked against the
Content-Length, its sha256 computed while it streams, its width, height and format read back from the file, and
the URL's expiry (the signed URL's ``x-expires``) recorded. Only then is it renamed into place.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from jimeng_batch.protocol.client import Item, JimengClient, error_for
from jimeng_batch.protocol.outcomes import classify

ASSETS_DIR = "assets"
CHUNK = 1 << 16
KEEP_IN_MEMORY = 32 << 20
_EXPIRY_PARAMS = ("x-expires", "x-signature-expires", "expires", "x-amz-expires")
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "jpg": "jpg", "webp": "webp", "mp4": "mp4", "gif": "gif"}


@dataclass(frozen=True, slots=True)
class Downloaded:
    """A file written into the output folder and what was checked about it."""

    path: Path
    sha256: str
    size: int
    width: int | None
    height: int | None
    format: str
    url_expires: float | None


def url_expiry(url: str) -> float | None:
    """The unix time a signed URL stops working, when it says."""
    query = parse_qs(urlsplit(url).query)
    for name in _EXPIRY_PARAMS:
        values = query.get(name)
        if values and values[0].isdigit():
            return float(values[0])
    return None


def asset_name(key: str, index: int, item: Item, content_type: str = "") -> str:
    fmt = (item.format or content_type.rsplit("/", 1)[-1] or ("mp4" if item.kind == "video" else "png")).lower()
    return f"{key}-{index}.{_EXTENSIONS.get(fmt, fmt)}"


def inspect_file(source: Path | bytes, kind: str) -> tuple[int | None, int | None, str]:
    """Width, height and format read from the file itself (or its bytes); ValueError when it is not what it claims."""
    if kind == "video":
        if isinstance(source, bytes):
            head = source[:12]
        else:
            with source.open("rb") as handle:
                head = handle.read(12)
        if len(head) < 8 or head[4:8] != b"ftyp":
            raise ValueError("not an MP4 file (no ftyp box)")
        return None, None, "mp4"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            width, height = image.size
            fmt = (image.format or "").lower()
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"not a readable image ({exc})") from exc
    return width, height, fmt


class Syncer:
    """Makes written files durable in batches: one file-system sync for every file written in a short window.

    An fsync per file costs a journal commit each and stalls the event loop while it waits; a sync every few
    milliseconds, in a worker thread, covers every file written meanwhile for about the price of one. Create it
    inside the running event loop.
    """

    def __init__(self, window: float = 0.01) -> None:
        self.window = window
        self._waiting: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    async def wait(self) -> None:
        """Return once everything written before the call is on disk."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        await future

    async def _run(self) -> None:
        while self._waiting:
            await asyncio.sleep(self.window)  # let more finished files join this sync
            batch, self._waiting = self._waiting, []
            try:
                await asyncio.to_thread(os.sync)
            except OSError as exc:  # pragma: no cover - sync(2) reports no errors on Linux
                for future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for future in batch:
                    if not future.done():
                        future.set_result(None)


async def download(client: JimengClient, item: Item, folder: Path, key: str, index: int,
                   syncer: Syncer | None = None) -> Downloaded:
    """Fetch one item into ``folder``; raises a classified CallError (retryable or not) on failure.

    The file is on disk before this returns (through ``syncer`` when given, else its own fsync), so the caller may
    record it as downloaded.
    """
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    partial = folder / f".{key}-{index}.part"
    try:
        async with client.stream(item.url) as response:
            if response.status_code != 200:
                rule = classify("http", response.status_code)
                raise error_for(rule, f"download: HTTP {response.status_code}", code=str(response.status_code),
                                request_key=key, http_status=response.status_code)
            expected = response.headers.get("content-length")
            name = asset_name(key, index, item, response.headers.get("content-type", ""))
            kept: list[bytes] | None = []  # small files are checked from memory instead of being read back
            with partial.open("wb") as handle:
                async for chunk in response.aiter_bytes(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
                    if kept is not None:
                        kept.append(chunk)
                        if size > KEEP_IN_MEMORY:
                            kept = None
                handle.flush()
                if syncer is None:
                    os.fsync(handle.fileno())
        if expected is not None and int(expected) != size:
            raise error_for(classify("transport", "connection"),
                            f"download: got {size} of {expected} bytes", request_key=key)
        try:
            width, height, fmt = inspect_file(b"".join(kept) if kept is not None else partial, item.kind)
        except ValueError as exc:
            raise error_for(classify("transport", "connection"), f"download: {exc}", request_key=key) from exc
        final = folder / name
        os.replace(partial, final)
        if syncer is not None:
            await syncer.wait()  # the data and the rename, on disk before the ledger records the file
    except httpx.TimeoutException as exc:
        raise error_for(classify("transport", "timeout"), "download: timed out", request_key=key) from exc
    except httpx.TransportError as exc:
        raise error_for(classify("transport", "connection"), f"download: {type(exc).__name__}",
                        request_key=key) from exc
    finally:
        partial.unlink(missing_ok=True)
    return Downloaded(final, digest.hexdigest(), size, width or item.width or None, height or item.height or None,
                      fmt or item.format, url_expiry(item.url))
