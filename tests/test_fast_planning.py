"""The fast paths of planning give exactly what the slow, obvious ones give."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import yaml
from conftest import csv_file, png
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from jimeng_batch.errors import Location, Problem
from jimeng_batch.intake import sources
from jimeng_batch.intake.expand import Recipe, expand
from jimeng_batch.intake.manifest import Manifest, Template, load_manifest
from jimeng_batch.intake.plan import (
    PlanLines,
    RowShortcut,
    iter_distinct,
    iter_requests,
    plan_line,
    plan_record,
    plan_web_id,
    summarize,
)
from jimeng_batch.intake.schema import MANIFEST_SCHEMA, ROW_SCHEMA, compile_check, load_schema, validate, validate_row
from jimeng_batch.intake.sharding import parse_shard
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.drafts import build_request
from jimeng_batch.protocol.json_template import JsonTemplate, slot
from jimeng_batch.protocol.request_spec import RequestSpec, Source

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


@pytest.mark.parametrize("name", [MANIFEST_SCHEMA, ROW_SCHEMA])
def test_the_shipped_schemas_are_valid_json_schemas(name: str) -> None:
    # Checked here rather than at every start of the tool
    Draft202012Validator.check_schema(load_schema(name))


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


# -- envelopes from templates ----------------------------------------------------------------------------------

PROMPTS = ['a "quoted" \\ back\\slash', "ümlaut 中文 😀", "100% @@key@@ {{braces}} %s", "tab\there, new\nline",
           "plain"]


def _corpus_manifest(folder: Path) -> Path:
    """Every model, each type, references and frames (files and uris), counts, seeds, regions, odd prompts."""
    png(folder / "ref.png")
    png(folder / "frame.png", (64, 64))
    jobs: list[dict[str, Any]] = []
    for model in catalog.IMAGE_MODELS:
        region = sorted(model.regions)[0]
        jobs.append({"type": "image", "name": f"t2i-{model.name}", "model": model.name, "region": region,
                     "prompt": PROMPTS, "ratio": ["1:1", "16:9"], "resolution": model.resolutions[-1],
                     "negative_prompt": "blur \"x\"", "seed": [7, 4294967295],
                     **({"intelligent_ratio": True} if model.intelligent_ratio else {}),
                     **({"images": min(2, model.max_images)} if model.max_images > 1 else {})})
        jobs.append({"type": "image_to_image", "name": f"i2i-{model.name}", "model": model.name, "region": region,
                     "prompt": PROMPTS, "references": ["ref.png", {"uri": "tos-cn-i-x/ref \"1\"", "strength": 0.3}],
                     "count": 2})
    for video in catalog.VIDEO_MODELS:
        jobs.append({"type": "video", "name": f"video-{video.name}", "model": video.name,
                     "region": sorted(video.regions)[0], "prompt": PROMPTS, "duration": video.durations[0],
                     "resolution": video.resolutions[0], "first_frame": "frame.png", "end_frame": "uri:tos-cn-i-y/e"})
        jobs.append({"type": "video", "name": f"video-seeded-{video.name}", "model": video.name,
                     "region": sorted(video.regions)[0], "prompt": PROMPTS, "seed": 12, "count": 1,
                     "duration": video.durations[-1], "aspect_ratio": "9:16"})
    path = folder / "corpus.yaml"
    path.write_text(yaml.safe_dump({"jobs": jobs}, allow_unicode=True), encoding="utf-8")
    return path


def test_templated_plan_lines_equal_the_envelopes_built_in_full(tmp_path: Path) -> None:
    manifest = load_manifest(_corpus_manifest(tmp_path))
    assert not summarize(manifest).problems
    specs = [item for item in iter_distinct(manifest) if isinstance(item, RequestSpec)]
    lines = PlanLines(manifest)
    for spec in specs:
        line = lines(spec)
        assert line == plan_line(plan_record(spec, manifest))
        request = build_request(spec, catalog.REGIONS[spec.region], manifest.settings.protocol,
                                web_id=plan_web_id(manifest, spec.region))
        assert json.loads(line)["request"] == {"method": request.method, "path": request.path,
                                               "query": request.query, "body": request.body}
    # every shape had a template, and each was used past the first request of its shape
    assert lines.templates and all(template is not None for template in lines.templates.values())
    assert len(specs) > 3 * len(lines.templates)


def test_a_marker_in_a_requests_own_text_means_no_template(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"jobs": [{"type": "image_to_image", "prompt": ["a", "b"],
                                              "references": [{"uri": "tos-cn-i-x/@@key@@"}]}]}), encoding="utf-8")
    manifest = load_manifest(path)
    lines = PlanLines(manifest)
    for spec in (item for item in iter_distinct(manifest) if isinstance(item, RequestSpec)):
        assert lines(spec) == plan_line(plan_record(spec, manifest))
    assert list(lines.templates.values()) == [None]


def test_json_template_fills_values_at_every_depth() -> None:
    def dumps(data: Any) -> str:  # as drafts serialise: non-ASCII kept
        return json.dumps(data, ensure_ascii=False)

    def document(x: Any, n: Any) -> str:
        return dumps({"v": x, "inner": dumps({"deeper": dumps({"v": x}), "v": x, "n": n}), "pct": "100%"})

    value = 'q"\\ü\n'
    assert JsonTemplate(document(slot("x"), slot("n"))).fill({"x": value, "n": 5}) == document(value, 5)


# -- spreadsheet rows from recipes -----------------------------------------------------------------------------


def _whole_way(manifest: Manifest) -> list[RequestSpec | Problem]:
    out: list[RequestSpec | Problem] = []
    for item in manifest.templates():
        out.extend(expand(item, manifest.settings) if isinstance(item, Template) else [item])
    return out


ROW_CELLS = {
    "prompt": st.sampled_from(["a cat", "a dog", " a cat ", "{x} cat", "a|b", "a \\| b", "ü 😀", "{", "x}", "100%",
                               " "]),
    "model": st.sampled_from(["", "jimeng-4.0", " jimeng-4.0", "jimeng-3.0", "jimeng-9.9", "jimeng-video-3.0"]),
    "ratio": st.sampled_from(["", "1:1", "16:9", "9:9", "1:1|16:9"]),
    "resolution": st.sampled_from(["", "2k", "4k", "720p"]),
    "seed": st.sampled_from(["", "1", "-1", "x", "1|2"]),
    "count": st.sampled_from(["", "1", "2"]),
    "var.x": st.sampled_from(["", "v", "v|w"]),
}


@st.composite
def sheets(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, ...]]]:
    """A prompt column and up to four others, and up to 12 rows of their cells."""
    header = ["prompt", *draw(st.lists(st.sampled_from(sorted(set(ROW_CELLS) - {"prompt"})), unique=True,
                                       max_size=4))]
    return header, draw(st.lists(st.tuples(*(ROW_CELLS[name] for name in header)), min_size=1, max_size=12))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sheet=sheets())
def test_rows_from_recipes_equal_rows_taken_the_whole_way(tmp_path: Path,
                                                           sheet: tuple[list[str], list[tuple[str, ...]]]) -> None:
    # Most rows of a seen shape are made straight from their records as read, in chunks of any size
    manifest = load_manifest(csv_file(tmp_path / "rows.csv", *sheet))
    whole_way = _whole_way(manifest)
    for chunk in (1, 3, 1000):
        with patch.object(sources, "SHEET_CHUNK_ROWS", chunk):
            assert list(iter_requests(manifest)) == whole_way


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sheet=sheets(), chunk=st.sampled_from([1, 3, 1000]))
def test_a_runs_check_finds_what_a_counted_plan_finds(tmp_path: Path,
                                                      sheet: tuple[list[str], list[tuple[str, ...]]],
                                                      chunk: int) -> None:
    # A run checks with counting=False (rows of a seen shape not made into requests, most told from their records
    # as read): the same problems, and the same regions, jobs and models, as the plan that builds every request
    manifest = load_manifest(csv_file(tmp_path / "rows.csv", *sheet))
    with patch.object(sources, "SHEET_CHUNK_ROWS", chunk):
        checked = summarize(manifest, counting=False)
    counted = summarize(manifest, lambda spec: None)
    assert checked.problems == counted.problems and checked.more_problems == counted.more_problems
    assert checked.regions == counted.regions and checked.region_jobs == counted.region_jobs
    assert checked.needs_a_bogus() == counted.needs_a_bogus()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sheet=sheets(), shard=st.sampled_from([None, "1/2", "2/2", "2/3"]), chunk=st.sampled_from([1, 3, 1000]))
def test_a_tallied_summary_counts_what_the_requests_count(tmp_path: Path,
                                                         sheet: tuple[list[str], list[tuple[str, ...]]],
                                                         shard: str | None, chunk: int) -> None:
    # A summary tallies the keys of rows of a seen shape, most straight from the records as read (no requests
    # built); a callback makes it build every request: the same counts, credits, images, regions and problems, in
    # any shard, with the sheet read in chunks of any size
    manifest = load_manifest(csv_file(tmp_path / "rows.csv", *sheet))
    chosen = None if shard is None else parse_shard(shard)
    with patch.object(sources, "SHEET_CHUNK_ROWS", chunk):
        tallied = summarize(manifest, shard=chosen)
    built = summarize(manifest, lambda spec: None, shard=chosen)
    assert tallied.as_dict() == built.as_dict()
    assert tallied.problems == built.problems and tallied.region_jobs == built.region_jobs


def test_a_summary_builds_requests_only_for_a_shapes_first_row(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [(f"picture {i}", "jimeng-4.0" if i % 2 else "jimeng-3.0", "2") for i in range(40)]
    manifest = load_manifest(csv_file(tmp_path / "rows.csv", ["prompt", "model", "count"], rows))
    built: list[RequestSpec] = []
    digests: list[bytes] = []
    specs, tallied = Recipe.specs, Recipe.digests

    def counted_specs(recipe: Recipe, prompt: str, source: Source) -> Any:
        for spec in specs(recipe, prompt, source):
            built.append(spec)
            yield spec

    def counted_digests(recipe: Recipe, prompt: str) -> list[bytes]:
        digests.extend(tallied(recipe, prompt))
        return digests[-recipe.count:]

    monkeypatch.setattr(Recipe, "specs", counted_specs)
    monkeypatch.setattr(Recipe, "digests", counted_digests)
    summary = summarize(manifest)
    assert summary.distinct == summary.requests == 80
    assert len(digests) == 76  # 38 rows of two samples, tallied
    assert len({spec.key for spec in built}) == 4  # two shapes' first rows, and what each shape adds (one spec)
    every = [bytes.fromhex(spec.key) for spec in iter_requests(manifest)]
    assert set(digests) == set(every[4:])  # the tallied keys are the requests' own


def test_a_runs_check_makes_only_a_shapes_first_row_into_requests(tmp_path: Path) -> None:
    rows = [(f"picture {i}", "jimeng-4.0" if i % 2 else "jimeng-3.0") for i in range(40)]
    manifest = load_manifest(csv_file(tmp_path / "rows.csv", ["prompt", "model"], rows))
    assert summarize(manifest).distinct == 40
    checked = summarize(manifest, counting=False)
    assert checked.distinct == 2 and checked.known_rows == 38 and not checked.problems
    assert checked.known_models == {"jimeng-4.0", "jimeng-3.0"}  # told by the rows not made into requests
    assert checked.region_jobs == {"cn": {"rows"}}


def test_rows_of_a_seen_shape_take_the_shortcut(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("prompt,model\n" + "".join(f"picture {i},jimeng-4.0\n" for i in range(50)), encoding="utf-8")
    manifest = load_manifest(path)
    shortcut = RowShortcut(manifest)
    calls = 0
    whole_way = shortcut._whole_way

    def counted(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return whole_way(*args)

    shortcut._whole_way = counted  # type: ignore[method-assign]
    made = [item for item in manifest.items(shortcut) if isinstance(item, RequestSpec)]
    assert calls == 1 and len(made) == 50
    assert made == [item for item in _whole_way(manifest) if isinstance(item, RequestSpec)]


# The plan lines of the corpus and of a benchmark-like CSV, pinned: planning made faster must write the same bytes.
PINNED_PLANS = {
    "corpus.yaml": (560, "e3daa6c8c8b69c09646b6fed8ff5fdb9fb8023b740e736c58b5b7be6d86b977b"),
    "rows.csv": (300, "2fca33913038eefc0700fafd12981df75d98b68f0125c4e809fa0d69f932d5fe"),
}


def test_plan_lines_are_pinned_byte_for_byte(tmp_path: Path) -> None:
    csv_path = tmp_path / "rows.csv"
    models, ratios = ("jimeng-4.0", "jimeng-4.5", "jimeng-3.0"), ("1:1", "16:9", "3:4", "4:3")
    csv_path.write_text("prompt,model,ratio,resolution\n" + "".join(
        f"photo number {i} of a lighthouse,{models[i % 3]},{ratios[i % 4]},2k\n" for i in range(300)),
        encoding="utf-8")
    for path in (_corpus_manifest(tmp_path), csv_path):
        manifest = load_manifest(path)
        lines = PlanLines(manifest)
        out: list[str] = []
        summary = summarize(manifest, lambda spec: out.append(lines(spec)))
        text = "".join(out).replace(str(tmp_path), "<dir>")
        assert (summary.distinct, hashlib.sha256(text.encode("utf-8")).hexdigest()) == PINNED_PLANS[path.name]
