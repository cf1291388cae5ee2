"""Hostile input: the manifests, spreadsheets, settings and folders that used to hang, crash, pass silently or
hide problems behind others, each now a clear located message in one pass (the corpus of tests/data/hostile/
runs all of them under resource limits; these say what each case is told, and that the good cases still work)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import png, problems, run_main

import jimeng_batch
from jimeng_batch.errors import Location, Problem


def test_a_nan_cost_is_refused_not_a_run_with_nothing_to_do(write: Callable[..., Path],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """It used to drop every request ("nothing to do", exit 0)."""
    manifest = write("m.yaml", """
        costs: {jimeng-4.0: .nan}
        jobs:
          - {type: image, prompt: a, model: jimeng-4.0}
    """)
    code, _, err = run_main(["run", str(manifest), "--sim", "--quiet", "--no-cache", "--no-report"], capsys)
    assert code == 2 and "m.yaml:1:21: costs.jimeng-4.0: nan is not a number; give a finite one" in err, err


@pytest.mark.parametrize(("text", "said"), [
    ("budget: .nan\njobs: [{type: image, prompt: a}]\n", "m.yaml:1:9: budget: nan is not a number"),
    ("budget: -.inf\njobs: [{type: image, prompt: a}]\n", "budget: -inf is not a number"),
    ("jobs: [{type: image, prompt: a, sample_strength: .nan}]\n", "jobs[1].sample_strength: nan is not a number"),
    ("jobs: [{type: image, prompt: a, sample_strength: [0.5, .inf]}]\n",
     "jobs[1].sample_strength[2]: inf is not a number"),
    ("limits: {polls_per_second: .nan}\njobs: [{type: image, prompt: a}]\n", "limits.polls_per_second: nan"),
    ("jobs: [{type: image, prompt: a, vars: {x: .nan}}]\n", "jobs[1].vars.x: nan is not a number"),
])
def test_nan_and_infinities_are_refused_in_every_number_field(write: Callable[..., Path], text: str,
                                                              said: str) -> None:
    found = problems(write("m.yaml", text))
    assert any(said in p for p in found), found


def test_a_nan_strength_never_reaches_a_request_body(write: Callable[..., Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write("m.yaml", "jobs: [{type: image, prompt: a, sample_strength: .nan}]\n")
    code, out, err = run_main(["plan", str(manifest), "--format", "jsonl"], capsys)
    assert code == 2 and "NaN" not in out and "sample_strength: nan is not a number" in err


def test_an_unclosed_quote_is_located_not_a_merged_row(write: Callable[..., Path]) -> None:
    """A 5-request file used to validate as 3 requests, the third prompt holding the next two rows."""
    sheet = write("s.csv", 'prompt,model\na,jimeng-4.0\nb,jimeng-4.0\n"c,jimeng-4.0\nd,jimeng-4.0\ne,jimeng-4.0\n')
    assert problems(sheet) == [
        's.csv:row 4, column prompt: a quote (") opened on line 4 is never closed, so every row after it would be '
        'read into this cell; close it, or write "" for a quote inside a quoted cell']


def test_text_after_a_closing_quote_is_located(write: Callable[..., Path]) -> None:
    sheet = write("s.csv", 'prompt,model\na,jimeng-4.0\nb,"jimeng-4.0"x\n')
    assert problems(sheet) == ['s.csv:row 3, column model: text follows a closing quote (") on line 3; quote the '
                               'whole cell, and write "" for each quote inside it']


def test_quoted_cells_with_commas_newlines_and_quotes_still_read(write: Callable[..., Path]) -> None:
    sheet = write("s.csv", 'prompt,model\n"a, b",jimeng-4.0\n"two\nlines ""quoted""",jimeng-4.0\nc,jimeng-4.0\n')
    assert problems(sheet) == []
    prompts = [spec.prompt for spec in jimeng_batch.plan(sheet).requests()]
    assert prompts == ["a, b", 'two\nlines "quoted"', "c"]


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("""
        jobs:
          - type: image
            promt: a
            prompt: "{animal} at {place"
            model: nope
            resolution: 8k
            vars: {animal: [cat, dog]}
        """, ["m.yaml:3:5: unknown key 'promt' in jobs[1] (did you mean 'prompt'?)",
              "m.yaml:4:13: prompt: a lone '{' at character 13; write '{{' for a literal brace",
              "m.yaml:5:12: unknown model 'nope'",
              "m.yaml:6:17: jobs[1].resolution: '8k' is not allowed"], id="typos-hide-nothing"),
    pytest.param("""
        jobs:
          - type: image_to_image
            prompt: a
            references: [{image: missing.png, strength: 3}]
        """, ["m.yaml:4:18: image 'missing.png': no such file",
              "m.yaml:4:49: jobs[1].references[1].strength: 3 is above the maximum of 1"], id="strength-and-file"),
    pytest.param("""
        colour: blue
        jobs:
          - {type: image, rows: no-such-rows.csv}
        """, ["m.yaml:1:1: unknown key 'colour'", "m.yaml:3:25: rows file 'no-such-rows.csv' not found"],
        id="top-level-key-and-rows"),
    pytest.param("""
        jobs:
          - type: image
            prompt: a
            prompt: b
            model: nope
            resolution: 9k
            ratio: 5:5
            seed: -1
            count: 0
        """, ["m.yaml:4:5: duplicate key 'prompt' (first given at line 3)", "m.yaml:5:12: unknown model 'nope'",
              "m.yaml:6:17: jobs[1].resolution: '9k' is not allowed", "m.yaml:7:12: jobs[1].ratio: '5:5' is not",
              "m.yaml:8:11: jobs[1].seed: -1 is below the minimum of 0",
              "m.yaml:9:12: jobs[1].count: 0 is below the minimum of 1"], id="duplicate-key-and-five-more"),
    pytest.param("""
        jobs:
          - {type: imag, prompt: a, model: nope}
          - {type: image, prompt: a, model: nope-either}
        """, ["m.yaml:2:12: jobs[1].type: 'imag' is not allowed (did you mean 'image'?)",
              "m.yaml:3:37: unknown model 'nope-either'"], id="a-job-without-a-type-does-not-stop-the-next"),
    pytest.param("""
        defaults: {resolution: 8k, model: nope}
        jobs:
          - {type: image, prompt: a}
        """, ["m.yaml:1:24: defaults.resolution: '8k' is not allowed", "m.yaml:1:35: unknown model 'nope'"],
        id="defaults"),
])
def test_every_problem_in_one_pass_sorted_by_place(write: Callable[..., Path], text: str,
                                                   expected: list[str]) -> None:
    found = jimeng_batch.validate(write("m.yaml", text))
    shown = [str(p) for p in found]
    assert len(shown) == len(expected), shown
    for line, start in zip(shown, expected, strict=True):
        assert line.startswith(start), (line, start)


