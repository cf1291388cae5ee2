"""One run (or resume): the manifest planned into the ledger, the executor wired once, signals, the log, the result.

The report is not written here: the callers at the top (the command line, the Python API) write it when a run ends.

:func:`execute` runs a manifest to its end from plain code (a script, the command line, or a notebook whose event
loop is already running: the batch then runs on a private loop in a worker thread); :func:`aexecute` is the same
for a caller that is itself async. Everything that touches the outside world for a run is set up here, so the
executor only sees a ledger, a client and tokens; :func:`connected_executor` is the one place that wires them, for
runs and tests alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from jimeng_batch._version import __version__
from jimeng_batch.engine.account_catalog import CatalogRead, account_catalog, catalog_name
from jimeng_batch.engine.cache import ResultCache, default_cache_path
from jimeng_batch.engine.clients import BaseURL, Clients, token_region
from jimeng_batch.engine.config import ONE_SHOT, RunConfig, protocol_choice, resolve_config
from jimeng_batch.engine.doctor import credit_lines
from jimeng_batch.engine.executor import Executor
from jimeng_batch.engine.ledger import LEDGER_NAME, SIMULATOR_ORIGIN, Ledger, PlanRows, is_simulated, same_service
from jimeng_batch.engine.lock import FolderLock
from jimeng_batch.engine.progress import Progress, progress_title
from jimeng_batch.engine.result import RunResult, exit_code
from jimeng_batch.engine.run_log import RunLog, file_log
from jimeng_batch.engine.settle import settle
from jimeng_batch.engine.states import FINAL_STATES, STATES, UNFINISHED_STATES, State
from jimeng_batch.errors import (
    APIError,
    ConfigError,
    LedgerError,
    SchemaError,
    printable,
)
from jimeng_batch.intake.bounds import MAX_REQUESTS_PER_JOB
from jimeng_batch.intake.expand import KEY_VERSION
from jimeng_batch.intake.manifest import Manifest, SpreadsheetOptions, load_manifest, output_folder
from jimeng_batch.intake.offered import check_offered
from jimeng_batch.intake.plan import KnownRow, iter_planned, plan_web_id, summarize, unsupported_live_models
from jimeng_batch.intake.sharding import Shard, parse_shard
from jimeng_batch.intake.sources import display_path
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.constants import ProtocolChoice
from jimeng_batch.protocol.request_spec import RequestSpec
from jimeng_batch.protocol.tokens import Scrubber, Token, for_region, load_tokens

log = logging.getLogger("jimeng_batch.run")
T = TypeVar("T")

SIM_STATE = ".sim-state.sqlite"  # a --sim run's simulator, kept in the output folder
SIM_TOKEN = "simulator-demo-session-0000000000"  # noqa: S105 - the simulator accepts any session; not a secret


def manifest_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_tokens(config: RunConfig, region: str | None = None, *, uses: Mapping[str, Sequence[str]] | None = None,
               default: str = catalog.DEFAULT_REGION, say_unused: bool = True) -> list[Token]:
    """The run's token pool: ``token_file``, else ``JIMENG_SESSIONID``, else (simulator only) a demo session.

    ``region`` given (``--region``, a catalog read): only that region's tokens (its prefix, or none), the others
    said (masked, with their region) and left out; a pool left empty by that is a configuration error (exit 2).
    ``uses`` given (a run): the regions its requests go to, each with the jobs that send there, ``default`` being
    the manifest's region (that of tokens without a prefix). A token of a region no request uses is said and left
    out; a region that no token serves is a configuration error naming it and its jobs, before anything is sent.
    Neither: every token, each for its own region. ``say_unused`` False: the tokens left out are not said (a
    catalog read of one region, with a pool of several).
    """
    loaded = load_tokens(config.token_file)
    source = config.token_file or "JIMENG_SESSIONID"
    if uses is not None and set(uses) != {default}:
        return _pool_for(config, loaded, uses, default, str(source))
    region = default if uses is not None else region  # a run of one region: its tokens, as before jobs had theirs
    tokens, others = for_region(loaded, region) if region is not None else (loaded, [])
    for token in others if say_unused else ():
        _say(f"token {token.label} is for region {token.region}; this manifest's region is {region}: not used")
    if not tokens and others:
        raise ConfigError(f"{source}: no token for region {region}, the manifest's region: every token's prefix "
                          f"names another region ({', '.join(sorted({str(t.region) for t in others}))}); add "
                          f"tokens without a prefix or with '{region}-', or run a manifest of that region")
    if not tokens and config.sim:
        tokens = _sim_tokens([region or default], region or default)
    return _checked_pool(tokens)


def _pool_for(config: RunConfig, loaded: list[Token], uses: Mapping[str, Sequence[str]], default: str,
              source: str) -> list[Token]:
    """The tokens of the regions a run's jobs send to, when they are not only the manifest's (see
    :func:`run_tokens`)."""
    if not loaded and config.sim:
        return _checked_pool(_sim_tokens(list(uses) or [default], default))
    tokens = [token for token in loaded if token_region(token, default) in uses]
    for token in loaded:
        if token not in tokens:
            _say(f"token {token.label} is for region {token_region(token, default)}; no request of this manifest "
                 f"goes there ({', '.join(sorted(uses))}): not used")
    served = {token_region(token, default) for token in tokens}
    unserved = [region for region in uses if region not in served]
    if loaded and unserved:
        def jobs(region: str) -> str:
            names = list(uses[region])
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            return f"region {region} (job{'s' if len(names) > 1 else ''} {shown})"
        bare = f", or without a prefix for {default}" if default in unserved else ""
        raise ConfigError(f"{source}: no token for {'; '.join(jobs(region) for region in unserved)}: add a token "
                          f"with the region's prefix ({', '.join(f'{region}-' for region in unserved)}){bare}, or "
                          "move those jobs to a region the pool serves; nothing was sent")
    return _checked_pool(tokens)


def _sim_tokens(regions: list[str], default: str) -> list[Token]:
    """A rehearsal without tokens: the simulator's demo session, one per region (each its own account)."""
    return [Token(SIM_TOKEN) if region == default else Token(f"{SIM_TOKEN}{region}", region=region)
            for region in regions]


