"""The Python API, for notebooks and scripts: the command line's verbs as functions.

Every function takes the same inputs as its command (a manifest path, an output folder) and raises the same
:class:`~jimeng_batch.errors.JimengBatchError` subclasses the command line turns into messages. pandas is imported
only by :func:`results` and :func:`metrics`, so ``import jimeng_batch`` stays light.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jimeng_batch.engine.config import RunConfig, parse_ttl, protocol_choice
from jimeng_batch.engine.result import RunResult
from jimeng_batch.engine.runner import aexecute, configure, configure_resume, execute
from jimeng_batch.engine.states import State
from jimeng_batch.errors import JimengBatchError, Location, Problem, SchemaError
from jimeng_batch.intake.bounds import MAX_REQUESTS_PER_JOB
from jimeng_batch.intake.manifest import Manifest, SpreadsheetOptions, load_manifest
from jimeng_batch.intake.plan import PlanSummary, iter_distinct, iter_plan_records, summarize
from jimeng_batch.intake.sharding import Shard, parse_shard
from jimeng_batch.intake.sources import display_path
from jimeng_batch.protocol.constants import ProtocolChoice
from jimeng_batch.protocol.request_spec import RequestSpec

if TYPE_CHECKING:
    import pandas as pd

PathLike = str | Path
_SHEET_OPTIONS = frozenset({"region", "type", "model", "ratio", "resolution", "protocol_profile"})


def _sheet(options: Mapping[str, Any]) -> SpreadsheetOptions:
    """Spreadsheet settings from keywords named like the command line's options."""
    unknown = sorted(set(options) - _SHEET_OPTIONS)
    if unknown:
        raise TypeError(f"unknown spreadsheet option(s) {', '.join(unknown)}; allowed: "
                        f"{', '.join(sorted(_SHEET_OPTIONS))}")
    return SpreadsheetOptions.from_options(**options)


def _protocol(constants: Mapping[str, str] | ProtocolChoice | None) -> ProtocolChoice:
    """The ``protocol=`` keyword: constants by key (like ``--protocol KEY=VALUE``), or a whole ProtocolChoice."""
    if isinstance(constants, ProtocolChoice):
        return constants
    return ProtocolChoice(flags={str(key): str(value) for key, value in (constants or {}).items()})


def validate(path: PathLike, *, max_requests: int = MAX_REQUESTS_PER_JOB,
             protocol: Mapping[str, str] | ProtocolChoice | None = None, **sheet_options: Any) -> list[Problem]:
    """Every problem of a manifest, each with its location, sorted by place; an empty list when it is fine."""
    choice = protocol_choice(_protocol(protocol), os.environ)
    try:
        manifest = load_manifest(Path(path), _sheet(sheet_options), max_requests=max_requests, protocol=choice)
    except SchemaError as error:
        return list(error.problems)
    except JimengBatchError as error:  # the file cannot be read at all: one problem, at the file
        return [Problem(Location(display_path(Path(path))), str(error).removeprefix(f"{display_path(Path(path))}: "))]
    summary = summarize(manifest)
    return SchemaError(summary.problems).problems if summary.problems else []


@dataclass(frozen=True)
class Plan:
    """What a manifest would send: the summary (counts, credits), and its requests on demand."""

    summary: PlanSummary
    path: Path
    sheet: SpreadsheetOptions
    shard: Shard | None = None
    max_requests: int = MAX_REQUESTS_PER_JOB
    protocol: ProtocolChoice | None = None  # the protocol constants asked for (and the environment's)

    def _manifest(self) -> Manifest:
        return load_manifest(self.path, self.sheet, max_requests=self.max_requests, protocol=self.protocol)

    def requests(self) -> Iterator[RequestSpec]:
        """Every distinct request, in plan order (streamed: a million-row spreadsheet is never held whole)."""
        for item in iter_distinct(self._manifest(), self.shard):
            if isinstance(item, RequestSpec):
                yield item

    def records(self) -> Iterator[dict[str, Any]]:
        """Every distinct request in full, as ``plan --format jsonl`` writes it (the exact HTTP request too)."""
        return iter_plan_records(self._manifest(), self.shard)


