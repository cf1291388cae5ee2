"""The JSON Schemas in ``schemas/``: loading them and turning jsonschema's errors into located, readable problems.

The schemas ship inside the wheel (as ``jimeng_batch/schemas``); in a source checkout they are read from the
top-level ``schemas/`` folder. Both paths hold the same files.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from jimeng_batch.errors import Location, Problem, describe

MANIFEST_SCHEMA = "manifest.schema.json"
ROW_SCHEMA = "row.schema.json"

SchemaPath = tuple[str | int, ...]
Locator = Callable[[SchemaPath, bool], Location]

_JSON_TYPE_NAMES = {
    "string": "text", "integer": "a whole number", "number": "a number", "boolean": "true or false",
    "array": "a list", "object": "a mapping", "null": "nothing",
}


def _schema_text(name: str) -> str:
    packaged = resources.files("jimeng_batch").joinpath("schemas", name)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    # A source checkout or an editable install: the schemas live beside the package.
    return (Path(__file__).resolve().parents[2] / "schemas" / name).read_text(encoding="utf-8")


@cache
def load_schema(name: str) -> Mapping[str, Any]:
    """The parsed schema ``name`` (``manifest.schema.json`` or ``row.schema.json``). The shipped schemas are checked
    against the metaschema by the tests, not at every start (that took a tenth of a second of each command)."""
    schema: dict[str, Any] = json.loads(_schema_text(name))
    return schema


def schema_text(name: str = MANIFEST_SCHEMA) -> str:
    return _schema_text(name)


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name))


def describe_value(value: Any) -> str:
    """A short rendering of a value for messages."""
    if isinstance(value, str):
        return describe(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a choice is close to ``word``, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def allowed_list(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _type_names(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, list):
        return [_JSON_TYPE_NAMES.get(str(k), str(k)) for k in kind]
    if isinstance(kind, str):
        name = _JSON_TYPE_NAMES.get(kind, kind)
        items = schema.get("items")
        if kind == "array" and isinstance(items, Mapping):
            inner = _type_names(items) or ["allowed values"]
            return [f"a list of {' or '.join(inner)}"]
        return [name]
    if "enum" in schema:
        return ["one of: " + allowed_list(schema["enum"])]
    if "const" in schema:
        return [describe_value(schema["const"])]
    return []


def _branch_types(error: ValidationError) -> list[str]:
    names: list[str] = []
    for branch in cast(Any, error.validator_value):
        for name in _type_names(branch):
            if name not in names:
                names.append(name)
    return names


def _relevant(error: ValidationError) -> ValidationError:
    """For a oneOf/anyOf failure, the sub-error of the branch that fits the value's shape, if one does."""
    while error.validator in ("oneOf", "anyOf") and error.context:
        # A branch that failed only on its top-level type or constant did not fit the value's shape at all.
        shaped = [e for e in error.context if e.validator not in ("type", "const") or e.relative_path]
        if not shaped:
            return error
        error = best_match(shaped)
    return error


def _message(error: ValidationError, field: str) -> str:
    value: Any = cast(Any, error.instance)
    rule: Any = cast(Any, error.validator_value)
    schema = _schema_of(error)
    kind = error.validator
    if kind in ("oneOf", "anyOf"):
        types = _branch_types(error)
        if types:
            return f"{field}: expected {' or '.join(types)}, got {describe_value(value)}"
        return f"{field}: {describe_value(value)} is not allowed here"
    if kind == "type":
        expected = _type_names(schema) or [str(rule)]
        return f"{field}: expected {' or '.join(expected)}, got {describe_value(value)}"
    if kind == "enum":
        allowed = [str(v) for v in rule]
        hint = did_you_mean(str(value), allowed)
        return f"{field}: {describe_value(value)} is not allowed{hint}; allowed: {allowed_list(allowed)}"
    if kind == "const":
        return f"{field}: must be {describe_value(rule)}, got {describe_value(value)}"
    if kind == "minimum":
        return f"{field}: {value} is below the minimum of {rule}"
    if kind == "exclusiveMinimum":
        return f"{field}: {value} must be greater than {rule}"
    if kind == "maximum":
        return f"{field}: {value} is above the maximum of {rule}"
    if kind == "minItems":
        return f"{field}: the list must have at least {rule} item(s)"
    if kind == "maxItems":
        return f"{field}: the list may have at most {rule} items, got {len(value)}"
    if kind == "minLength":
        return f"{field}: must not be empty"
    if kind == "pattern":
        description = schema.get("description", f"must match {rule}")
        return f"{field}: {describe_value(value)} is not valid: {description}"
    if kind == "propertyNames":
        return f"{field}: {error.message}"
    if kind == "not":
        return f"{field}: give either `image` or `uri`, not both"
    return f"{field}: {error.message}"


def _field_name(path: Sequence[str | int]) -> str:
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part + 1}]" if parts else f"item {part + 1}")
        else:
            parts.append(("." if parts else "") + part)
    return "".join(parts) or "the document"


