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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from jimeng_batch.errors import APIError
from jimeng_batch.protocol import answers, aws4
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


def _json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, RecursionError):
        return None


def _error_detail(payload: Any) -> str:
    """``Code Message`` of an ImageX error answer, read as untrusted data ("" when it has none)."""
    try:
        meta = answers.mapping(answers.mapping(payload, "answer").get("ResponseMetadata"), "ResponseMetadata")
        detail = answers.mapping(meta.get("Error"), "ResponseMetadata.Error")
        code = answers.text(detail.get("Code"), "Error.Code")
        message = answers.text(detail.get("Message"), "Error.Message")
    except answers.Malformed:
        return ""
    return f"{code} {message}".strip()[:200]


def _imagex_error(response: httpx.Response, step: str) -> APIError:
    payload = _json(response)
    message = _error_detail(payload) if payload is not None else response.text[:200].replace("\n", " ")
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
        grant = await self.client.call(UPLOAD_TOKEN_PATH, {"scene": UPLOAD_SCENE_IMAGE}, token)
        try:
            grant = answers.mapping(grant, "data")
            credentials = aws4.Credentials(answers.text(grant.get("access_key_id"), "data.access_key_id"),
                                           answers.text(grant.get("secret_access_key"), "data.secret_access_key"),
                                           answers.text(grant.get("session_token"), "data.session_token") or None)
            service_id = answers.text(grant.get("service_id") or grant.get("space_name"), "data.service_id")
        except answers.Malformed as exc:
            raise self.client.malformed(UPLOAD_TOKEN_PATH, str(exc)) from exc
        service_id = service_id or self.region.imagex_service_id
        apply = await self._imagex("GET", [
            ("Action", "ApplyImageUpload"), ("Version", IMAGEX_VERSION), ("ServiceId", service_id),
            ("FileSize", str(len(data))), ("s", secrets.token_hex(5)),
        ], credentials)
        try:
            result = answers.mapping(apply.get("Result"), "Result")
            address = answers.mapping(result.get("UploadAddress"), "Result.UploadAddress")
            store = answers.first(address.get("StoreInfos"), "Result.UploadAddress.StoreInfos")
            host = answers.text((answers.items(address.get("UploadHosts"), "Result.UploadAddress.UploadHosts")
                                 or [None])[0], "Result.UploadAddress.UploadHosts[0]")
            session_key = answers.text(address.get("SessionKey"), "Result.UploadAddress.SessionKey")
            store_uri = answers.text(store.get("StoreUri"), "Result.UploadAddress.StoreInfos[0].StoreUri")
            auth = answers.text(store.get("Auth"), "Result.UploadAddress.StoreInfos[0].Auth")
        except answers.Malformed as exc:
            raise self.client.malformed("upload (ApplyImageUpload)", str(exc)) from exc
        if not (host and session_key and store_uri):
            raise self.client.malformed("upload (ApplyImageUpload)", "answered without an upload address")
        await self._put_bytes(upload_url(host, store_uri, self.base), auth, data)
        commit = await self._imagex("POST", [
            ("Action", "CommitImageUpload"), ("Version", IMAGEX_VERSION), ("ServiceId", service_id),
        ], credentials, json.dumps({"SessionKey": session_key}).encode())
        try:
            result = answers.mapping(commit.get("Result"), "Result")
            uri = answers.text(answers.first(result.get("Results"), "Result.Results").get("Uri"),
                               "Result.Results[0].Uri")
            plugin = answers.first(result.get("PluginResult"), "Result.PluginResult")
            image = UploadedImage(uri, answers.integer(plugin.get("ImageWidth"), "PluginResult[0].ImageWidth"),
                                  answers.integer(plugin.get("ImageHeight"), "PluginResult[0].ImageHeight"),
                                  answers.text(plugin.get("ImageFormat"), "PluginResult[0].ImageFormat"))
        except answers.Malformed as exc:
            raise self.client.malformed("upload (CommitImageUpload)", str(exc)) from exc
        if not uri:
            raise self.client.malformed("upload (CommitImageUpload)", "answered without a Uri")
        return image

    async def _imagex(self, method: str, params: list[tuple[str, str]], credentials: aws4.Credentials,
                      body: bytes = b"") -> Mapping[str, Any]:
        signed = aws4.sign(method=method, path="/", params=params, headers={}, body=body, credentials=credentials,
                           region=self.region.aws_region, service=IMAGEX_SERVICE,
                           timestamp=aws4.amz_date(self.clock()), sign_content_sha256=bool(body))
        response = await self.client.send_raw(method, self.base + "/", params=params, headers=signed,
                                              content=body or None)
        step = params[0][1]
        if response.status_code != 200:
            raise _imagex_error(response, step)
        payload = _json(response)
        if not isinstance(payload, Mapping):
            raise self.client.malformed(f"upload ({step})", "the answer is not a JSON object")
        detail = _error_detail(payload)
        if detail:
            raise error_for(classify("http", 400), f"upload ({step}): {detail}")
        return payload

    async def _put_bytes(self, url: str, auth: str, data: bytes) -> None:
        response = await self.client.send_raw("POST", url, content=data, headers={
            "Authorization": auth, "Content-CRC32": crc32_hex(data), "Content-Type": "application/octet-stream",
            "Content-Disposition": 'attachment; filename="undefined"',
        })
        if response.status_code != 200:
            raise _imagex_error(response, "upload")
        payload = _json(response)
        code = payload.get("code") if isinstance(payload, Mapping) else None
        if code != UPLOAD_OK:
            raise error_for(classify("http", 502), f"upload: the byte upload answered code {code}")
