"""Malformed manifests and spreadsheets get located problems, never a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from conftest import csv_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jimeng_batch.errors import Location, ManifestError, SchemaError
from jimeng_batch.intake.manifest import load_manifest
from jimeng_batch.intake.plan import summarize
from jimeng_batch.intake.schema import ROW_SCHEMA, validate, validate_row

FIELDS = ["type", "prompt", "negative_prompt", "model", "ratio", "resolution", "sample_strength", "seed", "count",
          "references", "reference_strength", "duration", "aspect_ratio", "fps", "first_frame", "end_frame", "vars",
          "rows", "name", "promt", "modle"]
VALUES = st.one_of(
    st.sampled_from(["image", "video", "image_to_image", "jimeng-4.0", "jimeng-video-3.0", "1:1", "16:9", "2k",
                     "720p", "a {x}", "{", "", "tos-a", "missing.png", "x.csv"]),
    st.integers(-3, 20), st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=8),
)
SCALARS_OR_LISTS = st.one_of(VALUES, st.lists(VALUES, max_size=3), st.dictionaries(st.sampled_from(["x", "image",
                                                                                                   "uri"]), VALUES,
                                                                                  max_size=2))
JOBS = st.lists(st.dictionaries(st.sampled_from(FIELDS), SCALARS_OR_LISTS, max_size=6), max_size=3)
DOCUMENTS = st.one_of(
    st.fixed_dictionaries({"jobs": JOBS}, optional={"region": VALUES, "defaults": SCALARS_OR_LISTS,
                                                   "cache": SCALARS_OR_LISTS, "regoin": VALUES}),
    SCALARS_OR_LISTS,
)


def check(path: Path) -> None:
    try:
        summary = summarize(load_manifest(path))
    except SchemaError as exc:
        assert exc.problems and all(isinstance(p.location, Location) for p in exc.problems)
        assert all(p.location.file for p in exc.problems)
        return
    except ManifestError as exc:
        assert str(exc)
        return
    for problem in summary.problems:
        assert problem.location.file and problem.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=DOCUMENTS)
def test_random_manifests_never_crash(tmp_path: Path, document: Any) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    check(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list("jobs:- type{}[]\n '\"image:,&*!|>%@`\t#")), max_size=80))
def test_random_yaml_text_never_crashes(tmp_path: Path, text: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    check(path)


CELLS = st.one_of(st.sampled_from(["", "a", "jimeng-4.0", "1:1|9:9", "2k", "abc", "3", "0.5", "-1", "1e999", "{x}",
                                   "|", "\\|", "video", "image"]), st.text(max_size=6))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.lists(st.sampled_from([*FIELDS[:16], "var.x", "var.", "extra"]), min_size=1, max_size=5),
       rows=st.lists(st.lists(CELLS, max_size=6), max_size=4))
def test_random_spreadsheets_never_crash(tmp_path: Path, header: list[str], rows: list[list[str]]) -> None:
    check(csv_file(tmp_path / "s.csv", header, rows))


def test_cell_cache_keeps_equal_values_of_different_types_apart() -> None:
    def locate(path: tuple[str | int, ...], is_key: bool) -> Location:
        return Location("s.csv", row=2, column_name=str(path[0]))

    assert [p.message for p in validate_row({"sample_strength": -1.0}, locate)] == [
        "sample_strength: -1.0 is below the minimum of 0"]
    assert [p.message for p in validate_row({"sample_strength": -1}, locate)] == [
        "sample_strength: -1 is below the minimum of 0"]


@settings(max_examples=300, deadline=None)
@given(row=st.dictionaries(st.sampled_from([*FIELDS[:16], "var.x"]), st.one_of(CELLS, st.integers(-5, 5),
                                                                              st.lists(CELLS, max_size=3)), max_size=5))
def test_cell_by_cell_check_equals_the_whole_row_schema(row: dict[str, Any]) -> None:
    def locate(path: tuple[str | int, ...], is_key: bool) -> Location:
        return Location("s.csv", row=2, column_name=str(path[0]) if path else None)

    whole = sorted(str(p) for p in validate(row, ROW_SCHEMA, locate))
    by_cell = sorted(str(p) for p in validate_row(row, locate))
    assert whole == by_cell