def test_a_lone_brace_does_not_claim_a_variable_is_unused(write: Callable[..., Path]) -> None:
    found = problems(write("m.yaml", 'jobs: [{type: image, prompt: "{animal} at {place", vars: {animal: [a, b]}}]\n'))
    assert found == ["m.yaml:1:30: prompt: a lone '{' at character 13; write '{{' for a literal brace"]
    # ...and a variable no readable prompt uses is still said
    found = problems(write("n.yaml", 'jobs: [{type: image, prompt: "at {{place}}", vars: {animal: [a, b]}}]\n'))
    assert any("no prompt uses {animal}" in p for p in found), found


def test_a_spreadsheet_row_is_checked_past_its_bad_cell(write: Callable[..., Path], tmp_path: Path) -> None:
    sheet = write("s.csv", "prompt,ratio,model,references\na,5:5,nope,\n")
    found = problems(sheet)
    assert any("column ratio" in p for p in found) and any("unknown model 'nope'" in p for p in found), found


@pytest.mark.parametrize("limit", [None, 11])
def test_a_matrix_over_the_limit_is_refused_before_it_is_expanded(write: Callable[..., Path],
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  limit: int | None) -> None:
    manifest = write("m.yaml", "jobs:\n  - {type: image, prompt: '{a}', count: 3, vars: {a: [1, 2, 3, 4]}}\n")
    flags = [] if limit is None else ["--max-requests", str(limit)]
    code, out, err = run_main(["plan", str(manifest), *flags], capsys)
    if limit is None:
        assert code == 0 and "12 distinct request(s)" in out
    else:
        assert code == 2 and ("m.yaml:2:5: this job would expand to 12 requests (4 (a) × 3 (count)), more than the "
                              "11 a job may have; split it, shorten its lists, or raise --max-requests") in err, err
        assert jimeng_batch.validate(manifest, max_requests=11) and not jimeng_batch.validate(manifest)
        with pytest.raises(jimeng_batch.SchemaError, match="12 requests"):
            jimeng_batch.run(manifest, out=write("o/.keep", "").parent, sim=True, max_requests=11, report=False)


