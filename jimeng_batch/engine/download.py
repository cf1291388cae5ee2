"""Downloads: a finished job's files into the output folder, or a cached result's copied in; nothing half-written
is ever kept, and a request is downloaded only when every file it lists is on disk and in the ledger.

A file is named by its request key and index (``assets/<key>-<index>.<ext>``). It streams to a temporary name; its
size is checked against the Content-Length, its sha256 computed while it streams, its width, height and format read
back from the file, and the URL's expiry (the signed URL's ``x-expires``) recorded. Only then is it renamed into
place, made durable, and recorded.

Each file is fetched through the one retry policy. A URL that answers as expired (see the outcome table's ``asset``
rows) makes the next attempt list the job again for a fresh URL before it fetches.

A video's poll lists its preview (about 1.1 Mbps); its download version (about 6.3 Mbps) is asked for with
``get_local_item_list`` (protocol reference 2.4) and fetched instead. When that call fails or names no URL, the
preview is fetched, and the asset's row says so (``variant`` preview, ``fallback_reason``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from aiolimiter import AsyncLimiter

from jimeng_batch.engine.cache import ResultCache
from jimeng_batch.engine.ledger import AssetRecord, Ledger, RequestRow
from jimeng_batch.engine.retry import Retrier, limited
from jimeng_batch.engine.run_log import log, step
from jimeng_batch.errors import APIError, OutputError, RequestFailedError, RetryableAPIError
from jimeng_batch.files import copy_verified
from jimeng_batch.protocol.client import HistoryRecord, Item, JimengClient
from jimeng_batch.protocol.outcomes import classify, error_for
from jimeng_batch.protocol.tokens import Token

ASSETS_DIR = "assets"
HIGH, PREVIEW = "high", "preview"  # the versions of a video (AssetRecord.variant)
CHUNK = 1 << 16
KEEP_IN_MEMORY = 32 << 20
_EXPIRY_PARAMS = ("x-expires", "x-signature-expires", "expires", "x-amz-expires")
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "jpg": "jpg", "webp": "webp", "mp4": "mp4", "gif": "gif"}


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


def _length(value: str | None) -> int | None:
    """A Content-Length header as a number (None when absent or not one: then it checks nothing)."""
    return int(value) if value is not None and value.isdigit() and len(value) < 20 else None


async def download(client: JimengClient, item: Item, out_dir: Path, key: str, index: int,
                   syncer: Syncer | None = None) -> AssetRecord:
    """Fetch one item into ``out_dir``'s assets folder; raises a classified APIError (retryable or not) on failure.

    The download ends within the limits' deadline for its size (a trickle does not hold it forever) and stops at
    the limits' largest asset. The file is on disk before this returns (through ``syncer`` when given, else its own
    fsync), so the caller may record it as downloaded.
    """
    limits = client.limits
    folder = out_dir / ASSETS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    partial = folder / f".{key}-{index}.part"
    started = asyncio.get_running_loop().time()
    try:
        async with asyncio.timeout(limits.download_floor) as deadline, client.stream(item.url) as response:
            if response.status_code != 200:
                rule = classify("asset", response.status_code)
                raise error_for(rule, f"download: HTTP {response.status_code}", code=str(response.status_code),
                                request_key=key, http_status=response.status_code)
            expected = _length(response.headers.get("content-length"))
            if expected is not None and expected > limits.max_asset_bytes:
                raise _too_large(key, expected, limits.max_asset_bytes)
            deadline.reschedule(started + limits.download_deadline(expected or 0))
            name = asset_name(key, index, item, response.headers.get("content-type", ""))
            kept: list[bytes] | None = []  # small files are checked from memory instead of being read back
            with partial.open("wb") as handle:
                async for chunk in response.aiter_bytes(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    if size > limits.max_asset_bytes:
                        raise _too_large(key, size, limits.max_asset_bytes)
                    if expected is None:  # the time it may take grows with what has come
                        deadline.reschedule(started + limits.download_deadline(size))
                    handle.write(chunk)
                    if kept is not None:
                        kept.append(chunk)
                        if size > KEEP_IN_MEMORY:
                            kept = None
                handle.flush()
                if syncer is None:
                    os.fsync(handle.fileno())
        if expected is not None and expected != size:
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
    except TimeoutError as exc:
        allowed = limits.download_deadline(size)
        raise error_for(classify("transport", "timeout"), f"download: not done within {allowed:.0f} s "
                        f"({size} bytes had come)", request_key=key, code="timeout") from exc
    except httpx.DecodingError as exc:
        raise client.malformed("download", f"the file cannot be decoded ({exc})", key) from exc
    except httpx.TimeoutException as exc:
        raise error_for(classify("transport", "timeout"), "download: timed out", request_key=key) from exc
    except httpx.RequestError as exc:  # the network, a redirect loop, a URL that cannot be used
        raise error_for(classify("transport", "connection"), f"download: {type(exc).__name__}",
                        request_key=key) from exc
    finally:
        partial.unlink(missing_ok=True)
    return AssetRecord(index, item.kind, str(final.relative_to(out_dir)), digest.hexdigest(), size,
                       width or item.width or None, height or item.height or None, fmt or item.format,
                       item.item_id or None, url_expiry(item.url))


def _too_large(key: str, size: int, limit: int) -> RequestFailedError:
    error = error_for(classify("local", "too-large"), f"download: the asset is {size} bytes or more, above the "
                      f"limit of {limit} (--max-asset-bytes)", request_key=key, code="too-large")
    assert isinstance(error, RequestFailedError)
    return error


class _Unlisted(Exception):
    """The finished job's files cannot be listed now: the request stays `succeeded` for the next run."""


