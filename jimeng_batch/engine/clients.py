"""The HTTP clients of a run, one per (region, proxy): every call made with a token goes to that token's region's
hosts, through that token's proxy.

A token may name a region (``us-…``) and a proxy (``proxyURL@sessionid``, :mod:`jimeng_batch.protocol.tokens`);
a token without a prefix belongs to the run's region (the manifest's). Its calls (API, credits, ImageX uploads,
and the downloads of its jobs' files) go through a :class:`JimengClient` of its own region and proxy, never
another token's and never direct; tokens of one region without a proxy share that region's direct client. Each
client keeps its own connection-pool lanes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import httpx

from jimeng_batch.errors import ConfigError
from jimeng_batch.protocol.catalog import REGIONS, ProtocolVersions, Region
from jimeng_batch.protocol.client import JimengClient
from jimeng_batch.protocol.fingerprint import Fingerprint, load_fingerprint
from jimeng_batch.protocol.imagex import Uploader, imagex_base
from jimeng_batch.protocol.limits import CallLimits
from jimeng_batch.protocol.tokens import Token, shown_proxy

# By region code: where that region's calls go instead of its hosts (None: its own hosts); or one for all.
BaseURL = str | None | Callable[[str], str | None]
WebId = str | Callable[[str], str]


def token_region(token: Token, default: str) -> str:
    """The region a token is used for: the one its prefix names (``us-…``), else ``default`` (the manifest's, or
    --region)."""
    return token.region or default


class Clients:
    """The run's clients and uploaders, by (region, proxy) (proxy None: direct). ``region`` is the run's own (the
    manifest's): that of tokens without a prefix. Close with :meth:`close` (or ``async with``)."""

    def __init__(self, *, region: Region, versions: ProtocolVersions, web_id: WebId, base_url: BaseURL,
                 imagex_url: str | None, limits: CallLimits, tokens: Iterable[Token] = (),
                 transport: httpx.AsyncBaseTransport | None = None, fingerprint: Fingerprint | None = None) -> None:
        self.region = region
        # Each token sends the webId and uid_tt of this installation's fingerprint (a plan shows a stand-in webId,
        # so that plans do not depend on the installation); a web_id constant names the webId for every token.
        fingerprint = fingerprint or load_fingerprint(os.environ, web_id=versions.web_id)
        self._web_id = web_id if callable(web_id) else (lambda _region, given=web_id: given)
        self._base_url = base_url if callable(base_url) else (lambda _region, given=base_url: given)
        self._settings = (versions, imagex_url, limits, transport, fingerprint)
        self._made: dict[tuple[str, str | None], tuple[JimengClient, Uploader]] = {}
        # The direct client of the run's region: what is not a call (the outcome of a malformed answer) is asked
        # of it; no call of a proxied token, nor of another region's token, goes through it.
        self.default = self._make(region.code, None)[0]
        for token in tokens:
            self._make(self.region_of(token), token.proxy)

    def region_of(self, token: Token) -> str:
        """The code of the region ``token`` is used for."""
        return token_region(token, self.region.code)

    def base_url(self, region: str) -> str | None:
        """Where ``region``'s calls go instead of its own hosts (None: its own hosts)."""
        return self._base_url(region)

    def _make(self, region_code: str, proxy: str | None) -> tuple[JimengClient, Uploader]:
        made = self._made.get((region_code, proxy))
        if made is None:
            versions, imagex_url, limits, transport, fingerprint = self._settings
            region, base_url = REGIONS[region_code], self._base_url(region_code)
            try:
                client = JimengClient(region=region, versions=versions, web_id=self._web_id(region_code),
                                      base_url=base_url, transport=transport, limits=limits, proxy=proxy,
                                      fingerprint=fingerprint)
            except ImportError as exc:  # a SOCKS proxy without httpx's socks extra
                raise ConfigError(f"the proxy {shown_proxy(proxy or '')} needs a package that is not "
                                  f"installed ({exc.name}): pip install 'httpx[socks]'") from None
            made = self._made[(region_code, proxy)] = (
                client, Uploader(client, region, imagex_base(region, base_url, imagex_url)))
        return made

    def client(self, token: Token) -> JimengClient:
        """The client for calls made with ``token``: its region's hosts, through its proxy (or direct)."""
        return self._make(self.region_of(token), token.proxy)[0]

    def uploader(self, token: Token) -> Uploader:
        """The ImageX uploader for ``token`` (its region's ImageX host, through its proxy)."""
        return self._make(self.region_of(token), token.proxy)[1]

    def api_base(self, region: str) -> str:
        """The API host ``region``'s calls go to."""
        return self._make(region, None)[0].api_base

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for client, _ in self._made.values():
            await client.close()
