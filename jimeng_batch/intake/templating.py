"""`{name}` placeholders in prompts. Pure.

``{{`` and ``}}`` stand for literal braces. Only plain names are placeholders: no attribute access or format
specs, so a prompt can never reach into anything but the variables it was given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class TemplateSyntaxError(ValueError):
    """A prompt's braces are not a valid template."""


def placeholders(text: str) -> list[str]:
    """The variable names ``text`` uses, in order of first use."""
    names: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        name = match.group(1)
        if name is None:
            raise TemplateSyntaxError(f"a lone '{token}' at character {match.start() + 1}; write '{token * 2}' "
                                      "for a literal brace")
        if not _NAME.match(name):
            raise TemplateSyntaxError(f"'{{{name}}}' is not a placeholder: use {{name}} with letters, digits and _")
        if name not in names:
            names.append(name)
    return names


def render(text: str, values: Mapping[str, object]) -> str:
    """``text`` with each ``{name}`` replaced by its value; the names must have been checked first."""

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":  # noqa: S105 - a template's brace, not a secret
            return "{"
        if token == "}}":  # noqa: S105 - a template's brace, not a secret
            return "}"
        return _text(values[match.group(1)])

    return _TOKEN.sub(substitute, text)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