def _checked_pool(tokens: list[Token]) -> list[Token]:
    """A pool that is not empty, its proxied tokens logged (by the proxy's address, never its credentials)."""
    if not tokens:
        raise ConfigError("no session token: set JIMENG_SESSIONID (one, or several separated by commas) or pass "
                          "--token-file; or rehearse against the built-in simulator with --sim")
    for token in tokens:
        if token.proxy_label:
            log.info("token %s goes through the proxy %s", token.label, token.proxy_label)
    return tokens


# -- what the ledger remembers of a run ----------------------------------------------------------------------------


def plan_fingerprint(manifest: Manifest, config: RunConfig) -> str:
    """What the plan depends on, besides local images: the manifest's bytes, its spreadsheets', the options."""
    sheet = config.sheet
    parts: dict[str, Any] = {
        "manifest": manifest_sha256(manifest.path),
        "rows": {str(job.rows): manifest_sha256(job.rows) for job in manifest.jobs if job.rows and job.rows.is_file()},
        "sheet_options": [sheet.region, sheet.type, sorted((k, str(v)) for k, v in sheet.defaults.items()),
                          sheet.protocol_profile],
        "shard": str(config.shard) if config.shard is not None else None,
        "tool": __version__, "key_version": KEY_VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _image_records(manifest: Manifest) -> list[list[Any]]:
    """The local images a plan read, with what tells whether they changed since: size and modification time."""
    records = []
    for path, info in manifest.local_images().items():
        stat = path.stat()
        records.append([str(path), info.sha256, stat.st_size, stat.st_mtime_ns])
    return records


def _unchanged_plan(out_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The last run's plan when nothing it depends on changed, so a resume need not plan again.

    Planning a 100,000-row spreadsheet takes tens of seconds; a resume of an unchanged manifest skips it (the ledger
    already holds every request) and starts submitting at once.
    """
    if not (out_dir / LEDGER_NAME).is_file():
        return None
    try:
        with Ledger.open_existing(out_dir) as ledger:
            last = ledger.last_run()
    except LedgerError:
        return None  # reported properly when the run opens the ledger
    plan = (last or {}).get("options", {}).get("plan")
    if not plan or plan.get("fingerprint") != fingerprint:
        return None
    for path, _sha, size, mtime_ns in plan.get("images", []):
        try:
            stat = Path(path).stat()
        except OSError:
            return None
        if (stat.st_size, stat.st_mtime_ns) != (size, mtime_ns):
            return None
    return dict(plan)


def configure(manifest_path: Path, given: Mapping[str, Any]) -> tuple[Manifest, RunConfig]:
    """The manifest and the configuration of a new run of it: ``given`` (flags or keywords; ``sheet`` for a
    spreadsheet's settings) over the environment, over the manifest, over the defaults."""
    protocol = protocol_choice(given.get("protocol"), os.environ)
    manifest = load_manifest(manifest_path, given.get("sheet") or SpreadsheetOptions(),
                             max_requests=given.get("max_requests") or MAX_REQUESTS_PER_JOB, protocol=protocol)
    return manifest, resolve_config(manifest, {**given, "protocol": protocol}, os.environ)


def configure_resume(out_dir: Path, given: Mapping[str, Any]) -> tuple[Manifest, RunConfig]:
    """The manifest and the whole configuration of the last run recorded in ``out_dir``, with ``given`` (flags
    given again) replacing those fields only."""
    with Ledger.open_existing(out_dir) as ledger:
        last = ledger.last_run()
    if last is None:
        raise ConfigError(f"{display_path(out_dir)}: the ledger records no run to resume")
    options = last["options"]
    manifest_path = Path(options["manifest"])
    if not manifest_path.is_file():
        raise ConfigError(f"{manifest_path}: the manifest of the run in {display_path(out_dir)} is gone")
    stored = RunConfig.from_json(options["config"]) if "config" in options else _legacy_config(options)
    stored = stored.replace(**{name: False for name in ONE_SHOT})  # actions of the run they were given to
    again = {name: value for name, value in given.items() if value is not None}
    if isinstance(again.get("protocol"), ProtocolChoice):
        again["protocol"] = stored.protocol.updated(again["protocol"])  # constants given again replace those only
    config = stored.replace(**again)
    return load_manifest(manifest_path, config.sheet, max_requests=config.max_requests,
                         protocol=config.protocol), config


def _legacy_config(options: Mapping[str, Any]) -> RunConfig:
    """The configuration of a run recorded by jimeng-batch before runs stored theirs whole."""
    sheet = options.get("sheet_options", {})
    values: dict[str, Any] = {name: value for name, value in options.get("overrides", {}).items()
                              if value is not None}
    values |= {"sim": bool(options.get("sim")), "use_cache": bool(options.get("use_cache", True)),
               "sheet": SpreadsheetOptions(region=sheet.get("region", catalog.DEFAULT_REGION),
                                           type=sheet.get("type", "image"), defaults=sheet.get("defaults", {}),
                                           protocol_profile=sheet.get("protocol_profile",
                                                                      catalog.DEFAULT_PROTOCOL_PROFILE))}
    if options.get("shard"):
        values["shard"] = parse_shard(options["shard"])
    if options.get("fail_on") is not None:
        values["fail_on"] = frozenset(State(s) for s in options["fail_on"])
    return RunConfig(**values)


# -- interrupting a run --------------------------------------------------------------------------------------------


class RunControl:
    """Interrupts a running batch from a signal handler or another thread: the first interrupt drains (no new
    submits, what is in flight is finished), the second quits at once with the ledger consistent."""

    def __init__(self) -> None:
        self.interrupts = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: Executor | None = None
        self._task: asyncio.Future[RunResult] | None = None
        self._lock = threading.Lock()

    def attach(self, executor: Executor, task: asyncio.Future[RunResult]) -> None:
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._executor, self._task = executor, task
            pending, self.interrupts = self.interrupts, 0
        for _ in range(pending):  # an interrupt that came while the run was being set up
            self._interrupt()

    def interrupt(self) -> None:
        """Safe from any thread."""
        with self._lock:
            loop = self._loop
            if loop is None:
                self.interrupts += 1
                return
        loop.call_soon_threadsafe(self._interrupt)

    @property
    def quit_now(self) -> bool:
        return self.interrupts >= 2

    def _interrupt(self) -> None:
        self.interrupts += 1
        if self.interrupts == 1 and self._executor is not None:
            print("\nstopping: no new submits; finishing what is in flight (interrupt again to quit now)",
                  file=sys.stderr, flush=True)
            self._executor.interrupt()
        elif self._task is not None:
            self._task.cancel()


# -- wiring --------------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def connected_executor(manifest: Manifest, ledger: Ledger, config: RunConfig, tokens: list[Token], *,
                             out_dir: Path, base_url: BaseURL, cache: ResultCache | None,
                             local_files: Mapping[str, Path], origin: str | Mapping[str, str] | None = None,
                             sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                             clock: Callable[[], float] = time.time) -> AsyncIterator[Executor]:
    """The executor of a run, with its clients and uploaders (one per region and proxy of the pool), connected to
    ``base_url`` (one URL, or by region; None: each region's hosts). ``origin``: where the results come from, one
    for every region or by region (None: each region's API host)."""
    region = catalog.REGIONS[manifest.settings.region]
    versions = manifest.settings.protocol
    async with Clients(region=region, versions=versions, web_id=lambda code: plan_web_id(manifest, code),
                       base_url=base_url, imagex_url=config.imagex_url, limits=config.call_limits(),
                       tokens=tokens) as clients:
        yield Executor(ledger, clients, tokens, config, out_dir=out_dir, region=region, versions=versions,
                       web_id=lambda code: plan_web_id(manifest, code), origin=origin or {}, cache=cache,
                       local_files=local_files, sleep=sleep, clock=clock)


def run_origin(manifest: Manifest, config: RunConfig, region: str | None = None) -> str:
    """Where this run's results (of ``region``, None: the manifest's) come from: the simulator (and its settings'
    fingerprint), or the region's API host."""
    if config.sim:
        settings = json.dumps(dataclasses.asdict(config.simulator_settings()), sort_keys=True, default=str)
        return f"{SIMULATOR_ORIGIN}:{hashlib.sha256(settings.encode()).hexdigest()[:12]}"
    region = region or manifest.settings.region
    return (config.region_base_url(region) or catalog.REGIONS[region].api_base).rstrip("/")


def _check_origins(ledger: Ledger, origins: Sequence[str], config: RunConfig, out_dir: Path) -> None:
    """A folder holds the results of the origins this run sends to (one per region) unless the user allows
    mixing: a rehearsal never joins a live run."""
    others = sorted(o for o in ledger.origins() if not any(same_service(o, origin) for origin in origins))
    if others and not config.allow_mixed_origins:
        held = "the simulator" if all(is_simulated(o) for o in others) else ", ".join(others)
        going = "the simulator" if any(map(is_simulated, origins)) else ", ".join(sorted(set(origins)))
        raise ConfigError(f"{display_path(out_dir)} holds results from {held}; this run goes to {going}, and "
                          "the two would mix: use another --out, or --allow-mixed-origins")


@dataclass
class _Prepared:
    """A run planned into its ledger and recorded, its folder locked and its log open, ready to be driven."""

    manifest: Manifest
    config: RunConfig
    out_dir: Path
    tokens: list[Token]
    ledger: Ledger
    local_files: dict[str, Path]
    origin: str
    resources: contextlib.ExitStack  # the lock, the run log's handler and the ledger, closed by close()
    planned_anew: bool = True  # False: the plan was unchanged since the last run (its cached catalog stands)
    origins: dict[str, str] = dataclasses.field(default_factory=dict)  # region -> where its requests go
    uses: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # region -> the jobs sending there

    def close(self) -> None:
        self.resources.close()

    @property
    def token_given(self) -> bool:
        """A token of the user's (not the simulator's demo session): the account has a catalog of its own."""
        return not all(token.value.startswith(SIM_TOKEN) for token in self.tokens)

    def tokens_of(self, region: str) -> list[Token]:
        """The pool's tokens of ``region``."""
        return [token for token in self.tokens if token_region(token, self.manifest.settings.region) == region]


def _prepare(manifest: Manifest, config: RunConfig, out: Path | None) -> _Prepared:
    """Check the manifest, lock the folder, plan into the ledger, settle it, record the run and open its log."""
    out_dir = output_folder(manifest, out)
    fingerprint = plan_fingerprint(manifest, config)
    planned = _unchanged_plan(out_dir, fingerprint)
    if planned is None:
        # Check everything before anything is created: an invalid manifest leaves no output folder behind.
        with _earlier_rows(out_dir) as earlier:  # rows unchanged since the last plan: not checked again
            summary = summarize(manifest, memo=earlier, counting=False)
        if summary.problems:
            raise SchemaError(summary.problems)
        _refuse_unsupported(config, summary.needs_a_bogus())
        uses = {region: sorted(summary.region_jobs[region]) for region in summary.regions}
        # Work already in flight there (of jobs the manifest may no longer name) is followed with its region's tokens.
        for region, jobs in _regions_to_send(out_dir, UNFINISHED_STATES).items():
            uses.setdefault(region, []).extend(job for job in jobs if job not in uses[region])
    else:
        uses = _regions_to_send(out_dir, [state for state in STATES if state not in FINAL_STATES | {State.REMOVED}])
    default = manifest.settings.region
    tokens = run_tokens(config, uses=uses or {default: []}, default=default)  # nothing left to send: as before
    origins = {region: run_origin(manifest, config, region) for region in uses or [default]}
    origin = origins.get(default) or next(iter(origins.values()))
    scrub = Scrubber(tokens)
    resources = contextlib.ExitStack()
    try:
        ledger = resources.enter_context(Ledger.in_folder(out_dir))
        resources.enter_context(FolderLock(out_dir, "run"))
        _check_origins(ledger, list(origins.values()), config, out_dir)
        ledger.scrub = scrub
        run_log = resources.enter_context(file_log(out_dir, scrub, config.log_format))
        recorded = {"manifest": str(manifest.path.resolve()), "config": config.to_json(),
                    "tokens": [t.label for t in tokens]}
        sha256 = manifest_sha256(manifest.path)
        ledger.begin_run(manifest.display, sha256, __version__, recorded, origin=origin, pid=os.getpid())
        try:
            run_log.begin(ledger.run_id or 0, manifest=manifest.display, manifest_sha256=sha256, version=__version__,
                          origin=", ".join(sorted(set(origins.values()))), started_at=ledger.run_started,
                          tokens=len(tokens))
            planned_anew = planned is None
            if planned is None:
                with ledger.planning():
                    # A plan of the whole manifest forgets the rows it no longer has (a shard's sees only part)
                    rows = ledger.plan_rows(write=True, prune=config.shard is None)
                    added = ledger.add_planned(_new_requests(manifest, config.shard, rows, ledger), distinct=True)
                    rows.commit()
                planned = {"fingerprint": fingerprint, "images": _image_records(manifest), "id": ledger.run_id}
            else:
                added = 0
                log.info("the manifest, its spreadsheets and images are unchanged since the last run: not planned "
                         "again")
            ledger.plan_id = planned.get("id")
            for note in settle(ledger, config, out_dir, planned_anew=planned_anew):
                log.info(note)
                print(note, file=sys.stderr)
            unsent = ledger.unsent_by_model()
            _refuse_unsupported(config, unsupported_live_models(unsent), unsent)
            # Recorded once planning is done: a run killed while planning must plan again next time.
            ledger.set_run_options({**recorded, "plan": planned})
        except BaseException as exc:
            _end_run(ledger, None, _status_of(exc), why=_why(exc))
            raise
    except BaseException:
        resources.close()
        raise
    log.info("run of %s into %s (%s): %d new request(s), %d in the ledger", manifest.display, out_dir, origin,
             added, ledger.total())
    local_files = {sha: Path(path) for path, sha, _size, _mtime in planned["images"]}
    return _Prepared(manifest, config, out_dir, tokens, ledger, local_files, origin, resources, planned_anew,
                     origins, uses)


@contextlib.contextmanager
def _earlier_rows(out_dir: Path) -> Iterator[PlanRows | None]:
    """The spreadsheet rows the folder's ledger remembers from earlier plans (None: no ledger yet)."""
    if not (out_dir / LEDGER_NAME).is_file():
        yield None
        return
    try:
        ledger = Ledger.open_existing(out_dir)
    except LedgerError:
        yield None  # reported properly when the run opens the ledger
        return
    with ledger:
        yield ledger.plan_rows(write=False)


def _new_requests(manifest: Manifest, shard: Shard | None, rows: PlanRows, ledger: Ledger,
                  batch: int = 2000) -> Iterator[RequestSpec]:
    """The distinct requests of the plan, in order, but for those of spreadsheet rows unchanged since an earlier
    plan: those are in the ledger already, and are marked as this plan's as they come (what adding them again
    would do). The same ledger as planning every row again gives, faster."""
    seen: set[bytes] = set()
    known: list[str] = []
    # A sharded plan writes only its shard's requests: its rows are not remembered, since a recalled row's
    # requests must all be in the ledger (one remembered by a whole plan is recalled by a sharded one: its keys
    # are filtered by the shard)
    for item in iter_planned(manifest, shard, rows, remember=shard is None):
        if isinstance(item, KnownRow):
            known.extend(key for key in item.keys if shard is None or shard.contains(key))
            if len(known) >= batch:
                ledger.mark_planned(known)
                known.clear()
        elif isinstance(item, RequestSpec):
            digest = bytes.fromhex(item.key)
            if digest not in seen:
                seen.add(digest)
                yield item
    ledger.mark_planned(known)


def _regions_to_send(out_dir: Path, states: Iterable[State]) -> dict[str, list[str]]:
    """The regions the folder's requests in ``states`` go to, each with its jobs (none: no ledger yet)."""
    if not (out_dir / LEDGER_NAME).is_file():
        return {}
    try:
        with Ledger.open_existing(out_dir) as ledger:
            return ledger.jobs_by_region(states)
    except LedgerError:
        return {}  # reported properly when the run opens the ledger


def _refuse_unsupported(config: RunConfig, models: list[str], unsent: Mapping[str, int] | None = None) -> None:
    """A live run refuses, before anything is sent, models the live service refuses to plain HTTP clients (their
    submits would each be answered 1019), unless --allow-unsupported. The simulator is not the live service."""
    if not models or config.sim or config.allow_unsupported:
        return
    counted = ""
    if unsent is not None:
        count = sum(n for name, n in unsent.items() if (model := catalog.find_model(name)) is not None
                    and model.name in models)
        counted = f" ({count} request(s) not sent)"
    them = "it" if len(models) == 1 else "them"
    raise ConfigError(f"{', '.join(models)}: {catalog.A_BOGUS_REASON}, so a live run does not send {them}{counted}. "
                      "Rehearse with --sim, take the model out of the manifest, or pass --allow-unsupported to try "
                      "anyway (each refused submit costs nothing)")


def _status_of(exc: BaseException) -> str:
    return "interrupted" if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)) else "failed"


