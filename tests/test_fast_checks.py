"""The fast paths of planning give exactly what the slow, obvious ones give."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from jimeng_batch.errors import Location
from jimeng_batch.intake.schema import ROW_SCHEMA, compile_check, load_schema, validate, validate_row

ROW = load_schema(ROW_SCHEMA)
COLUMNS = [*ROW["properties"], "var.x"]
# Values near every edge the row schema draws: its enum members and their near misses, the bounds of each number
# column and their neighbours, bools (no number in JSON Schema), whole floats (integers there), empty texts and
# lists, and lists of each.
FINITE = st.one_of(
    st.sampled_from(["image", "video", "image_to_image", "cn", "us", "xx", "1:1", "16:9", "9:9", "2k", "1080p",
                     "8k", "", "a", "jimeng-4.0", "x.png"]),
    st.sampled_from([0, 1, 4, 8, 9, 60, 61, 120, 121, 10000, 10001, 4294967295, 4294967296, -1]),
    st.sampled_from([0.0, 0.5, 1.0, 1.5, -0.0, -0.1, 2.0, 60.0]),
    st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=4),
)
# What a spreadsheet row's cells are read into (a non-finite number is refused when the cell is read)
CELLS = st.one_of(FINITE, st.lists(FINITE, max_size=6))
ATOMS = st.one_of(FINITE, st.none(), st.sampled_from([float("nan"), float("inf"), float("-inf")]))
VALUES = st.one_of(ATOMS, st.lists(ATOMS, max_size=6), st.dictionaries(st.text(max_size=2), ATOMS, max_size=2))


def _schema(column: str) -> Any:
    if column in ROW["properties"]:
        return ROW["properties"][column]
    return next(iter(ROW["patternProperties"].values()))


def test_every_column_of_the_row_schema_compiles() -> None:
    # None would mean the slow path for that column: still right, but the sheet no faster
    assert all(compile_check(_schema(column)) is not None for column in COLUMNS)


@settings(max_examples=1500, deadline=None)
@given(column=st.sampled_from(COLUMNS), value=VALUES)
def test_the_compiled_check_and_jsonschema_give_the_same_verdict(column: str, value: Any) -> None:
    check = compile_check(_schema(column))
    assert check is not None
    assert check(value) == Draft202012Validator(_schema(column)).is_valid(value)


def _locate(path: tuple[str | int, ...], is_key: bool) -> Location:
    return Location("s.csv", row=2, column_name=str(path[0]) if path else None)


@settings(max_examples=500, deadline=None)
@given(row=st.dictionaries(st.sampled_from(COLUMNS), CELLS, max_size=6))
def test_fast_row_checks_find_the_same_problems_as_the_whole_row_schema(row: dict[str, Any]) -> None:
    whole = sorted(str(p) for p in validate(row, ROW_SCHEMA, _locate))
    assert sorted(str(p) for p in validate_row(row, _locate)) == whole


def test_schema_keywords_it_does_not_know_are_left_to_jsonschema() -> None:
    assert compile_check({"type": "string", "pattern": "^a"}) is None
    assert compile_check({"enum": [1, True]}) is None  # JSON's equality of numbers and booleans
    assert compile_check({"oneOf": [{"type": "string"}, {"format": "uri"}]}) is None
