"""Reliability: thousands of generated malformed manifests and spreadsheets, each through the command line.

Each example starts from a valid manifest (YAML) or spreadsheet (CSV, XLSX) and is then broken on purpose: typos in
keys and columns, wrong types, bad enums, unknown models, unknown template variables, lone braces, duplicate keys,
YAML syntax errors, binary junk, empty files, byte-order marks, other encodings, huge numbers, missing columns, fields
of another job type. Every one must exit with code 2 and a message located at a line and column or a row, never a
traceback or an internal error. A separate test proves the unbroken bases are valid, so every failure counted here is
the breakage's.
"""

from __future__ import annotations

import codecs
import csv
import datetime
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jimeng_batch.cli import main

pytestmark = pytest.mark.slow

FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

WORDS = ["a", "red", "kite", "blue", "boat", "quiet", "harbour", "at", "dawn", "猫", "雪", "ink", "lighthouse"]
PROMPTS = st.lists(st.sampled_from(WORDS), min_size=1, max_size=5).map(" ".join)
IMAGE_MODELS = ["jimeng-4.0", "jimeng-4.1", "jimeng-4.5", "jimeng-3.0"]
RATIOS = ["1:1", "3:4", "16:9", "4:3", "9:16", "2:3", "3:2", "21:9"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``jimeng-batch ARGS`` in this process: its exit code, stdout and stderr."""
    try:
        main(args)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else (0 if exit_info.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def located(name: str, err: str, *, file_level: bool = False) -> bool:
    """Whether stderr names ``name`` with a line and column (``f:3:5:``) or a row (``f:row 4``)."""
    where = r"(\d+:\d+: |row \d+)" + (r"| " if file_level else "")
    return re.search(rf"^{re.escape(name)}:({where})", err, re.MULTILINE) is not None


def assert_rejected(args: list[str], name: str, capsys: pytest.CaptureFixture[str], *,
                    file_level: bool = False) -> None:
    code, out, err = run_cli(args, capsys)
    context = f"{args}\nstdout: {out}\nstderr: {err}"
    assert code == 2, context
    assert "Traceback" not in err + out and "internal error" not in err, context
    assert located(name, err, file_level=file_level), context


# ------------------------------------------------------------------------------------------------------------------
# YAML manifests: a valid document, then broken
# ------------------------------------------------------------------------------------------------------------------


@st.composite
def image_job(draw: st.DrawFn) -> dict[str, Any]:
    job: dict[str, Any] = {"type": "image"}
    if draw(st.booleans()):
        job["vars"] = {"thing": draw(st.lists(st.sampled_from(["cat", "dog", "fox"]), min_size=1, max_size=3,
                                              unique=True))}
        job["prompt"] = draw(PROMPTS) + " {thing}"
    else:
        job["prompt"] = draw(st.one_of(PROMPTS, st.lists(PROMPTS, min_size=1, max_size=3, unique=True)))
    if draw(st.booleans()):
        job["model"] = draw(st.sampled_from(IMAGE_MODELS))
    if draw(st.booleans()):
        job["ratio"] = draw(st.one_of(st.sampled_from(RATIOS), st.lists(st.sampled_from(RATIOS), min_size=1,
                                                                          max_size=2, unique=True)))
    if draw(st.booleans()):
        job["resolution"] = draw(st.sampled_from(["1k", "2k"]))
    if draw(st.booleans()):
        job["count"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        job["sample_strength"] = draw(st.sampled_from([0, 0.25, 0.5, 1]))
    if draw(st.booleans()):
        job["negative_prompt"] = draw(PROMPTS)
    return job


@st.composite
def video_job(draw: st.DrawFn) -> dict[str, Any]:
    job: dict[str, Any] = {"type": "video", "prompt": draw(PROMPTS)}
    if draw(st.booleans()):
        job["model"] = "jimeng-video-3.0"
        job["duration"] = draw(st.sampled_from([5, 10]))
    if draw(st.booleans()):
        job["aspect_ratio"] = draw(st.sampled_from(["16:9", "1:1", "9:16"]))
    if draw(st.booleans()):
        job["first_frame"] = "uri:image_uri_1"
    return job


@st.composite
def blend_job(draw: st.DrawFn) -> dict[str, Any]:
    return {"type": "image_to_image", "prompt": draw(PROMPTS), "resolution": "1k",
            "references": draw(st.sampled_from([["uri:image_uri_1"], ["tos-abc"], [{"uri": "image_uri_2",
                                                                                      "strength": 0.6}]]))}


@st.composite
def valid_document(draw: st.DrawFn) -> dict[str, Any]:
    jobs = draw(st.lists(st.one_of(image_job(), video_job(), blend_job()), min_size=1, max_size=3))
    for index, job in enumerate(jobs):
        job["name"] = f"job{index}"
    document: dict[str, Any] = {}
    if draw(st.booleans()):
        document["version"] = 1
    if draw(st.booleans()):
        document["region"] = "cn"
    if draw(st.booleans()):
        document["limits"] = {"concurrency": draw(st.integers(1, 4))}
    if draw(st.booleans()):
        document["budget"] = draw(st.integers(1, 500))
    document["jobs"] = jobs
    return document


def _job(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    jobs = document["jobs"]
    return jobs[draw(st.integers(0, len(jobs) - 1))]  # type: ignore[no-any-return]


KEY_TYPOS = {"prompt": "promt", "model": "modle", "ratio": "raito", "resolution": "resolutoin", "count": "cuont",
             "type": "tpye", "vars": "var", "duration": "duraton", "references": "refrences", "name": "nmae",
             "aspect_ratio": "aspectratio", "sample_strength": "sample-strength", "negative_prompt": "negative",
             "first_frame": "firstframe"}
TOP_TYPOS = ["regoin", "defualts", "limts", "jbos", "outptu", "Budget", "version2"]


def typo_key(draw: st.DrawFn, document: dict[str, Any]) -> None:
    if draw(st.booleans()):
        document[draw(st.sampled_from(TOP_TYPOS))] = draw(st.sampled_from(["cn", 1, {"a": 1}]))
        return
    job = _job(draw, document)
    key = draw(st.sampled_from(sorted(job)))
    job[KEY_TYPOS.get(key, key + "_")] = job.pop(key)


WRONG_TYPES: dict[str, list[Any]] = {
    "count": ["two", 1.5, True, [1, 2], {"n": 1}, 0, -1, 10**30, None],
    "sample_strength": ["high", True, -0.1, 1.5, float("inf"), [0.5, "x"], {"a": 1}],
    "seed": ["abc", -1, 1.5, 2**64, True, [1, "x"]],
    "prompt": [5, True, {"text": "a"}, [], ["ok", 7], None, ""],
    "name": ["has space", 5, "", "ä/ö"],
    "vars": [["a", "b"], "x", 5],
    "references": ["tos-x", [], [5], ["a", "b", "c", "d", "e"], [{"strength": 0.5}]],
    "duration": ["five", 3, 11, -5, 10**20, 5.5],
    "negative_prompt": [7, {"a": 1}],
}


def wrong_type(draw: st.DrawFn, document: dict[str, Any]) -> None:
    job = _job(draw, document)
    if job.get("type") == "image":
        fields = ["count", "sample_strength", "seed", "prompt", "name", "vars", "negative_prompt"]
    elif job.get("type") == "video":
        fields = ["count", "prompt", "name", "duration"]
    else:
        fields = ["count", "prompt", "name", "references"]
    name = draw(st.sampled_from(fields))
    if name == "duration":
        job["model"] = "jimeng-video-3.0"
    if name == "vars":
        job["prompt"] = "plain"
    job[name] = draw(st.sampled_from(WRONG_TYPES[name]))


def bad_enum(draw: st.DrawFn, document: dict[str, Any]) -> None:
    choice = draw(st.sampled_from(["region", "type", "ratio", "resolution", "aspect_ratio", "profile", "fps"]))
    if choice == "region":
        document["region"] = draw(st.sampled_from(["eu", "CN", "cn-north", "", 1]))
        return
    if choice == "profile":
        document["protocol"] = {"profile": draw(st.sampled_from(["latest", "Live", "doc"]))}
        return
    job = _job(draw, document)
    if choice == "type":
        job["type"] = draw(st.sampled_from(["imgae", "picture", "Video", "image-to-image", "", "txt2img"]))
    elif choice in ("ratio", "resolution") and job.get("type") != "video":
        job[choice] = draw(st.sampled_from(["5:4", "1:2", "square", "16/9", "16:10"] if choice == "ratio" else
                                           ["3k", "8k", "720", "1K", "1080p"]))
    else:
        job.update(type="video", prompt="a slow pan", model="jimeng-video-3.0")
        for other in ("ratio", "resolution", "sample_strength", "negative_prompt", "references", "count", "vars",
                      "seed"):
            job.pop(other, None)
        if choice == "fps":
            job["fps"] = draw(st.sampled_from([30, 25, 60, 0]))
        else:
            job["aspect_ratio"] = draw(st.sampled_from(["5:4", "2:3", "wide", "16:10"]))


def unknown_model(draw: st.DrawFn, document: dict[str, Any]) -> None:
    job = _job(draw, document)
    job["model"] = draw(st.sampled_from(["jimeng-9.9", "jimeng-4.O", "dall-e-3", "", "jimeng_4.0", "JIMENG-4.0"]
                                        + (["jimeng-video-3.0"] if job.get("type") != "video" else ["jimeng-4.0"])))


def bad_template(draw: st.DrawFn, document: dict[str, Any]) -> None:
    job = _job(draw, document)
    job["prompt"] = draw(st.sampled_from(["a {nope}", "a {b", "a } b", "{{x}", "{ thing }", "a {thing} {other}",
                                          "{}", "a {1x}"]))
    if "thing" in job["prompt"] and "vars" not in job:
        job["vars"] = {"other_var": "x"}


def huge_or_negative(draw: st.DrawFn, document: dict[str, Any]) -> None:
    if draw(st.booleans()):
        document["budget"] = draw(st.sampled_from([-1, "lots", float("-inf")]))
        return
    job = _job(draw, document)
    job["count"] = draw(st.sampled_from([10**30, 10001, 0, -3, 2**63]))


def missing_required(draw: st.DrawFn, document: dict[str, Any]) -> None:
    choice = draw(st.sampled_from(["type", "jobs", "empty-jobs", "jobs-mapping", "references"]))
    if choice == "type":
        _job(draw, document).pop("type")
    elif choice == "jobs":
        document.pop("jobs")
    elif choice == "empty-jobs":
        document["jobs"] = []
    elif choice == "jobs-mapping":
        document["jobs"] = {"first": document["jobs"][0]}
    else:
        job = _job(draw, document)
        job.clear()
        job.update(type="image_to_image", prompt="make it winter")


def not_for_this_type(draw: st.DrawFn, document: dict[str, Any]) -> None:
    job = _job(draw, document)
    if job.get("type") == "image":
        job[draw(st.sampled_from(["duration", "aspect_ratio", "first_frame", "references"]))] = (
            draw(st.sampled_from([5, "16:9", "uri:image_uri_1"])))
    elif job.get("type") == "video":
        job[draw(st.sampled_from(["ratio", "references", "sample_strength"]))] = draw(st.sampled_from(
            ["1:1", ["tos-x"], 0.5]))
    else:
        job[draw(st.sampled_from(["seed", "duration", "first_frame"]))] = draw(st.sampled_from([5, 1, "tos-x"]))


def repeats(draw: st.DrawFn, document: dict[str, Any]) -> None:
    """Requests that would pay twice for the same picture: a fixed seed with count > 1, an unused list variable."""
    job = _job(draw, document)
    job.update(type="image", prompt="a fixed thing")
    for other in ("references", "duration", "aspect_ratio", "first_frame", "vars", "resolution"):
        job.pop(other, None)
    if draw(st.booleans()):
        job.update(seed=42, count=draw(st.integers(2, 5)))
    else:
        job["vars"] = {"unused": ["x", "y"]}


def missing_files(draw: st.DrawFn, document: dict[str, Any]) -> None:
    job = _job(draw, document)
    if job.get("type") == "image_to_image":
        job["references"] = ["no-such-file.png"]
    elif job.get("type") == "video":
        job["first_frame"] = "missing/frame.jpg"
    else:
        job["rows"] = draw(st.sampled_from(["missing.csv", "missing.xlsx", "rows.txt"]))


def duplicate_names(draw: st.DrawFn, document: dict[str, Any]) -> None:
    document["jobs"].append(dict(document["jobs"][0], prompt="another prompt"))
    document["jobs"][-1].pop("vars", None)


DOCUMENT_BREAKS: list[Callable[[st.DrawFn, dict[str, Any]], None]] = [
    typo_key, wrong_type, bad_enum, unknown_model, bad_template, huge_or_negative, missing_required,
    not_for_this_type, repeats, missing_files, duplicate_names,
]


def _duplicate_key(text: str, draw: st.DrawFn) -> str:
    first = text.split(":", 1)[0]
    return text + f"{first}: again\n"


def _insert_control_character(text: str, draw: st.DrawFn) -> str:
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.sampled_from(["\0", "\x07", "\x1b"])) + text[at:]


TEXT_BREAKS: dict[str, Callable[[str, st.DrawFn], str]] = {
    "duplicate-key": _duplicate_key,
    "unclosed-flow": lambda text, draw: text + draw(st.sampled_from(["extra: [a, b\n", "extra: {a: 1\n"])),
    "unclosed-quote": lambda text, draw: text + 'extra: "never closed\n',
    "tab-indent": lambda text, draw: text + "\textra: 1\n",
    "stray-item": lambda text, draw: text + "- stray\n",
    "nested-colon": lambda text, draw: text + "extra: a: b\n",
    "undefined-alias": lambda text, draw: text + "extra: *nowhere\n",
    "control-char": lambda text, draw: _insert_control_character(text, draw),
}


@st.composite
def broken_yaml(draw: st.DrawFn) -> tuple[bytes, str]:
    """A malformed manifest's bytes and what broke it."""
    kind = draw(st.sampled_from(["document"] * 6 + ["text"] * 3 + ["encoding", "junk", "empty"]))
    if kind == "empty":
        return draw(st.sampled_from([b"", b"\n\n", b"   \n", b"# only a comment\n", b"---\n", b"\xef\xbb\xbf",
                                     b"~\n", b"null\n"])), kind
    if kind == "junk":
        junk = draw(st.binary(min_size=1, max_size=200))
        return draw(st.sampled_from([b"\xff", b"\x00", b"\xfe\xfe", b"\x80"])) + junk, kind
    document = draw(valid_document())
    breaks = draw(st.lists(st.sampled_from(DOCUMENT_BREAKS), min_size=1 if kind == "document" else 0, max_size=3,
                           unique=True))
    # Renaming keys and removing jobs go last, so that the other breaks find the fields they change.
    breaks.sort(key=lambda apply: (apply is missing_required, apply is typo_key))
    for apply in breaks:
        apply(draw, document)
    text = yaml.safe_dump(document, allow_unicode=True, sort_keys=draw(st.booleans()),
                          default_flow_style=draw(st.sampled_from([False, None])))
    if kind == "text":
        name = draw(st.sampled_from(sorted(TEXT_BREAKS)))
        text = TEXT_BREAKS[name](text, draw)
        kind = f"text:{name}"
    if kind == "encoding":
        text = text.replace("jobs:", "jobs: # café 雪\n  # x", 1) if "jobs:" in text else "jobs: é\n" + text
        encoding = draw(st.sampled_from(["latin-1", "utf-16", "utf-16-le", "cp1252", "gb18030"]))
        return text.encode(encoding, errors="replace"), f"encoding:{encoding}"
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data = codecs.BOM_UTF8 + data
    return data, kind + ":" + ",".join(b.__name__ for b in breaks)


COMMANDS = [["validate"], ["plan"], ["plan", "--format", "json"], ["plan", "--format", "jsonl"],
            ["run", "--sim", "--quiet", "--no-cache", "--out", "out"]]


@settings(FUZZ, max_examples=1000)
@given(case=broken_yaml(), command=st.sampled_from(COMMANDS))
def test_malformed_yaml_manifests_get_exit_2_and_a_located_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        case: tuple[bytes, str], command: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    data, _kind = case
    (tmp_path / "m.yaml").write_bytes(data)
    assert_rejected([command[0], "m.yaml", *command[1:]], "m.yaml", capsys)
    assert not (tmp_path / "out").exists()  # nothing was run


@settings(FUZZ, max_examples=60)
@given(document=valid_document())
def test_the_unbroken_yaml_bases_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], document: dict[str, Any]) -> None:
    """So that every rejection above is the breakage's, not the base's."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    code, out, err = run_cli(["validate", "m.yaml"], capsys)
    assert code == 0 and out.startswith("ok: m.yaml"), err


# ------------------------------------------------------------------------------------------------------------------
# Spreadsheets (CSV and XLSX): a valid table, then broken
# ------------------------------------------------------------------------------------------------------------------

Table = list[list[Any]]


@st.composite
def valid_table(draw: st.DrawFn) -> Table:
    columns = ["prompt", *draw(st.lists(st.sampled_from(["model", "ratio", "resolution", "count", "seed",
                                                         "sample_strength", "negative_prompt", "var.thing"]),
                                        max_size=4, unique=True))]
    columns = draw(st.permutations(columns))
    rows: Table = []
    for number in range(draw(st.integers(1, 5))):
        row: list[Any] = []
        for column in columns:
            if column == "prompt":
                value: Any = f"{draw(PROMPTS)} {number}" + (" {thing}" if "var.thing" in columns else "")
            elif column == "model":
                value = draw(st.sampled_from([*IMAGE_MODELS, "jimeng-4.0|jimeng-4.1", ""]))
            elif column == "ratio":
                value = draw(st.sampled_from(["1:1", "16:9|9:16", ""]))
            elif column == "resolution":
                value = draw(st.sampled_from(["1k", "2k", ""]))
            elif column == "count":
                value = draw(st.sampled_from([1, 2, "3", ""]))
            elif column == "seed":
                value = draw(st.sampled_from([7, "123456", "1|2", ""]))
            elif column == "sample_strength":
                value = draw(st.sampled_from([0.5, "0.25", "1", ""]))
            elif column == "negative_prompt":
                value = draw(st.sampled_from(["blurry", "", "low quality|text"]))
            else:
                value = draw(st.sampled_from(["cat", "cat|dog", "fox"]))
            row.append(value)
        if "seed" in columns and "count" in columns:
            row[columns.index("count")] = 1 if row[columns.index("seed")] not in ("",) else row[columns.index("count")]
        rows.append(row)
    return [list(columns), *rows]


COLUMN_TYPOS = {"prompt": "promt", "model": "modle", "ratio": "raito", "resolution": "res", "count": "counts",
                "seed": "Seed ", "sample_strength": "strength", "negative_prompt": "negative",
                "var.thing": "vars.thing"}
BAD_CELLS: dict[str, list[Any]] = {
    "count": ["two", "0", "-1", "1.5", "1e999", "99999999999999999999", "9" * 5000, True, 2.5,
              datetime.datetime(2024, 1, 2)],
    "seed": ["abc", "-1", "4294967296", "1|x", "1e400", "0x10"],
    "sample_strength": ["high", "1.5", "nan", "inf", "-0.1", "0.5|2"],
    "ratio": ["5:4", "square", "1:1|4:5", "16/9"],
    "resolution": ["3k", "720", "1080p", "2k|5k"],
    "model": ["jimeng-9.9", "jimeng-video-3.0", "dall-e", "jimeng-4.0|nope"],
    "prompt": ["a {nope}", "a {b", "a } b", "{}", "{{x}"],
    "type": ["imgae", "picture", "Video", "7"],
    "references": ["missing.png", "tos-x"],
    "fps": ["30", "24"],
    "duration": ["5", "seven"],
}


def break_table(draw: st.DrawFn, table: Table) -> str:
    header, rows = table[0], table[1:]
    kind = draw(st.sampled_from(["typo", "cell", "cell", "cell", "missing-prompt", "duplicate-column", "extra-cells",
                                 "repeats", "var-unused", "empty-header"]))
    if kind == "typo":
        at = draw(st.integers(0, len(header) - 1))
        header[at] = COLUMN_TYPOS.get(str(header[at]), str(header[at]) + "x")
    elif kind == "cell":
        column = draw(st.sampled_from(sorted(BAD_CELLS)))
        if column not in header:
            header.append(column)
            for row in rows:
                row.append("")
        # fps, duration and references do not apply to the (image) rows, whatever their value.
        rows[draw(st.integers(0, len(rows) - 1))][header.index(column)] = draw(st.sampled_from(BAD_CELLS[column]))
    elif kind == "missing-prompt":
        at = header.index("prompt")
        header.pop(at)
        header.append("ratio" if "ratio" not in header else "negative_prompt")
        for row in rows:
            row.pop(at)
            row.append("1:1" if header[-1] == "ratio" else "blurry")  # not a blank row: a request without prompt
    elif kind == "duplicate-column":
        header.append(draw(st.sampled_from(header)))
        for row in rows:
            row.append("1:1")
    elif kind == "extra-cells":
        rows[draw(st.integers(0, len(rows) - 1))].extend(["stray", "cells"])
    elif kind == "repeats":
        for name in ("seed", "count", "var.thing", "model", "ratio", "sample_strength", "negative_prompt"):
            if name in header:
                at = header.index(name)
                header.pop(at)
                for row in rows:
                    row.pop(at)
        header.extend(["seed", "count"])
        rows[0].extend(["5", "2"])
        for row in rows[1:]:
            row.extend(["", ""])
    elif kind == "var-unused":
        header.append("var.unused")
        rows[draw(st.integers(0, len(rows) - 1))].append("x|y")
        for row in rows:
            if len(row) < len(header):
                row.append("")
    else:
        header[:] = [""] * len(header)
    return kind


def csv_bytes(table: Table, draw: st.DrawFn) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))).writerows(
        [["" if v is None else str(v) for v in row] for row in table])
    return buffer.getvalue().encode("utf-8")


@st.composite
def broken_csv(draw: st.DrawFn) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["table"] * 7 + ["encoding", "junk", "empty"]))
    if kind == "empty":
        return draw(st.sampled_from([b"", b"\n", b",,,\n", b"\xef\xbb\xbf", b"\r\n\r\n"])), kind
    if kind == "junk":
        return draw(st.sampled_from([b"\xff", b"\xc3", b"\x80\x80"])) + draw(st.binary(max_size=200)), kind
    table = draw(valid_table())
    if kind == "encoding":
        table[1][table[0].index("prompt")] = "café 雪"
        encoding = draw(st.sampled_from(["latin-1", "utf-16", "cp1252", "gb18030"]))
        buffer = io.StringIO()
        csv.writer(buffer).writerows([[str(v) for v in row] for row in table])
        return buffer.getvalue().encode(encoding, errors="replace"), f"encoding:{encoding}"
    kind = break_table(draw, table)
    data = csv_bytes(table, draw)
    if draw(st.booleans()):
        data = codecs.BOM_UTF8 + data
    return data, kind


@settings(FUZZ, max_examples=1000)
@given(case=broken_csv(), command=st.sampled_from(COMMANDS))
def test_malformed_csv_spreadsheets_get_exit_2_and_a_located_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        case: tuple[bytes, str], command: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    data, _kind = case
    (tmp_path / "s.csv").write_bytes(data)
    assert_rejected([command[0], "s.csv", *command[1:]], "s.csv", capsys)
    assert not (tmp_path / "out").exists()


def xlsx_bytes(table: Table) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in table:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    book.close()
    return buffer.getvalue()


@st.composite
def broken_xlsx(draw: st.DrawFn) -> tuple[bytes, str, bool]:
    """A malformed workbook's bytes, what broke it, and whether only the file as a whole can be named."""
    kind = draw(st.sampled_from(["table"] * 6 + ["truncated", "junk", "empty-sheet"]))
    if kind == "junk":
        return draw(st.sampled_from([b"", b"PK\x03\x04", b"not a zip"])) + draw(st.binary(max_size=100)), kind, True
    table = draw(valid_table())
    if kind == "empty-sheet":
        return xlsx_bytes([]), kind, False
    if kind == "truncated":
        data = xlsx_bytes(table)
        # A share of the length, not an offset: the workbook's size varies with the clock (openpyxl stamps the
        # save time), and hypothesis needs the same draws for the same data.
        return data[:len(data) * draw(st.integers(0, 9_999)) // 10_000], kind, True
    kind = break_table(draw, table)
    return xlsx_bytes(table), kind, False


@settings(FUZZ, max_examples=300)
@given(case=broken_xlsx(), command=st.sampled_from(COMMANDS[:3]))
def test_malformed_xlsx_spreadsheets_get_exit_2_and_a_located_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        case: tuple[bytes, str, bool], command: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    data, _kind, file_level = case
    (tmp_path / "s.xlsx").write_bytes(data)
    assert_rejected([command[0], "s.xlsx", *command[1:]], "s.xlsx", capsys, file_level=file_level)


@settings(FUZZ, max_examples=40)
@given(table=valid_table(), suffix=st.sampled_from([".csv", ".xlsx"]))
def test_the_unbroken_spreadsheet_bases_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str], table: Table,
                                                  suffix: str) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"s{suffix}"
    if suffix == ".csv":
        buffer = io.StringIO()
        csv.writer(buffer).writerows([[str(v) for v in row] for row in table])
        path.write_text(buffer.getvalue(), encoding="utf-8")
    else:
        path.write_bytes(xlsx_bytes(table))
    code, out, err = run_cli(["validate", path.name], capsys)
    assert code == 0 and out.startswith(f"ok: {path.name}"), err