def test_the_default_limit_allows_a_million(write: Callable[..., Path]) -> None:
    """The check multiplies list lengths: 1,000,000 requests is allowed (not expanded here), one more is not."""
    values = ", ".join(str(i) for i in range(1000))
    manifest = write("m.yaml", f"jobs:\n  - {{type: image, prompt: '{{a}} {{b}}', vars: {{a: [{values}], "
                               f"b: [{values}]}}}}\n")
    from jimeng_batch.intake.expand import _too_many
    from jimeng_batch.intake.manifest import load_manifest

    template = next(t for t in load_manifest(manifest).templates() if not isinstance(t, Problem))
    axes = [("var:a", list(range(1000))), ("var:b", list(range(1000)))]
    assert _too_many(template, axes, 1, 1_000_000) is None
    assert _too_many(template, [*axes, ("seed", [1, 2])], 1, 1_000_000) is not None


def test_aliases_and_merges_within_the_bounds_work(write: Callable[..., Path]) -> None:
    manifest = write("m.yaml", """
        x-common: &common {type: image, model: jimeng-4.0, resolution: 2k}
        x-more: &more {ratio: "16:9", model: jimeng-3.0}
        x-prompts: &prompts [a cat, a dog]
        jobs:
          - {<<: [*common, *more], prompt: *prompts}
          - {<<: *common, resolution: 1k, prompt: a bird, name: bird}
    """)
    specs = list(jimeng_batch.plan(manifest).requests())
    assert [(s.prompt, s.model, s.resolution, s.ratio) for s in specs] == [
        ("a cat", "jimeng-4.0", "2k", "16:9"), ("a dog", "jimeng-4.0", "2k", "16:9"),  # the earlier merge wins
        ("a bird", "jimeng-4.0", "1k", "1:1")]  # a key written beside the merge overrides it


def test_a_mapping_that_merges_itself_is_a_problem(write: Callable[..., Path]) -> None:
    # A merge of a merge brings x in, located where it is written.
    text = "x-a: &a {x: 1}\nx-b: &b {<<: [*a]}\njobs:\n  - {<<: *b, type: image, prompt: p}\n"
    found = problems(write("m.yaml", text))
    assert len(found) == 1 and found[0].startswith("m.yaml:1:10: unknown key 'x' in jobs[1]; allowed: "), found
    found = problems(write("n.yaml", "x-b: &b\n  k: 1\n  <<: *b\njobs:\n  - {type: image, prompt: p}\n"))
    assert found == ["n.yaml:2:6: nested more than 64 levels deep (an alias that contains itself?)"], found


