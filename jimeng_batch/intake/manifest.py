"""Manifests: a YAML file of settings and jobs, or a CSV/XLSX file of one request per row.

Loading checks the YAML against ``schemas/manifest.schema.json`` and turns it into :class:`Manifest`: settings
plus job definitions. :meth:`Manifest.templates` then yields one :class:`Template` per job (or per spreadsheet row
of a job), with defaults merged in, reference images read and hashed, and every value's location kept, ready for
the pure expansion in :mod:`jimeng_batch.intake.expand`. Spreadsheet rows are streamed, never held all at once.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from jimeng_batch.errors import ConfigError, Location, ManifestError, Problem, SchemaError, describe
from jimeng_batch.intake.bounds import MAX_REQUESTS_PER_JOB
from jimeng_batch.intake.images import ImageProblem, LocalImage, inspect_image
from jimeng_batch.intake.schema import (
    MANIFEST_SCHEMA,
    ROW_SCHEMA,
    did_you_mean,
    load_schema,
    schema_errors,
    validate_row,
)
from jimeng_batch.intake.sources import (
    SheetChunk,
    SheetRow,
    SourceMap,
    display_path,
    is_spreadsheet,
    iter_sheet_chunks,
    load_yaml,
    read_header,
)
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.catalog import JobType
from jimeng_batch.protocol.constants import EffectiveProtocol, ProtocolChoice, resolve
from jimeng_batch.protocol.request_spec import ImageInput, Source

# Fields whose value may be a list that multiplies the requests (the matrix), in expansion order.
MATRIX_FIELDS: tuple[str, ...] = (
    "prompt", "negative_prompt", "model", "ratio", "resolution", "sample_strength", "seed", "duration", "aspect_ratio",
    "images",
)
IMAGE_FIELDS = ("references", "first_frame", "end_frame")
VAR_COLUMN_PREFIX = "var."
LIST_SEPARATOR = "|"
# Spreadsheet cells are text; these columns hold numbers.
_INTEGER_COLUMNS = frozenset({"seed", "count", "duration", "fps", "images"})
_NUMBER_COLUMNS = frozenset({"sample_strength", "reference_strength"})
_BOOLEAN_COLUMNS = frozenset({"intelligent_ratio"})
_BOOLEAN_CELLS: Mapping[str, bool] = {"true": True, "false": False}  # what a yes/no cell may say
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
MAX_UNKNOWN_COLUMNS = 20  # each said; past this, how many more
_SCALAR_COLUMNS = frozenset({"type", "region", "count", "fps", "reference_strength", "first_frame", "end_frame",
                             "intelligent_ratio"})

Spot = Callable[[int | None], Location]
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """Manifest-wide settings."""

    region: str = catalog.DEFAULT_REGION
    protocol_profile: str = catalog.DEFAULT_PROTOCOL_PROFILE
    protocol: catalog.ProtocolVersions = catalog.PROTOCOL_PROFILES[catalog.DEFAULT_PROTOCOL_PROFILE]
    protocol_sources: Mapping[str, str] = field(default_factory=dict)  # constant -> where its value came from
    costs: catalog.CostTable = field(default_factory=catalog.CostTable)
    limits: Mapping[str, float] = field(default_factory=dict)
    cache: Mapping[str, Any] = field(default_factory=dict)
    output_dir: str | None = None
    budget: float | None = None
    max_requests: int = MAX_REQUESTS_PER_JOB  # the bound on one job's expansion (--max-requests)

    def effective_protocol(self) -> EffectiveProtocol:
        """The protocol constants this manifest is sent with, and where each came from."""
        return EffectiveProtocol(self.protocol_profile, self.protocol, self.protocol_sources)


@dataclass
class Template:
    """A job, or one spreadsheet row of a job: its field values before the matrix is expanded.

    ``fields`` holds the merged values (defaults, then the job, then the row); a matrix field may hold a list.
    ``spots`` says where each field's value (or list item) was written, for located problems.
    """

    job: str
    job_index: int
    type: JobType
    source: Source
    fields: dict[str, Any]
    spots: dict[str, Spot]
    vars: dict[str, Any] = field(default_factory=dict)
    var_spots: dict[str, Spot] = field(default_factory=dict)
    anchor: Location | None = None  # where the job (or row) itself starts
    # Fields (and `var:NAME` variables) the schema rejected and that were left out so that the rules can check
    # the rest: a rule about a field in here would be about a value that is not the user's.
    rejected: frozenset[str] = frozenset()

    def locate(self, name: str, index: int | None = None) -> Location:
        spot = self.spots.get(name) or self.var_spots.get(name)
        if spot is not None:
            return spot(index)
        assert self.anchor is not None
        return self.anchor


@dataclass
class JobDef:
    """One job of a manifest, as written (with the manifest's defaults merged in)."""

    name: str
    index: int
    type: JobType
    fields: dict[str, Any]
    spots: dict[str, Spot]
    vars: dict[str, Any]
    var_spots: dict[str, Spot]
    anchor: Location
    base_dir: Path
    rows: Path | None = None
    rows_location: Location | None = None
    rejected: frozenset[str] = frozenset()


@dataclass
class Manifest:
    """A loaded, schema-checked manifest. Iterate :meth:`templates` for the work it describes."""

    path: Path
    display: str
    settings: Settings
    jobs: list[JobDef]
    load_problems: list[Problem] = field(default_factory=list)
    _images: dict[Path, LocalImage | ImageProblem] = field(default_factory=dict)

    def templates(self) -> Iterator[Template | Problem]:
        """Every job (or spreadsheet row of a job) as a template, or the problems found reading it."""
        return self.items(self.row_template)

    def items(self, per_row: Callable[[JobDef, SheetRow, str], Iterable[T]],
              per_chunk: Callable[[JobDef, SheetChunk, str], Iterable[T]] | None = None
              ) -> Iterator[Template | Problem | T]:
        """Like :meth:`templates`, with each spreadsheet row given to ``per_row`` (the job, the row and the sheet
        as shown): planning takes a shortcut for rows like ones it has seen (:meth:`row_template` otherwise).
        ``per_chunk``: the rows are given to it a chunk of records at a time instead (a count's faster reading)."""
        yield from self.load_problems
        for job in self.jobs:
            if job.rows is None:
                yield from self._with_images(
                    Template(job.name, job.index, job.type, Source(self.display, job.name, job.index),
                             dict(job.fields), dict(job.spots), dict(job.vars), dict(job.var_spots), job.anchor,
                             job.rejected),
                    job.base_dir,
                )
            else:
                yield from self._row_templates(job, per_row, per_chunk)

    def _row_templates(self, job: JobDef, per_row: Callable[[JobDef, SheetRow, str], Iterable[T]],
                       per_chunk: Callable[[JobDef, SheetChunk, str], Iterable[T]] | None
                       ) -> Iterator[Template | Problem | T]:
        assert job.rows is not None
        shown = display_path(job.rows)
        if not job.rows.is_file():
            yield Problem(job.rows_location or job.anchor,
                          f"rows file '{display_path(job.rows)}' not found")
            return
        try:
            header = read_header(job.rows)
        except ManifestError as exc:
            yield Problem(job.rows_location or job.anchor, str(exc).removeprefix(f"{shown}: "))
            return
        header_problems = check_header(header, shown)
        yield from header_problems
        if header_problems:
            return
        any_rows = False
        try:
            for chunk in iter_sheet_chunks(job.rows):
                if not any_rows:
                    any_rows = any(chunk.row(number, values) is not None for number, values in chunk.records)
                if per_chunk is not None:
                    yield from per_chunk(job, chunk, shown)
                    continue
                for number, values in chunk.records:
                    row = chunk.row(number, values)
                    if row is not None:
                        yield from per_row(job, row, shown)
        except SchemaError as exc:  # the file cannot be read past here (broken quoting): said with the rest
            yield from exc.problems
            return
        if not any_rows:
            # Like `jobs: []` in YAML: a batch of nothing is more likely a mistake (the wrong sheet) than meant.
            yield Problem(Location(shown, row=2), "no request rows below the header; add a row per request")

    def row_template(self, job: JobDef, row: SheetRow, shown: str) -> Iterator[Template | Problem]:
        """One spreadsheet row of ``job`` as a template, or the problems found reading it."""
        values, problems = read_row(row, shown)
        yield from problems
        # The row's other cells are still checked: its cells with a problem are left out (and their rules).
        rejected = {p.location.column_name for p in problems if p.location.column_name}
        if "type" in rejected:
            return  # which fields apply, and what they mean, depends on it
        for name in rejected:
            values.pop(name, None)
        rejected = {f"var:{n[len(VAR_COLUMN_PREFIX):]}" if n.startswith(VAR_COLUMN_PREFIX) else n for n in rejected}
        fields = dict(job.fields)
        spots = dict(job.spots)
        variables = dict(job.vars)
        var_spots = dict(job.var_spots)
        row_type = values.pop("type", job.type)
        for name, value in values.items():
            spot = _cell_spot(shown, row.number, name)
            if name.startswith(VAR_COLUMN_PREFIX):
                variables[name[len(VAR_COLUMN_PREFIX):]] = value
                var_spots[name[len(VAR_COLUMN_PREFIX):]] = spot
            else:
                fields[name] = value
                spots[name] = spot
        source = Source(self.display, job.name, job.index, row.number)
        anchor = Location(shown, row=row.number)
        template = Template(job.name, job.index, row_type, source, fields, spots, variables, var_spots, anchor,
                            job.rejected | frozenset(rejected))
        yield from self._with_images(template, job.rows.parent if job.rows else job.base_dir)

    def _with_images(self, template: Template, base_dir: Path) -> Iterator[Template | Problem]:
        """Read the template's local images (once per file per manifest); unusable ones are problems."""
        problems: list[Problem] = []
        for name in IMAGE_FIELDS:
            if name not in template.fields:
                continue
            value = template.fields[name]
            if name == "references":
                default_strength = float(template.fields.get("reference_strength", catalog.DEFAULT_REFERENCE_STRENGTH))
                resolved = []
                for i, item in enumerate(value):
                    image = self._image(item, base_dir, template.locate(name, i), problems, default_strength)
                    if image is not None:
                        resolved.append(image)
                template.fields[name] = tuple(resolved)
            else:
                template.fields[name] = self._image(value, base_dir, template.locate(name), problems, None)
        if problems:
            yield from problems
        else:
            yield template

    def _image(self, item: Any, base_dir: Path, where: Location, problems: list[Problem],
               default_strength: float | None) -> ImageInput | None:
        if isinstance(item, ImageInput):
            return item
        strength = default_strength
        if isinstance(item, Mapping):
            if "strength" in item:
                strength = float(item["strength"])
            if "uri" in item:
                return ImageInput("uri", str(item["uri"]), strength=strength)
            text = str(item["image"])
        else:
            text = str(item)
            if text.startswith(catalog.EXPLICIT_URI_PREFIX):
                return ImageInput("uri", text[len(catalog.EXPLICIT_URI_PREFIX):], strength=strength)
            if text.startswith(catalog.IMAGE_URI_PREFIXES):
                return ImageInput("uri", text, strength=strength)
        try:
            path = (base_dir / text).resolve()
        except (OSError, ValueError):  # a name too long, or with a NUL, to resolve: inspecting it says which
            path = base_dir / text
        if path not in self._images:
            try:
                self._images[path] = inspect_image(path)
            except ImageProblem as exc:
                self._images[path] = exc
        info = self._images[path]
        if isinstance(info, ImageProblem):
            hint = f" (looked in {display_path(base_dir) or '.'})" if isinstance(info, FileNotFoundError) else ""
            problems.append(Problem(where, f"image {describe(text, 80)}: {info}{hint}"))
            return None
        return ImageInput("file", text, info.sha256, info.width, info.height, info.format, strength)

    def local_images(self) -> dict[Path, LocalImage]:
        """The distinct local images read so far (after iterating :meth:`templates`)."""
        return {p: i for p, i in self._images.items() if isinstance(i, LocalImage)}


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpreadsheetOptions:
    """Settings for a CSV/XLSX manifest, which has no settings of its own (they come from the command line)."""

    region: str = catalog.DEFAULT_REGION
    type: JobType = "image"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # --protocol-profile for the Python API's keyword (the command line passes a ProtocolChoice); None: not given.
    # It applies to YAML manifests too, over their `protocol: profile`.
    protocol_profile: str | None = None

    @classmethod
    def from_options(cls, *, region: str | None = None, type: JobType | None = None, model: str | None = None,
                     ratio: str | None = None, resolution: str | None = None,
                     protocol_profile: str | None = None) -> SpreadsheetOptions:
        """From the command line's options (and the Python API's keywords of the same names)."""
        defaults = {name: value for name, value in (("model", model), ("ratio", ratio), ("resolution", resolution))
                    if value is not None}
        if protocol_profile is not None and protocol_profile not in catalog.PROTOCOL_PROFILES:
            raise ManifestError(f"protocol profile {describe(protocol_profile)} is not one of "
                                f"{', '.join(catalog.PROTOCOL_PROFILES)}")
        return cls(region=region or catalog.DEFAULT_REGION, type=type or "image", defaults=defaults,
                   protocol_profile=protocol_profile)


def load_manifest(path: Path, options: SpreadsheetOptions | None = None, *,
                  max_requests: int = MAX_REQUESTS_PER_JOB, protocol: ProtocolChoice | None = None) -> Manifest:
    """Load and schema-check a manifest file.

    Every problem is found in one pass: a value the schema rejects is reported and left out, and the rest of the
    manifest is still read and checked by the rules (iterate :meth:`Manifest.templates`). SchemaError only when
    nothing can be checked past it (a YAML syntax error, no job list, an unknown region).
    """
    options = options or SpreadsheetOptions()
    protocol = _with_profile(protocol, options)
    if is_spreadsheet(path):
        return _load_spreadsheet(path, options, max_requests, protocol)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ManifestError(f"{display_path(path)}: unknown manifest type '{path.suffix}'; use .yaml, .yml, .csv or "
                            ".xlsx")
    document = load_yaml(path)
    where = document.where
    locate = where.locate
    errors = schema_errors(document.data, MANIFEST_SCHEMA, lambda p, k: locate(p, key=k))
    unreadable = document.unreadable  # said already: a schema problem about its stand-in text would be noise
    problems = document.problems + [problem for path, problem in errors
                                    if not any(path[:len(u)] == u for u in unreadable)]
    usable = _usable_part(document.data, [p for p, _ in errors]) if errors else _Usable(document.data)
    if usable is None:
        raise SchemaError(problems)
    data: dict[str, Any] = usable.data
    try:
        settings = replace(_settings(data, protocol, path.parent), max_requests=max_requests)
    except ConfigError as exc:  # a protocol file the manifest names, or a constant given for it
        raise ManifestError(f"{display_path(path)}: protocol: {exc}") from None
    jobs: list[JobDef] = []
    names: dict[str, Location] = {}
    base_dir = path.parent
    defaults: dict[str, Any] = data.get("defaults", {})
    for index, job in enumerate(data["jobs"]):
        if index in usable.skipped:
            continue
        name = job.get("name", f"job-{index + 1}")
        anchor = locate(("jobs", index))
        if name in names:
            problems.append(Problem(locate(("jobs", index, "name")),
                                    f"job name '{name}' is already used at {names[name]}; names must be unique"))
        names.setdefault(name, anchor)
        job_type: JobType = job["type"]
        fields: dict[str, Any] = {}
        spots: dict[str, Spot] = {}
        for key, value in defaults.items():
            if applies_to(key, value, job_type):
                fields[key] = value
                spots[key] = _yaml_spot(where, ("defaults", key))
        for key, value in job.items():
            if key in ("name", "type", "vars", "rows"):
                continue
            fields[key] = value
            spots[key] = _yaml_spot(where, ("jobs", index, key))
        variables = dict(job.get("vars", {}))
        var_spots = {k: _yaml_spot(where, ("jobs", index, "vars", k)) for k in variables}
        rows = rows_location = None
        if "rows" in job:
            rows = (base_dir / job["rows"]).resolve()
            rows_location = locate(("jobs", index, "rows"))
        rejected = usable.rejected.get(index, set()) | {k for k in usable.rejected_defaults if k not in job}
        jobs.append(JobDef(name, index, job_type, fields, spots, variables, var_spots, anchor, base_dir, rows,
                           rows_location, frozenset(rejected)))
    # Problems found here do not stop the other jobs from being checked: they are reported with theirs.
    return Manifest(path, where.file, settings, jobs, problems)


@dataclass
class _Usable:
    """What the rules can check of a manifest the schema found problems in."""

    data: Any
    skipped: set[int] = field(default_factory=set)  # jobs with no usable type (or not a mapping at all)
    rejected: dict[int, set[str]] = field(default_factory=dict)  # by job: fields left out
    rejected_defaults: set[str] = field(default_factory=set)


_JOB_FIELDS: tuple[str, ...] = tuple(load_schema(MANIFEST_SCHEMA)["$defs"]["job"]["properties"])
_PRUNE_ROUNDS = 8  # leaving a value out can leave its parent invalid (a reference without `image`): again


def _usable_part(data: Any, paths: list[tuple[str | int, ...]]) -> _Usable | None:
    """``data`` without the values at ``paths`` (the schema's problems), for the rules to check the rest; None when
    too little is left (no job list; an unknown region, which every model rule depends on)."""
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        return None
    usable = _Usable(copy.deepcopy(data))
    for _ in range(_PRUNE_ROUNDS):
        for path in paths:
            if not _leave_out(usable, path):
                return None
        paths = [p for p, _ in schema_errors(usable.data, MANIFEST_SCHEMA, lambda p, k: Location(""))]
        if not paths:
            return usable
    return None


def _leave_out(usable: _Usable, path: tuple[str | int, ...]) -> bool:
    """Leave out the value at ``path``, or the field holding the list it is in (list items are not removed: the
    places of the others, which locate their problems, would move); False if nothing could be checked without it."""
    steps = list(path)
    floor = 2 if steps[:1] == ["jobs"] else 0  # a job is left out in place, never removed from the list
    while len(steps) > floor and isinstance(steps[-1], int):
        steps.pop()
    if not steps or steps == ["jobs"] or steps == ["region"]:
        return False
    if steps[0] == "jobs":
        index = steps[1]
        assert isinstance(index, int)
        if len(steps) == 2 or steps[2] == "type" or not isinstance(usable.data["jobs"][index], dict):
            usable.skipped.add(index)  # which fields apply, and what they mean, depends on its type
            usable.data["jobs"][index] = {"type": "image"}  # a stand-in that passes the schema
            return True
        name = str(steps[2])
        rejected = usable.rejected.setdefault(index, set())
        if len(steps) == 3:
            rejected.add(name)
            if name not in _JOB_FIELDS:  # a misspelt field (`promt`) stands for the one meant: no "missing prompt"
                rejected.update(difflib.get_close_matches(name, _JOB_FIELDS, n=1, cutoff=0.6))
        elif name == "vars" and len(steps) == 4:
            rejected.add(f"var:{steps[3]}")
    elif steps[0] == "defaults":
        usable.rejected_defaults.update([str(steps[1])] if len(steps) > 1 else _JOB_FIELDS)
    try:
        parent = usable.data
        for step in steps[:-1]:
            parent = parent[step]
    except (KeyError, IndexError, TypeError):
        return True  # already left out with its parent
    if isinstance(parent, dict):
        parent.pop(steps[-1], None)
    return True


def _yaml_spot(where: SourceMap, path: tuple[str | int, ...]) -> Spot:
    def spot(index: int | None = None) -> Location:
        return where.locate(path if index is None else (*path, index))

    return spot


def _cell_spot(file: str, row: int, column: str) -> Spot:
    location = Location(file, row=row, column_name=column)

    def spot(index: int | None = None) -> Location:
        return location  # a cell is one place, whichever list item in it is meant

    return spot


def _with_profile(choice: ProtocolChoice | None, options: SpreadsheetOptions) -> ProtocolChoice:
    """The protocol choice with the spreadsheet options' profile where the choice names none."""
    choice = choice or ProtocolChoice()
    if choice.profile is None and options.protocol_profile is not None:
        return replace(choice, profile=options.protocol_profile)
    return choice


def _settings_protocol(effective: EffectiveProtocol) -> dict[str, Any]:
    return {"protocol_profile": effective.profile, "protocol": effective.versions,
            "protocol_sources": effective.sources}


def _settings(data: Mapping[str, Any], protocol_choice: ProtocolChoice, folder: Path) -> Settings:
    effective = resolve(protocol_choice, data.get("protocol", {}), folder)
    cache = dict(data.get("cache", {}))
    ttl = cache.get("ttl", 300)
    cache["ttl"] = math.inf if ttl == "forever" else float(ttl)
    output: Mapping[str, Any] = data.get("output", {})
    return Settings(
        region=data.get("region", catalog.DEFAULT_REGION),
        **_settings_protocol(effective),
        costs=catalog.CostTable(dict(data.get("costs", {}))),
        limits=dict(data.get("limits", {})),
        cache=cache,
        output_dir=output.get("dir"),
        budget=data.get("budget"),
    )


def applies_to(name: str, value: Any, job_type: JobType) -> bool:
    """Whether a default applies to a job of this type (a video default is not an image job's business)."""
    if name not in FIELDS_BY_TYPE[job_type]:
        return False
    values = value if isinstance(value, list) else [value]
    if name == "resolution":
        allowed = catalog.VIDEO_RESOLUTIONS if job_type == "video" else catalog.IMAGE_RESOLUTIONS
        return all(v in allowed for v in values)
    if name == "model":
        # A default image model is not meant for video jobs (and the other way round); unknown names still apply,
        # so that their problem is reported.
        kinds = {m.kind for m in map(catalog.find_model, map(str, values)) if m is not None}
        return not kinds or kinds == {catalog.model_kind_for(job_type)}
    return True


# `region`: a job's own site of the service, over the manifest's (the run's pool then needs a token of it).
_COMMON = frozenset({"region", "prompt", "model", "resolution", "count"})
# The document's blend draft carries no seed, so image_to_image jobs take none. `images` (gen_option.gen_count) and
# `intelligent_ratio` belong to image drafts: a video request makes one video.
_IMAGE_OUTPUT = frozenset({"images", "intelligent_ratio"})
FIELDS_BY_TYPE: Mapping[JobType, frozenset[str]] = {
    "image": _COMMON | _IMAGE_OUTPUT | {"seed", "negative_prompt", "ratio", "sample_strength"},
    "image_to_image": _COMMON | _IMAGE_OUTPUT | {"ratio", "sample_strength", "references", "reference_strength"},
    "video": _COMMON | {"seed", "duration", "aspect_ratio", "fps", "first_frame", "end_frame"},
}


# --------------------------------------------------------------------------------------------------------------
# Spreadsheets
# --------------------------------------------------------------------------------------------------------------


def _load_spreadsheet(path: Path, options: SpreadsheetOptions, max_requests: int,
                      protocol: ProtocolChoice) -> Manifest:
    shown = display_path(path)
    if not path.is_file():
        raise ManifestError(f"{shown}: no such file")
    problems = check_header(read_header(path), shown)
    if problems:
        raise SchemaError(problems)
    settings = Settings(region=options.region, **_settings_protocol(resolve(protocol)), max_requests=max_requests)
    anchor = Location(shown, row=1)
    option_spot = _cell_spot("command line", 0, "option")
    fields = {k: v for k, v in options.defaults.items() if v is not None}
    job = JobDef(path.stem, 0, options.type, fields, {k: option_spot for k in fields}, {}, {}, anchor,
                 path.parent, path, anchor)
    return Manifest(path, shown, settings, [job])


def known_columns() -> list[str]:
    return list(load_schema(ROW_SCHEMA)["properties"])


def check_header(header: list[str], shown: str) -> list[Problem]:
    """Unknown or repeated column names, reported once, at the header row."""
    problems: list[Problem] = []
    known = known_columns()
    seen: set[str] = set()
    unknown: list[str] = []
    for raw in header:
        name = raw.strip()
        if not name:
            continue
        where = Location(shown, row=1, column_name=name)
        if name in seen:
            problems.append(Problem(where, f"column '{name}' appears twice; give each column once"))
        seen.add(name)
        if name in known:
            continue
        if name.startswith(VAR_COLUMN_PREFIX):
            if not name[len(VAR_COLUMN_PREFIX):].isidentifier():
                problems.append(Problem(where, f"'{name}' is not a valid variable column; use var.NAME with NAME "
                                               "made of letters, digits and _"))
            continue
        unknown.append(name)
        if len(unknown) <= MAX_UNKNOWN_COLUMNS:
            problems.append(Problem(where, f"unknown column {describe(name)}{did_you_mean(name, known)}; allowed: "
                                           f"{', '.join(known)}, or var.NAME for a template variable"))
    if len(unknown) > MAX_UNKNOWN_COLUMNS:  # a sheet that is not a manifest at all: a screenful says so
        problems.append(Problem(Location(shown, row=1), f"and {len(unknown) - MAX_UNKNOWN_COLUMNS} more unknown "
                                                        "columns; is this the right sheet?"))
    if not any(h.strip() for h in header):
        problems.append(Problem(Location(shown, row=1), "the first row must name the columns (e.g. prompt, model)"))
    return problems


def _split(cell: str) -> list[str]:
    r"""Split a list cell on `|`; `\|` is a literal bar."""
    parts = cell.replace("\\|", "\0").split(LIST_SEPARATOR)
    return [p.replace("\0", "|").strip() for p in parts]


def _coerce(name: str, text: str) -> bool | int | float | str:
    if name in _INTEGER_COLUMNS:
        if _WHOLE_NUMBER.fullmatch(text):
            if len(text) > 64:
                raise ValueError(f"a whole number of {len(text)} digits is far too large")
            return int(text)  # exactly: through a float, 99999999999999999999 would read as another number
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a whole number") from None
        if not number.is_integer():
            raise ValueError(f"'{text}' is not a whole number")
        return int(number)
    if name in _BOOLEAN_COLUMNS:
        if text.lower() not in _BOOLEAN_CELLS:
            raise ValueError(f"'{text}' is not true or false")
        return _BOOLEAN_CELLS[text.lower()]
    if name in _NUMBER_COLUMNS:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"'{text}' is not a finite number")
        return number
    return text


