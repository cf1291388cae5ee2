"""Session tokens: read from the environment or a file, never written anywhere, shown only masked.

A token is the ``sessionid`` cookie of a logged-in web session. ``JIMENG_SESSIONID`` holds one or a
comma-separated pool; ``--token-file`` names a file with one per line (``#`` comments and blank lines ignored).

Each entry is written as the open clients write it (protocol reference §1.1, ``[proxyURL@][region-]sessionid``):

- a region prefix (``us-``, ``hk-``, ``jp-``, ``sg-``, or ``cn-``) says which region's hosts and app id the token
  belongs to; it is not part of the cookie. A real session id is hexadecimal (32 characters in CN), so a region
  code followed by ``-`` cannot be the start of one. Without a prefix a token belongs to the manifest's region
  (as before prefixes were read), not to CN as the open clients assume;
- a proxy, ``scheme://[user:password@]host:port@`` before it, sends that token's calls through that proxy. The
  proxy's credentials may themselves hold ``@``: the entry is split on its *last* ``@``, since a session id never
  holds one. The proxy's credentials are as secret as the token: only ``scheme://host:port`` is ever shown.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote, urlsplit

from jimeng_batch.errors import ConfigError
from jimeng_batch.protocol.catalog import REGIONS

TOKEN_ENV = "JIMENG_SESSIONID"  # noqa: S105 - the variable's name, not its value
MASK_VISIBLE = 4
MIN_SECRET = 8  # shorter "tokens" are not scrubbed from texts (they would match ordinary words)
MAX_TOKEN_FILE_BYTES = 1 << 20  # a pool of ten thousand tokens with proxies is well under 1 MiB
# httpx speaks SOCKS only with its `socks` extra installed; without it such a proxy is refused when it is read.
PROXY_SCHEMES = ("http", "https") + (("socks5", "socks5h") if importlib.util.find_spec("socksio") else ())


def mask(secret: str) -> str:
    """What may be shown of a token: its first four characters and its length."""
    return f"{secret[:MASK_VISIBLE]}…({len(secret)})"


@dataclass(frozen=True, slots=True)
class Token:
    """A session token. Its ``repr`` and ``str`` are masked, so it cannot leak through a log or a traceback.

    ``value`` is what the cookie carries (no region prefix, no proxy). ``region`` is the region its prefix named
    (None: no prefix, the manifest's region). ``proxy`` is the URL its calls go through, credentials included
    (never shown: :attr:`proxy_label` is).
    """

    value: str = field(repr=False)
    label: str = ""
    region: str | None = None
    proxy: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", base_label(self.value, self.region))

    def __str__(self) -> str:
        return self.label

    @property
    def account(self) -> str:
        """A stable, one-way id of the account (what uploads are remembered by); it does not reveal the token.
        Of the session id only: the same session written with a prefix or a proxy is the same account."""
        return hashlib.sha256(b"jimeng-batch account\0" + self.value.encode("utf-8")).hexdigest()[:16]

    @property
    def proxy_label(self) -> str | None:
        """The proxy as it may be shown: ``scheme://host:port``, without its credentials."""
        return shown_proxy(self.proxy) if self.proxy else None


def base_label(value: str, region: str | None) -> str:
    """A token's label before duplicates of its mask are numbered: ``abcd…(32)``, ``us:abcd…(32)`` when a prefix
    named its region (a plain token's label is what ledgers written before prefixes hold)."""
    return f"{region}:{mask(value)}" if region else mask(value)


def shown_proxy(url: str) -> str:
    """``scheme://host:port`` of a proxy URL: its credentials left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}:{parts.port}"


class _Unreadable(ValueError):
    """Why an entry of a token list cannot be read (never what it holds)."""


def parse_proxy(text: str) -> str:
    """A proxy URL checked and normalised (credentials percent-encoded once); _Unreadable says what is wrong."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise _Unreadable("the proxy before '@' has a port that is not a number from 1 to 65535, or a "
                          "malformed [IPv6] address") from None
    scheme = parts.scheme.lower()
    if "://" not in text or not scheme:
        raise _Unreadable("what is before '@' is not a proxy URL (scheme://[user:password@]host:port); "
                          "a session id holds no '@'")
    if scheme not in PROXY_SCHEMES:
        socks = "" if "socks5" in PROXY_SCHEMES else " (SOCKS needs `pip install httpx[socks]`)"
        raise _Unreadable(f"the proxy's scheme must be one of {', '.join(PROXY_SCHEMES)}{socks}")
    host = parts.hostname
    if not host:
        raise _Unreadable("the proxy names no host (scheme://[user:password@]host:port)")
    if port is None:
        raise _Unreadable("the proxy names no port (scheme://[user:password@]host:port)")
    if port == 0:
        raise _Unreadable("the proxy before '@' has a port that is not a number from 1 to 65535")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _Unreadable("the proxy URL has a path, query or fragment; only scheme://[user:password@]host:port")
    userinfo = ""
    if parts.username is not None:
        userinfo = quote(unquote(parts.username), safe="")
        if parts.password is not None:
            userinfo += ":" + quote(unquote(parts.password), safe="")
        userinfo += "@"
    return f"{scheme}://{userinfo}{f'[{host}]' if ':' in host else host}:{port}"


