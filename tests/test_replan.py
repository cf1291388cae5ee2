"""A run of a changed spreadsheet re-plans only the rows that changed, and leaves the ledger a full re-plan would."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_main

from jimeng_batch.engine.ledger import LATEST_VERSION, Ledger, PlanRows
from jimeng_batch.intake import manifest as manifest_module
from jimeng_batch.intake.plan import KnownRow
from jimeng_batch.protocol.request_spec import RequestSpec

FAST = ["--preflight", "off", "--no-cache", "--quiet"]
# Every column a request depends on; the prompts differ, the rest repeat (so rows share their shapes)
ROWS = [f"picture {i},{'jimeng-4.0' if i % 2 else 'jimeng-3.0'},{'1:1' if i % 3 else '16:9'}" for i in range(12)]
COLUMNS = "prompt,model,ratio"
# The ledger's requests as a run leaves them, but for the times things happened
COMPARED = ("key, submit_id, ord, job, source_file, source_row, sample, type, model, resolution, params, "
            "estimated_credits, state, reason, run_id, planned_in")


def _query(out: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(out / "ledger.sqlite")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _requests(out: Path) -> list[tuple[object, ...]]:
    return _query(out, f"SELECT {COMPARED} FROM requests ORDER BY ord")


class Counts:
    """How many rows were read and checked, and how many recalled from the ledger, since the last reset."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, recall: bool) -> None:
        self.read = self.recalled = 0
        read_row = manifest_module.read_row
        recall_row = PlanRows.recall

        def counted_read(*args: object) -> object:
            self.read += 1
            return read_row(*args)  # type: ignore[arg-type]

        def counted_recall(rows: PlanRows, digest: bytes) -> KnownRow | None:
            found = recall_row(rows, digest) if recall else None
            self.recalled += found is not None
            return found

        monkeypatch.setattr(manifest_module, "read_row", counted_read)
        monkeypatch.setattr(PlanRows, "recall", counted_recall)

    def reset(self) -> None:
        self.read = self.recalled = 0


def _plan(capsys: pytest.CaptureFixture[str], manifest: Path, out: str, *extra: str) -> None:
    code, _, err = run_main(["run", str(manifest), "--out", out, "--sim", "--budget", "0", *FAST, *extra], capsys)
    assert code == 3, err  # a budget of 0: everything planned, nothing sent


def _both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
               first: str, then: str, *, name: str = "rows.csv", yaml: tuple[str, str] | None = None,
               options: tuple[list[str], list[str]] = ([], [])) -> Counts:
    """Plan ``first``; then plan ``then`` into that folder with the ledger's row memo and into a copy of it without
    the memo; the two ledgers must hold the same requests. The counts are those of the plan with the memo."""
    monkeypatch.chdir(tmp_path)
    sheet = tmp_path / name
    target = sheet if yaml is None else tmp_path / "m.yaml"
    sheet.write_text(first, encoding="utf-8")
    if yaml is not None:
        target.write_text(yaml[0], encoding="utf-8")
    _plan(capsys, target, "memo", *options[0])
    shutil.copytree(tmp_path / "memo", tmp_path / "full")
    sheet.write_text(then, encoding="utf-8")
    if yaml is not None:
        target.write_text(yaml[1], encoding="utf-8")
    results = []
    for folder, recall in (("memo", True), ("full", False)):
        counts = Counts(monkeypatch, recall=recall)
        _plan(capsys, target, folder, *options[1])
        results.append(counts)
        monkeypatch.undo()
        monkeypatch.chdir(tmp_path)
    assert _requests(tmp_path / "memo") == _requests(tmp_path / "full")
    assert results[1].recalled == 0
    return results[0]


def _sheet(rows: list[str]) -> str:
    return "\n".join([COLUMNS, *rows]) + "\n"


def test_one_row_edited_is_the_only_row_checked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    edited = [*ROWS]
    edited[5] = "picture 5 at dusk,jimeng-4.0,1:1"
    counts = _both_ways(tmp_path, monkeypatch, capsys, _sheet(ROWS), _sheet(edited))
    # two passes (checking, then writing the ledger): the edited row read in each, the others recalled in each
    assert (counts.read, counts.recalled) == (2, 2 * (len(ROWS) - 1))
    requests = _requests(tmp_path / "memo")
    assert [row[12] for row in requests].count("removed") == 1  # the request of the row as it was: set aside
    assert len(requests) == len(ROWS) + 1


def test_a_row_inserted_in_the_middle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    inserted = [*ROWS[:4], "a new picture,jimeng-4.0,16:9", *ROWS[4:]]
    counts = _both_ways(tmp_path, monkeypatch, capsys, _sheet(ROWS), _sheet(inserted))
    assert counts.recalled == 2 * 4  # the rows above it; the rows below it moved, and are planned again


