"""One `run` (or `resume`): manifest to ledger to executor, with the simulator, signals, logs and exit code.

The command line calls :func:`execute`; everything that touches the outside world for a run is set up here, so
the executor itself only sees a ledger, a client and tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import sys
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from jimeng_batch import __version__
from jimeng_batch.engine import ledger as states
from jimeng_batch.engine.cache import DEFAULT_TTL, ResultCache, default_cache_path
from jimeng_batch.engine.executor import Executor, RunOptions, RunResult
from jimeng_batch.engine.ledger import LEDGER_NAME, Ledger
from jimeng_batch.engine.progress import Progress
from jimeng_batch.errors import ConfigError, LedgerError, OutputError, SchemaError
from jimeng_batch.intake.expand import KEY_VERSION
from jimeng_batch.intake.manifest import Manifest, SpreadsheetOptions, load_manifest
from jimeng_batch.intake.plan import iter_distinct, plan_web_id, summarize
from jimeng_batch.intake.sharding import Shard, parse_shard
from jimeng_batch.intake.sources import display_path
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.client import JimengClient, RetryableCallError, StopCallError
from jimeng_batch.protocol.imagex import Uploader, imagex_base
from jimeng_batch.protocol.request_spec import RequestSpec
from jimeng_batch.protocol.tokens import Token, load_tokens

log = logging.getLogger("jimeng_batch.run")
T = TypeVar("T")

BASE_URL_ENV = "JIMENG_BASE_URL"
LOG_NAME = "run.log"
SIM_TOKEN = "simulator-demo-session-0000000000"  # the simulator accepts any session; this one is not a secret
PREFLIGHT_MODES = ("warn", "stop", "off")


@dataclass
class RunRequest:
    """Everything a run needs from the command line."""

    manifest: Path
    sheet_options: SpreadsheetOptions = field(default_factory=SpreadsheetOptions)
    out_dir: Path | None = None
    sim: bool = False
    sim_config: Path | None = None
    base_url: str | None = None
    token_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # RunOptions fields given on the command line
    use_cache: bool = True
    cache_ttl: float | None = None
    cache_path: Path | None = None
    preflight: str = "warn"
    quiet: bool = False
    live: bool | None = None
    shard: Shard | None = None  # run only this shard's requests
    fail_on: frozenset[str] | None = None  # final states that fail the run; None: all of FAIL_ON_STATES
    report: bool = True  # write the report files when the run ends


@dataclass
class RunReport:
    """How a run ended."""

    out_dir: Path
    result: RunResult
    planned: int

    @property
    def exit_code(self) -> int:
        return self.result.exit_code


def manifest_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def output_folder(manifest: Manifest, requested: Path | None) -> Path:
    """``--out``, else the manifest's ``output.dir`` (relative to the manifest), else ``out/<manifest name>``."""
    if requested is not None:
        return requested
    if manifest.settings.output_dir:
        return (manifest.path.parent / manifest.settings.output_dir).resolve()
    return Path("out") / manifest.path.stem


def run_options(manifest: Manifest, overrides: dict[str, Any]) -> RunOptions:
    """The manifest's ``limits`` and ``budget``, then the command line's overrides."""
    limits = dict(manifest.settings.limits)
    options = RunOptions()
    for name in ("concurrency", "submits_per_second", "polls_per_second", "downloads_per_second",
                 "uploads_per_second", "max_retries"):
        if name in limits:
            setattr(options, name, limits[name])
    if manifest.settings.budget is not None:
        options.budget = float(manifest.settings.budget)
    for name, value in overrides.items():
        if value is None:
            continue
        if name == "poll_interval":
            # A fixed interval instead of the default back-off (cheap: polls are batched per token).
            options.poll_first = {"image": value, "video": value}
            options.poll_max = {"image": value, "video": value}
        else:
            setattr(options, name, value)
    return options


