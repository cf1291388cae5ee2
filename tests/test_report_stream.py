"""The report streamed over the ledger writes the same files as the whole-table report did: results.parquet (the
same frame read back), results.csv and results.jsonl (the same bytes), metrics.json (the same keys and numbers),
on the demo, a run with failures and a video, its rerun from the result cache, a video run, a run with retried
faults, an empty folder and a folder where nothing was sent; in one batch and in batches of two requests."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO
from report_helpers import mixed_manifest, sim_run, video_manifest, write
from report_oracle import whole_metrics, whole_results, write_whole

import jimeng_batch
from jimeng_batch.engine.ledger import Ledger
from jimeng_batch.intake.manifest import load_manifest
from jimeng_batch.intake.plan import iter_distinct
from jimeng_batch.outputs import report as report_module
from jimeng_batch.outputs import results as results_module
from jimeng_batch.outputs.report import write_report
from jimeng_batch.outputs.results import RESULTS_SCHEMA, TIME_COLUMNS
from jimeng_batch.protocol.request_spec import RequestSpec

FAULTS = """
    max_in_flight: null
    latency: {submit: 0, poll: 0, queue: 0, generation: 0}
    faults: {busy_probability: 0.6, http_error_probability: 0.4}
"""
FOLDERS = ("demo", "mixed", "again", "video", "retries", "empty", "planned")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("stream")
    shutil.copytree(REPO / "jobs", base / "jobs")
    assert sim_run(base, base / "jobs" / "demo.yaml", "demo") == 0
    manifest = mixed_manifest(base)
    assert sim_run(base, manifest, "mixed") == 1
    assert sim_run(base, manifest, "again") == 1  # served from the result cache
    assert sim_run(base, video_manifest(base), "video") == 0
    faults = write(base, "faults.yaml", FAULTS)
    # Through the API for a zero backoff (the command line has no option for it): retries without waiting.
    jimeng_batch.run(base / "jobs" / "demo.yaml", out=base / "retries", sim=True, quiet=True, sim_config=str(faults),
                     poll_interval=0.01, use_cache=False, backoff_base=0.0, jitter_seed=1)
    with Ledger.in_folder(base / "empty"):
        pass
    planned = load_manifest(write(base, "p.yaml", "jobs:\n  - {type: image, resolution: 1k, prompt: [a, b, c]}\n"))
    with Ledger.in_folder(base / "planned") as ledger:
        ledger.add_planned(i for i in iter_distinct(planned) if isinstance(i, RequestSpec))
    return base


def _same_parquet(new_path: Path, old_path: Path) -> None:
    """The same frame read back, and the same Arrow types except where the whole-table file had none to give (a
    column of nothing but nulls, lists of nothing but nulls, or no rows at all): there the fixed schema's."""
    new, old = pq.read_table(new_path), pq.read_table(old_path)
    assert new.schema.remove_metadata() == RESULTS_SCHEMA and new.column_names == old.column_names
    if old.num_rows == 0:
        assert new.num_rows == 0
        return
    for name in old.column_names:
        kind = old.schema.field(name).type
        untyped = old.column(name).null_count == old.num_rows or (pa.types.is_list(kind)
                                                                  and pa.types.is_null(kind.value_type))
        assert untyped or kind == new.schema.field(name).type, name
    like = old.cast(RESULTS_SCHEMA.with_metadata(old.schema.metadata))
    pd.testing.assert_frame_equal(pd.read_parquet(new_path), like.to_pandas())
    pd.testing.assert_frame_equal(pd.read_parquet(new_path), pd.read_parquet(old_path), check_dtype=False)


def _close(new: Any, old: Any, where: str = "metrics", decimals: bool = False) -> None:
    """Equal, floats to within rounding (sums and means add in another order); with ``decimals``, to within what
    10 decimals keep of them (pandas' JSON), a float also standing for a whole number written without its point."""
    if isinstance(old, dict):
        assert isinstance(new, dict) and list(new) == list(old), where
        for key in old:
            _close(new[key], old[key], f"{where}.{key}", decimals)
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), where
        for index, (a, b) in enumerate(zip(new, old, strict=True)):
            _close(a, b, f"{where}[{index}]", decimals)
    elif (isinstance(old, float) or (decimals and isinstance(new, float))) and not isinstance(new, bool):
        assert isinstance(new, int | float), (where, new, old)
        assert math.isclose(new, old, rel_tol=1e-12, abs_tol=1e-10 if decimals else 1e-12), (where, new, old)
    else:
        assert new == old and type(new) is type(old), (where, new, old)


def _same_jsonl(new_path: Path, old_path: Path) -> None:
    """The same records, keys in the same order; floats within what pandas' 10 decimals kept of them (the report
    writes floats exactly, and "/" unescaped: the same JSON values)."""
    new_lines = new_path.read_text(encoding="utf-8").splitlines()
    old_lines = old_path.read_text(encoding="utf-8").splitlines()
    assert len(new_lines) == len(old_lines)
    for index, (new, old) in enumerate(zip(new_lines, old_lines, strict=True)):
        _close(json.loads(new), json.loads(old), f"line {index + 1}", decimals=True)