def test_a_row_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    counts = _both_ways(tmp_path, monkeypatch, capsys, _sheet(ROWS), _sheet(ROWS[:6] + ROWS[7:]))
    assert counts.recalled == 2 * 6
    assert [row[12] for row in _requests(tmp_path / "memo")].count("removed") == 1


def test_a_jobs_default_model_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    rows = "prompt,ratio\n" + "".join(f"picture {i},1:1\n" for i in range(8))
    job = "jobs:\n  - type: image\n    rows: rows.csv\n    model: {}\n"
    counts = _both_ways(tmp_path, monkeypatch, capsys, rows, rows,
                        yaml=(job.format("jimeng-3.0"), job.format("jimeng-4.0")))
    assert counts.recalled == 0
    assert [row[12] for row in _requests(tmp_path / "memo")].count("removed") == 8


def test_a_sheets_model_option_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    rows = "prompt,ratio\n" + "".join(f"picture {i},1:1\n" for i in range(8))
    counts = _both_ways(tmp_path, monkeypatch, capsys, rows, rows + "one more,1:1\n",
                        options=(["--model", "jimeng-3.0"], ["--model", "jimeng-4.0"]))
    assert counts.recalled == 0


def test_the_spreadsheet_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    other = [f"another {i},jimeng-4.5,4:3" for i in range(5)]
    counts = _both_ways(tmp_path, monkeypatch, capsys, _sheet(ROWS), _sheet([ROWS[0], *other]))
    assert counts.recalled == 2  # its first row is the same row as before
    assert [row[12] for row in _requests(tmp_path / "memo")].count("removed") == len(ROWS) - 1


def test_a_resume_after_an_edit_recalls_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    sheet = tmp_path / "rows.csv"
    sheet.write_text(_sheet(ROWS), encoding="utf-8")
    _plan(capsys, sheet, "out")
    sheet.write_text(_sheet([*ROWS, "one more,jimeng-4.0,1:1"]), encoding="utf-8")
    counts = Counts(monkeypatch, recall=True)
    code, _, err = run_main(["resume", "out", "--budget", "0"], capsys)
    assert code == 3, err
    assert (counts.read, counts.recalled) == (2, 2 * len(ROWS))
    assert len(_requests(tmp_path / "out")) == len(ROWS) + 1


def test_a_ledger_from_before_plan_rows_gets_them(tmp_path: Path, write: Callable[..., Path]) -> None:
    with Ledger.in_folder(tmp_path / "out") as ledger:
        ledger.db.executescript("DROP TABLE plan_rows; DELETE FROM migrations WHERE version = 5;")
        assert ledger.schema_version() == 4
    with Ledger.open_existing(tmp_path / "out") as ledger:
        assert ledger.schema_version() == LATEST_VERSION
        assert ledger.plan_rows(write=False).recall(b"\0" * 16) is None


def test_a_sharded_plan_then_the_whole_sheet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # The first plan writes only its shard's requests: none of its rows may be recalled as if all were written
    counts = _both_ways(tmp_path, monkeypatch, capsys, _sheet(ROWS), _sheet(ROWS), options=(["--shard", "1/2"], []))
    assert len(_requests(tmp_path / "memo")) == len(ROWS)
    assert counts.recalled == 0


def test_the_whole_sheet_then_a_shard_of_it_edited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    edited = [*ROWS]
    edited[2] = "picture 2 at dawn,jimeng-3.0,16:9"
    counts = _both_ways(tmp_path, monkeypatch, capsys, _sheet(ROWS), _sheet(edited), options=([], ["--shard", "2/2"]))
    assert counts.recalled == 2 * (len(ROWS) - 1)  # recalled whole, then only the shard's requests marked


def _remembered(out: Path) -> int:
    return len(_query(out, "SELECT digest FROM plan_rows"))


