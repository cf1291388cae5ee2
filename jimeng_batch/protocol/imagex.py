"""Local reference images to ``image_uri`` s: the ImageX upload flow of the web app.

1. ``POST /mweb/v1/get_upload_token {scene: 2}``: temporary credentials and the ImageX service id.
2. ``GET {imagex}/?Action=ApplyImageUpload&Version=2018-08-01&ServiceId=..&FileSize=..``, AWS4-signed: where to
   put the bytes (``UploadHosts[0]``, ``StoreInfos[0]{StoreUri, Auth}``, ``SessionKey``).
3. ``POST {upload host}/upload/v1/{StoreUri}`` with the bytes, ``Authorization: Auth`` and ``Content-CRC32``.
4. ``POST {imagex}/?Action=CommitImageUpload&..`` with ``{"SessionKey": ..}``, AWS4-signed with
   ``x-amz-content-sha256``: the ``Uri`` that drafts name as ``image_uri``.

ImageX calls go to the region's ImageX host; when the base URL is overridden (``--base-url``, ``JIMENG_BASE_URL``,
``--sim``) they go to that same host unless ``JIMENG_IMAGEX_URL`` names another, so the whole flow can run against
one local server. An upload host returned without a scheme takes the ImageX base URL's scheme.
"""

from __future__ import annotations

import json
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from jimeng_batch.errors import APIError
from jimeng_batch.protocol import aws4
from jimeng_batch.protocol.catalog import Region
from jimeng_batch.protocol.client import UPLOAD_TOKEN_PATH, JimengClient
from jimeng_batch.protocol.outcomes import classify, error_for
from jimeng_batch.protocol.tokens import Token

IMAGEX_VERSION = "2018-08-01"
IMAGEX_SERVICE = "imagex"
UPLOAD_SCENE_IMAGE = 2
UPLOAD_OK = 2000


@dataclass(frozen=True, slots=True)
class UploadedImage:
    """What the service made of an uploaded file."""

    uri: str
    width: int
    height: int
    format: str


def imagex_base(region: Region, base_url: str | None, imagex_url: str | None = None) -> str:
    """Where ImageX calls go: ``imagex_url`` (``JIMENG_IMAGEX_URL``), else an overridden base URL, else the
    region's host."""
    return (imagex_url or base_url or region.imagex_base).rstrip("/")


def upload_url(host: str, store_uri: str, base: str) -> str:
    """The byte-upload URL; a bare ``host:port`` (as the service returns it) takes the ImageX base's scheme."""
    if "://" not in host:
        host = f"{urlsplit(base).scheme or 'https'}://{host}"
    return f"{host.rstrip('/')}/upload/v1/{store_uri}"


def crc32_hex(data: bytes) -> str:
    return format(zlib.crc32(data) & 0xFFFFFFFF, "08x")


def _imagex_error(response: httpx.Response, step: str) -> APIError:
    try:
        detail = response.json().get("ResponseMetadata", {}).get("Error", {})
        message = f"{detail.get('Code', '')} {detail.get('Message', '')}".strip()
    except ValueError:
        message = response.text[:200]
    rule = classify("http", response.status_code)
    return error_for(rule, f"upload ({step}): HTTP {response.status_code} {message}".rstrip(),
                     code=str(response.status_code), http_status=response.status_code)


class Uploader:
    """Runs the upload flow through a :class:`JimengClient` (its connection pool and its error table)."""

    def __init__(self, client: JimengClient, region: Region, base: str, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.region = region
        self.base = base
        self.clock = clock

    async def upload(self, token: Token, data: bytes) -> UploadedImage:
        """Upload ``data`` for ``token``'s account; raises a classified APIError on failure."""
        grant = await self.client.call(UPLOAD_TOKEN_PATH, {"scene": UPLOAD_SCENE_IMAGE}, token) or {}
        credentials = aws4.Credentials(str(grant.get("access_key_id", "")), str(grant.get("secret_access_key", "")),
                                       str(grant.get("session_token", "")) or None)
        service_id = str(grant.get("service_id") or grant.get("space_name") or self.region.imagex_service_id)
        apply = await self._imagex("GET", [
            ("Action", "ApplyImageUpload"), ("Version", IMAGEX_VERSION), ("ServiceId", service_id),
            ("FileSize", str(len(data))), ("s", secrets.token_hex(5)),
        ], credentials)
        address = (apply.get("Result") or {}).get("UploadAddress") or {}
        try:
            store = address["StoreInfos"][0]
            host = address["UploadHosts"][0]
            session_key = address["SessionKey"]
        except (KeyError, IndexError, TypeError) as exc:
            raise error_for(classify("http", 502), "upload: ApplyImageUpload answered without an address") from exc
        await self._put_bytes(upload_url(host, store["StoreUri"], self.base), store["Auth"], data)
        commit = await self._imagex("POST", [
            ("Action", "CommitImageUpload"), ("Version", IMAGEX_VERSION), ("ServiceId", service_id),
        ], credentials, json.dumps({"SessionKey": session_key}).encode())
        result = commit.get("Result") or {}
        uri = ((result.get("Results") or [{}])[0]).get("Uri")
        plugin = (result.get("PluginResult") or [{}])[0]
        if not uri:
            raise error_for(classify("http", 502), "upload: CommitImageUpload answered without a Uri")
        return UploadedImage(str(uri), int(plugin.get("ImageWidth") or 0), int(plugin.get("ImageHeight") or 0),
                             str(plugin.get("ImageFormat") or ""))

    async def _imagex(self, method: str, params: list[tuple[str, str]], credentials: aws4.Credentials,
                      body: bytes = b"") -> dict[str, Any]:
        signed = aws4.sign(method=method, path="/", params=params, headers={}, body=body, credentials=credentials,
                           region=self.region.aws_region, service=IMAGEX_SERVICE,
                           timestamp=aws4.amz_date(self.clock()), sign_content_sha256=bool(body))
        response = await self.client.send_raw(method, self.base + "/", params=params, headers=signed,
                                              content=body or None)
        if response.status_code != 200:
            raise _imagex_error(response, params[0][1])
        try:
            payload: dict[str, Any] = response.json()
        except ValueError as exc:
            raise error_for(classify("http", 502), f"upload ({params[0][1]}): the answer is not JSON") from exc
        error = (payload.get("ResponseMetadata") or {}).get("Error")
        if error:
            raise error_for(classify("http", 400), f"upload ({params[0][1]}): {error.get('Code')} "
                                                   f"{error.get('Message', '')}".rstrip())
        return payload

    async def _put_bytes(self, url: str, auth: str, data: bytes) -> None:
        response = await self.client.send_raw("POST", url, content=data, headers={
            "Authorization": auth, "Content-CRC32": crc32_hex(data), "Content-Type": "application/octet-stream",
            "Content-Disposition": 'attachment; filename="undefined"',
        })
        if response.status_code != 200:
            raise _imagex_error(response, "upload")
        try:
            code = response.json().get("code")
        except ValueError:
            code = None
        if code != UPLOAD_OK:
            raise error_for(classify("http", 502), f"upload: the byte upload answered code {code}")