def _end_run(ledger: Ledger, result: RunResult | None, status: str, config: RunConfig | None = None,
             why: str | None = None) -> None:
    """Record how the run ended, so no run is ever left marked `running` by anything but a kill; and say it as the
    run log's last line of the run (``why``: what ended a run that has no result)."""
    if result is None:
        code = 130 if status == "interrupted" else 1
        with contextlib.suppress(LedgerError):
            ledger.end_run(status, code, status)
        counts: Mapping[State, int] = {}
        with contextlib.suppress(LedgerError, sqlite3.Error):
            counts = ledger.counts()
        RunLog.end(status, code, {str(state): n for state, n in counts.items()}, why)
        return
    code = exit_code(result, config.fail_on if config else frozenset())
    with contextlib.suppress(LedgerError):
        ledger.end_run(status, code, result.stop_reason)
    RunLog.end(status, code, {str(state): n for state, n in result.counts.items()},
               result.stop_message or result.stop_reason)


def _why(exc: BaseException) -> str:
    """What ended a run by an exception, on one line (scrubbed by the run log like every line)."""
    return "interrupted" if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)) else \
        f"{type(exc).__name__}: {printable(str(exc))}"


async def _run_prepared(prepared: _Prepared, control: RunControl, *, quiet: bool, live: bool | None,
                        signals: bool) -> RunResult:
    try:
        result = await _drive(prepared, control, quiet=quiet, live=live, signals=signals)
    except BaseException as exc:
        _end_run(prepared.ledger, None, _status_of(exc), why=_why(exc))
        raise
    status = "interrupted" if result.interrupted else ("stopped" if result.stop_reason else "finished")
    _end_run(prepared.ledger, result, status, prepared.config)
    return result