def test_a_plan_of_the_whole_sheet_forgets_the_rows_it_no_longer_has(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # The memo holds the sheet as it is, not every version of it: sorting or editing a sheet again and again would
    # otherwise add all of its rows each time
    edited = [*ROWS]
    edited[5] = "picture 5 at dusk,jimeng-4.0,1:1"
    inserted = ["a new picture,jimeng-4.0,16:9", *ROWS]  # every row below moves
    _both_ways(tmp_path, monkeypatch, capsys, _sheet(ROWS), _sheet(edited))
    assert _remembered(tmp_path / "memo") == len(ROWS)
    (tmp_path / "rows.csv").write_text(_sheet(inserted), encoding="utf-8")
    _plan(capsys, tmp_path / "rows.csv", "memo")
    assert _remembered(tmp_path / "memo") == len(inserted)
    (tmp_path / "rows.csv").write_text(_sheet(ROWS), encoding="utf-8")
    counts = Counts(monkeypatch, recall=True)
    _plan(capsys, tmp_path / "rows.csv", "memo")  # the rows back where they were: planned again, same requests
    assert counts.recalled == 0 and _remembered(tmp_path / "memo") == len(ROWS)
    assert len(_requests(tmp_path / "memo")) == len(ROWS) + 2  # the edited row's and the inserted row's


def test_a_sharded_plan_forgets_no_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    edited = [*ROWS]
    edited[2] = "picture 2 at dawn,jimeng-3.0,16:9"
    _both_ways(tmp_path, monkeypatch, capsys, _sheet(ROWS), _sheet(edited), options=([], ["--shard", "2/2"]))
    assert _remembered(tmp_path / "memo") == len(ROWS)  # a shard sees only part of the plan: the old row is kept


# Planning writes more than one batch (add_planned commits a batch of 2,000 requests at a time outside a plan)
MANY = [f"picture {i},{'jimeng-4.0' if i % 2 else 'jimeng-3.0'},{'1:1' if i % 3 else '16:9'}" for i in range(4500)]


def test_a_plan_is_written_in_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    statements: list[str] = []
    plan_rows = Ledger.plan_rows

    def traced(ledger: Ledger, *, write: bool, prune: bool = False) -> PlanRows:
        ledger.db.set_trace_callback(statements.append)
        return plan_rows(ledger, write=write, prune=prune)

    monkeypatch.setattr(Ledger, "plan_rows", traced)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.csv").write_text(_sheet(MANY), encoding="utf-8")
    _plan(capsys, tmp_path / "rows.csv", "out")
    inserts = [i for i, text in enumerate(statements) if text.startswith("INSERT INTO requests")]
    remembered = next(i for i, text in enumerate(statements) if "INTO main.plan_rows" in text)
    assert len(inserts) == len(MANY)
    assert "COMMIT" not in statements[inserts[0]:remembered + 1]  # the requests and their rows commit together
    # A first plan's requests are distinct and the ledger held none: no key is looked up
    assert not [text for text in statements if text.startswith("SELECT key FROM requests WHERE key IN")]
    assert len(_requests(tmp_path / "out")) == len(MANY)


def test_a_plan_cut_short_leaves_the_ledger_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from jimeng_batch.engine import runner
    from jimeng_batch.errors import LedgerError

    new_requests = runner._new_requests

    def cut_short(*args: Any, **kwargs: Any) -> Iterator[RequestSpec]:
        for count, spec in enumerate(new_requests(*args, **kwargs)):
            if count == 3000:
                raise LedgerError("the disk is full")
            yield spec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.csv").write_text(_sheet(MANY), encoding="utf-8")
    monkeypatch.setattr(runner, "_new_requests", cut_short)
    code, _, err = run_main(["run", "rows.csv", "--out", "out", "--sim", "--budget", "0", *FAST], capsys)
    assert code == 1 and "the disk is full" in err
    # Not a part of a plan: neither its first batches of requests nor its rows, which a resume would recall
    assert _requests(tmp_path / "out") == []
    with Ledger.open_existing(tmp_path / "out") as ledger:
        assert ledger.db.execute("SELECT COUNT(*) FROM plan_rows").fetchone() == (0,)
    monkeypatch.setattr(runner, "_new_requests", new_requests)
    code, _, err = run_main(["resume", "out", "--budget", "0"], capsys)
    assert code == 3, err
    assert len(_requests(tmp_path / "out")) == len(MANY)


def test_the_wal_a_plan_grew_is_cut_back(tmp_path: Path) -> None:
    from jimeng_batch.intake.manifest import load_manifest
    from jimeng_batch.intake.plan import iter_distinct

    (tmp_path / "rows.csv").write_text(_sheet(MANY), encoding="utf-8")  # some 3 MiB of WAL
    with Ledger.in_folder(tmp_path / "out") as ledger:
        ledger.begin_run("rows.csv", "", "test", {})
        with ledger.planning():
            ledger.add_planned(i for i in iter_distinct(load_manifest(tmp_path / "rows.csv"))
                               if isinstance(i, RequestSpec))
        # The run goes on with the ledger open: the WAL would stay the plan's size for all of it
        assert (tmp_path / "out" / "ledger.sqlite-wal").stat().st_size == 0
        assert ledger.total() == len(MANY)