class Downloads:
    """The downloads of one run; create it inside the running event loop."""

    def __init__(self, ledger: Ledger, client_for: Callable[[Token], JimengClient], retrier: Retrier, *,
                 out_dir: Path, origin: str | Callable[[RequestRow], str], cache: ResultCache | None = None,
                 limiter: AsyncLimiter | None = None, poll_limiter: AsyncLimiter | None = None) -> None:
        self.ledger = ledger
        # Where a request's results come from (its region's host, or the simulator): what the cache keys on.
        self.origin = origin if callable(origin) else (lambda _row, given=origin: given)
        # A job's files are fetched through the client of the token that made it (its proxy, if it names one):
        # a token behind a proxy shows the asset hosts the proxy's address, as it shows the API.
        self.client_for = client_for
        self.retrier = retrier
        self.out_dir = out_dir
        self.cache = cache
        self.limiter = limiter
        self.poll_limiter = poll_limiter
        self.syncer = Syncer()

    async def fetch(self, row: RequestRow, token: Token, record: HistoryRecord | None) -> list[AssetRecord] | None:
        """Every file of ``row``'s finished job, on disk and in the ledger (those already there are kept).

        ``record`` is the poll that found the job finished; without one (a resumed run) the job is listed first.
        None when its files cannot be listed now (the request stays `succeeded`, for the next run); an APIError
        when a file cannot be fetched; an OutputError when the output folder cannot be written.
        """
        try:
            if record is None:
                record = await self.retrier.call("poll", lambda: self._listed(row, token), key=row.key,
                                                 limiter=self.poll_limiter)
            done = {asset.index for asset in self.ledger.assets_of(row.key)}
            for index, item in enumerate(record.items):
                if index not in done:
                    asset = await self._fetch_one(row, token, index, item)
                    self.ledger.add_asset(row.key, asset)
                    log.info("%s", asset.path, extra=step("download", row.key, row.state, bytes=asset.size,
                                                          variant=asset.variant, fallback=asset.fallback_reason))
        except _Unlisted:
            log.warning("%s: the finished job's files cannot be listed now; left for the next run", row.key)
            return None
        except RetryableAPIError as error:
            if record is not None:  # a file could not be fetched: the caller decides
                raise
            log.warning("%s: the finished job cannot be listed now (%s); left for the next run", row.key, error)
            return None
        assets = self.ledger.assets_of(row.key)
        if not self._all_on_disk(assets, len(record.items)):
            log.error("%s: not every file of the job is on disk and in the ledger; left for the next run", row.key)
            return None
        if self.cache is not None:
            self.cache.store(row.key, self.origin(row), self.out_dir, assets)
        return assets

    async def _fetch_one(self, row: RequestRow, token: Token, index: int, item: Item) -> AssetRecord:
        current = item
        stale = False
        version: tuple[Item, str | None, str | None] | None = None  # what is fetched: the item, variant, why

        async def attempt() -> AssetRecord:
            nonlocal current, stale, version
            if stale:  # the last try found the URL expired: list the job again for a fresh one first
                fresh = await self.retrier.timed(row.key, "poll", self._listed(row, token))
                if index >= len(fresh.items):
                    raise _Unlisted
                current, stale, version = fresh.items[index], False, None
            if version is None:
                version = await self._version(row, token, current)
            fetched, variant, reason = version
            try:
                asset = await download(self.client_for(token), fetched, self.out_dir, row.key, index,
                                       self.syncer)
            except RetryableAPIError as error:
                stale = error.rule.reason == "expired"
                raise
            return dataclasses.replace(asset, variant=variant, fallback_reason=reason)

        try:
            return await self.retrier.call("download", attempt, key=row.key, limiter=self.limiter)
        except OSError as exc:
            # The output folder itself failed (full, read-only): nothing more can be kept, so stop here; the
            # request stays `succeeded` and the next run downloads it.
            folder = self.out_dir / ASSETS_DIR
            raise OutputError(f"{folder}: cannot write a download ({exc.strerror or exc}); finished files and the "
                              "ledger are kept, and the run can be resumed") from exc

    async def _version(self, row: RequestRow, token: Token, item: Item) -> tuple[Item, str | None, str | None]:
        """Which file of ``item`` to fetch: a video's high-bitrate download version when the service names one,
        else its preview and why; an image as it is."""
        if item.kind != "video":
            return item, None, None
        if not item.item_id:
            return item, PREVIEW, "the record names no item id to ask get_local_item_list with"
        try:
            client = self.client_for(token)
            url = await self.retrier.call("item", lambda: client.high_bitrate_url(token, item.item_id,
                                                                                  request_key=row.key),
                                          key=row.key, limiter=self.poll_limiter)
        except APIError as error:
            log.warning("%s: no high-bitrate video (%s); the preview is downloaded", row.key, error)
            return item, PREVIEW, f"get_local_item_list failed: {error}"
        if not url:
            return item, PREVIEW, "get_local_item_list named no download URL"
        return dataclasses.replace(item, url=url), HIGH, None

    async def _listed(self, row: RequestRow, token: Token) -> HistoryRecord:
        """The finished job's record, polled again (fresh URLs); _Unlisted when it is not complete now."""
        history_id = row.history_record_id or ""
        async with limited(self.poll_limiter):
            found = await self.client_for(token).history(token, history_ids=[history_id])
        record = found.get(history_id)
        if record is None or not record.complete(row.kind):
            raise _Unlisted
        return record

    def _all_on_disk(self, assets: list[AssetRecord], expected: int) -> bool:
        """Every index from 0 to ``expected - 1`` recorded, and each file there with its recorded size."""
        if sorted(asset.index for asset in assets) != list(range(expected)):
            return False
        for asset in assets:
            try:
                if (self.out_dir / asset.path).stat().st_size != asset.size:
                    return False
            except OSError:
                return False
        return True

    def from_cache(self, row: RequestRow) -> list[AssetRecord] | None:
        """A cached result of the same key, its files copied in, checked and recorded; None on a miss."""
        if self.cache is None:
            return None
        cached = self.cache.lookup(row.key, self.origin(row))
        if not cached:
            return None
        copied = []
        for asset in cached.assets:
            source = cached.file(asset)
            target = self.out_dir / ASSETS_DIR / f"{row.key}-{asset.index}{source.suffix}"
            if source.resolve() != target.resolve() and not copy_verified(source, target, asset.sha256):
                return None
            copied.append(dataclasses.replace(asset, path=str(target.relative_to(self.out_dir)), item_id=None,
                                              url_expires=None))
        for asset in copied:
            self.ledger.add_asset(row.key, asset)
        return copied
