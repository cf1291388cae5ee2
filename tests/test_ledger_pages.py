"""The ledger reads requests by state a page at a time, so a run's start and end never hold every planned row."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from run_helpers import IMAGES, planned_folder, write_manifest

from jimeng_batch.engine.ledger import Ledger
from jimeng_batch.engine.states import State


def _ledger(tmp_path: Path) -> Ledger:
    out = planned_folder(write_manifest(tmp_path, IMAGES), tmp_path / "out")
    return Ledger.open_existing(out)


def test_rows_by_state_come_in_plan_order_across_pages(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    try:
        every = [row[0] for row in ledger.db.execute("SELECT key FROM requests ORDER BY ord")]
        assert len(every) == 5
        for page in (1, 2, 3, 5, 1000):
            assert [row.key for row in ledger.in_states([State.PLANNED], page=page)] == every
    finally:
        ledger.close()


def test_a_caller_may_change_the_rows_it_is_given(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    try:
        every = [row[0] for row in ledger.db.execute("SELECT key FROM requests ORDER BY ord")]
        seen = []
        for row in ledger.in_states([State.PLANNED], page=2):
            seen.append(row.key)
            ledger.set_state(row.key, State.SKIPPED, reason="budget")  # out of the pages still to come
        ledger.flush()
        assert seen == every  # none skipped, none twice
        assert [row.key for row in ledger.in_states([State.SKIPPED], page=2)] == every
        assert list(ledger.in_states([State.PLANNED], page=2)) == []
    finally:
        ledger.close()


def test_a_page_holds_at_most_its_size(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    fetched: list[int] = []
    real = ledger.db

    class Counting:
        def execute(self, *args: object) -> object:
            cursor = real.execute(*args)  # type: ignore[arg-type]

            class Rows:
                def fetchall(self) -> list[object]:
                    rows = cursor.fetchall()
                    fetched.append(len(rows))
                    return rows
            return Rows()

    try:
        ledger.db = Counting()  # type: ignore[assignment]
        assert len(list(ledger.in_states([State.PLANNED], page=2))) == 5
        assert fetched == [2, 2, 1]
    finally:
        ledger.db = real
        ledger.close()


def test_checking_the_files_does_not_hold_every_asset_row(tmp_path: Path) -> None:
    # 60,000 files recorded (fetched whole, their rows alone were some 15 MB), two of them damaged
    ledger = _ledger(tmp_path)
    try:
        keys = [row[0] for row in ledger.db.execute("SELECT key FROM requests ORDER BY ord")]
        (tmp_path / "out" / "assets").mkdir(exist_ok=True)
        for index, key in enumerate(keys):
            (tmp_path / "out" / "assets" / f"{key}.png").write_bytes(b"x" * (index + 1))
        rows = [(keys[i % len(keys)], i, f"assets/{keys[i % len(keys)]}.png", (i % len(keys)) + 1)
                for i in range(60_000)]
        rows[7] = (rows[7][0], 7, "assets/gone.png", 1)
        rows[11] = (rows[11][0], 11, rows[11][2], 999)  # cut short
        with ledger.db:
            ledger.db.executemany("INSERT INTO assets (key, idx, kind, path, sha256, size, downloaded_at) VALUES "
                                  "(?, ?, 'image', ?, 'x', ?, 0)", rows)
        tracemalloc.start()
        try:
            damaged = ledger.verify_assets(tmp_path / "out")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert damaged == dict(sorted({rows[7][0]: 1, rows[11][0]: 1}.items()))
        assert peak < 2 << 20
    finally:
        ledger.close()
