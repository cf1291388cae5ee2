"""The ImageX upload service, simulated: STS credentials, AWS4 verification, apply / upload bytes / commit.

The flow (protocol reference 2.5): ``get_upload_token`` hands out temporary credentials; ``ApplyImageUpload`` (AWS4
signed) returns a store URI, an upload auth and a host; the bytes go to ``POST /upload/v1/<StoreUri>`` with that
auth and a ``Content-CRC32``; ``CommitImageUpload`` (AWS4 signed, body hash included) returns the ``image_uri``
that drafts then reference. The simulator answers all of it on its own host, and only accepts a draft's
``image_uri`` if the same account uploaded it (or the config names it as known).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from PIL import Image, UnidentifiedImageError

from jimeng_batch.protocol import aws4

__all__ = ["ImageXError", "ImageXStore", "UploadCredentials", "parse_raw_query"]

API_VERSION = "2018-08-01"
SERVICE = "imagex"
MAX_SKEW_S = 15 * 60  # AWS's own tolerance for x-amz-date
DEFAULT_SERVICE_ID = "tb4s082cfz"


class ImageXError(Exception):
    """An ImageX error: HTTP status, the service's error code and a message (never containing secrets)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class UploadCredentials:
    """Temporary credentials issued to one account."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    account_token: str
    expires_at: float
    service_id: str


@dataclass(eq=False)
class _UploadSession:
    session_key: str
    store_uri: str
    auth: str
    account_token: str
    file_size: int
    data: bytes | None = None


def parse_raw_query(raw: str) -> list[tuple[str, str]]:
    """Percent-decoded (key, value) pairs of a raw query string, in order. A ``+`` stays a ``+``: signers put the
    raw text into the canonical query, so reading it as a space would break their signatures."""
    pairs = []
    for part in raw.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key) if "%" in key else key, unquote(value) if "%" in value else value))
    return pairs


class ImageXStore:
    """Issued credentials, open upload sessions and stored bytes."""

    def __init__(self, *, seed: int, token_ttl_s: float, max_upload_bytes: int) -> None:
        self._seed = seed
        self._ttl = token_ttl_s
        self._max_bytes = max_upload_bytes
        self._lock = threading.Lock()
        self._counter = 0
        self._credentials: dict[str, UploadCredentials] = {}
        self._sessions: dict[str, _UploadSession] = {}
        self._by_store_uri: dict[str, _UploadSession] = {}

    def _derive(self, purpose: str, length: int) -> str:
        self._counter += 1
        material = f"{self._seed}\x00{purpose}\x00{self._counter}".encode()
        return hashlib.sha256(material).hexdigest()[:length]

    # -- get_upload_token ----------------------------------------------------------------------------------------

    def issue(self, account_token: str, now: float, service_id: str = DEFAULT_SERVICE_ID) -> dict[str, Any]:
        """New temporary credentials for an account: the ``data`` of a get_upload_token answer."""
        with self._lock:
            creds = UploadCredentials(
                access_key_id="AKTP" + self._derive("ak", 28).upper(),
                secret_access_key=self._derive("sk", 40),
                session_token="STS2" + self._derive("st", 60),
                account_token=account_token,
                expires_at=now + self._ttl,
                service_id=service_id,
            )
            self._credentials[creds.access_key_id] = creds
        return {
            "access_key_id": creds.access_key_id,
            "secret_access_key": creds.secret_access_key,
            "session_token": creds.session_token,
            "service_id": service_id,
            "space_name": service_id,
            "current_time": int(now),
            "expired_time": int(creds.expires_at),
        }

    # -- AWS4 verification ---------------------------------------------------------------------------------------

    def verify(
        self, *, method: str, raw_query: str, headers: Mapping[str, str], body: bytes, now: float
    ) -> UploadCredentials:
        """Check an ImageX call's AWS4-HMAC-SHA256 signature; the credentials it was signed with, or ImageXError.

        Accepts the canonical query raw (as the live web clients send it) or URI-encoded (as the AWS specification
        says). ``headers`` must be keyed by lower-case names.
        """
        header = headers.get("authorization")
        if not header:
            raise ImageXError(401, "MissingAuthenticationToken", "Authorization header is missing")
        try:
            auth = aws4.parse_authorization(header)
        except ValueError as exc:
            raise ImageXError(401, "InvalidAuthorization", str(exc)) from None
        creds = self._credentials.get(auth.access_key_id)
        if creds is None:
            raise ImageXError(401, "InvalidAccessKeyId", "the access key was not issued by get_upload_token")
        if now > creds.expires_at:
            raise ImageXError(401, "ExpiredToken", "the upload credentials have expired")
        if auth.service != SERVICE:
            raise ImageXError(403, "InvalidCredentialScope", f"the credential scope's service must be {SERVICE}")
        required = ["x-amz-date", "x-amz-security-token"]
        if body:
            required.append("x-amz-content-sha256")
        missing = [h for h in required if h not in auth.signed_headers]
        if missing:
            raise ImageXError(403, "SignatureDoesNotMatch", f"SignedHeaders must include {', '.join(missing)}")
        if headers.get("x-amz-security-token") != creds.session_token:
            raise ImageXError(401, "InvalidSecurityToken", "x-amz-security-token does not match the access key")
        timestamp = headers.get("x-amz-date", "")
        if not timestamp.startswith(auth.date) or len(timestamp) != 16:
            raise ImageXError(403, "SignatureDoesNotMatch", "x-amz-date does not match the credential scope date")
        if abs(_parse_amz_date(timestamp) - now) > MAX_SKEW_S:
            raise ImageXError(403, "RequestTimeTooSkewed", "x-amz-date is too far from the server time")
        body_hash = aws4.payload_hash(body)
        declared = headers.get("x-amz-content-sha256")
        if declared is not None and declared != body_hash:
            raise ImageXError(400, "XAmzContentSHA256Mismatch", "x-amz-content-sha256 is not the body's sha256")
        key = aws4.signing_key(creds.secret_access_key, auth.date, auth.region, auth.service)
        pairs = parse_raw_query(raw_query)
        for encode in (False, True):
            canonical = aws4.canonical_request(
                method, "/", aws4.canonical_query(pairs, encode=encode), headers, auth.signed_headers, body_hash
            )
            expected = aws4.signature(key, aws4.string_to_sign(timestamp, auth.scope, canonical))
            if hmac.compare_digest(expected, auth.signature):
                return creds
        raise ImageXError(403, "SignatureDoesNotMatch", "the request signature does not match")

    # -- ApplyImageUpload / bytes / CommitImageUpload ------------------------------------------------------------

    def apply(self, creds: UploadCredentials, params: Mapping[str, str], upload_host: str) -> dict[str, Any]:
        """Open an upload session: the ``Result`` of ApplyImageUpload."""
        _require_version(params)
        service_id = params.get("ServiceId")
        if not service_id:
            raise ImageXError(400, "InvalidParameter", "ServiceId is required")
        size_text = params.get("FileSize", "")
        if not size_text.isdigit() or not 0 < int(size_text) <= self._max_bytes:
            raise ImageXError(400, "InvalidParameter", f"FileSize must be between 1 and {self._max_bytes}")
        with self._lock:
            name = self._derive("store", 32)
            session = _UploadSession(
                session_key=self._derive("session", 48),
                store_uri=f"tos-cn-i-{service_id}/{name}",
                auth="SpaceKey/" + service_id + "/1/:" + self._derive("auth", 40),
                account_token=creds.account_token,
                file_size=int(size_text),
            )
            self._sessions[session.session_key] = session
            self._by_store_uri[session.store_uri] = session
        return {
            "UploadAddress": {
                "StoreInfos": [{"StoreUri": session.store_uri, "Auth": session.auth, "UploadID": name[:16]}],
                "UploadHosts": [upload_host],
                "UploadHeader": None,
                "SessionKey": session.session_key,
            },
            "RequestId": name[:24],
        }

    def receive(self, store_uri: str, authorization: str | None, crc_header: str | None, data: bytes) -> str:
        """Store uploaded bytes after checking the session auth, the size and the CRC32; the crc32 hex."""
        with self._lock:
            session = self._by_store_uri.get(store_uri)
        if session is None:
            raise ImageXError(404, "StoreUriNotFound", "no upload was applied for this store URI")
        if authorization is None or not hmac.compare_digest(authorization, session.auth):
            raise ImageXError(401, "InvalidAuth", "Authorization must be the StoreInfos Auth of this upload")
        if len(data) != session.file_size:
            raise ImageXError(400, "FileSizeMismatch", f"{len(data)} bytes received, FileSize was {session.file_size}")
        crc = zlib.crc32(data) & 0xFFFFFFFF
        try:
            declared = int(crc_header or "", 16)
        except ValueError:
            raise ImageXError(400, "InvalidCRC32", "Content-CRC32 must be the hex crc32 of the body") from None
        if declared != crc:
            raise ImageXError(400, "CRC32Mismatch", "Content-CRC32 does not match the body")
        with self._lock:
            session.data = data
        return f"{crc:08x}"

    def commit(self, creds: UploadCredentials, params: Mapping[str, str],
               body: bytes) -> tuple[dict[str, Any], str, int]:
        """Finish an upload: the ``Result`` of CommitImageUpload, the image URI and its size in bytes."""
        _require_version(params)
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            raise ImageXError(400, "InvalidParameter", "the body must be JSON with a SessionKey") from None
        session_key = request.get("SessionKey") if isinstance(request, dict) else None
        with self._lock:
            session = self._sessions.get(session_key) if isinstance(session_key, str) else None
        if session is None or session.account_token != creds.account_token:
            raise ImageXError(404, "SessionNotFound", "SessionKey names no upload of these credentials")
        if session.data is None:
            raise ImageXError(400, "NoUploadedData", "the bytes were not uploaded before the commit")
        try:
            with Image.open(io.BytesIO(session.data)) as image:
                width, height = image.size
                image_format = (image.format or "").lower()
        except (UnidentifiedImageError, OSError):
            raise ImageXError(400, "InvalidImage", "the uploaded file is not an image") from None
        result = {
            "Results": [{"Uri": session.store_uri, "UriStatus": 2000}],
            "RequestId": session.session_key[:24],
            "PluginResult": [
                {
                    "FileName": session.store_uri.rpartition("/")[2],
                    "SourceUri": session.store_uri,
                    "ImageUri": session.store_uri,
                    "ImageWidth": width,
                    "ImageHeight": height,
                    "ImageMd5": hashlib.md5(session.data, usedforsecurity=False).hexdigest(),
                    "ImageFormat": image_format,
                    "ImageSize": len(session.data),
                    "FrameCnt": 1,
                }
            ],
        }
        return result, session.store_uri, len(session.data)


def _require_version(params: Mapping[str, str]) -> None:
    if params.get("Version") != API_VERSION:
        raise ImageXError(400, "InvalidVersion", f"Version must be {API_VERSION}")


def _parse_amz_date(value: str) -> float:
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise ImageXError(403, "SignatureDoesNotMatch", "x-amz-date must be YYYYMMDDTHHMMSSZ") from None