def _property_names(schema: Mapping[str, Any], root: Mapping[str, Any]) -> list[str]:
    """The property names a (possibly $ref'd) object schema declares."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return _property_names(target, root) + list(schema.get("properties", {}))
    return list(schema.get("properties", {}))


def _schema_of(error: ValidationError) -> Mapping[str, Any]:
    return error.schema if isinstance(error.schema, Mapping) else {}


def _unknown_keys(error: ValidationError, root: Mapping[str, Any], locate: Locator, base: tuple[str | int, ...],
                  found: list[tuple[SchemaPath, Problem]]) -> None:
    schema = _schema_of(error)
    known = _property_names(schema, root)
    patterns = schema.get("patternProperties", {})
    for key in cast(Any, error.instance):
        if key in known or any(re.search(p, key) for p in patterns):
            continue
        path = (*base, *error.absolute_path, key)
        owner = _field_name([*base, *error.absolute_path])
        where = "" if owner == "the document" else f" in {owner}"
        found.append((path, Problem(locate(path, True), f"unknown key {describe(key)}{where}"
                                                        f"{did_you_mean(key, known)}; allowed: {allowed_list(known)}")))


def non_finite(instance: Any, path: SchemaPath = ()) -> Iterator[SchemaPath]:
    """The paths of NaN and infinite numbers (``.nan``, ``.inf`` in YAML): JSON Schema's number type takes them,
    and a NaN passes every minimum and maximum."""
    if isinstance(instance, float) and not math.isfinite(instance):
        yield path
    elif isinstance(instance, Mapping):
        for key, value in instance.items():
            yield from non_finite(value, (*path, key))
    elif isinstance(instance, list):
        for index, value in enumerate(instance):
            yield from non_finite(value, (*path, index))


def schema_errors(instance: Any, schema_name: str, locate: Locator,
                  base: SchemaPath = ()) -> list[tuple[SchemaPath, Problem]]:
    """Every schema problem of ``instance`` with the path of the value it is about, located through
    ``locate(path, is_key)``; non-finite numbers included."""
    root = load_schema(schema_name)
    found: list[tuple[SchemaPath, Problem]] = []
    unusable = [(*base, *path) for path in non_finite(instance)]
    for path in unusable:
        found.append((path, Problem(locate(path, False), f"{_field_name(path)}: {_value_at(instance, path[len(base):])}"
                                                         " is not a number; give a finite one")))
    for raw in _validator(schema_name).iter_errors(instance):
        error = _relevant(raw)
        if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
            _unknown_keys(error, root, locate, base, found)
            continue
        path = (*base, *error.absolute_path)
        if error.validator == "required":
            required: list[str] = list(cast(Any, error.validator_value))
            missing = [name for name in required if name not in cast(Any, error.instance)]
            for name in missing:
                found.append((path, Problem(locate(path, False), f"{_field_name(path)}: missing required key "
                                                                 f"'{name}'")))
            continue
        if any(bad[:len(path)] == path for bad in unusable):
            continue  # the NaN or infinity in it is the problem, said above
        found.append((path, Problem(locate(path, False), _message(error, _field_name(path)))))
    return found


def _value_at(instance: Any, path: SchemaPath) -> Any:
    for part in path:
        instance = instance[part]
    return instance


def validate(instance: Any, schema_name: str, locate: Locator, base: SchemaPath = ()) -> list[Problem]:
    """Every schema problem of ``instance``, each located through ``locate(path, is_key)``."""
    return [problem for _, problem in schema_errors(instance, schema_name, locate, base)]


def _freeze(value: Any) -> Any:
    """A cache key that keeps types apart: 1, 1.0 and True are equal in Python but read differently in messages."""
    if isinstance(value, list):
        return ("list", tuple(_freeze(item) for item in value))
    if isinstance(value, float):
        return ("float", repr(value))  # -0.0 equals 0.0, but a message about it should say -0.0
    return (type(value).__name__, value)


def _thaw(frozen: Any) -> Any:
    kind, value = frozen
    if kind == "float":
        return float(value)
    return [_thaw(item) for item in value] if kind == "list" else value


@cache
def _cell_validator(column: str) -> Draft202012Validator:
    """The row schema's rule for one column (a property, or the pattern a var.NAME column matches)."""
    row = load_schema(ROW_SCHEMA)
    schema = row["properties"].get(column)
    if schema is None:
        schema = next(s for pattern, s in row["patternProperties"].items() if re.search(pattern, column))
    return Draft202012Validator(schema)


@lru_cache(maxsize=4096)  # repeated cells (models, ratios) stay; unique prompts pass through
def _cell_problems(column: str, frozen: Any) -> tuple[tuple[tuple[str | int, ...], str], ...]:
    found = []
    for raw in _cell_validator(column).iter_errors(_thaw(frozen)):
        error = _relevant(raw)
        path = (column, *error.absolute_path)
        found.append((path, _message(error, _field_name(path))))
    return tuple(found)


