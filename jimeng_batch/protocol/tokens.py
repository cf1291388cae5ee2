"""Session tokens: read from the environment or a file, never written anywhere, shown only masked.

A token is the ``sessionid`` cookie of a logged-in web session. ``JIMENG_SESSIONID`` holds one or a
comma-separated pool; ``--token-file`` names a file with one per line (``#`` comments and blank lines ignored).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

from jimeng_batch.errors import ConfigError

TOKEN_ENV = "JIMENG_SESSIONID"  # noqa: S105 - the variable's name, not its value
MASK_VISIBLE = 4
MIN_SECRET = 8  # shorter "tokens" are not scrubbed from texts (they would match ordinary words)


def mask(secret: str) -> str:
    """What may be shown of a token: its first four characters and its length."""
    return f"{secret[:MASK_VISIBLE]}…({len(secret)})"


@dataclass(frozen=True, slots=True)
class Token:
    """A session token. Its ``repr`` and ``str`` are masked, so it cannot leak through a log or a traceback."""

    value: str = field(repr=False)
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", mask(self.value))

    def __str__(self) -> str:
        return self.label

    @property
    def account(self) -> str:
        """A stable, one-way id of the account (what uploads are remembered by); it does not reveal the token."""
        return hashlib.sha256(b"jimeng-batch account\0" + self.value.encode("utf-8")).hexdigest()[:16]


def parse_tokens(text: str, *, separators: str = ",\n") -> list[Token]:
    """Tokens from a comma- or line-separated text; duplicates are dropped, order is kept. Two tokens whose masks
    are the same (first four characters and length) get labels ``…#2``, ``…#3``: a label names one token only."""
    pieces = [text]
    for separator in separators:
        pieces = [part for piece in pieces for part in piece.split(separator)]
    seen: dict[str, Token] = {}
    labels: Counter[str] = Counter()
    for piece in pieces:
        value = piece.strip()
        if value and not value.startswith("#") and value not in seen:
            masked = mask(value)
            labels[masked] += 1
            seen[value] = Token(value, masked if labels[masked] == 1 else f"{masked}#{labels[masked]}")
    return list(seen.values())


class Scrubber:
    """Takes every form of the pool's tokens out of a text (a server may quote the cookie back in an error).

    Each token, percent-encoded (both ways) and as it appears in the cookie jar, is replaced by its masked label.
    """

    def __init__(self, tokens: Iterable[Token]) -> None:
        forms: dict[str, str] = {}
        for token in tokens:
            for form in (token.value, quote(token.value, safe=""), quote_plus(token.value)):
                if len(form) >= MIN_SECRET:
                    forms[form] = token.label
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
        try:
            text = token_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{token_file}: cannot read the token file ({exc.strerror})") from exc
        tokens = parse_tokens(text)
        if not tokens:
            raise ConfigError(f"{token_file}: no session token in the file (one per line)")
        return _cookie_safe(tokens, str(token_file))
    return _cookie_safe(parse_tokens(env.get(TOKEN_ENV, ""), separators=","), TOKEN_ENV)


def _cookie_safe(tokens: list[Token], source: str) -> list[Token]:
    """Refuse tokens a ``Cookie`` header cannot carry as they are, saying which and why (never what they hold)."""
    for number, token in enumerate(tokens, 1):
        value = token.value
        if not value.isascii():
            why = "a character that is not ASCII"
        elif not value.isprintable():
            why = "a control character"
        elif any(c in value for c in ' ;"\\'):
            why = "a space, ';', '\"' or '\\'"
        else:
            continue
        raise ConfigError(f"{source}: token {number} ({token.label}) has {why}, which a cookie cannot carry; "
                          "copy the sessionid cookie's value again")
    return tokens
