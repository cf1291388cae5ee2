"""The hostile manifests of tests/data/hostile/ (written for these tests: alias bombs, deep nesting, huge matrices,
NaN, broken quoting, surrogates, control characters, impossible image names...), each run by `validate` and
`plan` in a subprocess under memory and CPU limits: a clear located message and exit 2 (or 0 where the input is
fine), never a traceback, an internal error or a hang; seconds each, and peak memory bounded."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(__file__).parent / "data" / "hostile"
DRIVER = Path(__file__).parent / "corpus_driver.py"
MEMORY_LIMIT = 2 << 30  # address space: an alias bomb reached 3.5 GB in a minute before the bounds
PEAK_MIB = 400  # what the whole corpus may cost at its peak (about 150 MiB: the interpreter and its imports)
SECONDS_EACH = 5.0

# Files a user may well write: they are fine, and plan and validate say so.
FINE = {"bom-utf8.yaml", "long-prompt-line.yaml", "csv-nul.csv"}

# What each file must be told (a substring of the message), for the cases the corpus was written for.
EXPECTED = {
    "alias-laughs.yaml": "expands to more than 100,000 values",
    "alias-merge-laughs.yaml": "expands to more than 100,000 values",
    "alias-recursive.yaml": "nested more than 64 levels deep",
    "alias-recursive-mapping.yaml": "nested more than 64 levels deep",
    "nesting-flow-500.yaml": ":2:88: nested more than 64 levels deep",
    "nesting-block-100.yaml": "nested more than 64 levels deep",
    "nesting-mapping-1000.yaml": "nested more than 64 levels deep",
    "matrix-huge.yaml": "312,500,000 requests (50 (a) × 50 (b) × 50 (c) × 50 (d) × 50 (e))",
    "matrix-count.yaml": "2,000,000 requests (200 (prompt) × 10000 (count))",
    "matrix-many-axes.yaml": "2,160,000 requests",
    "nan-cost.yaml": "costs.jimeng-4.0: nan is not a number",
    "nan-budget.yaml": "budget: nan is not a number",
    "nan-strength.yaml": "sample_strength: nan is not a number",
    "inf-everywhere.yaml": "6 problems found",
    "csv-nan.csv": "'inf' is not a finite number",
    "merge-scalar.yaml": ":2:9: a merge (<<) takes a mapping",
    "merge-list-of-scalars.yaml": "got 'two'",
    "surrogate.yaml": "holds \\ud800, half of a UTF-16 surrogate pair",
    "surrogate-key.yaml": "holds \\ud83d",
    "control-characters.yaml": "unknown model 'line one\\nline two\\r\\x1b[31mred\\x1b[0m\\u202eevil'",
    "newline-keys.yaml": "unknown key 'multi\\nline\\nkey'",
    "csv-control.csv": "'bad\\x1b]0;title\\x07model'",
    "python-tags.yaml": "the tag '!!python/object/apply:os.system' is not allowed",
    "duplicate-keys.yaml": "6 problems found",
    "one-pass.yaml": "unknown model 'nope'",
    "one-pass-references.yaml": "image 'missing.png': no such file",
    "one-pass-top-level.yaml": "rows file 'no-such-rows.csv' not found",
    "image-path-long.yaml": "the name is longer than the file system allows",
    "image-path-deep.yaml": "the name is longer than the file system allows",
    "image-bomb.yaml": "claims more pixels than any image the service accepts",
    "csv-unclosed-quote.csv": "row 4, column prompt: a quote (\") opened on line 4 is never closed",
    "csv-text-after-quote.csv": "text follows a closing quote",
    "csv-field-too-large.csv": "row 2: CSV error: field larger than field limit",
    "csv-many-columns.csv": "and 4980 more unknown columns",
    "rows-broken-quote.yaml": "jobs[2].resolution: '9k' is not allowed",
    "region-unknown.yaml": "region: 'mars' is not allowed",
    "utf16.yaml": "it looks like UTF-16",
    "nul-bytes.yaml": "character 0x0000 is not allowed",
}


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (120, 120))


@pytest.fixture(scope="module")
def corpus() -> dict[tuple[str, str], dict[str, Any]]:
    done = subprocess.run([sys.executable, str(DRIVER), str(CORPUS)], cwd=CORPUS, capture_output=True, text=True,
                          timeout=300, preexec_fn=_limits, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    peak = lines.pop()["peak_mib"]
    assert peak < PEAK_MIB, f"the corpus peaked at {peak:.0f} MiB"
    return {(line["file"], line["verb"]): line for line in lines}


FILES = sorted(p.name for p in CORPUS.iterdir() if p.suffix in (".yaml", ".csv", ".xlsx"))


def test_the_corpus_is_large_and_every_expectation_names_a_file() -> None:
    assert len(FILES) >= 60
    assert set(EXPECTED) <= set(FILES) and FINE <= set(FILES)


@pytest.mark.parametrize("verb", ["validate", "plan"])
@pytest.mark.parametrize("name", FILES)
def test_hostile_manifest(corpus: dict[tuple[str, str], dict[str, Any]], name: str, verb: str) -> None:
    result = corpus[(name, verb)]
    said = result["out"] + result["err"]
    assert result["code"] == (0 if name in FINE else 2), said
    assert "Traceback" not in said and "internal error" not in said, said
    assert result["seconds"] < SECONDS_EACH, result["seconds"]
    for line in said.splitlines():  # every line of a message is its own: quoted input cannot break one
        assert line.isprintable(), repr(line)
    if name in EXPECTED:
        assert EXPECTED[name] in said, said