def read_row(row: SheetRow, shown: str) -> tuple[dict[str, Any], list[Problem]]:
    """A spreadsheet row's cells as typed field values, checked against ``schemas/row.schema.json``."""
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, cell in row.cells.items():
        if name == "\0extra":
            problems.append(Problem(Location(shown, row=row.number),
                                    f"{cell} cell(s) beyond the last named column; name the column or clear them"))
            continue
        if name == "\0unnamed":
            problems.append(Problem(Location(shown, row=row.number),
                                    f"{cell} cell(s) in a column without a name; name the column or clear them"))
            continue
        is_list = name not in _SCALAR_COLUMNS
        items = _split(cell) if is_list else [cell]
        try:
            typed = [_coerce(name, item) for item in items]
        except ValueError as exc:
            problems.append(Problem(Location(shown, row=row.number, column_name=name), str(exc)))
            continue
        if name == "references":
            values[name] = typed
        else:
            values[name] = typed if len(typed) > 1 else typed[0]

    def locate(path: tuple[str | int, ...], is_key: bool) -> Location:
        column = str(path[0]) if path else None
        return Location(shown, row=row.number, column_name=column)

    return values, problems + validate_row(values, locate)  # the cells read, checked whatever else is wrong


def output_folder(manifest: Manifest, requested: Path | None) -> Path:
    """``--out``, else the manifest's ``output.dir`` (relative to the manifest), else ``out/<manifest name>``."""
    if requested is not None:
        return requested
    if manifest.settings.output_dir:
        return (manifest.path.parent / manifest.settings.output_dir).resolve()
    return Path("out") / manifest.path.stem