async def _drive(prepared: _Prepared, control: RunControl, *, quiet: bool, live: bool | None,
                 signals: bool) -> RunResult:
    """Run the prepared batch to its end: the simulator if asked for, the cache, the executor, progress."""
    config, ledger, out_dir = prepared.config, prepared.ledger, prepared.out_dir
    with contextlib.ExitStack() as stack:
        base_url: BaseURL = config.region_base_url  # each region's calls to its base URL, else to its hosts
        if config.sim:
            from jimeng_batch.sim import running_simulator

            # Its state lives in the output folder, so that a rehearsal killed and resumed goes on like a service.
            server = stack.enter_context(running_simulator(config.simulator_settings(),
                                                           state_path=out_dir / SIM_STATE))
            base_url = server.base_url  # every region's calls
            log.info("running against the built-in simulator at %s", base_url)
        cache = None
        if config.use_cache:
            # A configuration from an older ledger may name no path: the default one, as then.
            cache = ResultCache(config.cache_path or default_cache_path(), config.cache_ttl)
            stack.callback(cache.close)
        async with connected_executor(prepared.manifest, ledger, config, prepared.tokens, out_dir=out_dir,
                                      base_url=base_url, cache=cache, local_files=prepared.local_files,
                                      origin=prepared.origins) as executor:
            progress = Progress(executor.sight, quiet=quiet, live=live,
                                title=progress_title(prepared.manifest.path, out_dir))
            if prepared.token_given and config.account_catalog != "off":
                await _check_account_catalog(prepared, executor)
            if config.claim_daily and not executor.stopping:
                await _claim_daily(executor, ledger)
            if config.preflight != "off" and not executor.stopping:
                await _preflight(executor, ledger, config.preflight)
            task = asyncio.ensure_future(executor.run())
            control.attach(executor, task)
            loop = asyncio.get_running_loop()
            installed = []
            for sig in (signal.SIGINT, signal.SIGTERM) if signals else ():
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, control.interrupt)
                    installed.append(sig)
            progress.start()
            try:
                return await task
            except asyncio.CancelledError:
                if not control.quit_now:
                    raise  # the caller cancelled us: not an interrupt of ours
                executor.interrupted = True
                return RunResult(out_dir, dict(ledger.counts()), "interrupted", True, executor.admitted_credits)
            finally:
                await progress.stop()
                for sig in installed:
                    loop.remove_signal_handler(sig)


