"""The HTTP clients of a run, one per proxy: every call made with a token goes through that token's proxy.

A token may name a proxy (``proxyURL@sessionid``, :mod:`jimeng_batch.protocol.tokens`). Its calls (API, credits,
ImageX uploads, and the downloads of its jobs' files) go through a :class:`JimengClient` of its own proxy, never
another token's and never direct; tokens without a proxy share the direct client. A run has one region (the
manifest's; tokens of other regions are not in its pool), so a client per proxy is a client per (region, proxy).
Each client keeps its own connection-pool lanes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import httpx

from jimeng_batch.errors import ConfigError
from jimeng_batch.protocol.catalog import ProtocolVersions, Region
from jimeng_batch.protocol.client import JimengClient
from jimeng_batch.protocol.fingerprint import Fingerprint, load_fingerprint
from jimeng_batch.protocol.imagex import Uploader, imagex_base
from jimeng_batch.protocol.limits import CallLimits
from jimeng_batch.protocol.tokens import Token, shown_proxy


class Clients:
    """The run's clients and uploaders, by proxy (None: direct). Close with :meth:`close` (or ``async with``)."""

    def __init__(self, *, region: Region, versions: ProtocolVersions, web_id: str, base_url: str | None,
                 imagex_url: str | None, limits: CallLimits, tokens: Iterable[Token] = (),
                 transport: httpx.AsyncBaseTransport | None = None, fingerprint: Fingerprint | None = None) -> None:
        self.region = region
        # Each token sends the webId and uid_tt of this installation's fingerprint (a plan shows a stand-in webId,
        # so that plans do not depend on the installation); a web_id constant names the webId for every token.
        fingerprint = fingerprint or load_fingerprint(os.environ, web_id=versions.web_id)
        self._settings = (versions, web_id, base_url, imagex_url, limits, transport, fingerprint)
        self._made: dict[str | None, tuple[JimengClient, Uploader]] = {}
        # The direct client: what is not a call (the API host's name, the outcome of a malformed answer) is asked
        # of it; no call of a proxied token goes through it.
        self.default = self._make(None)[0]
        for token in tokens:
            self._make(token.proxy)

    def _make(self, proxy: str | None) -> tuple[JimengClient, Uploader]:
        made = self._made.get(proxy)
        if made is None:
            versions, web_id, base_url, imagex_url, limits, transport, fingerprint = self._settings
            try:
                client = JimengClient(region=self.region, versions=versions, web_id=web_id, base_url=base_url,
                                      transport=transport, limits=limits, proxy=proxy, fingerprint=fingerprint)
            except ImportError as exc:  # a SOCKS proxy without httpx's socks extra
                raise ConfigError(f"the proxy {shown_proxy(proxy or '')} needs a package that is not "
                                  f"installed ({exc.name}): pip install 'httpx[socks]'") from None
            made = self._made[proxy] = (client, Uploader(client, self.region,
                                                          imagex_base(self.region, base_url, imagex_url)))
        return made

    def client(self, token: Token) -> JimengClient:
        """The client for calls made with ``token``: through its proxy, or direct when it names none."""
        return self._make(token.proxy)[0]

    def uploader(self, token: Token) -> Uploader:
        """The ImageX uploader for ``token`` (through its proxy)."""
        return self._make(token.proxy)[1]

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for client, _ in self._made.values():
            await client.close()