@contextlib.contextmanager
def file_log(folder: Path) -> Iterator[None]:
    """Log the run to ``run.log`` in the output folder (tokens are never logged: only their masked labels)."""
    try:
        handler = logging.FileHandler(folder / LOG_NAME, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{folder / LOG_NAME}: cannot write the run log ({exc.strerror or exc})") from exc
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("jimeng_batch")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def _tokens(request: RunRequest) -> list[Token]:
    tokens = load_tokens(request.token_file)
    if not tokens and request.sim:
        tokens = [Token(SIM_TOKEN)]
    if not tokens:
        raise ConfigError("no session token: set JIMENG_SESSIONID (one, or several separated by commas) or pass "
                          "--token-file; or rehearse against the built-in simulator with --sim")
    return tokens


def execute(request: RunRequest) -> RunReport:
    """Run a manifest to the end (or to a stop); the ledger says where it stands at every moment."""
    manifest = load_manifest(request.manifest, request.sheet_options)
    out_dir = output_folder(manifest, request.out_dir)
    fingerprint = plan_fingerprint(manifest, request)
    planned = _unchanged_plan(out_dir, fingerprint)
    if planned is None:
        # Check everything before anything is created: an invalid manifest leaves no output folder behind.
        summary = summarize(manifest)
        if summary.problems:
            raise SchemaError(summary.problems)
    tokens = _tokens(request)
    ledger = Ledger.in_folder(out_dir)
    try:
        with file_log(out_dir):
            report = _execute(request, manifest, tokens, out_dir, ledger, fingerprint, planned)
    finally:
        ledger.close()
    if request.report and not report.result.interrupted:
        # An interrupted run is left at once (`jimeng-batch report` writes the report of any ledger later).
        write_run_report(out_dir)
    return report


def write_run_report(out_dir: Path) -> None:
    """The report files at the end of a run; a failure here is a warning, never the run's exit code."""
    from jimeng_batch.outputs.report import (
        write_report,  # pandas, pyarrow and matplotlib: loaded only when needed
    )

    try:
        write_report(out_dir)
    except Exception as exc:  # noqa: BLE001 - the run's outcome is already in the ledger and must not be lost
        print(f"warning: the report could not be written ({type(exc).__name__}: {exc}); "
              f"`jimeng-batch report {display_path(out_dir)}` tries again", file=sys.stderr)


def plan_fingerprint(manifest: Manifest, request: RunRequest) -> str:
    """What the plan depends on, besides local images: the manifest's bytes, its spreadsheets', the options."""
    parts: dict[str, Any] = {
        "manifest": manifest_sha256(manifest.path),
        "rows": {str(job.rows): manifest_sha256(job.rows) for job in manifest.jobs if job.rows and job.rows.is_file()},
        "sheet_options": [request.sheet_options.region, request.sheet_options.type,
                          sorted((k, str(v)) for k, v in request.sheet_options.defaults.items()),
                          request.sheet_options.protocol_profile],
        "shard": str(request.shard) if request.shard is not None else None,
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
        ledger = Ledger(out_dir / LEDGER_NAME)
    except LedgerError:
        return None  # reported properly when the run opens the ledger
    try:
        last = ledger.last_run()
    finally:
        ledger.close()
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


def _execute(request: RunRequest, manifest: Manifest, tokens: list[Token], out_dir: Path, ledger: Ledger,
             fingerprint: str, planned: dict[str, Any] | None) -> RunReport:
    options = run_options(manifest, request.overrides)
    recorded = {
        "manifest": str(request.manifest.resolve()), "sheet_options": {
            "region": request.sheet_options.region, "type": request.sheet_options.type,
            "defaults": dict(request.sheet_options.defaults),
            "protocol_profile": request.sheet_options.protocol_profile,
        },
        "sim": request.sim, "overrides": request.overrides, "use_cache": request.use_cache,
        "tokens": [t.label for t in tokens],
    }
    if request.shard is not None:
        recorded["shard"] = str(request.shard)
    if request.fail_on is not None:
        recorded["fail_on"] = sorted(request.fail_on)
    ledger.begin_run(manifest.display, manifest_sha256(request.manifest), __version__, recorded)
    if planned is None:
        added = ledger.add_planned(item for item in iter_distinct(manifest, request.shard)
                                   if isinstance(item, RequestSpec))
        planned = {"fingerprint": fingerprint, "images": _image_records(manifest)}
    else:
        added = 0
        log.info("the manifest, its spreadsheets and images are unchanged since the last run: not planned again")
    # Recorded once planning is done: a run killed while planning must plan again next time.
    ledger.set_run_options({**recorded, "plan": planned})
    local_files = {sha: Path(path) for path, sha, _size, _mtime in planned["images"]}
    log.info("run of %s into %s: %d new request(s), %d in the ledger", manifest.display, out_dir, added,
             ledger.total())
    with contextlib.ExitStack() as stack:
        base_url = request.base_url or os.environ.get(BASE_URL_ENV)
        if request.sim:
            from jimeng_batch.sim import SimConfig, load_config, running_simulator

            config = load_config(request.sim_config) if request.sim_config else SimConfig()
            server = stack.enter_context(running_simulator(config))
            base_url = server.base_url
            log.info("running against the built-in simulator at %s", base_url)
        cache = None
        if request.use_cache:
            ttl = request.cache_ttl if request.cache_ttl is not None else manifest.settings.cache.get("ttl",
                                                                                                     DEFAULT_TTL)
            path = request.cache_path or _cache_path(manifest) or default_cache_path()
            cache = ResultCache(path, float(ttl))
            stack.callback(cache.close)
        result = _asyncio_run(_run(manifest, ledger, tokens, options, out_dir, base_url, cache, request,
                                   local_files))
    if request.fail_on is not None:
        result.fail_on = request.fail_on
    status = "interrupted" if result.interrupted else ("stopped" if result.stop_reason else "finished")
    ledger.end_run(status, result.exit_code, result.stop_reason)
    return RunReport(out_dir, result, ledger.total())


def _asyncio_run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop where it is installed (a faster event loop: less CPU per request)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _cache_path(manifest: Manifest) -> Path | None:
    path = manifest.settings.cache.get("path")
    return (manifest.path.parent / path).resolve() if path else None


async def _run(manifest: Manifest, ledger: Ledger, tokens: list[Token], options: RunOptions, out_dir: Path,
               base_url: str | None, cache: ResultCache | None, request: RunRequest,
               local_files: dict[str, Path]) -> RunResult:
    region = catalog.REGIONS[manifest.settings.region]
    versions = manifest.settings.protocol
    async with JimengClient(region=region, versions=versions, web_id=plan_web_id(manifest),
                            base_url=base_url) as client:
        uploader = Uploader(client, region, imagex_base(region, base_url, os.environ))
        executor = Executor(ledger, client, tokens, options, out_dir=out_dir, region=region, versions=versions,
                            web_id=plan_web_id(manifest), cache=cache, uploader=uploader, local_files=local_files,
                            upload_scope=region.code if base_url is None else f"{region.code}@{base_url}")
        progress = Progress(ledger.total(), quiet=request.quiet, live=request.live,
                            credits=lambda: executor.admitted_credits)
        executor.on_change = progress.update
        progress.update(Counter(ledger.counts()))
        if request.preflight != "off":
            await _preflight(client, tokens, ledger, executor, request.preflight)
        main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                print("\nstopping: no new submits; finishing what is in flight (Ctrl-C again to quit now)",
                      file=sys.stderr, flush=True)
                executor.interrupt()
            elif main is not None:
                main.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal)
        progress.start()
        try:
            return await executor.run()
        except asyncio.CancelledError:
            executor.interrupted = True
            return RunResult(dict(ledger.counts()), "interrupted", True, executor.admitted_credits, {}, {})
        finally:
            await progress.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)