async def _check_account_catalog(prepared: _Prepared, executor: Executor) -> None:
    """Refuse, before anything is sent, a manifest that uses what the account is not offered.

    Per region the run sends to: that region's catalog is the output folder's copy while the plan is unchanged (a
    resume checks against what the run it continues was checked against), else read now with the region's first
    token and cached (``catalog.json`` for the manifest's region, ``catalog.REGION.json`` for another); each job is
    checked against its own region's. One that cannot be read is said, and the built-in catalog stands
    (``account_catalog: warn``), or the run stops (``require``).
    """
    config = prepared.config
    default = prepared.manifest.settings.region
    several = len(prepared.uses) > 1
    problems = []
    for region in prepared.uses or [default]:
        tokens = prepared.tokens_of(region)
        if not tokens:
            continue
        read = await account_catalog(executor.client_for(tokens[0]), tokens[0], folder=prepared.out_dir,
                                     use_cached=not prepared.planned_anew and not config.fresh_catalog,
                                     scrub=prepared.ledger.scrub,
                                     name=catalog_name(None if region == default else region))
        if read.copy is None:
            message = printable(read.problem or "the account's catalog could not be read")
            if several:
                message = f"region {region}: {message}"
            if config.account_catalog == "require":
                _say(f"{message}; not starting (--account-catalog warn checks against the built-in catalog "
                     "instead)")
                executor.stop("catalog", message)
                return
            _say(f"warning: {message}; checking against the built-in catalog only")
            continue
        log.info("checking the manifest%s against %s", f"'s {region} jobs" if several else "", read.copy.describe())
        problems += await asyncio.to_thread(check_offered, prepared.manifest, read.copy.catalog,
                                            read.copy.describe(), region if several else None)
    if problems:
        raise SchemaError(problems)