@pytest.mark.parametrize("batch", [None, 2])
@pytest.mark.parametrize("name", FOLDERS)
def test_the_streamed_report_writes_what_the_whole_table_report_did(folders: Path, name: str, batch: int | None,
                                                                    tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = folders / name
    if batch is not None:
        monkeypatch.setattr(results_module, "BATCH_REQUESTS", batch, raising=False)
    expected = whole_results(out)
    write_whole(expected, tmp_path / "old")
    metrics = whole_metrics(out)
    report = write_report(out, step_summary=False)
    assert (out / "results.csv").read_bytes() == (tmp_path / "old" / "results.csv").read_bytes()
    _same_jsonl(out / "results.jsonl", tmp_path / "old" / "results.jsonl")
    _same_parquet(out / "results.parquet", tmp_path / "old" / "results.parquet")
    _close(report.metrics, metrics)
    _close(json.loads((out / "metrics.json").read_text(encoding="utf-8")), json.loads(json.dumps(metrics)))


@pytest.mark.parametrize("name", FOLDERS)
def test_the_results_frame_of_the_api_is_the_whole_table_frame(folders: Path, name: str) -> None:
    """`results(out_dir)` builds its frame from the report's plain columns: the same values and dtypes as the
    whole-table pandas frame the report was first written from (every folder, empty and planned-only too). The
    one difference allowed: times are always nanoseconds, as results.parquet has them, where the old frame's
    were microseconds in a column with no time at all (pandas' choice for an all-missing column)."""
    expected = whole_results(folders / name)
    for column in TIME_COLUMNS:
        expected[column] = expected[column].astype("datetime64[ns, UTC]")
    got = results_module.results_table(folders / name)
    if expected.empty:
        assert got.empty and list(got.columns) == list(expected.columns)
        return
    pd.testing.assert_frame_equal(got, expected)


def test_the_folders_cover_what_they_say(folders: Path) -> None:
    """Each case has what it is there for (else the comparison above would compare little)."""
    frames = {name: whole_results(folders / name) for name in FOLDERS}
    assert frames["mixed"]["state"].isin(["blocked"]).any(), frames["mixed"]["state"].tolist()
    assert (frames["mixed"]["type"] == "video").any()
    assert frames["again"]["cache_hit"].any()
    assert (frames["video"]["type"] == "video").all()
    assert frames["video"]["asset_count"].gt(0).all(), frames["video"]["state"].tolist()
    assert frames["retries"]["failed_attempts"].gt(0).any(), frames["retries"][["state", "attempts"]]
    assert frames["empty"].empty and (frames["planned"]["state"] == "planned").all()
    assert len(frames["demo"]) > 4


def test_a_report_holds_one_batch_of_requests_at_a_time(folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The results table is never built whole: every batch the report builds has at most a batch of requests, and
    the report never imports pandas (its import alone is about half of a report's memory)."""
    sizes: list[int] = []
    build = results_module.results_columns

    def recording(requests: results_module.Columns, *rest: Any) -> results_module.Columns:
        sizes.append(len(requests["key"]))
        return build(requests, *rest)

    monkeypatch.setattr(results_module, "BATCH_REQUESTS", 2)
    monkeypatch.setattr(results_module, "results_columns", recording)
    report = write_report(folders / "mixed", step_summary=False)
    assert sum(sizes) == report.metrics["totalRequests"] == 9 and max(sizes) == 2


def test_a_report_puts_the_processs_arrow_memory_pool_back(folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A report's batches are allocated by the system allocator (it gives memory back between batches); a program
    that writes a report keeps its own pool afterwards, and gets it back when the report fails."""
    own = pa.default_memory_pool().backend_name
    assert own != "system"  # pyarrow's default (mimalloc or jemalloc) where the wheel has one
    during: list[str] = []
    build = results_module.results_columns

    def recording(*args: Any) -> results_module.Columns:
        during.append(pa.default_memory_pool().backend_name)
        return build(*args)

    monkeypatch.setattr(results_module, "results_columns", recording)
    write_report(folders / "mixed", step_summary=False)
    assert set(during) == {"system"} and pa.default_memory_pool().backend_name == own

    def failing(*args: Any) -> results_module.Columns:
        raise OSError("disk full")

    monkeypatch.setattr(results_module, "results_columns", failing)
    with pytest.raises(OSError, match="disk full"):
        write_report(folders / "mixed", step_summary=False)
    assert pa.default_memory_pool().backend_name == own


def test_a_report_does_not_import_pandas_and_pandas_still_works_after(folders: Path) -> None:
    """A report never imports pandas (about a quarter of its memory), not even through pyarrow; and the same
    process can still use pandas with pyarrow afterwards: read the results, build the results table, convert a
    frame."""
    code = f"""
import sys
from pathlib import Path
import pyarrow as pa
from jimeng_batch.outputs.report import read_results, write_report
from jimeng_batch.outputs.results import results_table
out = Path({str(folders / 'mixed')!r})
write_report(out, step_summary=False)
print('pandas' in sys.modules)
import pandas as pd
frame = read_results(out)
table = results_table(out)
pd.testing.assert_frame_equal(frame.drop(columns=[c for c in frame if c.startswith('asset_')]),
                              table.drop(columns=[c for c in table if c.startswith('asset_')]))
print(len(frame), pa.table(frame).num_rows, pa.array(pd.Series([1, None], dtype='Int64')).null_count)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "9", "9", "1"], done.stdout


def test_the_pages_show_the_first_requests_and_say_how_many_there_are(folders: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_module, "HTML_ROWS", 3)
    monkeypatch.setattr(report_module, "MD_FAILURE_ROWS", 2)
    out = folders / "mixed"
    report = write_report(out, step_summary=False)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('<div class="card"') == 3 and "3 of 9 shown (the first in plan order)" in page
    failed = report.metrics["byState"]["blocked"]
    assert failed == 4 and f"Failed, blocked, invalid and skipped requests ({failed})" in page
    assert page.split('<table class="failures">')[1].split("</table>")[0].count("<tr>") == 1 + 3
    assert f"The first 3 of {failed} shown (plan order); every request is in results.csv." in page
    assert f"Failed, blocked, invalid and skipped requests ({failed}):" in report.markdown
    assert f"… and {failed - 2} more in report.html" in report.markdown
