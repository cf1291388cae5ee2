"""AWS Signature Version 4 (AWS4-HMAC-SHA256): pure functions, shared by the upload client and the simulator.

The ImageX upload calls (``ApplyImageUpload``, ``CommitImageUpload``) are signed with the STS credentials that
``get_upload_token`` returns (see the protocol reference, section 2.5). Clients of the live service sign a small set
of headers (``x-amz-date;x-amz-security-token``, plus ``x-amz-content-sha256`` when POSTing a body) and put the
query into the canonical request *raw* (``k=v`` sorted by key, not URI-encoded); the AWS specification URI-encodes
it. Both forms are offered here because for the simple values involved they coincide, and a verifier should accept
either.

Nothing here does I/O or reads a clock: the caller passes the ``x-amz-date`` timestamp in.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "Authorization",
    "Credentials",
    "amz_date",
    "authorization_header",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "credential_scope",
    "parse_authorization",
    "payload_hash",
    "sign",
    "signature",
    "signing_key",
    "string_to_sign",
]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# RFC 3986 unreserved characters: the only ones AWS leaves unencoded.
_UNRESERVED = "-_.~"


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key pair, with the STS session token when the keys are temporary."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never print the secret half
        return f"Credentials(access_key_id={self.access_key_id!r}, secret_access_key=***, session_token=***)"


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parts of an ``Authorization: AWS4-HMAC-SHA256 ...`` header."""

    access_key_id: str
    date: str  # YYYYMMDD
    region: str
    service: str
    terminator: str  # "aws4_request"
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{self.terminator}"


def amz_date(unix_seconds: float) -> str:
    """The ``x-amz-date`` form of a unix time: ``YYYYMMDDTHHMMSSZ`` in UTC."""
    return datetime.fromtimestamp(int(unix_seconds), tz=UTC).strftime("%Y%m%dT%H%M%SZ")


def payload_hash(body: bytes) -> str:
    """Hex sha256 of a request body (of ``b""`` when there is none)."""
    return hashlib.sha256(body).hexdigest()


def _encode(value: str) -> str:
    return quote(value, safe=_UNRESERVED)


def canonical_query(params: Iterable[tuple[str, str]], *, encode: bool = True) -> str:
    """The canonical query string: pairs sorted by key then value, joined by ``&``.

    ``encode=True`` URI-encodes keys and values as the AWS specification says; ``encode=False`` keeps them raw, as
    the live service's web clients do.
    """
    if encode:
        pairs = sorted((_encode(k), _encode(v)) for k, v in params)
    else:
        pairs = sorted((k, v) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_headers(headers: Mapping[str, str], signed_headers: Sequence[str]) -> str:
    """``name:value\\n`` for each signed header, names lower-cased, values trimmed with inner runs of spaces folded."""
    lowered = {k.lower(): v for k, v in headers.items()}
    lines = []
    for name in signed_headers:
        value = " ".join(lowered.get(name, "").strip().split())
        lines.append(f"{name}:{value}\n")
    return "".join(lines)


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body_hash: str,
) -> str:
    """The canonical request that the string to sign hashes. ``query`` is already canonical."""
    return "\n".join(
        (
            method.upper(),
            path or "/",
            query,
            canonical_headers(headers, signed_headers),
            ";".join(signed_headers),
            body_hash,
        )
    )


def credential_scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(timestamp: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    """The derived key: HMAC chain over date, region, service and ``aws4_request``."""
    k_date = _hmac(("AWS4" + secret_access_key).encode("utf-8"), date)
    k_region = _hmac(k_date, region)
    k_service = _hmac(k_region, service)
    return _hmac(k_service, "aws4_request")


def signature(key: bytes, to_sign: str) -> str:
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization_header(access_key_id: str, scope: str, signed_headers: Sequence[str], sig: str) -> str:
    return f"{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={';'.join(signed_headers)}, Signature={sig}"


def sign(
    *,
    method: str,
    path: str,
    params: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    credentials: Credentials,
    region: str,
    service: str,
    timestamp: str,
    encode_query: bool = False,
    sign_content_sha256: bool = False,
    extra_signed_headers: Sequence[str] = (),
) -> dict[str, str]:
    """The headers to add to a request so that it is signed: ``x-amz-date``, the session token, ``Authorization``.

    Signed headers are ``x-amz-date``, ``x-amz-security-token`` (when the credentials carry one),
    ``x-amz-content-sha256`` when ``sign_content_sha256`` (the live clients do this for POSTs with a body), and any
    ``extra_signed_headers`` already in ``headers`` (e.g. ``host``). ``timestamp`` is ``amz_date(now)``.
    """
    added: dict[str, str] = {"x-amz-date": timestamp}
    if credentials.session_token:
        added["x-amz-security-token"] = credentials.session_token
    body_hash = payload_hash(body)
    if sign_content_sha256:
        added["x-amz-content-sha256"] = body_hash
    all_headers = {**{k.lower(): v for k, v in headers.items()}, **added}
    signed = sorted({*added, *(h.lower() for h in extra_signed_headers)})
    date = timestamp[:8]
    scope = credential_scope(date, region, service)
    canonical = canonical_request(
        method, path, canonical_query(params, encode=encode_query), all_headers, signed, body_hash
    )
    sig = signature(signing_key(credentials.secret_access_key, date, region, service),
                    string_to_sign(timestamp, scope, canonical))
    added["authorization"] = authorization_header(credentials.access_key_id, scope, signed, sig)
    return added


def parse_authorization(value: str) -> Authorization:
    """Split an ``Authorization`` header into its parts; ``ValueError`` naming what is wrong otherwise."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise ValueError(f"algorithm must be {ALGORITHM}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if not sep:
            raise ValueError(f"malformed Authorization component {part.strip()!r}")
        fields[key] = val
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in fields]
    if missing:
        raise ValueError(f"Authorization lacks {', '.join(missing)}")
    credential = fields["Credential"].split("/")
    if len(credential) != 5:
        raise ValueError("Credential must be <access key>/<date>/<region>/<service>/aws4_request")
    access_key_id, date, region, service, terminator = credential
    if terminator != "aws4_request":
        raise ValueError("Credential scope must end with aws4_request")
    signed_headers = tuple(fields["SignedHeaders"].split(";"))
    return Authorization(access_key_id, date, region, service, terminator, signed_headers, fields["Signature"])