async def _preflight(executor: Executor, ledger: Ledger, mode: str) -> None:
    """Warn, or stop before the first submit, when the accounts' credits cannot cover what is still planned:
    per region, since a region's requests are paid by that region's accounts only.

    A balance that cannot be read is said as such and is not a reason to stop (it is with ``--preflight stop``,
    which asks for the check to hold): the web API's balances are unofficial, and an account is not empty because
    a gateway answered 404.
    """
    needs: dict[str, float] = {}
    for row in ledger.in_states([State.PLANNED, State.SKIPPED]):
        region = executor.region_of(row)
        needs[region] = needs.get(region, 0.0) + row.estimated_credits
    several = len(needs) > 1
    for region, needed in needs.items():
        tokens = [token for token in executor.tokens if executor.clients.region_of(token) == region]
        if needed > 0 and not await _preflight_region(executor, ledger, mode, tokens, needed,
                                                      f" of region {region}" if several else ""):
            return


async def _preflight_region(executor: Executor, ledger: Ledger, mode: str, tokens: list[Token], needed: float,
                            where: str) -> bool:
    """The pre-flight check of one region's requests (``where`` names it when there are several); False when the
    run is stopped."""
    total = 0
    unread: list[str] = []
    for token in tokens:
        try:
            total += (await executor.client_for(token).user_credit(token)).total
        except APIError as error:
            unread.append(token.label)
            # The reason may quote the server's text: no token in it, and nothing that could repaint the terminal.
            _say(printable(ledger.scrub(f"could not read the balance of {token.label}: {error}")))
    read = len(tokens) - len(unread)
    if not unread and total >= needed:
        log.info("credits%s: %d available, about %g needed", where, total, needed)
        return True
    if unread and mode == "stop":
        _say(f"preflight: the balance of {len(unread)} account(s){where} could not be read; not starting (use "
             "--preflight warn to run anyway)")
        executor.stop("preflight")
        return False
    if read and total < needed:
        whose = "the account(s)" if not unread else f"the {read} account(s) whose balance could be read"
        message = f"the plan{where} needs about {needed:g} credits; {whose} have {total}"
        if mode == "stop":
            _say(f"preflight: {message}; not starting (use --preflight warn to run anyway)")
            executor.stop("preflight")
            return False
        _say(f"warning: {message}")
    return True


