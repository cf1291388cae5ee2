"""``jimeng-batch sim ...``: the simulator's commands (attached to the main CLI with ``main.add_command(sim)``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from jimeng_batch.errors import ConfigError
from jimeng_batch.sim.codes import PROFILES
from jimeng_batch.sim.config import SimConfig, load_config
from jimeng_batch.sim.server import serve_forever

__all__ = ["sim"]

_DEFAULTS = SimConfig()  # what the help texts give as defaults


@click.group(name="sim")
def sim() -> None:
    """A local server that speaks the Jimeng web protocol, for tests, demos and benchmarks."""


@sim.command(name="serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on; 0 picks a free one.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file with simulator settings (see docs/simulator.md; default: the built-in ones).")
@click.option("--profile", type=click.Choice(PROFILES),
              help=f"Error-code profile; overrides the config's (default: the config's, else {_DEFAULTS.profile}).")
@click.option("--seed", type=int,
              help=f"Random seed; overrides the config's (default: the config's, else {_DEFAULTS.seed}).")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Keep accounts and records in this file, and find them there again when started anew "
                   "(default: in memory only).")
def serve(host: str, port: int, config_path: Path | None, profile: str | None, seed: int | None,
          state_path: Path | None) -> None:
    """Serve until stopped. The first line printed is the base URL."""
    try:
        config = load_config(config_path) if config_path else SimConfig()
        if profile is not None:
            config = config.with_profile(profile)
        if seed is not None:
            config = replace(config, seed=seed)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc

    def announce(base_url: str) -> None:
        click.echo(base_url)
        click.echo(f"jimeng-batch simulator ({config.profile} profile, seed {config.seed}); Ctrl+C stops it",
                   err=True)

    try:
        serve_forever(config, host, port, announce, state_path=state_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
