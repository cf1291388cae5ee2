"""``jimeng-batch sim serve``: the first line is the base URL, the server answers, and bad configs are clean errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from click.testing import CliRunner

from jimeng_batch.sim.cli import sim

SERVE = "from jimeng_batch.sim.cli import sim; sim(prog_name='sim')"


def test_serve_prints_its_base_url_first_and_serves(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text("seed: 3\nfaults:\n  busy_probability: 0\n", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, "serve", "--port", "0", "--config", str(config), "--profile", "live"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        # The socket is listening before the URL is printed, so a request made at once waits in the backlog.
        with httpx.Client(base_url=base_url, timeout=10) as client:
            stats = client.get("/_sim/stats").json()
        assert stats["profile"] == "live"
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert "live profile, seed 3" in err


def test_bad_config_is_a_clean_error(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text("seed: 1\nfualts: {}\n", encoding="utf-8")
    result = CliRunner().invoke(sim, ["serve", "--config", str(config)])
    assert result.exit_code == 1
    assert "sim.yaml:2:1: fualts: unknown key" in result.output
    assert "Traceback" not in result.output


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(sim, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--config", "--profile", "--seed"):
        assert option in result.output
