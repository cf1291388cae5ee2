"""Reliability: a hostile environment gets a clear error, and nothing already finished is lost.

- An output folder that cannot be written. Tests run as root, for whom permission bits stop nothing, so the
  folder (or the place a file must go) is made impossible instead: a path under a regular file, an `assets`
  folder that is a file, a `run.log` or `ledger.sqlite` that is a folder.
- A full disk: the run is a subprocess with ``RLIMIT_FSIZE`` set (and SIGXFSZ ignored), so writes past the limit
  fail with EFBIG, as on a full disk, part-way through the run (after some downloads); then it is resumed without
  the limit.
- A corrupted ledger: overwritten with junk, cut in half, or with pages zeroed in the middle.
- A truncated or deleted asset.

Each time the command fails with a one-line message and no traceback, and afterwards every request finishes with
the files of an undisturbed run, no submit_id charged twice.
"""

from __future__ import annotations

import resource
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from reliability_helpers import (
    assets,
    check_recorded_files,
    cli_env,
    query,
    run_cli_process,
    sha256_file,
    states,
)
from run_helpers import TOKEN, simulator, write_manifest

from jimeng_batch.sim import SimServer

pytestmark = pytest.mark.slow

IMAGES = """
    jobs:
      - name: pictures
        type: image
        resolution: 1k
        prompt: "hostile picture {n}"
        vars: {n: [1, 2, 3, 4, 5, 6]}
"""
WITH_VIDEO = IMAGES + """
      - name: clip
        type: video
        model: jimeng-video-3.0
        resolution: 1080p
        duration: 10
        prompt: a slow pan over a harbour
"""


class Runner:
    """The command line in a subprocess against one simulator, with one token from a file."""

    def __init__(self, tmp_path: Path, server: SimServer) -> None:
        self.tokens = tmp_path / "tokens.txt"
        self.tokens.write_text(TOKEN + "\n")
        self.server = server
        self.env = cli_env()

    def options(self) -> list[str]:
        return ["--base-url", self.server.base_url, "--token-file", str(self.tokens), "--poll-interval", "0.02",
                "--quiet", "--preflight", "off", "--no-cache", "--concurrency", "1", "--no-report"]

    def run(self, manifest: Path, out: Path, *, file_size_limit: int | None = None) -> tuple[int, str]:
        done = run_cli_process(["run", str(manifest), "--out", str(out), *self.options()], self.env,
                               preexec_fn=_limit_file_size(file_size_limit) if file_size_limit else None)
        return done.returncode, done.stderr

    def resume(self, out: Path) -> tuple[int, str]:
        done = run_cli_process(["resume", str(out), *self.options()], self.env)
        return done.returncode, done.stderr

    def status(self, out: Path, *extra: str) -> tuple[int, str]:
        done = run_cli_process(["status", str(out), *extra], self.env)
        return done.returncode, done.stderr


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child, before exec: a full disk for every file it writes past `limit` bytes
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def assert_clear_error(code: int, stderr: str, *needles: str) -> None:
    """A failure with a one-line message that says what and where, and no traceback."""
    assert code != 0, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], stderr


def assert_charged_once(server: SimServer, requests: int) -> None:
    charges = server.stats()["charges_by_submit_id"]
    assert set(charges.values()) == {1} and len(charges) == requests, charges


def assert_kept(out: Path, before: dict[str, dict[int, str]]) -> None:
    """Every file recorded before is still recorded, on disk, with the same sha256."""
    now = assets(out / "ledger.sqlite")
    for key, files in before.items():
        assert now.get(key, {}) | files == now.get(key, {}), f"{key}: a finished file changed or went"
    check_recorded_files(out)


def test_an_output_folder_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    (tmp_path / "plain-file").write_text("not a folder")
    with simulator() as server:
        runner = Runner(tmp_path, server)
        code, stderr = runner.run(manifest, tmp_path / "plain-file" / "out")
        assert_clear_error(code, stderr, "plain-file/out", "cannot create a folder here", "Not a directory")
        assert code == 2  # the choice of folder is wrong, like a bad option
        code, stderr = runner.run(manifest, tmp_path / "plain-file")
        assert code == 2 and "is a file" in stderr and "Traceback" not in stderr
        assert server.stats()["requests"] == {}  # nothing was sent


@pytest.mark.parametrize("blocked", ["assets", "run.log", "ledger.sqlite"])
def test_a_path_in_the_output_folder_that_cannot_be_written(tmp_path: Path, blocked: str) -> None:
    """`assets` a file (downloads cannot go there), `run.log` or `ledger.sqlite` a folder: a clear error; once
    the obstacle is gone, the run resumes and nothing finished is lost or paid for twice."""
    manifest = write_manifest(tmp_path, IMAGES)
    out = tmp_path / "out"
    out.mkdir()
    obstacle = out / blocked
    if blocked == "assets":
        obstacle.write_text("a file where the assets folder goes")
    else:
        obstacle.mkdir()
    with simulator() as server:
        runner = Runner(tmp_path, server)
        code, stderr = runner.run(manifest, out)
        expected = {"assets": "cannot write a download", "run.log": "cannot write the run log",
                    "ledger.sqlite": "not a usable ledger"}[blocked]
        assert_clear_error(code, stderr, f"out/{blocked}", expected)
        if blocked == "assets":  # it got as far as the first download: that request waits as `succeeded`
            assert states(out / "ledger.sqlite") and "downloaded" not in set(states(out / "ledger.sqlite").values())
        before = assets(out / "ledger.sqlite")
        shutil.rmtree(obstacle) if obstacle.is_dir() else obstacle.unlink()
        code, stderr = runner.run(manifest, out)
        assert code == 0, stderr
        assert_kept(out, before)
        assert set(states(out / "ledger.sqlite").values()) == {"downloaded"}
        assert_charged_once(server, 6)