@pytest.mark.parametrize(("url", "said"), [
    ("http://[::1", "Invalid port"), ("ftp://example.com", "it must start with http:// or https://"),
    ("http://", "names no host"),
])
def test_an_unusable_base_url_is_a_clear_error(write: Callable[..., Path], capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch, url: str, said: str) -> None:
    manifest = write("m.yaml", "jobs: [{type: image, prompt: a}]\n")
    monkeypatch.setenv("JIMENG_BASE_URL", url)
    monkeypatch.setenv("JIMENG_SESSIONID", "0123456789abcdef0123456789abcdef")
    code, _, err = run_main(["run", str(manifest), "--quiet", "--no-cache"], capsys)
    assert code == 2 and "base_url (--base-url or JIMENG_BASE_URL)" in err and said in err, err


def test_an_output_folder_that_cannot_be_made_is_exit_2(write: Callable[..., Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write("m.yaml", "jobs: [{type: image, prompt: a}]\n")
    code, _, err = run_main(["run", str(manifest), "--sim", "--out", "/proc/nope", "--quiet"], capsys)
    assert code == 2 and "/proc/nope: cannot create a folder here" in err and "(--out)" in err, err
    code, _, err = run_main(["plan", str(manifest), "--format", "jsonl", "--out", "/proc/nope.jsonl"], capsys)
    assert code == 2 and "/proc/nope.jsonl: cannot be written" in err, err


def test_report_and_export_on_folders_that_cannot_be_written(write: Callable[..., Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = write("m.yaml", "jobs: [{type: image, prompt: a}]\n")
    code, _, err = run_main(["run", str(manifest), "--sim", "--out", "out", "--quiet", "--no-cache"], capsys)
    assert code == 0, err
    code, _, err = run_main(["export", "out", "--to", "/proc/nope/dataset", "--allow-simulated"], capsys)
    assert code == 2 and "cannot create a folder here" in err and "(--to)" in err, err
    # A read-only folder (as root, permissions do not stop writes: the file system's refusal is stood in for).
    real_open = pathlib.Path.open

    def read_only(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        if any(flag in mode for flag in "wax+") and tmp_path / "out" in self.absolute().parents:
            raise OSError(30, "Read-only file system", str(self))
        return real_open(self, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(pathlib.Path, "open", read_only)
    code, _, err = run_main(["report", "out"], capsys)
    assert code == 1 and err.strip() == "out: cannot be written (Read-only file system)", err


def test_messages_escape_what_would_break_their_line() -> None:
    from jimeng_batch.errors import printable

    problem = Problem(Location("m.yaml", 1, 2), "unknown model 'a\nb\x1b[2J\u202e\ud800'")
    assert str(problem) == "m.yaml:1:2: unknown model 'a\\nb\\x1b[2J\\u202e\\ud800'"
    assert printable("猫 😀 café") == "猫 😀 café"


def test_problems_of_a_file_that_cannot_be_read_past_a_bound_are_one(write: Callable[..., Path]) -> None:
    text = "a: &a [" + ", ".join(["x"] * 10) + "]\n" + "".join(
        f"{n}: &{n} [" + ", ".join([f"*{p}"] * 10) + "]\n" for p, n in zip("abcd", "bcde", strict=True))
    found = problems(write("m.yaml", text + "jobs: [{type: image, prompt: *e}]\n"))
    assert found == ["m.yaml:5:1: expands to more than 100,000 values through its aliases (*name) or merges (<<); "
                     "write large batches as a spreadsheet (`rows:`)"]
    assert json.dumps(found)  # plain text


def test_a_reference_in_a_read_only_image_folder_is_read(write: Callable[..., Path], tmp_path: Path) -> None:
    """The other side of the name checks: an ordinary image path is found and read."""
    png(tmp_path / "refs" / "a.png")
    found = problems(write("m.yaml", "jobs: [{type: image_to_image, prompt: a, references: [refs/a.png]}]\n"))
    assert found == []
