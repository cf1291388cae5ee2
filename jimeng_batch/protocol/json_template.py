"""JSON text with slots: a document serialised once, its varying values filled in per use. Pure.

A plan writes about a million envelopes that differ from their neighbours only in a few values (the key and what
derives from it, the prompt, the seed, the row). Building and serialising each tree from scratch was most of the
time a plan took. Instead, one tree per shape of request is built with a slot marker (``@@name@@``) in place of
each varying value and serialised; the text is cut at the markers, and each use joins the pieces with the values
rendered as JSON. A value may sit inside JSON that is itself a string of the document (``draft_content`` holds
the draft as text, and the draft holds ``video_task_extra`` as text again): the marker's escaping says how deep,
and the value is escaped as many times.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring  # the C escaper json.dumps uses
from typing import Any

# The marker as it appears at any depth: 2**(depth-1) - 1 backslashes before each of its quotes, and a constant
# prefix allowed inside the string (the blend prompt's `##` marks). The prefix holds no quote or backslash, so
# it reads the same at every depth.
_SLOT = re.compile(r'(\\*)"([^"\\@]*)@@([A-Za-z0-9_:/.-]+)@@\\*"')


def slot(name: str) -> str:
    """The marker to put in a document where the value ``name`` goes."""
    return f"@@{name}@@"


def render(value: Any, depth: int) -> str:
    """``value`` as JSON, as it reads ``depth`` strings deep (1: the document itself)."""
    text = encode_basestring(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    for _ in range(depth - 1):
        text = encode_basestring(text)[1:-1]
    return text


class JsonTemplate:
    """A serialised JSON document cut at its slot markers, kept as a %-format string (formatting is C's speed).

    ``tokens`` names the slots whose values are plain tokens (hex digits, dashes: keys and ids), which read the
    same at any depth: they are put in as they are, between the quotes already in the text, with no escaping.
    """

    def __init__(self, text: str, tokens: Callable[[str], bool] = lambda name: False) -> None:
        pieces: list[str] = []
        self.places: list[tuple[str, str, int]] = []  # per %s: (name, constant prefix, depth); depth 0: a token
        position = 0
        for match in _SLOT.finditer(text):
            backslashes, prefix, name = match.groups()
            depth = (len(backslashes) + 1).bit_length()
            if (1 << (depth - 1)) - 1 != len(backslashes):
                raise ValueError(f"the marker of {name} is escaped in a way no JSON string gives")
            pieces.append(text[position:match.start()].replace("%", "%%"))
            position = match.end()
            if tokens(name) and not prefix:
                pieces.append(f'{backslashes}"%s{backslashes}"')
                self.places.append((name, "", 0))
            else:
                pieces.append("%s")
                self.places.append((name, prefix, depth))
        pieces.append(text[position:].replace("%", "%%"))
        self.format = "".join(pieces)
        self.names = frozenset(name for name, _, _ in self.places)
        # Each distinct place rendered once per fill, then put wherever it appears
        self.distinct = list(dict.fromkeys(self.places))
        where = {place: index for index, place in enumerate(self.distinct)}
        self.order = [where[place] for place in self.places]

    def fill(self, values: Mapping[str, Any]) -> str:
        """The text with each slot's value (from ``values``) rendered in its place."""
        rendered = []
        for name, prefix, depth in self.distinct:
            value = values[name]
            if depth == 0:
                rendered.append(value)
            elif isinstance(value, int) and not isinstance(value, bool):
                rendered.append(str(value))  # a whole number reads the same at any depth
            else:
                rendered.append(render(prefix + value if prefix else value, depth))
        return self.format % tuple(map(rendered.__getitem__, self.order))
