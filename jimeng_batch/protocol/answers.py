"""Reading the service's answers: every field is untrusted (wrong type, missing, null, extra, huge).

The service is unofficial and changes without notice, and gateways in front of it answer with whatever they like.
Every answer the client uses is read through these functions; a value of a shape the client cannot use raises
:class:`Malformed` with the field's path (``data.aigc_data.task``) and what was found, which the client turns into
the outcome table's ``malformed`` outcome (retried with backoff, then left for the next run; never a crash).
Missing and null fields read as empty: the protocol reference documents many fields as optional.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_TEXT = 64 * 1024  # an id, a URL or a message longer than this is not what the service sends


class Malformed(Exception):
    """An answer field of a shape the client cannot use."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def kind_of(value: Any) -> str:
    """What a JSON value is, for a message (never the value itself: it may be huge or hold anything)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f"text ({len(value)} characters)" if len(value) > 40 else "text"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def mapping(value: Any, path: str) -> Mapping[str, Any]:
    """An object; null or missing reads as an empty one."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise Malformed(path, f"{kind_of(value)}, not an object")
    return value


def items(value: Any, path: str) -> list[Any]:
    """A list; null or missing reads as an empty one."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed(path, f"{kind_of(value)}, not a list")
    return value


def text(value: Any, path: str) -> str:
    """Text, or a number standing for an id; null or missing reads as empty."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Malformed(path, f"{kind_of(value)}, not text")
    result = str(value)
    if len(result) > MAX_TEXT:
        raise Malformed(path, f"text of {len(result)} characters, more than {MAX_TEXT}")
    return result


def integer(value: Any, path: str) -> int:
    """A whole number (or text of one, as the service sometimes sends); null, missing or empty text reads as 0."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise Malformed(path, "a boolean, not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and len(value) < 32:
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise Malformed(path, f"{kind_of(value)}, not a whole number")


def flag(value: Any, path: str) -> bool:
    """A yes/no (``true``/``false``, or the 0/1 some services send); null or missing reads as no."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise Malformed(path, f"{kind_of(value)}, not true or false")


def number(value: Any, path: str) -> float:
    """A finite number (or text of one); null or missing reads as 0."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        raise Malformed(path, "a boolean, not a number")
    try:
        result = float(value) if isinstance(value, int | float | str) and len(str(value)) < 64 else math.nan
    except ValueError:
        result = math.nan
    if not math.isfinite(result):
        raise Malformed(path, f"{kind_of(value)}, not a finite number")
    return result


def first(value: Any, path: str) -> Mapping[str, Any]:
    """The first object of a list (``large_images[0]``); an empty or missing list reads as an empty object."""
    listed = items(value, path)
    return mapping(listed[0], f"{path}[0]") if listed else {}
