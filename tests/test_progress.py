"""What a run shows: counts grouped for people, and an ETA from the rate so far."""

from __future__ import annotations

from collections import Counter
from typing import Any

from jimeng_batch.engine import progress
from jimeng_batch.engine.progress import describe, eta_seconds, grouped


def test_states_are_grouped_for_display() -> None:
    counts = Counter({"planned": 5, "submitting": 1, "submitted": 2, "running": 3, "succeeded": 1, "downloaded": 4,
                      "failed": 1, "blocked": 2, "skipped": 1})
    assert grouped(counts) == {"queued": 5, "submitted": 3, "running": 3, "done": 5, "failed": 3, "skipped": 1}


def test_eta_follows_the_rate_since_the_start() -> None:
    assert eta_seconds(done_now=30, total=100, started=0.0, done_at_start=10, now=10.0) == 35.0
    assert eta_seconds(done_now=10, total=100, started=0.0, done_at_start=10, now=10.0) is None


def test_a_plain_progress_line() -> None:
    line = describe(Counter({"planned": 2, "downloaded": 1}), 3, 1.0, 75.0)
    assert line == "queued 2 | submitted 0 | running 0 | done 1 | failed 0 | skipped 0 | of 3 | credits ~1 | ETA 1m15s"


def test_the_service_queue_is_described_from_the_front_most_job() -> None:
    from jimeng_batch.engine.ledger import QueueSight

    assert progress.describe_queue([]) is None
    assert progress.describe_queue([QueueSight(3, 12, 40.0, 30.0)]) == "queued 3/12, ~40 s"
    several = [QueueSight(9, 12, 75.0, 60.0), QueueSight(3, 12, 40.0, 30.0), QueueSight(None, None, None, None)]
    assert progress.describe_queue(several) == "queued 3/12 (3 jobs), ~75 s"


def test_the_plain_line_and_the_table_show_the_service_queue(capsys: Any) -> None:
    shown = progress.Progress(3, live=False, queue=lambda: "queued 3/12, ~40 s")
    shown.update(Counter({"submitted": 3}))
    shown._show()
    assert capsys.readouterr().err.rstrip().endswith("| queued 3/12, ~40 s")
    table = shown._table()
    assert table.columns[-1].header == "service queue" and list(table.columns[-1].cells) == ["queued 3/12, ~40 s"]