Check = Callable[[Any], bool]


def _is_integer(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float)
                                                                        and value.is_integer())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# JSON Schema's types as jsonschema's default type checker reads them (a bool is no number; 1.0 is an integer).
_TYPE_CHECKS: Mapping[str, Check] = {
    "string": lambda v: isinstance(v, str), "integer": _is_integer, "number": _is_number,
    "boolean": lambda v: isinstance(v, bool), "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict), "null": lambda v: v is None,
}
_ANNOTATIONS = frozenset({"description", "title", "$comment", "examples", "default"})


_BOUNDS: Mapping[str, tuple[Check, Callable[[Any, Any], bool]]] = {
    # keyword: (the values it applies to, the test); a bound says nothing about another kind of value, and a
    # NaN passes every numeric bound, as in jsonschema (the comparisons are written so that it does)
    "minLength": (lambda v: isinstance(v, str), lambda v, n: len(v) >= n),
    "maxLength": (lambda v: isinstance(v, str), lambda v, n: len(v) <= n),
    "minimum": (_is_number, lambda v, n: not v < n),
    "maximum": (_is_number, lambda v, n: not v > n),
    "exclusiveMinimum": (_is_number, lambda v, n: not v <= n),
    "exclusiveMaximum": (_is_number, lambda v, n: not v >= n),
    "minItems": (lambda v: isinstance(v, list), lambda v, n: len(v) >= n),
    "maxItems": (lambda v: isinstance(v, list), lambda v, n: len(v) <= n),
}


def compile_check(schema: Mapping[str, Any]) -> Check | None:
    """A predicate that says, as fast as Python can, whether a value is valid against ``schema``: the same verdict
    as ``Draft202012Validator(schema).is_valid(value)`` (a test checks the two agree on random values), or None if
    the schema uses something this does not compile (then jsonschema alone decides).

    Only the verdict comes from here: the problems of an invalid value are still jsonschema's, worded as ever.
    """
    known = {"type", "enum", "items", "oneOf", "anyOf", *_BOUNDS} | _ANNOTATIONS
    if not isinstance(schema, Mapping) or not set(schema) <= known:
        return None
    checks: list[Check] = []
    kind = schema.get("type")
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        if not all(k in _TYPE_CHECKS for k in kinds):
            return None
        tests = [_TYPE_CHECKS[k] for k in kinds]
        checks.append(tests[0] if len(tests) == 1 else lambda v: any(test(v) for test in tests))
    if "enum" in schema:
        if not all(isinstance(item, str) for item in schema["enum"]):
            return None  # JSON's equality of numbers and booleans is jsonschema's to apply
        texts = frozenset(schema["enum"])
        checks.append(lambda v: isinstance(v, str) and v in texts)
    for name, (applies, holds) in _BOUNDS.items():
        if name in schema:
            bound = schema[name]
            checks.append(_bound_check(applies, holds, bound))
    if "items" in schema:
        item = compile_check(schema["items"])
        if item is None:
            return None
        checks.append(_items_check(item))
    for name in ("oneOf", "anyOf"):
        if name in schema:
            branches = [compile_check(branch) for branch in schema[name]]
            compiled = [branch for branch in branches if branch is not None]
            if len(compiled) < len(branches):
                return None
            checks.append(_one_of(compiled) if name == "oneOf" else _any_of(compiled))
    if len(checks) == 1:
        return checks[0]
    return lambda v: all(check(v) for check in checks)


def _bound_check(applies: Check, holds: Callable[[Any, Any], bool], bound: Any) -> Check:
    return lambda v: not applies(v) or holds(v, bound)


def _items_check(item: Check) -> Check:
    return lambda v: not isinstance(v, list) or all(item(x) for x in v)


def _one_of(branches: list[Check]) -> Check:
    return lambda v: sum(1 for branch in branches if branch(v)) == 1


def _any_of(branches: list[Check]) -> Check:
    return lambda v: any(branch(v) for branch in branches)


@cache
def _cell_check(column: str) -> Check | None:
    """The row schema's rule for one column, compiled (None: jsonschema decides)."""
    schema = _cell_validator(column).schema
    return compile_check(schema) if isinstance(schema, Mapping) else None


def validate_row(values: Mapping[str, Any], locate: Locator) -> list[Problem]:
    """The row schema's problems of one spreadsheet row, column by column.

    Equivalent to validating the whole row against ``row.schema.json`` once its header has been checked (the row
    schema is a set of independent column rules); checking cells one at a time lets repeated cells, which most
    columns of a large sheet are, be checked once, which makes large sheets several times faster to plan. A cell
    the compiled check passes (nearly every cell of a good sheet) needs nothing more; only a failing one goes to
    jsonschema, for its problems in the usual words.
    """
    problems: list[Problem] = []
    for column, value in values.items():
        check = _cell_check(column)
        if check is not None and check(value):
            continue
        for path, message in _cell_problems(column, _freeze(value)):
            problems.append(Problem(locate(path, False), message))
    return problems