def plan(path: PathLike, *, shard: str | Shard | None = None, max_requests: int = MAX_REQUESTS_PER_JOB,
         protocol: Mapping[str, str] | ProtocolChoice | None = None, **sheet_options: Any) -> Plan:
    """Plan a manifest without sending anything; SchemaError (with every problem) when it has any. ``protocol``:
    constants by key, over ``JIMENG_PROTOCOL_<KEY>`` and the manifest's."""
    sheet = _sheet(sheet_options)
    choice = protocol_choice(_protocol(protocol), os.environ)
    manifest = load_manifest(Path(path), sheet, max_requests=max_requests, protocol=choice)
    summary = summarize(manifest)
    if summary.problems:
        raise SchemaError(summary.problems)
    chosen = parse_shard(shard) if isinstance(shard, str) else shard
    if chosen is not None:
        summary = summarize(manifest, shard=chosen)
    return Plan(summary, Path(path), sheet, chosen, max_requests, choice)


def _config_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """Keywords as RunConfig values: paths as Paths, ``fail_on`` as states, ``shard`` and ``cache_ttl`` as text."""
    values = {name: value for name, value in config.items() if name not in _SHEET_OPTIONS}
    sheet = {name: value for name, value in config.items() if name in _SHEET_OPTIONS}
    if sheet:
        values["sheet"] = _sheet(sheet)
    for name in ("sim_config", "token_file", "cache_path"):
        if isinstance(values.get(name), str):
            values[name] = Path(values[name])
    if isinstance(values.get("shard"), str):
        values["shard"] = parse_shard(values["shard"])
    if isinstance(values.get("cache_ttl"), str):
        values["cache_ttl"] = parse_ttl(values["cache_ttl"])
    if values.get("fail_on") is not None:
        values["fail_on"] = frozenset(State(state) for state in values["fail_on"])
    if values.get("protocol") is not None:
        values["protocol"] = _protocol(values["protocol"])
    return values


def _report(result: RunResult, config: RunConfig) -> None:
    """A run's report, unless the config says not to or it was interrupted (an interrupted run is left at once;
    `jimeng-batch report` writes the report of any ledger later)."""
    if config.report and not result.interrupted:
        from jimeng_batch.outputs.report import write_run_report  # pandas and matplotlib: only when needed

        write_run_report(result.out_dir)


def run_batch(manifest: Manifest, config: RunConfig, *, out: Path | None = None, quiet: bool = False) -> RunResult:
    """Run a configured manifest, then write its report: what `run`, `resume` and the command line share."""
    result = execute(manifest, config, out=out, quiet=quiet)
    _report(result, config)
    return result


def run(path: PathLike, *, out: PathLike | None = None, sim: bool = False, quiet: bool = False,
        **config: Any) -> RunResult:
    """Run a manifest to its end, as ``jimeng-batch run`` does; the result has the counts by state.

    ``config`` takes the run options by their :class:`~jimeng_batch.engine.config.RunConfig` names
    (``concurrency=2``, ``budget=50``, ``poll_interval=1``, ``fail_on=["failed"]``, ``cache_ttl="forever"``, ...)
    and, for a spreadsheet, its settings (``region="us"``, ``model=...``). Works inside a running event loop too
    (Jupyter): the batch then runs on a private loop in a worker thread, and Ctrl-C drains it as on the command line.
    """
    manifest, resolved = configure(Path(path), _config_values({"sim": sim or None, **config}))
    return run_batch(manifest, resolved, out=None if out is None else Path(out), quiet=quiet)


async def arun(path: PathLike, *, out: PathLike | None = None, sim: bool = False, quiet: bool = False,
               **config: Any) -> RunResult:
    """:func:`run` for async code: the batch runs in the caller's event loop (cancel the task to stop it)."""
    manifest, resolved = configure(Path(path), _config_values({"sim": sim or None, **config}))
    result = await aexecute(manifest, resolved, out=None if out is None else Path(out), quiet=quiet)
    await asyncio.to_thread(_report, result, resolved)
    return result


def resume(out_dir: PathLike, *, quiet: bool = False, **config: Any) -> RunResult:
    """Continue the last run recorded in ``out_dir`` with its manifest and options (``config`` replaces some)."""
    manifest, resolved = configure_resume(Path(out_dir), _config_values(config))
    return run_batch(manifest, resolved, out=Path(out_dir), quiet=quiet)


def results(out_dir: PathLike) -> pd.DataFrame:
    """The results table of an output folder (one row per request), computed from its ledger."""
    from jimeng_batch.outputs.results import results_table

    return results_table(Path(out_dir))


def metrics(out_dir: PathLike) -> dict[str, Any]:
    """The metrics of an output folder (what ``metrics.json`` holds), computed from its ledger."""
    from jimeng_batch.outputs.metrics import compute_metrics

    return compute_metrics(Path(out_dir))
