"""The `jimeng-batch` command line. Commands are thin: parse, call the library, print.

Only :func:`main` turns a :class:`JimengBatchError` into a message and an exit code; set ``JIMENG_BATCH_DEBUG=1``
to get the traceback instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import click
import yaml
from click.core import ParameterSource
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from jimeng_batch._version import __version__
from jimeng_batch.engine.config import (
    BASE_URL_ENV,
    CATALOG_MODES,
    FIELD_NAMES,
    MAX_CONCURRENCY,
    MAX_RETRIES,
    PREFLIGHT_MODES,
    RunConfig,
    parse_ttl,
    protocol_choice,
    resolve_config,
)
from jimeng_batch.engine.ledger import LEDGER_NAME, Ledger
from jimeng_batch.engine.lock import FolderLock, holder
from jimeng_batch.engine.poll_schedule import BURST, DEFAULT_POLLS_PER_SECOND
from jimeng_batch.engine.result import EXIT_STOPPED, RunResult, verdict
from jimeng_batch.engine.run_log import LOG_FORMATS
from jimeng_batch.engine.states import FAIL_ON_STATES, IN_FLIGHT_STATES, STATES, State
from jimeng_batch.errors import ConfigError, JimengBatchError, OutputError, SchemaError, describe, printable
from jimeng_batch.intake.bounds import MAX_REQUESTS_PER_JOB
from jimeng_batch.intake.manifest import Manifest, SpreadsheetOptions, load_manifest, output_folder
from jimeng_batch.intake.offered import check_offered
from jimeng_batch.intake.plan import (
    PlanLines,
    PlanSummary,
    a_bogus_warning,
    iter_distinct,
    plan_web_id,
    summarize,
)
from jimeng_batch.intake.schema import MANIFEST_SCHEMA, ROW_SCHEMA, schema_text
from jimeng_batch.intake.sharding import Shard, parse_shard
from jimeng_batch.intake.sources import display_path
from jimeng_batch.outputs import DEFAULT_LICENSE
from jimeng_batch.protocol import catalog, live_catalog
from jimeng_batch.protocol.constants import ProtocolChoice
from jimeng_batch.protocol.constants import resolve as resolve_protocol
from jimeng_batch.protocol.drafts import GENERATE_PATH, default_web_id
from jimeng_batch.protocol.request_spec import RequestSpec

if TYPE_CHECKING:
    from jimeng_batch.engine.account_catalog import CatalogRead
    from jimeng_batch.engine.doctor import Target
    from jimeng_batch.protocol.client import CreditBalance
    from jimeng_batch.protocol.tokens import Token

# The run's engine (httpx, the executor, the service client) and the simulator are imported by the commands that
# use them, not here: `plan` and `validate` start in half the time.

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_ENV = "JIMENG_BATCH_DEBUG"
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130
PLAN_LINES_PER_WRITE = 1_000


def spreadsheet_options(command: F) -> F:
    """Options about reading a manifest: the settings a CSV/XLSX manifest cannot hold, and the bound on a job."""
    options = [
        click.option("--max-requests", type=click.IntRange(min=1), default=None,
                     help=f"The most requests one job (or row) may expand to; a larger matrix is refused before "
                          f"it is expanded (default {MAX_REQUESTS_PER_JOB:,})."),
        click.option("--region", type=click.Choice(list(catalog.REGIONS)), default=catalog.DEFAULT_REGION,
                     show_default=True, help="Region for CSV/XLSX manifests."),
        click.option("--type", "job_type", type=click.Choice(list(catalog.JOB_TYPES)), default="image",
                     show_default=True, help="Job type of CSV/XLSX rows without a `type` column."),
        click.option("--model", default=None, help="Default model for CSV/XLSX rows."),
        click.option("--ratio", type=click.Choice(list(catalog.IMAGE_RATIOS)), default=None,
                     help="Default image ratio for CSV/XLSX rows."),
        click.option("--resolution", type=click.Choice(list(catalog.IMAGE_RESOLUTIONS + catalog.VIDEO_RESOLUTIONS)),
                     default=None, help="Default resolution for CSV/XLSX rows."),
    ]
    for option in reversed(options):
        command = option(command)
    return protocol_options(command)


def protocol_options(command: F) -> F:
    """The protocol constants asked for on the command line (over the environment, the manifest and the profile)."""
    options = [
        click.option("--protocol-profile", type=click.Choice(list(catalog.PROTOCOL_PROFILES)), default=None,
                     help=f"The profile the protocol constants start from, for every manifest (over its "
                          f"`protocol: profile`; default {catalog.DEFAULT_PROTOCOL_PROFILE})."),
        click.option("--protocol", "protocol_assignments", multiple=True, metavar="KEY=VALUE",
                     help="One protocol constant (repeatable), over JIMENG_PROTOCOL_<KEY> and the manifest; "
                          "`jimeng-batch protocol show` lists the keys (default: none)."),
        click.option("--protocol-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="A protocol file (YAML, as `jimeng-batch protocol import` writes it), over the "
                          "environment and the manifest; --protocol wins over it (default: none)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _protocol_choice(kwargs: dict[str, Any], environ: Mapping[str, str] | None) -> ProtocolChoice:
    """The protocol options of this command line; ``environ``: the environment's constants under them (None: left
    to the run, which stores them)."""
    return ProtocolChoice.build(profile=kwargs.pop("protocol_profile", None), file=kwargs.pop("protocol_file", None),
                                assignments=kwargs.pop("protocol_assignments", ()), environ=environ)


def _sheet_options(kwargs: dict[str, Any]) -> SpreadsheetOptions:
    kwargs.pop("max_requests", None)  # a run setting: `run` has taken it; validate and plan take it first
    return SpreadsheetOptions.from_options(
        region=kwargs.pop("region"), type=kwargs.pop("job_type"), model=kwargs.pop("model"),
        ratio=kwargs.pop("ratio"), resolution=kwargs.pop("resolution"))


def _err(text: str) -> None:
    click.echo(text, err=True)


def _raise_problems(summary: PlanSummary) -> None:
    if summary.problems:
        error = SchemaError(summary.problems)
        if summary.more_problems:
            error.args = (f"{error.args[0]}\n... and {summary.more_problems} more problems",)
        raise error


def _max_requests(kwargs: dict[str, Any]) -> int:
    return int(kwargs.get("max_requests") or MAX_REQUESTS_PER_JOB)


def _load_and_check(path: Path, options: SpreadsheetOptions, max_requests: int,
                    protocol: ProtocolChoice) -> tuple[Manifest, PlanSummary]:
    manifest = load_manifest(path, options, max_requests=max_requests, protocol=protocol)
    summary = summarize(manifest)
    _raise_problems(summary)
    return manifest, summary


def _service_options() -> list[Callable[[F], F]]:
    """Where calls go and with which tokens: the options of `run` and `resume` that `models --live` and
    `validate --live` share."""
    return [
        click.option("--sim/--no-sim", default=None, help="Run against the built-in simulator (no account, no "
                                                          "credits); --no-sim sends a resumed rehearsal to the "
                                                          "real host (default: off; resume: as the run was)."),
        click.option("--sim-config", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
                     help="Simulator settings (YAML, see docs/simulator.md) for --sim (default: the simulator's "
                          "own)."),
        click.option("--base-url", default=None, help=f"Send to this host instead of the region's, or per region: "
                                                      f"cn=URL,us=URL (also {BASE_URL_ENV}; default: the "
                                                      "region's host)."),
        click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="Session tokens, one per line (default: JIMENG_SESSIONID, comma-separated)."),
    ]


def service_flags(command: F) -> F:
    for option in reversed(_service_options()):
        command = option(command)
    return command


def _service_config(kwargs: dict[str, Any]) -> RunConfig:
    """The service options given (the environment's base URL where none is), as a RunConfig."""
    values = {name: kwargs.pop(name, None) for name in ("sim", "sim_config", "base_url", "token_file")}
    values["base_url"] = values["base_url"] or os.environ.get(BASE_URL_ENV) or None
    mode = kwargs.pop("account_catalog", None)
    if mode is not None:
        values["account_catalog"] = mode
    return RunConfig(**{name: value for name, value in values.items() if value is not None})


def _only_with_live(live: bool, kwargs: dict[str, Any]) -> None:
    """The service options say where the account's catalog is read: without --live they would be ignored."""
    given = [f"--{name.replace('_', '-')}" for name in ("sim", "sim_config", "base_url", "token_file",
                                                         "account_catalog") if kwargs.get(name) is not None]
    if given and not live:
        raise click.UsageError(f"{', '.join(given)}: only with --live (where the account's catalog is read from)")


def _read_catalog(config: RunConfig, region: str, versions: catalog.ProtocolVersions, web_id: str) -> CatalogRead:
    from jimeng_batch.engine.runner import read_catalog_now

    return read_catalog_now(config, region, versions, web_id)


def _simulator() -> click.Command | None:
    try:
        from jimeng_batch.sim.cli import sim
    except ImportError:  # the simulator is optional for the manifest commands
        return None
    return sim


class _Commands(click.Group):
    """The commands, with `sim` imported only when it is called or the commands are listed (the simulator's server
    stack is a fifth of a second of every start otherwise)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *(["sim"] if _simulator() is not None else [])])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "sim":
            return _simulator()
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="jimeng-batch")
def cli() -> None:
    """Declarative, validated, resumable batches of Jimeng / Dreamina generations."""


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--live", is_flag=True, help="Also check against the account's own catalog (read with the token, "
                                           "from the region's host, --base-url or --sim; default: off).")
@click.option("--account-catalog", type=click.Choice(["warn", "require"]), default=None,
              help="With --live, when the account's catalog cannot be read: warn and check against the built-in "
                   "one (default), or require it (exit 3).")
@service_flags
@spreadsheet_options
def validate(files: tuple[Path, ...], live: bool, **kwargs: Any) -> None:
    """Check manifests (YAML, CSV or XLSX): every problem, each with its location."""
    max_requests = _max_requests(kwargs)
    _only_with_live(live, kwargs)
    service = _service_config(kwargs)
    protocol = _protocol_choice(kwargs, os.environ)
    options = _sheet_options(kwargs)
    failed: list[JimengBatchError] = []
    reads: dict[tuple[str, catalog.ProtocolVersions], CatalogRead] = {}  # one read per region and protocol
    stopped = False
    for path in files:
        try:
            manifest, summary = _load_and_check(path, options, max_requests, protocol)
            against = ""
            if live:
                settings = manifest.settings
                regions = summary.regions or [settings.region]  # each job against its own region's catalog
                problems, described, refused = [], [], False
                for region in regions:
                    place = (region, settings.protocol)
                    if place not in reads:
                        reads[place] = _read_catalog(service, region, settings.protocol, plan_web_id(manifest, region))
                    read = reads[place]
                    if read.copy is None:
                        _err(printable(f"{'' if service.account_catalog == 'require' else 'warning: '}{read.problem}"
                                       + ("" if service.account_catalog == "require"
                                          else "; checked against the built-in catalog only")))
                        refused = refused or service.account_catalog == "require"
                    else:
                        problems += check_offered(manifest, read.copy.catalog, read.copy.describe(),
                                                  region if len(regions) > 1 else None)
                        described.append(read.copy.describe())
                if problems:
                    raise SchemaError(problems)
                if refused:
                    stopped = True
                    continue
                if described:
                    against = f"; offered to the account ({'; '.join(described)})"
        except JimengBatchError as exc:
            failed.append(exc)
            _err(str(exc))
            continue
        click.echo(f"ok: {manifest.display}: {summary.jobs} job(s), {summary.distinct} request(s)"
                   + (f" ({summary.duplicates} duplicate(s) share a submission)" if summary.duplicates else "")
                   + against)
        _warn_unsupported(summary)
    if failed:
        raise click.exceptions.Exit(max(e.exit_code for e in failed))
    if stopped:
        raise click.exceptions.Exit(EXIT_STOPPED)


@cli.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["summary", "json", "jsonl"]), default="summary",
              show_default=True, help="summary: a readable table; json: the summary as JSON; jsonl: every request "
                                      "in full (envelope and query exactly as they would be sent).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the plan here instead of to stdout (written whole or not at all; default: stdout).")
@click.option("--shard", "shard_text", default=None, metavar="K/N",
              help="Only the requests of shard K of N (split by request key; default: every request).")
@click.option("--folder", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="The output folder a run would use (default: the manifest's), to say what its ledger holds that "
                   "the manifest no longer names.")
@spreadsheet_options
def plan(file: Path, fmt: str, out: Path | None, shard_text: str | None, folder: Path | None,
         **kwargs: Any) -> None:
    """Show what FILE would send and what it would cost, without sending anything."""
    max_requests = _max_requests(kwargs)
    protocol = _protocol_choice(kwargs, os.environ)
    options = _sheet_options(kwargs)
    shard = _shard(shard_text)
    if fmt == "jsonl" and out is not None:
        # One pass: records are written as they are found; a problem anywhere discards the file.
        manifest = load_manifest(file, options, max_requests=max_requests, protocol=protocol)
        line = PlanLines(manifest)

        def produce(write: Callable[[str], object]) -> PlanSummary:
            # Lines are written a thousand at a time: one file write per line was a tenth of a large plan's time.
            pending: list[str] = []

            def add(spec: RequestSpec) -> None:
                pending.append(line(spec))
                if len(pending) >= PLAN_LINES_PER_WRITE:
                    write("".join(pending))
                    pending.clear()

            summary = summarize(manifest, add, shard=shard)
            write("".join(pending))
            _raise_problems(summary)
            return summary

        written = _write_file(out, produce)
        _print_summary(written, lambda text: click.echo(text, nl=False), shard)
        _warn_unsupported(written)
        return
    manifest, summary = _load_and_check(file, options, max_requests, protocol)
    _warn_unsupported(summary)
    if shard is not None:
        summary = summarize(manifest, shard=shard)  # the problems were checked on the whole manifest above
    if fmt == "summary":
        _emit(out, lambda write: _print_summary(summary, write, shard))
        _print_set_aside(manifest, shard, folder)
    elif fmt == "json":
        _emit(out, lambda write: write(json.dumps(summary.as_dict() | ({"shard": str(shard)} if shard else {}),
                                                  indent=2, ensure_ascii=False) + "\n"))
    else:
        lines = PlanLines(manifest)
        for item in iter_distinct(manifest, shard):
            if isinstance(item, RequestSpec):
                click.echo(lines(item), nl=False)


def _warn_unsupported(summary: PlanSummary) -> None:
    """Models the live service refuses to plain HTTP clients: said on stderr, the exit code unchanged."""
    models = summary.needs_a_bogus()
    if models:
        _err(a_bogus_warning(models))


def _shard(text: str | None) -> Shard | None:
    return None if text is None else parse_shard(text)


def _fail_on(text: str) -> frozenset[State]:
    """``--fail-on``: a comma list of final states, or ``none``."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    if names == {"none"}:
        return frozenset()
    unknown = sorted(names - set(FAIL_ON_STATES))
    if unknown or not names:
        raise click.BadParameter(f"'{text}': give a comma list of {', '.join(FAIL_ON_STATES)}, or none",
                                 param_hint="--fail-on")
    return frozenset(State(name) for name in names)


def _emit(out: Path | None, produce: Callable[[Callable[[str], object]], object]) -> None:
    if out is None:
        produce(lambda text: click.echo(text, nl=False))
    else:
        _write_file(out, produce)


T = TypeVar("T")


def _write_file(out: Path, produce: Callable[[Callable[[str], object]], T]) -> T:
    """Write ``out`` whole or not at all: through a temporary file renamed into place on success."""
    temporary = out.with_name(out.name + ".tmp")
    try:
        with temporary.open("w", encoding="utf-8", newline="\n") as handle:
            result = produce(handle.write)
        temporary.replace(out)
        return result
    except OSError as exc:
        raise ConfigError(f"{display_path(out)}: cannot be written ({exc.strerror})") from exc
    finally:
        with contextlib.suppress(OSError):  # a read-only place refuses even to remove what is not there
            temporary.unlink(missing_ok=True)


def _print_summary(summary: PlanSummary, write: Callable[[str], object], shard: Shard | None = None) -> None:
    """The plan as a table (the summary of ``shard``'s requests only, when one is given: said in the title)."""
    console = Console(file=io.StringIO(), width=110, color_system=None)
    part = f", shard {shard}" if shard is not None else ""
    table = Table(title=f"Plan for {summary.manifest} (region {summary.region}, protocol {summary.protocol_profile}"
                        f"{part})", title_justify="left", show_footer=True, box=box.SIMPLE)
    table.add_column("type", footer="total")
    table.add_column("model")
    table.add_column("resolution")
    table.add_column("requests", justify="right", footer=str(summary.distinct))
    table.add_column("images", justify="right", footer=str(summary.images))
    table.add_column("est. credits", justify="right", footer=_credits(summary.estimated_credits))
    table.add_column("credits/image", justify="right", footer=_per_image(summary.credits_per_image))
    for group, count in sorted(summary.groups.items()):
        images = summary.group_images.get(group)
        table.add_row(*group, str(count), "–" if images is None else str(images),
                      _credits(summary.group_credits[group]), _per_image(summary.group_credits_per_image(group)))
    console.print(table)
    lines = [f"{summary.jobs} job(s); {summary.distinct} distinct request(s)"
             + (f" in shard {shard} (the requests whose key falls in part {shard.index} of {shard.count})"
                if shard is not None else "")]
    if summary.duplicates:
        lines[0] += f"; {summary.duplicates} duplicate(s) share a submission (the cache rule)"
    if len(summary.regions) > 1:
        lines.append("by region: " + "; ".join(f"{region} {summary.region_requests[region]} request(s), "
                                               f"{_credits(summary.region_credits[region])} credits"
                                               for region in summary.regions))
    if summary.images:
        lines.append(f"images expected: {summary.images} (each request's `images`, else the service's default of "
                     f"{catalog.DEFAULT_IMAGES_PER_REQUEST})")
    lines.append(f"reference images to upload: {summary.local_images} distinct file(s)"
                 + (f", {summary.local_image_bytes} bytes" if summary.local_images else ""))
    lines.append("credits are estimates from the catalog's cost table (override with `costs:` in the manifest); "
                 "credits/image: a request's credits over its images")
    assert isinstance(console.file, io.StringIO)
    write(console.file.getvalue() + "\n".join(lines) + "\n")


def _print_set_aside(manifest: Manifest, shard: Shard | None, folder: Path | None) -> None:
    """What a run into the folder would set aside: requests its ledger holds, never sent, the plan no longer names."""
    folder = folder if folder is not None else output_folder(manifest, None)
    if not (folder / LEDGER_NAME).is_file():
        return
    named = {bytes.fromhex(item.key) for item in iter_distinct(manifest, shard) if isinstance(item, RequestSpec)}
    with Ledger.open_existing(folder) as ledger:
        unplanned = ledger.unplanned_count(lambda key: bytes.fromhex(key) in named)
    if unplanned:
        click.echo(f"{unplanned} request(s) in {display_path(folder)}'s ledger are no longer in the manifest; a run "
                   "sets them aside (never sent)")


def _credits(value: float) -> str:
    # 12 significant digits: `g` alone wrote a million credits as 1e+06
    return f"{value:.12g}"


def _per_image(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"  # three figures, but never an exponent


@cli.command()
@click.option("--row", is_flag=True, help="The schema of one spreadsheet row instead of the manifest's (default: "
                                          "the manifest's).")
def schema(row: bool) -> None:
    """Print the manifest JSON Schema (draft 2020-12), for editors and other tools."""
    click.echo(schema_text(ROW_SCHEMA if row else MANIFEST_SCHEMA), nl=False)


@cli.command()
@click.option("--type", "kind", type=click.Choice(["image", "video"]), default=None,
              help="Only this kind (default: both).")
@click.option("--region", type=click.Choice(list(catalog.REGIONS)), default=None,
              help="Only models offered here (with --live: the account's region; default cn).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (default: a table).")
@click.option("--live", is_flag=True, help="The account's own catalog (read with the token) beside the built-in "
                                           "one: new, missing and changed models (default: off).")
@service_flags
def models(kind: str | None, region: str | None, as_json: bool, live: bool, **kwargs: Any) -> None:
    """List the models and what each supports."""
    _only_with_live(live, kwargs)
    service = _service_config(kwargs)
    if live:
        _live_models(service, region or catalog.DEFAULT_REGION, kind, as_json)
        return
    rows: list[dict[str, Any]] = []
    for model in catalog.ALL_MODELS:
        if (kind and model.kind != kind) or (region and region not in model.regions):
            continue
        row: dict[str, Any] = {"name": model.name, "kind": model.kind, "key": model.key,
                               "resolutions": list(model.resolutions), "regions": sorted(model.regions)}
        if isinstance(model, catalog.VideoModel):
            row |= {"durations": list(model.durations), "benefit_type": model.benefit_type,
                    "credits_per_second": dict(model.cost_per_second)}
        else:
            row |= {"ratios": list(catalog.IMAGE_RATIOS), "credits": dict(model.cost), "max_images": model.max_images,
                    "intelligent_ratio": model.intelligent_ratio}
        # Whether a plain HTTP client can use it on the live service (runs refuse it unless --allow-unsupported).
        row["needs_a_bogus"] = catalog.needs_a_bogus(model)
        row["note"] = model.note
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(show_lines=False)
    for column in ("name", "kind", "key", "resolutions", "durations (s)", "images", "est. credits", "regions",
                   "live", "note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        durations = row.get("durations")
        images = "" if "max_images" not in row else (f"1-{row['max_images']}"
                                                     + (", intelligent ratio" if row["intelligent_ratio"] else ""))
        table.add_row(row["name"], row["kind"], row["key"], ", ".join(row["resolutions"]),
                      "" if durations is None else _span(durations), images, _costs(row), ", ".join(row["regions"]),
                      "needs a_bogus" if row["needs_a_bogus"] else "ok", row["note"])
    Console(width=190).print(table)
    click.echo("est. credits: the catalog's estimate per request by resolution (images), per second of video by "
               "resolution (videos); a manifest's `costs:` overrides it")
    if any(row["needs_a_bogus"] for row in rows):
        click.echo(f"needs a_bogus: {catalog.A_BOGUS_REASON}; runs refuse these models on the live service unless "
                   "--allow-unsupported")


def _costs(row: dict[str, Any]) -> str:
    """A model's estimated credits as the table shows them: "1k 1, 4k 2" (per request), "720p 2, 1080p 3/s"."""
    video = "credits_per_second" in row
    costs: dict[str, float] = row["credits_per_second"] if video else row["credits"]
    known = [(resolution, costs[resolution]) for resolution in row["resolutions"] if resolution in costs]
    if not known:
        return "?"
    return ", ".join(f"{resolution} {value:g}" for resolution, value in known) + ("/s" if video else "")


def _offered_row(model: live_catalog.OfferedModel) -> dict[str, Any]:
    """What a catalog offers of one model, as plain data (the account's text is the server's: printed escaped)."""
    row: dict[str, Any] = {"key": model.key, "name": model.name, "kind": model.kind}
    if isinstance(model, live_catalog.OfferedVideoModel):
        return row | {"resolutions": list(model.resolutions), "ratios": list(model.ratios),
                      "durations": list(model.durations), "fps": list(model.fps),
                      "benefit_type": model.benefit_type}
    return row | {"resolutions": {r.name: list(r.ratios) for r in model.resolutions}, "counts": list(model.counts),
                  "intelligent_ratio": model.intelligent_ratio, "feats": list(model.feats),
                  "input_image_limit": dict(model.input_image_limits), "benefit_type": model.benefit_type}


def _live_models(service: RunConfig, region: str, kind: str | None, as_json: bool) -> None:
    """``models --live``: the account's catalog beside the built-in one."""
    versions = catalog.PROTOCOL_PROFILES[catalog.DEFAULT_PROTOCOL_PROFILE]
    read = _read_catalog(service, region, versions, default_web_id(region))
    if read.copy is None:
        _err(printable(read.problem or "the account's catalog could not be read"))
        raise click.exceptions.Exit(EXIT_STOPPED)
    copy = read.copy

    def wanted(model: live_catalog.OfferedModel) -> bool:
        return kind is None or model.kind == kind

    diff = live_catalog.compare(live_catalog.builtin_catalog(region), copy.catalog)
    new = [m for m in diff.new if wanted(m)]
    missing = [m for m in diff.missing if wanted(m)]
    changed = [c for c in diff.changed if kind is None or catalog.find_model(c.key) is None
               or catalog.find_model(c.key).kind == kind]  # type: ignore[union-attr]
    same = [key for key in diff.same if wanted(copy.catalog.find(key))]  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps({
            "host": copy.host, "account": copy.account, "read_at": copy.read_at, "region": region,
            "new": [_offered_row(m) for m in new], "missing": [_offered_row(m) for m in missing],
            "changed": [{"key": c.key, "builtin_name": c.builtin_name, "account_name": c.account_name,
                         "changes": [{"field": f.field, "builtin": list(f.builtin), "account": list(f.account),
                                      "added": list(f.added), "removed": list(f.removed)} for f in c.changes]}
                        for c in changed],
            "same": same,
            "offered": [_offered_row(m) for m in copy.catalog.models if wanted(m)],
        }, indent=2))
        return
    table = Table(title=printable(f"{copy.describe()}, beside the built-in catalog (region {region})"),
                  title_justify="left", box=box.SIMPLE)
    for column in ("change", "kind", "key", "built-in name", "account's name", "what differs"):
        table.add_column(column, overflow="fold")
    for model in new:
        table.add_row("new", model.kind, printable(model.key), "", printable(model.name), _offers(model))
    for model in missing:
        table.add_row("missing", model.kind, model.key, model.name, "", "not offered to this account")
    for change in changed:
        found = copy.catalog.find(change.key)
        differs = "\n".join(printable(f"{f.field}: {_change_text(f)}") for f in change.changes)
        table.add_row("changed", found.kind if found else "", change.key, change.builtin_name,
                      printable(change.account_name), differs)
    Console(width=160).print(table)
    click.echo(f"{len(new)} new, {len(missing)} missing, {len(changed)} changed, {len(same)} as built in")


def _offers(model: live_catalog.OfferedModel) -> str:
    if isinstance(model, live_catalog.OfferedVideoModel):
        return printable(f"resolutions {', '.join(model.resolutions)}; durations "
                         f"{_span(list(model.durations))}; ratios {', '.join(model.ratios)}")
    return printable(f"resolutions {', '.join(model.resolution_names)}; counts "
                     f"{', '.join(map(str, model.counts))}")


def _change_text(change: live_catalog.FieldChange) -> str:
    parts = []
    if change.added:
        parts.append("+" + ", +".join(change.added))
    if change.removed:
        parts.append("-" + ", -".join(change.removed))
    return " ".join(parts) or f"{', '.join(change.builtin)} -> {', '.join(change.account)}"


def _span(values: list[int]) -> str:
    if len(values) > 3 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ", ".join(str(v) for v in values)


@cli.group()
def protocol() -> None:
    """The protocol constants: what is sent, where each value comes from, and importing them from a browser."""


@protocol.command("show")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (default: a table).")
@protocol_options
def protocol_show(file: Path | None, as_json: bool, **kwargs: Any) -> None:
    """The effective protocol constants (of FILE's manifest, if given) and where each came from: the profile, the
    manifest's `protocol:`, a protocol file, the environment, a flag."""
    choice = _protocol_choice(kwargs, os.environ)
    if file is None:
        effective = resolve_protocol(choice)
    else:
        effective = load_manifest(file, SpreadsheetOptions(), protocol=choice).settings.effective_protocol()
    shown = effective.as_dict() | ({"manifest": display_path(file)} if file is not None else {})
    if as_json:
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    title = f"Protocol constants (profile {effective.profile})" + (f" for {display_path(file)}" if file else "")
    table = Table(title=title, title_justify="left", box=box.SIMPLE)
    for column in ("constant", "value", "from"):
        table.add_column(column, overflow="fold")
    for key, entry in shown["constants"].items():
        value = entry["value"]
        table.add_row(key, printable(value) if value is not None else "(derived)", printable(entry["source"]))
    Console(width=160).print(table)
    click.echo("web_id (derived): one per installation and token (a plan shows a stand-in); accept_language "
               "(derived): the region's")


MAX_CAPTURE_BYTES = 64 * 1024 * 1024  # a HAR of a long browsing session; anything larger is not a capture


@protocol.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=Path("protocol.yaml"),
              show_default=True, help="The protocol file to write (whole or not at all).")
def protocol_import(file: Path, out: Path) -> None:
    """Read the constants of a request copied from the browser (a HAR file, "copy as cURL (bash)" or "copy as
    fetch"), compare its draft with the one this tool builds, and write them as a protocol file. The Cookie header
    is never read."""
    from jimeng_batch.protocol import capture

    shown = display_path(file)
    try:
        if file.stat().st_size > MAX_CAPTURE_BYTES:
            raise ConfigError(f"{shown}: larger than {MAX_CAPTURE_BYTES // (1024 * 1024)} MiB; save only the "
                              "generate request")
        text = file.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot be read ({exc.strerror or exc})") from None
    request = capture.parse_capture(text, shown)
    extracted = capture.extract_constants(request)
    where = urlsplit(request.url)
    click.echo(printable(f"{shown}: a {request.form} capture of {request.method} {where.netloc}{where.path}"))
    click.echo("the Cookie header was not read" + (" (the capture has one; it is not in any output)"
                                                   if request.had_cookie else ""))
    if not extracted.values:
        raise ConfigError(f"{shown}: the request carries none of the protocol constants (capture a request to "
                          f"/mweb/, such as {GENERATE_PATH})")
    current = resolve_protocol(None).versions
    table = Table(box=box.SIMPLE, title="constants", title_justify="left")
    for column in ("constant", "captured", f"default ({catalog.DEFAULT_PROTOCOL_PROFILE})", ""):
        table.add_column(column, overflow="fold")
    for key, value in extracted.values.items():
        default = getattr(current, key)
        table.add_row(key, printable(value), printable(default) if default is not None else "(derived)",
                      "" if default == value else "changed")
    Console(width=160).print(table)
    for key, why in extracted.skipped.items():
        click.echo(printable(f"not taken: {key}: {why}"))
    versions = current.with_overrides(extracted.values)
    try:
        spec, differences = capture.compare_draft(request, versions)
    except ConfigError as exc:
        click.echo(printable(f"draft not compared: {exc}"))
    else:
        click.echo(f"draft compared with what jimeng-batch builds for the same parameters ({spec.type}, "
                   f"{spec.model}, {spec.resolution}; ids and times left out): {len(differences)} difference(s)")
        for difference in differences:
            detail = {"missing": f"captured {_shown(difference.captured)}, not sent by jimeng-batch",
                      "extra": f"sent by jimeng-batch ({_shown(difference.ours)}), not in the capture",
                      "different": f"captured {_shown(difference.captured)}, jimeng-batch {_shown(difference.ours)}"}
            click.echo(printable(f"  {difference.kind:<9} {difference.path}: {detail[difference.kind]}"))
    header = (f"# jimeng-batch protocol file, imported from {file.name} ({request.form} capture). Use it as\n"
              f"# `protocol: {{file: {out.name}}}` in a manifest, or --protocol-file {out.name}.\n"
              "# The Cookie header was not read; the webId is not kept (each token sends its own).\n")
    body = yaml.safe_dump(dict(extracted.values), sort_keys=False, allow_unicode=True, width=1000)
    _write_file(out, lambda write: write(header + body))
    click.echo(f"wrote {display_path(out)}: use it as `protocol: {{file: {out.name}}}` in a manifest, or "
               f"--protocol-file {display_path(out)}")


def _shown(value: Any) -> str:
    return describe(json.dumps(value, ensure_ascii=False), 80)


def _mib(size: int) -> str:
    """A byte count as help texts say it (16 MiB, 256 KiB)."""
    return f"{size // (1024 * 1024)} MiB" if size >= 1024 * 1024 else f"{size // 1024} KiB"


def run_options_flags(command: F) -> F:
    """Options shared by `run` and `resume`: where to send, with which tokens, how fast, and the cache.

    Each is a field of :class:`RunConfig` (named by the option's parameter). None of them has a default here: an
    option not given is left to the environment, the manifest or the default (`run`), or to what the resumed run
    had (`resume`), so the defaults shown are those of RunConfig.
    """
    defaults = RunConfig()
    rate = click.FloatRange(min=0, min_open=True)
    options = [
        *_service_options(),
        click.option("--account-catalog", type=click.Choice(list(CATALOG_MODES)), default=None,
                     help="With a token, check the manifest against the account's own catalog first: warn (when "
                          "it cannot be read, say so and check against the built-in one), require (stop then), "
                          f"off (default {defaults.account_catalog})."),
        click.option("--fresh-catalog", is_flag=True, default=None,
                     help="Read the account's catalog again even when the plan is unchanged (default: off, the "
                          "output folder's catalog.json is used)."),
        click.option("--concurrency", type=click.IntRange(1, MAX_CONCURRENCY), default=None,
                     help=f"Jobs in flight per token (manifest limits.concurrency; default {defaults.concurrency}, "
                          "the document's rule)."),
        click.option("--submits-per-second", type=rate, default=None,
                     help="Most submits per second, all tokens together (calls per second; "
                          "limits.submits_per_second; default: no limit)."),
        click.option("--polls-per-second", type=rate, default=None,
                     help="The poll budget per token: batched poll calls per second on average, a burst of "
                          f"{BURST:g} allowed (calls per second; limits.polls_per_second; default "
                          f"{DEFAULT_POLLS_PER_SECOND:g}, one call per {1 / DEFAULT_POLLS_PER_SECOND:g} s; with "
                          "--poll-interval: no limit)."),
        click.option("--downloads-per-second", type=rate, default=None,
                     help="Most file downloads started per second (downloads per second; "
                          "limits.downloads_per_second; default: no limit)."),
        click.option("--uploads-per-second", type=rate, default=None,
                     help="Most reference-image uploads per second (uploads per second; "
                          "limits.uploads_per_second; default: no limit)."),
        click.option("--max-retries", type=click.IntRange(0, MAX_RETRIES), default=None,
                     help=f"Tries after the first for a failed call (a count; limits.max_retries; default "
                          f"{defaults.max_retries}); the wait between tries: {defaults.backoff_base:g} s doubling "
                          f"to {defaults.backoff_max:g} s, or the service's Retry-After up to "
                          f"{defaults.retry_after_cap:g} s."),
        click.option("--poll-interval", type=rate, default=None,
                     help="Poll every S seconds (seconds; default: timed to each job's expected end, from the "
                          "service's forecast and the completion times seen this run)."),
        click.option("--call-deadline", type=rate, default=None,
                     help=f"Seconds an API call may take in all (default {defaults.call_deadline:g})."),
        click.option("--max-answer-bytes", type=click.IntRange(min=1), default=None,
                     help=f"The largest API answer read, in bytes (default {defaults.max_answer_bytes}, "
                          f"{_mib(defaults.max_answer_bytes)})."),
        click.option("--download-floor", type=rate, default=None,
                     help=f"Seconds any download may take (default {defaults.download_floor:g}), plus one per "
                          "--download-rate bytes."),
        click.option("--download-rate", type=click.IntRange(min=1), default=None,
                     help=f"Bytes per second a download may be as slow as, beyond the floor (default "
                          f"{defaults.download_rate}, {_mib(defaults.download_rate)}/s)."),
        click.option("--max-asset-bytes", type=click.IntRange(min=1), default=None,
                     help=f"The largest file downloaded, in bytes; a larger one fails its request (default "
                          f"{defaults.max_asset_bytes}, {_mib(defaults.max_asset_bytes)})."),
        click.option("--budget", type=click.FloatRange(min=0), default=None,
                     help="Stop admitting requests once the estimated spend of the run would pass this many "
                          "credits (manifest budget; default: no budget)."),
        click.option("--claim-daily/--no-claim-daily", default=None,
                     help="Make each token's daily credit claim before the pre-flight credit check, and log what "
                          "each gave (kept by resume; default: off)."),
        click.option("--preflight", type=click.Choice(list(PREFLIGHT_MODES)), default=None,
                     help=f"Check the accounts' credits first: warn, or stop when they cannot cover the plan; off "
                          f"(default {defaults.preflight})."),
        click.option("--cache/--no-cache", "use_cache", default=None,
                     help="Use and fill the result cache shared between runs (default: on)."),
        click.option("--cache-ttl", default=None, help="Seconds a cached result may be reused, or 'forever' "
                                                       "(manifest cache.ttl; default 300)."),
        click.option("--cache-path", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="The result cache database (manifest cache.path; default "
                          "~/.cache/jimeng-batch/cache.sqlite)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress display (default: shown on a terminal)."),
        click.option("--fail-on", default=None, metavar="STATES",
                     help=f"Final states that make the run exit 1: a comma list of {', '.join(FAIL_ON_STATES)} "
                          "(default: all of them), or none."),
        click.option("--report/--no-report", default=None,
                     help="Write the report files when the run ends (default: on)."),
        click.option("--log-format", type=click.Choice(list(LOG_FORMATS)), default=None,
                     help="The lines of run.log: text (for people) or json (one object a line, for machines); "
                          f"kept by resume (default {defaults.log_format})."),
        click.option("--allow-mixed-origins", is_flag=True, default=None,
                     help="Let results of another origin (the simulator, another host) share the output folder "
                          "(default: refused)."),
        click.option("--allow-unsupported", is_flag=True, default=None,
                     help="Send models the live service refuses to plain HTTP clients anyway (Seedance 2.0: ret "
                          "1019, a browser-made a_bogus is needed; `jimeng-batch models` flags them). Kept by "
                          "resume (default: refused)."),
        click.option("--retry-failed", is_flag=True, default=None,
                     help="Plan again the requests that ended `failed` (they are paid for again; said first; "
                          "default: off)."),
        click.option("--retry-blocked", is_flag=True, default=None,
                     help="Plan again the requests that ended `blocked` (content filtered: paid for again; "
                          "default: off)."),
        click.option("--retry-invalid", is_flag=True, default=None,
                     help="Plan again the requests that ended `invalid` (parameters refused; default: off)."),
        click.option("--resubmit-lost", is_flag=True, default=None,
                     help="Send again the requests the service never showed (`lost`; paid for again; default: "
                          "off)."),
        click.option("--reassign-orphans", is_flag=True, default=None,
                     help="Give up waiting for accounts missing from the pool: look for their requests on every "
                          "token, and send again what is found nowhere (default: off, they wait)."),
        click.option("--verify", is_flag=True, default=None,
                     help="Check every downloaded file's sha256 against the ledger, and download again what "
                          "differs (default: off)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


# Options that are not run settings: the display belongs to this terminal, not to the run.
_DISPLAY_OPTIONS = frozenset({"quiet"})


def _given(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The run settings given on this command line (and only those), as RunConfig values."""
    context = click.get_current_context()
    given: dict[str, Any] = {}
    for name in list(kwargs):
        if name in _DISPLAY_OPTIONS or name not in FIELD_NAMES:
            continue
        value = kwargs.pop(name)
        if value is None or context.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        if name == "cache_ttl":
            value = parse_ttl(value)
        elif name == "fail_on":
            value = _fail_on(value)
        given[name] = value
    return given


def _finish_run(result: RunResult, config: RunConfig) -> None:
    """The end-of-run lines: the counts by state, what waits or stopped, why the exit code is what it is, and where
    to look (report.html, when the run wrote one)."""
    counts = ", ".join(f"{state} {result.counts[state]}" for state in STATES if result.counts.get(state))
    _err(f"{display_path(result.out_dir)}: {counts or 'nothing to do'}")
    for label, waiting in result.waiting.items():
        _err(f"{waiting} request(s) waiting for account {label}: give its token again, or --reassign-orphans to "
             "look for them elsewhere")
    if result.stop_reason:
        _err(f"stopped early: {result.stop_message or result.stop_reason}")
    # The exit-code policy is the command line's: the result says what happened, --fail-on what counts as failure.
    judged = verdict(result, config.fail_on)
    if judged.code and result.last_error:  # what went wrong last, also when --quiet showed no display
        _err(f"last error: {result.last_error}")
    _err(printable(judged.line()))
    report = result.out_dir / "report.html"  # written by outputs/report.py
    if config.report and not result.interrupted and report.is_file():  # an interrupted run writes none
        _err(f"report: {display_path(report)}")
    raise click.exceptions.Exit(judged.code)


@cli.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="The output folder (default: the manifest's output.dir, else out/<manifest name>).")
@click.option("--shard", "shard_text", default=None, metavar="K/N",
              help="Run only shard K of N: the requests whose key falls in it (stable when rows are added; "
                   "default: every request).")
@run_options_flags
@spreadsheet_options
def run(file: Path, out: Path | None, shard_text: str | None, quiet: bool, **kwargs: Any) -> None:
    """Run FILE: submit, poll and download every request, resumably. Run it again to continue."""
    from jimeng_batch.api import run_batch
    from jimeng_batch.engine.runner import configure

    protocol = _protocol_choice(kwargs, None)  # the run adds the environment's and stores them
    given = _given(kwargs) | {"sheet": _sheet_options(kwargs), "shard": _shard(shard_text), "protocol": protocol}
    manifest, config = configure(file, given)
    _finish_run(run_batch(manifest, config, out=out, quiet=quiet), config)


@cli.command()
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@run_options_flags
@protocol_options
def resume(out_dir: Path, quiet: bool, **kwargs: Any) -> None:
    """Continue the last run recorded in OUT_DIR where it stopped: the same manifest and options, any option given
    again replacing that one."""
    from jimeng_batch.api import run_batch
    from jimeng_batch.engine.runner import configure_resume

    again = _protocol_choice(kwargs, None)  # the environment of this shell changes nothing that was stored
    given = _given(kwargs) | ({"protocol": again} if again != ProtocolChoice() else {})
    manifest, config = configure_resume(out_dir, given)
    _finish_run(run_batch(manifest, config, out=out_dir, quiet=quiet), config)


# -- accounts --------------------------------------------------------------------------------------------------------


def _accounts(file: Path | None, region: str | None, kwargs: dict[str, Any]) -> tuple[RunConfig, Target,
                                                                                          list[Token]]:
    """The configuration (connection flags over the environment, over FILE's settings), the target (with the
    protocol constants a run of FILE would send, flags and environment included) and the pool: with ``--region``,
    that region's tokens only; without, every token, each checked against its own region's hosts (its prefix's,
    else FILE's region, else cn)."""
    from jimeng_batch.engine.doctor import Target
    from jimeng_batch.engine.runner import configure, run_tokens

    choice = _protocol_choice(kwargs, None)  # the environment's constants go under it in configure / below
    given = _given(kwargs) | {"protocol": choice}
    manifest = None
    if file is not None:
        manifest, config = configure(file, given | {"sheet": SpreadsheetOptions.from_options(region=region)})
        target = Target.of(manifest, region)
    else:
        config = resolve_config(None, given, os.environ)
        target = Target.of(None, region, resolve_protocol(protocol_choice(choice, os.environ)).versions)
    return config, target, run_tokens(config, region)


def _cell(value: object) -> Text:
    """A table cell shown as it is (never read as rich markup: labels and reasons may hold brackets)."""
    return Text(str(value))


def _table_text(table: Table) -> str:
    console = Console(file=io.StringIO(), width=110, color_system=None)
    console.print(table)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def _credit_cells(balance: CreditBalance | None) -> list[Text]:
    if balance is None:
        return [_cell("?")] * 4
    return [_cell(balance.gift), _cell(balance.purchase), _cell(balance.vip), _cell(balance.total)]


def _problem_lines(rows: list[tuple[str, tuple[str, ...]]]) -> None:
    for label, problems in rows:
        for problem in problems:
            click.echo(f"  {label}: {problem}")


@cli.command()
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--region", type=click.Choice(list(catalog.REGIONS)), default=None,
              help="The region the tokens are used for (default: FILE's, else cn).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output, for CI (default: a table).")
@service_flags
@protocol_options
def doctor(file: Path | None, region: str | None, as_json: bool, **kwargs: Any) -> None:
    """Check every token before credits are spent: alive, region, credits, today's claim, and whether the service
    accepts the protocol constants (FILE's, when given). Exit 0: every token can generate; 1: some; 3: none."""
    from jimeng_batch.engine.doctor import doctor as run_doctor

    config, target, tokens = _accounts(file, region, kwargs)
    report = run_doctor(config, target, tokens)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        constants = ", ".join(f"{name} {value}" for name, value in target.constants().items())
        table = Table(title=_cell(printable(f"Accounts (region {target.region}; {constants})")), title_justify="left",
                      box=box.SIMPLE)
        for column in ("token", "region", "alive", "gift", "purchase", "vip", "total", "claim", "protocol",
                       "can generate"):
            table.add_column(column, justify="right" if column in ("gift", "purchase", "vip", "total") else "left")
        for check in report.checks:
            alive = {True: "yes", False: "no", None: "?"}[check.alive]
            if check.alive_by == "user_credit":
                alive += " (balance)"
            table.add_row(_cell(check.label), _cell(check.region), _cell(alive), *_credit_cells(check.balance),
                          _cell(check.claim), _cell(check.protocol), _cell("yes" if check.can_generate else "no"))
        click.echo(_table_text(table), nl=False)
        _problem_lines([(check.label, check.problems) for check in report.checks])
        click.echo(f"{sum(c.can_generate for c in report.checks)} of {len(report.checks)} token(s) can generate")
    if report.stale:
        _err(f"stopped for safety: {report.stale}")
    raise click.exceptions.Exit(report.exit_code)


@cli.command()
@click.option("--claim", is_flag=True, help="Make each token's daily claim first (credit_receive), and say what it "
                                            "gave; a refusal stops no other token's claim (default: off).")
@click.option("--region", type=click.Choice(list(catalog.REGIONS)), default=None,
              help="The region the tokens are used for (default cn).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output, for CI (default: a table).")
@service_flags
@protocol_options
def credits(claim: bool, region: str | None, as_json: bool, **kwargs: Any) -> None:
    """The balance of every token of the pool, and with --claim the daily claim across it.
    Exit 0: every token answered; 1: some did not (or their claim was refused); 3: none did."""
    from jimeng_batch.engine.doctor import credits as run_credits
    from jimeng_batch.engine.doctor import pool_exit_code

    config, target, tokens = _accounts(None, region, kwargs)
    lines = run_credits(config, target, tokens, claim=claim)
    code = pool_exit_code(line.ok for line in lines)
    if as_json:
        click.echo(json.dumps({"region": target.region, "tokens": [line.as_dict() for line in lines],
                               "exit_code": code}, indent=2, ensure_ascii=False))
        raise click.exceptions.Exit(code)
    table = Table(title=f"Credits (region {target.region})", title_justify="left", box=box.SIMPLE)
    for column in ("token", "gift", "purchase", "vip", "total", "claim"):
        table.add_column(column, justify="left" if column in ("token", "claim") else "right")
    for line in lines:
        table.add_row(_cell(line.label), *_credit_cells(line.balance), _cell(line.claim_outcome or line.claim_state))
    click.echo(_table_text(table), nl=False)
    _problem_lines([(line.label, line.problems) for line in lines])
    raise click.exceptions.Exit(code)


@cli.command()
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (default: text).")
def status(out_dir: Path, as_json: bool) -> None:
    """Counts by state, and what is in flight, in OUT_DIR's ledger."""
    with Ledger.open_existing(out_dir) as ledger:
        counts = ledger.counts()
        in_flight = [
            {"key": row.key, "state": row.state, "job": row.job, "model": row.model, "token": row.token,
             "history_record_id": row.history_record_id}
            for row in ledger.in_states(sorted(IN_FLIGHT_STATES))
        ]
        last = ledger.last_run()
    if as_json:
        shown = {k: v for k, v in (last or {}).items() if k != "options"}
        if last:
            shown["described"] = _run_status(out_dir, last)
        click.echo(json.dumps({"counts": counts, "total": sum(counts.values()), "in_flight": in_flight,
                               "last_run": shown}, indent=2))
        return
    click.echo(f"{display_path(out_dir)}: {sum(counts.values())} request(s)")
    for state, count in counts.items():
        click.echo(f"  {state:<11} {count}")
    if last:
        click.echo(f"last run: {_run_status(out_dir, last)}")
    if in_flight:
        click.echo("in flight:")
        for row in in_flight:
            history = row["history_record_id"] or "-"
            click.echo(f"  {row['key']}  {row['state']:<10} {row['model']:<18} history {history}  "
                       f"token {row['token'] or '-'}")


def _run_status(out_dir: Path, last: dict[str, Any]) -> str:
    """How the last run stands: its recorded status, or, for a run recorded as running whose process holds the
    folder no more, that it was interrupted (killed)."""
    status = str(last["status"])
    if status == "running" and holder(out_dir) is None:
        pid = last.get("pid")
        return f"interrupted (process {pid} is gone)" if pid else "interrupted (its process is gone)"
    return status + (f" ({last['stop_reason']})" if last.get("stop_reason") else "")


@cli.command()
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--no-summary", is_flag=True, help="Do not append report.md to $GITHUB_STEP_SUMMARY (default: "
                                                 "append it when that is set).")
def report(out_dir: Path, no_summary: bool) -> None:
    """Write OUT_DIR's results (parquet, CSV, JSONL), metrics.json, report.md and report.html from its ledger."""
    from jimeng_batch.outputs.report import write_report

    with Ledger.open_existing(out_dir), FolderLock(out_dir, "report"):
        written = write_report(out_dir, step_summary=not no_summary)
    metrics = written.metrics
    click.echo(f"{display_path(out_dir)}: {metrics['successRequests']} of {metrics['totalRequests']} succeeded, "
               f"{metrics['failedRequests']} failed")
    for path in written.files:
        click.echo(f"  {display_path(path)}")


@cli.command()
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--to", "to", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The dataset folder to write (required).")
@click.option("--format", "fmt", type=click.Choice(["imagefolder", "videofolder"]), default="imagefolder",
              show_default=True, help="imagefolder: the images; videofolder: the videos (same layout).")
@click.option("--force", is_flag=True, help="Replace an earlier export in the folder (default: refuse a folder "
                                            "that is not empty).")
@click.option("--license", "license_id", default=DEFAULT_LICENSE, show_default=True,
              help="The dataset card's license (a Hub license identifier, such as cc-by-4.0).")
@click.option("--allow-simulated", is_flag=True, help="Export a simulated run (noise images; the card says so; "
                                                      "default: refused).")
@click.option("--allow-mixed-origins", is_flag=True, help="Export results of several origins (simulated and live, "
                                                          "or several hosts) together (default: refused).")
def export(out_dir: Path, to: Path, fmt: str, force: bool, license_id: str, allow_simulated: bool,
           allow_mixed_origins: bool) -> None:
    """Export OUT_DIR's downloaded files as a Hugging Face dataset folder with metadata.jsonl and a card."""
    from jimeng_batch.outputs.export import export_dataset

    done = export_dataset(out_dir, to, fmt, force=force, allow_mixed_origins=allow_mixed_origins,
                          allow_simulated=allow_simulated, license=license_id)
    click.echo(f"{display_path(done.folder)}: {done.files} file(s) from {done.requests} request(s)")
    if done.other_kind:
        other = "videofolder" if fmt == "imagefolder" else "imagefolder"
        click.echo(f"{done.other_kind} request(s) of the other kind left out (export them with --format {other})")
    if done.left_out:
        click.echo(f"fields without a value for any file, left out of the metadata: {', '.join(done.left_out)}")


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--into", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The new output folder to merge into (required).")
@click.option("--no-report", is_flag=True, help="Do not write the report files of the merged folder (default: "
                                                "write them).")
@click.option("--allow-mixed-origins", is_flag=True, help="Merge folders whose results come from different origins "
                                                          "(default: refused).")
@click.option("--allow-different", is_flag=True, help="Merge folders of different manifests (by the manifest's "
                                                      "sha256; default: refused).")
def merge(inputs: tuple[Path, ...], into: Path, no_report: bool, allow_mixed_origins: bool,
          allow_different: bool) -> None:
    """Merge output folders (the shards of a manifest) into one: ledgers and files, checked; then its report,
    titled with the manifest's name."""
    from jimeng_batch.outputs.merge import merge_folders

    done = merge_folders(list(inputs), into, allow_mixed_origins=allow_mixed_origins,
                         allow_different=allow_different)
    click.echo(f"{display_path(into)}: {done.requests} request(s), {done.files} file(s), {done.runs} run(s) "
               f"from {done.inputs} folder(s)" + (f"; {done.duplicates} request(s) were in more than one"
                                                   if done.duplicates else ""))
    if not no_report:
        from jimeng_batch.outputs.report import write_report

        write_report(into, title=done.title)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; the one place errors become messages and exit codes."""
    try:
        # Outside standalone mode click returns the code of a `click.exceptions.Exit` instead of raising it.
        result = cli.main(args=argv, prog_name="jimeng-batch", standalone_mode=False)
        if isinstance(result, int) and result:
            sys.exit(result)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_INVALID if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Abort:
        _err("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except JimengBatchError as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        _err("\n".join(printable(line) for line in str(exc).split("\n")))  # a quoted name cannot break a line
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # `jimeng-batch plan --format jsonl | head` closes the pipe early; that is not an error.
        sys.stderr.close()
        sys.exit(0)
    except OSError as exc:
        # The file system refused (read-only, full, not allowed) somewhere no step turned it into its own message:
        # still the environment, not a bug. What was written before stays (every write is atomic).
        if os.environ.get(DEBUG_ENV):
            raise
        where = display_path(Path(os.fsdecode(exc.filename))) if exc.filename else "a file"
        _err(printable(f"{where}: cannot be written or read ({exc.strerror or exc}); nothing written before is "
                       "lost"))
        sys.exit(OutputError.exit_code)
    except Exception as exc:  # a bug, not bad input: say so plainly rather than dump a traceback
        if os.environ.get(DEBUG_ENV):
            raise
        _err(f"internal error: {type(exc).__name__}: {exc}\n(set {DEBUG_ENV}=1 to see the traceback, and please "
             "report it)")
        sys.exit(1)