async def _claim_daily(executor: Executor, ledger: Ledger) -> None:
    """``--claim-daily``: each token's daily claim, before the balances are read; what each gave is logged, and a
    refusal is said without stopping the run or the other claims."""
    for line in await credit_lines(executor.client_for, executor.tokens, ledger.scrub, claim=True):
        if line.ok:
            log.info(line.describe())
            print(line.describe(), file=sys.stderr)
        else:
            _say(line.describe())


def _say(message: str) -> None:
    """A line for the person running it, and the run log."""
    print(message, file=sys.stderr)
    log.warning(message)


def read_catalog_now(config: RunConfig, region: str, versions: catalog.ProtocolVersions, web_id: str
                     ) -> CatalogRead:
    """The account's catalog, read now with the first token of ``config``'s pool, from ``config``'s host (the
    region's, a base URL, or a simulator started for the purpose): for ``validate --live`` and ``models --live``."""
    tokens = run_tokens(config, region, say_unused=False)
    scrub = Scrubber(tokens)

    async def read(base_url: str | None) -> CatalogRead:
        # Through the first token's own proxy, as a run would send it.
        async with Clients(region=catalog.REGIONS[region], versions=versions, web_id=web_id, base_url=base_url,
                           imagex_url=config.imagex_url, limits=config.call_limits(), tokens=tokens[:1]) as clients:
            return await account_catalog(clients.client(tokens[0]), tokens[0], scrub=scrub)

    with contextlib.ExitStack() as stack:
        base_url = config.region_base_url(region)
        if config.sim:
            from jimeng_batch.sim import running_simulator

            base_url = stack.enter_context(running_simulator(config.simulator_settings())).base_url
        return _event_loop_run(read(base_url))


