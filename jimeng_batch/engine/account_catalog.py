"""The account's catalog for a run, a ``validate --live`` or a ``models --live``: read from the service, or the
output folder's cached copy.

A run reads the catalog of its first token's account before anything is sent and keeps a copy in the output folder
(``catalog.json``: the catalog, when it was read, from which host and for which account label; never a token), so
that a resume checks its manifest against the same catalog as the run it continues. A run whose jobs go to several
regions reads each region's catalog with that region's first token, and keeps each (``catalog.json`` for the
manifest's region, ``catalog.REGION.json`` for the others). When the catalog cannot be
read (network, login, an answer of a shape the client cannot use), the caller is told why and the built-in catalog
stands in (``warn``), unless it asked for the account's (``require``). The read is one call per catalogue, not
retried: the fallback is safe, and the next run reads it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jimeng_batch.errors import APIError
from jimeng_batch.protocol import answers
from jimeng_batch.protocol.client import JimengClient
from jimeng_batch.protocol.live_catalog import CACHE_VERSION, AccountCatalog, from_json, to_json
from jimeng_batch.protocol.tokens import Token

CATALOG_NAME = "catalog.json"


def catalog_name(region: str | None = None) -> str:
    """The cached copy's file name for ``region`` (None: the manifest's region, ``catalog.json``)."""
    return CATALOG_NAME if region is None else f"catalog.{region}.json"


@dataclass(frozen=True, slots=True)
class CatalogCopy:
    """An account's catalog and where it came from."""

    catalog: AccountCatalog
    read_at: str  # UTC, ISO 8601
    host: str
    account: str  # the masked label of the token it was read with
    cached: bool = False  # taken from the output folder rather than read now

    def describe(self) -> str:
        """For messages: "read from HOST for LABEL at TIME" (and "cached" when it was)."""
        how = "cached in the output folder, read" if self.cached else "read"
        return f"the account's catalog, {how} from {self.host} for {self.account} at {self.read_at}"


@dataclass(frozen=True, slots=True)
class CatalogRead:
    """What came of asking for the account's catalog: the copy, or why there is none."""

    copy: CatalogCopy | None
    problem: str | None = None  # why it could not be read (scrubbed of tokens by the caller's scrubber)


def _now(clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def read_live(client: JimengClient, token: Token, *, clock: Callable[[], float] = time.time,
                    scrub: Callable[[str], str] = str) -> CatalogCopy:
    """Both catalogues of ``token``'s account, now; an :class:`APIError` when either cannot be read.

    Its text is the server's: ``scrub`` takes every form of the pool's tokens out of it (a hostile server may quote
    the cookie in a model's name) before it is shown or cached.
    """
    offered = await client.account_catalog(token)
    if scrub is not str:
        offered = from_json(json.loads(scrub(json.dumps(to_json(offered), ensure_ascii=False))))
    return CatalogCopy(offered, _now(clock), client.api_base, token.label)


def write_cached(folder: Path, copy: CatalogCopy, name: str = CATALOG_NAME) -> None:
    """``name`` (``catalog.json``) in ``folder``, whole or not at all."""
    data = {"version": CACHE_VERSION, "read_at": copy.read_at, "host": copy.host, "account": copy.account,
            "catalog": to_json(copy.catalog)}
    path = folder / name
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def read_cached(folder: Path, name: str = CATALOG_NAME) -> CatalogCopy | None:
    """The cached copy in ``folder``; None when there is none or it cannot be read (then it is read afresh)."""
    path = folder / name
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        top = answers.mapping(data, name)
        if answers.integer(top.get("version"), "version") != CACHE_VERSION:
            return None
        return CatalogCopy(from_json(top.get("catalog"), "catalog"), answers.text(top.get("read_at"), "read_at"),
                           answers.text(top.get("host"), "host"), answers.text(top.get("account"), "account"),
                           cached=True)
    except (OSError, ValueError, RecursionError, answers.Malformed):
        return None


async def account_catalog(client: JimengClient, token: Token, *, folder: Path | None = None,
                          use_cached: bool = False, clock: Callable[[], float] = time.time,
                          scrub: Callable[[str], str] = str, name: str = CATALOG_NAME) -> CatalogRead:
    """The account's catalog: ``folder``'s cached copy when ``use_cached`` and it was read from the same host,
    else read now (and cached in ``folder``). A catalog that cannot be read is a :class:`CatalogRead` without a
    copy, saying why."""
    if use_cached and folder is not None:
        cached = read_cached(folder, name)
        if cached is not None and cached.host == client.api_base:
            return CatalogRead(cached)
    try:
        copy = await read_live(client, token, clock=clock, scrub=scrub)
    except APIError as error:
        return CatalogRead(None, scrub(f"the account's catalog could not be read from {client.api_base}: {error}"))
    if folder is not None:
        write_cached(folder, copy, name)
    return CatalogRead(copy)