def _parse_entry(entry: str) -> tuple[str, str | None, str | None]:
    """One entry ``[proxyURL@][region-]sessionid``: the session id, the region, the proxy."""
    proxy = None
    if "@" in entry:
        head, _, entry = entry.rpartition("@")
        proxy = parse_proxy(head)
    elif "://" in entry:
        raise _Unreadable("a proxy URL without '@' and a session id after it (proxyURL@sessionid)")
    region = None
    prefix, dash, rest = entry.partition("-")
    if dash and prefix.lower() in REGIONS:
        region, entry = prefix.lower(), rest
    if not entry:
        raise _Unreadable("no session id after the " + ("region prefix" if region else "proxy"))
    return entry, region, proxy


def _entries(text: str, separators: str) -> Iterator[tuple[int, str]]:
    """The non-empty, non-comment entries of ``text`` with their position: line number when lines separate
    entries, else the entry's number."""
    by_line = "\n" in separators
    rest = separators.replace("\n", "")
    pieces = text.split("\n") if by_line else [text]
    number = 0
    for line_number, line in enumerate(pieces, 1):
        parts = [line]
        for separator in rest:
            parts = [part for piece in parts for part in piece.split(separator)]
        for part in parts:
            value = part.strip()
            if value and not value.startswith("#"):
                number += 1
                yield (line_number if by_line else number), value


def parse_tokens(text: str, *, separators: str = ",\n", source: str = "tokens") -> list[Token]:
    """Tokens from a comma- or line-separated text; duplicates are dropped, order is kept. Two tokens whose labels
    would be the same get labels ``…#2``, ``…#3``: a label names one token only.

    An entry that cannot be read is a :class:`ConfigError` naming ``source`` and the entry's line (or number),
    never what it holds; so is one session id written twice with different regions or proxies.
    """
    where = "line" if "\n" in separators else "token"
    seen: dict[str, tuple[Token, int]] = {}
    labels: Counter[str] = Counter()
    for position, entry in _entries(text, separators):
        try:
            value, region, proxy = _parse_entry(entry)
        except _Unreadable as exc:
            raise ConfigError(f"{source}: {where} {position}: {exc}") from None
        why = _cookie_problem(value)
        if why:
            raise ConfigError(f"{source}: {where} {position} ({base_label(value, region)}) has {why}, which a "
                              "cookie cannot carry; copy the sessionid cookie's value again")
        known = seen.get(value)
        if known is not None:
            if (known[0].region, known[0].proxy) != (region, proxy):
                raise ConfigError(f"{source}: {where} {position}: the session id of {where} {known[1]} "
                                  f"({known[0].label}) again, with another region prefix or proxy; keep one")
            continue
        base = base_label(value, region)
        labels[base] += 1
        label = base if labels[base] == 1 else f"{base}#{labels[base]}"
        seen[value] = (Token(value, label, region, proxy), position)
    return [token for token, _ in seen.values()]


def _cookie_problem(value: str) -> str | None:
    """Why a ``Cookie`` header cannot carry a session id as it is (never what it holds); None: it can."""
    if not value.isascii():
        return "a character that is not ASCII"
    if not value.isprintable():
        return "a control character"
    if any(c in value for c in ' ;"\\'):
        return "a space, ';', '\"' or '\\'"
    return None


class Scrubber:
    """Takes every form of the pool's tokens out of a text (a server may quote the cookie back in an error).

    Each token, percent-encoded (both ways) and as it appears in the cookie jar, is replaced by its masked label;
    a token's proxy URL by the proxy without its credentials, and the credentials on their own.
    """

    def __init__(self, tokens: Iterable[Token]) -> None:
        forms: dict[str, str] = {}
        for token in tokens:
            for form in (token.value, quote(token.value, safe=""), quote_plus(token.value)):
                if len(form) >= MIN_SECRET:
                    forms[form] = token.label
            if token.proxy and token.proxy_label:
                forms[token.proxy] = token.proxy_label
                parts = urlsplit(token.proxy)
                for secret in (parts.password, parts.password and unquote(parts.password)):
                    if secret and len(secret) >= MIN_SECRET:
                        forms[secret] = "…"
        # Longest first: a token's encoded form may contain the token itself.
        self._forms = sorted(forms.items(), key=lambda item: -len(item[0]))

    def __call__(self, text: str) -> str:
        for form, label in self._forms:
            if form in text:
                text = text.replace(form, label)
        return text


def load_tokens(token_file: Path | None = None, environ: dict[str, str] | None = None) -> list[Token]:
    """The token pool: from ``token_file`` when given, else from ``JIMENG_SESSIONID``."""
    env = os.environ if environ is None else environ
    if token_file is not None:
        tokens = parse_tokens(_token_file_text(token_file), source=str(token_file))
        if not tokens:
            raise ConfigError(f"{token_file}: no session token in the file (one per line)")
        return tokens
    return parse_tokens(env.get(TOKEN_ENV, ""), separators=",", source=TOKEN_ENV)


def _token_file_text(token_file: Path) -> str:
    """The text of a token file, read no further than a token file can be long. What is wrong with it is said
    without quoting any of it: the file holds secrets."""
    try:
        with token_file.open("rb") as handle:
            data = handle.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{token_file}: cannot read the token file ({exc.strerror})") from exc
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise ConfigError(f"{token_file}: over {MAX_TOKEN_FILE_BYTES // 1024} KiB, more than a token file holds "
                          "(one session token per line); is it the right file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{token_file}: not UTF-8 text (byte {exc.start} of the file); a token file is text, one "
                          "session token per line") from None


def for_region(tokens: list[Token], region: str) -> tuple[list[Token], list[Token]]:
    """The tokens a run of ``region`` may use (those of that region, and those without a prefix), and the others."""
    usable = [token for token in tokens if token.region in (None, region)]
    return usable, [token for token in tokens if token.region not in (None, region)]