async def _preflight(client: JimengClient, tokens: list[Token], ledger: Ledger, executor: Executor,
                     mode: str) -> None:
    """Warn, or stop before the first submit, when the accounts' credits cannot cover what is still planned."""
    needed = sum(row.estimated_credits for row in ledger.in_states([states.PLANNED, states.SKIPPED]))
    if needed <= 0:
        return
    total = 0
    for token in tokens:
        try:
            total += (await client.user_credit(token)).total
        except StopCallError as error:
            log.warning("credit check for token %s: %s", token.label, error)
        except RetryableCallError as error:
            log.warning("credit check for token %s failed: %s", token.label, error)
            return  # a balance we could not read is not a reason to stop
    if total >= needed:
        log.info("credits: %d available, about %g needed", total, needed)
        return
    message = f"the plan needs about {needed:g} credits; the account(s) have {total}"
    if mode == "stop":
        print(f"preflight: {message}; not starting (use --preflight warn to run anyway)", file=sys.stderr)
        executor.stop("preflight")
    else:
        print(f"warning: {message}", file=sys.stderr)
        log.warning(message)


def ttl_value(text: str) -> float:
    """A cache TTL from the command line: seconds, or ``forever``."""
    if text == "forever":
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--cache-ttl: '{text}' is not a number of seconds or 'forever'") from None
    if value < 0:
        raise ConfigError("--cache-ttl: must not be negative")
    return value


def ledger_path(out_dir: Path) -> Path:
    path = out_dir / LEDGER_NAME
    if not path.is_file():
        raise ConfigError(f"{display_path(out_dir)}: no ledger here ({LEDGER_NAME}); is it a run's output folder?")
    return path


def resume_request(out_dir: Path, **changes: Any) -> RunRequest:
    """The request of the last run recorded in ``out_dir``, to run it again from where it stopped."""
    ledger = Ledger(ledger_path(out_dir))
    try:
        last = ledger.last_run()
    finally:
        ledger.close()
    if last is None:
        raise ConfigError(f"{display_path(out_dir)}: the ledger records no run to resume")
    recorded = last["options"]
    sheet = recorded.get("sheet_options", {})
    request = RunRequest(
        manifest=Path(recorded["manifest"]),
        sheet_options=SpreadsheetOptions(region=sheet.get("region", catalog.DEFAULT_REGION),
                                         type=sheet.get("type", "image"), defaults=sheet.get("defaults", {}),
                                         protocol_profile=sheet.get("protocol_profile",
                                                                    catalog.DEFAULT_PROTOCOL_PROFILE)),
        out_dir=out_dir, sim=bool(recorded.get("sim")), overrides=dict(recorded.get("overrides", {})),
        use_cache=bool(recorded.get("use_cache", True)),
        shard=parse_shard(recorded["shard"]) if recorded.get("shard") else None,
        fail_on=frozenset(recorded["fail_on"]) if recorded.get("fail_on") is not None else None,
    )
    if not request.manifest.is_file():
        raise ConfigError(f"{request.manifest}: the manifest of the run in {display_path(out_dir)} is gone")
    return replace(request, **{k: v for k, v in changes.items() if v is not None})
