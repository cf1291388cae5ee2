"""Runs `validate` and `plan` over every file of a folder in one process (one interpreter start for the lot), the
way the command line would, and prints one JSON line per file and command: exit code, output, seconds; then the
process's peak memory. tests/test_hostile_corpus.py runs it under resource limits."""

from __future__ import annotations

import contextlib
import io
import json
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

from jimeng_batch.cli import main

PER_FILE_SECONDS = 10  # a run longer than this is a hang, reported as such


class Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hang


def run(command: list[str]) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code: Any = 0
    signal.alarm(PER_FILE_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(command)
    except SystemExit as exc:
        code = exc.code
    except Hang:
        code = "hang"
    except BaseException as exc:  # noqa: BLE001 -- what escaped main() is itself the finding
        code = f"escaped: {type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)
    return {"code": code, "out": out.getvalue()[:100_000], "err": err.getvalue()[:100_000],
            "seconds": time.monotonic() - started}


def drive(folder: Path) -> None:
    signal.signal(signal.SIGALRM, _alarm)
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".yaml", ".csv", ".xlsx"):
            continue
        for verb in ("validate", "plan"):
            result = run([verb, path.name])
            print(json.dumps({"file": path.name, "verb": verb, **result}), flush=True)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mib": peak_kib / 1024}), flush=True)


if __name__ == "__main__":
    drive(Path(sys.argv[1]))