# -- running ---------------------------------------------------------------------------------------------------------


async def aexecute(manifest: Manifest, config: RunConfig, *, out: Path | None = None, quiet: bool = False,
                   live: bool | None = None, control: RunControl | None = None) -> RunResult:
    """Run ``manifest`` with ``config`` to its end (or to a stop) in the running event loop.

    Planning and the report run in a worker thread, so the caller's loop is never blocked for long. Signals are
    left to the caller; ``control`` interrupts the run, and cancelling the task quits at once.
    """
    planning = asyncio.ensure_future(asyncio.to_thread(_prepare, manifest, config, out))
    try:
        prepared = await asyncio.shield(planning)
    except asyncio.CancelledError:
        # The planning thread cannot be stopped: once it is done, end and close the run it recorded.
        planning.add_done_callback(_abandon)
        raise
    try:
        return await _run_prepared(prepared, control or RunControl(), quiet=quiet, live=live, signals=False)
    finally:
        prepared.close()


def _abandon(planning: asyncio.Future[_Prepared]) -> None:
    """A run whose caller went away while it was being planned: recorded as interrupted, and closed."""
    if planning.cancelled() or planning.exception() is not None:
        return
    prepared = planning.result()
    _end_run(prepared.ledger, None, "interrupted")
    prepared.close()


def execute(manifest: Manifest, config: RunConfig, *, out: Path | None = None, quiet: bool = False,
            live: bool | None = None) -> RunResult:
    """:func:`aexecute` for code that is not async.

    With no event loop running (a script, the command line) the batch runs on this thread, and SIGINT / SIGTERM
    drain it. Inside a running loop (Jupyter, IPython) it runs on a private loop in a worker thread; Ctrl-C
    (KeyboardInterrupt) then drains the same way, and a second one quits at once.
    """
    control = RunControl()
    prepared = _prepare(manifest, config, out)
    try:
        if _no_running_loop():
            return _event_loop_run(_run_prepared(prepared, control, quiet=quiet, live=live, signals=True))
        return _in_worker_thread(_run_prepared(prepared, control, quiet=quiet, live=live, signals=False), control)
    finally:
        prepared.close()


def _no_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


def _event_loop_run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop where it is installed (a faster event loop: less CPU per request)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _in_worker_thread(main: Coroutine[Any, Any, RunResult], control: RunControl) -> RunResult:
    """Run ``main`` on a private event loop in a thread; Ctrl-C meanwhile interrupts it through ``control``.

    On the main thread a SIGINT handler of our own stands in while the batch runs (the caller's loop, or
    ``asyncio.run``, would otherwise take the first Ctrl-C for itself); elsewhere a KeyboardInterrupt does the same.
    """
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = _event_loop_run(main)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread, which raises it
            outcome["error"] = exc

    thread = threading.Thread(target=work, name="jimeng-batch-run", daemon=True)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: control.interrupt()) if on_main_thread else None
    try:
        thread.start()
        while thread.is_alive():
            try:
                thread.join()
            except KeyboardInterrupt:
                control.interrupt()
    finally:
        if on_main_thread:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if "error" in outcome:
        raise outcome["error"]
    result: RunResult = outcome["result"]
    return result