def test_a_full_disk_mid_run_is_a_clear_error_and_a_resume_finishes(tmp_path: Path) -> None:
    """Writes fail with EFBIG part-way: first the ledger (many small requests), then a download bigger than the
    space left (a 1080p video); each time a clear error, then a resume without the limit finishes the work."""
    manifest = write_manifest(tmp_path, WITH_VIDEO)
    images_only = write_manifest(tmp_path, IMAGES, "images.yaml")
    reference = tmp_path / "reference"
    out = tmp_path / "out"
    with simulator() as server:
        runner = Runner(tmp_path, server)
        # What an undisturbed run writes, to compare with at the end (same requests, same files).
        assert runner.run(manifest, reference)[0] == 0
        expected = assets(reference / "ledger.sqlite")
    with simulator() as server:
        runner = Runner(tmp_path, server)

        # The ledger runs out of room after some downloads.
        code, stderr = runner.run(images_only, out, file_size_limit=384 * 1024)
        assert_clear_error(code, stderr, "out/ledger.sqlite", "cannot write the ledger",
                           "the run can be resumed")
        before = assets(out / "ledger.sqlite")
        assert 0 < len(before) < 6, "the disk should fill up part-way through the images"
        check_recorded_files(out)

        # Resumed without the limit: the images finish.
        code, stderr = runner.resume(out)
        assert code == 0, stderr
        assert_kept(out, before)

        # Then a video bigger than the space left: the download fails, the ledger (small now) is fine.
        code, stderr = runner.run(manifest, out, file_size_limit=256 * 1024)
        assert_clear_error(code, stderr, "out/assets", "cannot write a download", "File too large",
                           "the run can be resumed")
        video = [key for key, state in states(out / "ledger.sqlite").items() if state != "downloaded"]
        assert len(video) == 1 and states(out / "ledger.sqlite")[video[0]] == "succeeded"
        assert not list((out / "assets").glob(".*.part"))  # the half-written download was removed

        code, stderr = runner.run(manifest, out)
        assert code == 0, stderr
        assert_kept(out, before)
        assert assets(out / "ledger.sqlite") == expected
        assert_charged_once(server, 7)


def _junk(data: bytes) -> bytes:
    return b"this is not an SQLite database\n" * (len(data) // 31 + 1)


def _half(data: bytes) -> bytes:
    return data[:len(data) // 2]


def _zeroed_middle(data: bytes) -> bytes:
    page = 4096
    return data[:2 * page] + bytes(len(data) - 3 * page) + data[-page:]


@pytest.mark.parametrize("corrupt", [_junk, _half, _zeroed_middle], ids=["junk", "cut-in-half", "zeroed-pages"])
def test_a_corrupted_ledger_is_a_clear_error_and_finished_files_stay(tmp_path: Path,
                                                                     corrupt: Callable[[bytes], bytes]) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    out = tmp_path / "out"
    with simulator() as server:
        runner = Runner(tmp_path, server)
        assert runner.run(manifest, out)[0] == 0
        files = {path.name: sha256_file(path) for path in (out / "assets").iterdir()}
        ledger = out / "ledger.sqlite"
        assert query(ledger, "PRAGMA page_size") == [(4096,)] and ledger.stat().st_size >= 4 * 4096
        ledger.write_bytes(corrupt(ledger.read_bytes()))

        for code, stderr in (runner.status(out), runner.status(out, "--json"), runner.resume(out),
                             runner.run(manifest, out)):
            assert_clear_error(code, stderr, "out/ledger.sqlite", "not a usable ledger", "move it away")
        assert {path.name: sha256_file(path) for path in (out / "assets").iterdir()} == files

        # As the message says: move it away and run again. The service knows every submit_id already, so
        # nothing is paid twice, and the files come back identical.
        ledger.rename(out / "ledger.damaged")
        code, stderr = runner.run(manifest, out)
        assert code == 0, stderr
        assert {path.name: sha256_file(path) for path in (out / "assets").iterdir()} == files
        assert_charged_once(server, 6)


def test_a_truncated_or_deleted_asset_is_downloaded_again(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, IMAGES)
    out = tmp_path / "out"
    with simulator() as server:
        runner = Runner(tmp_path, server)
        assert runner.run(manifest, out)[0] == 0
        recorded = query(out / "ledger.sqlite", "SELECT path, sha256, size FROM assets ORDER BY path")
        truncated, deleted = out / recorded[0][0], out / recorded[1][0]
        with truncated.open("r+b") as handle:
            handle.truncate(recorded[0][2] // 3)
        deleted.unlink()

        code, stderr = runner.resume(out)
        assert code == 0, stderr
        downloads = server.stats()["downloads"]
        assert downloads == 6 + 2  # the two damaged files, and only those, were fetched again
        assert query(out / "ledger.sqlite", "SELECT path, sha256, size FROM assets ORDER BY path") == recorded
        for path, sha, size in recorded:
            assert sha256_file(out / path) == sha and (out / path).stat().st_size == size
        events = [row[0] for row in query(out / "ledger.sqlite", "SELECT detail FROM events WHERE state = ?",
                                          ("succeeded",))]
        assert sum("missing or damaged" in (detail or "") for detail in events) == 2
        assert_charged_once(server, 6)
