"""A run's local images, uploaded once: each distinct file (by sha256) once per account and scope.

The ImageX flow itself is :mod:`jimeng_batch.protocol.imagex`. Here: requests that need the same file at the same
time wait for one upload; the ``image_uri`` is recorded in the ledger's ``uploads`` table (by a one-way id of the
account, never the token) and reused by every later request and run; a file that changed since it was planned, or
is gone, is not sent.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path

from aiolimiter import AsyncLimiter

from jimeng_batch.engine.ledger import Ledger
from jimeng_batch.engine.retry import Retrier
from jimeng_batch.engine.run_log import log, step
from jimeng_batch.errors import RequestFailedError
from jimeng_batch.protocol.imagex import Uploader
from jimeng_batch.protocol.outcomes import classify
from jimeng_batch.protocol.request_spec import RequestSpec
from jimeng_batch.protocol.tokens import Token


class UploadUnavailable(RequestFailedError):
    """A local image cannot be uploaded (gone, changed, unreadable): the request fails with reason `upload`."""

    def __init__(self, message: str) -> None:
        super().__init__(message, rule=classify("local", "upload"), code="upload")


class Uploads:
    """The uploads of one run; create it inside the running event loop."""

    def __init__(self, ledger: Ledger, uploader_for: Callable[[Token], Uploader] | None, retrier: Retrier, *,
                 local_files: Mapping[str, Path], scope: str | Callable[[Token], str],
                 limiter: AsyncLimiter | None = None) -> None:
        self.ledger = ledger
        self.uploader_for = uploader_for  # each token's uploads go through its own client (its proxy)
        self.retrier = retrier
        self.local_files = dict(local_files)
        # Where an uploaded image_uri is valid, by token: its region, or the host standing in for it (a simulator
        # forgets its uploads when it stops, so another base URL means another upload). Part of the cache's key: an
        # image uploaded to one region's ImageX is not an image_uri on another's.
        self.scope = scope if callable(scope) else (lambda _token, given=scope: given)
        self.limiter = limiter
        self._pending: dict[tuple[str, str, str], asyncio.Future[str]] = {}

    async def image_uris(self, spec: RequestSpec, token: Token, key: str) -> dict[str, str]:
        """The image_uri of each local file ``spec`` names, by sha256, uploading what is not uploaded yet."""
        uploaded: dict[str, str] = {}
        for image in spec.images():
            if image.kind != "file" or image.sha256 is None or image.sha256 in uploaded:
                continue
            uploaded[image.sha256] = await self._once(token, image.sha256, key)
        return uploaded

    async def _once(self, token: Token, sha256: str, key: str) -> str:
        scope = self.scope(token)
        known = self.ledger.uploaded(token.account, scope, sha256)
        if known is not None:
            return known
        memo = (token.account, scope, sha256)
        pending = self._pending.get(memo)
        if pending is None:  # the first request that needs this file uploads it; the others wait for it
            pending = self._pending[memo] = asyncio.ensure_future(self._upload(token, sha256, key))
        try:
            return await asyncio.shield(pending)
        finally:
            if pending.done() and (pending.cancelled() or pending.exception() is not None):
                self._pending.pop(memo, None)  # a failed upload may be tried again

    async def _upload(self, token: Token, sha256: str, key: str) -> str:
        path = self.local_files.get(sha256)
        uploader = self.uploader_for(token) if self.uploader_for is not None else None
        if path is None or uploader is None:
            raise UploadUnavailable("the local image is not part of this run's manifest any more")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UploadUnavailable(f"cannot read {path.name} ({exc.strerror})") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise UploadUnavailable(f"{path.name} changed since it was planned; plan the manifest again")
        image = await self.retrier.call("upload", lambda: uploader.upload(token, data), key=key,
                                        limiter=self.limiter)
        self.ledger.add_upload(token.account, self.scope(token), sha256, image.uri, image.width or None,
                               image.height or None, image.format or None, len(data))
        log.info("uploaded %s as %s", path.name, image.uri, extra=step(
            "upload", key, said=("file", "image_uri"), file=path.name, image_uri=image.uri, bytes=len(data),
            sha256=sha256[:12], scope=self.scope(token)))
        return image.uri
