"""Shared fixtures: manifests written to a temporary folder, and their problems as plain strings."""

from __future__ import annotations

import csv
import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jimeng_batch.errors import SchemaError
from jimeng_batch.intake.manifest import SpreadsheetOptions, load_manifest
from jimeng_batch.intake.plan import PlanSummary, summarize

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent


@pytest.fixture(autouse=True)
def _no_ci_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs in tests must not append their reports to the summary of the CI job running the tests."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture(autouse=True, scope="session")
def _no_real_config_dir_for_the_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fixtures of a wider scope than a test (a module's recorded run) run before the per-test folder is set: they
    get this one, never the user's config folder."""
    saved = os.environ.get("JIMENG_BATCH_CONFIG_DIR")
    os.environ["JIMENG_BATCH_CONFIG_DIR"] = str(tmp_path_factory.mktemp("session-config"))
    yield
    if saved is None:
        os.environ.pop("JIMENG_BATCH_CONFIG_DIR", None)
    else:
        os.environ["JIMENG_BATCH_CONFIG_DIR"] = saved


@pytest.fixture(autouse=True)
def _no_real_config_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The installation's fingerprint is drawn in a folder of the test's own, never in the user's config folder."""
    monkeypatch.setenv("JIMENG_BATCH_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
    for name in [n for n in os.environ if n.startswith("JIMENG_PROTOCOL_") or n == "JIMENG_WEB_ID"]:
        monkeypatch.delenv(name)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token, base URL or proxy from the environment of the machine running the tests."""
    for name in ("JIMENG_SESSIONID", "JIMENG_BASE_URL", "JIMENG_IMAGEX_URL", "HTTP_PROXY", "HTTPS_PROXY",
                 "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write a file under tmp_path (dedented) and return its path; the working directory is tmp_path."""
    monkeypatch.chdir(tmp_path)

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write


def problems(path: Path, options: SpreadsheetOptions | None = None) -> list[str]:
    """Every problem of a manifest as 'location: message' strings (load-time and plan-time alike)."""
    try:
        manifest = load_manifest(path, options)
    except SchemaError as exc:
        return [str(p) for p in exc.problems]
    return [str(p) for p in summarize(manifest).problems]


def summary_of(path: Path, options: SpreadsheetOptions | None = None) -> PlanSummary:
    summary = summarize(load_manifest(path, options))
    assert not summary.problems, [str(p) for p in summary.problems]
    return summary


def png(path: Path, size: tuple[int, int] = (128, 96), color: str = "#336699") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command line in-process: its exit code, stdout and stderr."""
    from jimeng_batch.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def csv_file(path: Path, header: list[str], rows: list[list[str]] | list[tuple[str, ...]]) -> Path:
    """``path`` written as a CSV of ``header`` and ``rows``, quoted the way spreadsheet programs do."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path
