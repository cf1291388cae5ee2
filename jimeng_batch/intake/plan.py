"""Planning: every request a manifest describes, checked and counted, at zero cost.

A plan makes two streaming passes over the manifest: the first finds every problem and counts the requests; the
second, only when there were no problems, writes each distinct request in full. Spreadsheet rows are read again
rather than kept, so memory stays flat however long the file (only the 16-byte digest of each key is kept, to
drop duplicates: identical requests share one submission).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Protocol

from jimeng_batch._version import __version__
from jimeng_batch.errors import Problem
from jimeng_batch.intake.expand import KEY_VERSION, Recipe, expand
from jimeng_batch.intake.manifest import IMAGE_FIELDS, VAR_COLUMN_PREFIX, JobDef, Manifest, Template
from jimeng_batch.intake.sharding import Shard
from jimeng_batch.intake.sources import SheetChunk, SheetRow
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.drafts import build_request, default_web_id, node_ids
from jimeng_batch.protocol.json_template import JsonTemplate, slot
from jimeng_batch.protocol.request_spec import RequestSpec, Source

MAX_PROBLEMS = 1000  # beyond this only a count is kept, so a broken million-row file cannot exhaust memory


def iter_requests(manifest: Manifest, shard: Shard | None = None) -> Iterator[RequestSpec | Problem]:
    """Every request of the manifest (of ``shard`` only, if given), in order, or the problems found on the way
    (duplicates included)."""
    for item in iter_planned(manifest, shard):
        assert not isinstance(item, KnownRow | Tallied)  # only with a memo, or when tallying
        yield item


def iter_planned(manifest: Manifest, shard: Shard | None = None, memo: RowMemo | None = None,
                 remember: bool = False, counting: bool = True, tally: bool = False
                 ) -> Iterator[RequestSpec | Problem | KnownRow | Tallied]:
    """Like :func:`iter_requests`, with the spreadsheet rows ``memo`` recalls given as :class:`KnownRow` (their
    requests are in the ledger already) instead of being checked and expanded again; ``remember``: each row
    planned anew that could be recalled next time is told to the memo; ``counting=False``: a row of a shape
    already made is given as a :class:`KnownRow` without keys, where its requests go (see :class:`RowShortcut`);
    ``tally``: a row of a shape already made is given as :class:`Tallied` (its keys, no requests), which ``shard``
    does not filter."""
    shortcut = RowShortcut(manifest, memo, remember, counting, tally)
    for item in manifest.items(shortcut, shortcut.records if memo is None else None):
        if isinstance(item, Template):
            for expanded in expand(item, manifest.settings):
                if shard is None or not isinstance(expanded, RequestSpec) or shard.contains(expanded.key):
                    yield expanded
        elif isinstance(item, RequestSpec):
            if shard is None or shard.contains(item.key):
                yield item
        else:
            yield item


@dataclass(frozen=True, slots=True)
class KnownRow:
    """A spreadsheet row a previous plan made requests of, unchanged since (same cells, same row number, same
    job and settings): what it made."""

    job: str
    regions: tuple[str, ...]
    models: tuple[str, ...]
    keys: tuple[str, ...]  # every request of the row, whatever the shard


@dataclass(frozen=True, slots=True)
class Share:
    """What each request of one recipe adds to a plan's counts, besides its key."""

    group: tuple[str, str, str]  # type, model, resolution
    region: str
    job: str
    credits: float
    images: int | None  # None for video

    @classmethod
    def of(cls, spec: RequestSpec) -> Share:
        return cls((spec.type, spec.model, spec.resolution), spec.region, spec.source.job, spec.estimated_credits,
                   spec.expected_images)


@dataclass(frozen=True, slots=True)
class Tallied:
    """The requests one recipe makes of a spreadsheet row, for counting: their keys (16 bytes each) and what each
    adds. A count needs no more, and building every request was most of a summary's time."""

    share: Share
    digests: list[bytes]


class RowMemo(Protocol):
    """Where row digests and what their rows made are kept (the ledger)."""

    def recall(self, digest: bytes) -> KnownRow | None: ...

    def remember(self, digest: bytes, row: KnownRow) -> None: ...


def job_digest(manifest: Manifest, job: JobDef) -> bytes | None:
    """What every request of a spreadsheet job's rows depends on besides the row itself: the tool, the key version,
    the manifest's settings and the job's own fields; None for a job whose rows cannot be recalled (one that names
    local images, whose content can change under the same name)."""
    if job.rows is None or any(name in job.fields for name in IMAGE_FIELDS):
        return None
    settings = manifest.settings
    parts = [__version__, KEY_VERSION, manifest.display, settings.region, settings.protocol_profile,
             repr(settings.costs), settings.max_requests, job.name, job.index, job.type, str(job.rows),
             sorted(job.fields.items()), sorted(job.vars.items()), sorted(job.rejected)]
    return hashlib.sha256(json.dumps(parts, default=repr, ensure_ascii=False).encode("utf-8")).digest()


def row_digest(job: bytes, row: SheetRow) -> bytes:
    """The digest of one row of a job (its number and its cells, as read, in the sheet's column order). Each name
    and value is written after its length, so that no two rows give the same text."""
    text = "".join(f"{len(name)}:{name}{len(value)}:{value}" for name, value in row.cells.items())
    return hashlib.sha256(job + f"{row.number};{text}".encode("utf-8", "surrogatepass")).digest()[:16]


# A prompt cell that is plain text: no placeholder, no list, no escaped bar. Two rows that differ only in such a
# prompt pass or fail every rule alike, and make the same requests but for the prompt (and what derives from it).
_PLAIN_PROMPT = re.compile(r"[^{}|\\]+")
MAX_ROW_SHAPES = 4096  # the shapes remembered (oldest forgotten first), so that memory stays flat


@dataclass(slots=True)
class _Shape:
    """What the first row of a shape left for the later ones."""

    recipes: list[Recipe] | None = None  # None: the first had a problem (or made nothing); each goes the whole way
    where: KnownRow | None = None  # counting=False: what each later row is told as
    shares: list[tuple[Recipe, Share]] | None = None  # tally: each recipe and what its requests add


class RowShortcut:
    """Spreadsheet rows to requests, each shape of row checked and expanded once.

    A row's shape is its job and every cell but the prompt. The first row of a shape goes the whole way (read,
    checked against the schema and the rules, expanded); if it makes requests and no problem, the recipe of each
    of its combinations is kept, and the later rows of that shape with a plain prompt are made from the recipes
    directly: the same requests, with the same keys, submit ids and seeds, that the whole way gives (a test
    compares the two on a corpus). Any other row (a prompt with placeholders or a list, a template variable
    column, a shape that had a problem) goes the whole way.
    """

    def __init__(self, manifest: Manifest, memo: RowMemo | None = None, remember: bool = False,
                 counting: bool = True, tally: bool = False) -> None:
        self.manifest = manifest
        # By shape (the job and every cell but the prompt): how its later rows are made
        self.shapes: dict[tuple[Any, ...], _Shape] = {}
        # counting=False: only whether rows pass and where their requests go are wanted (a run's check before it
        # plans), so a row of a shape seen is not made into requests: it is told as its shape's first row's
        # regions and models, which it shares (a fifth of a check pass's time)
        self.counting = counting
        # tally: a row of a shape seen is given as its keys and its recipes' shares (Tallied), for a count
        self.tally = tally
        self.memo = memo
        self.remember = remember
        self.jobs: dict[int, bytes | None] = {}  # job index -> its digest
        self.variables: dict[tuple[str, ...], bool] = {}  # by a row's column names: whether one is a variable
        # a sheet read a chunk at a time: by job and record as read (its prompt blanked), its shape
        self.by_record: dict[tuple[Any, ...], _Shape] = {}

    def __call__(self, job: JobDef, row: SheetRow, shown: str
                 ) -> Iterable[RequestSpec | Problem | KnownRow | Tallied]:
        if self.memo is None:
            return self._made(job, row, shown)
        if job.index not in self.jobs:
            self.jobs[job.index] = job_digest(self.manifest, job)
        base = self.jobs[job.index]
        if base is None or any(name in row.cells for name in IMAGE_FIELDS):
            return self._made(job, row, shown)
        digest = row_digest(base, row)
        known = self.memo.recall(digest)
        if known is not None:
            return [known]
        made = list(self._made(job, row, shown))
        specs = [item for item in made if isinstance(item, RequestSpec)]
        if self.remember and specs and len(specs) == len(made):
            self.memo.remember(digest, KnownRow(job.name, tuple(sorted({s.region for s in specs})),
                                                tuple(sorted({s.model for s in specs})), tuple(s.key for s in specs)))
        return made

    def _made(self, job: JobDef, row: SheetRow, shown: str
              ) -> Iterable[RequestSpec | Problem | KnownRow | Tallied]:
        """The row's requests (or problems), by its shape's recipes where it can."""
        prompt, shape = self._shape(job, row.cells)
        if prompt is None or shape is None:
            return self._whole_way(job, row, shown, None)
        seen = self.shapes.get(shape)  # one lookup: hashing the shape is a good part of a row's time
        if seen is None:
            return self._first_of_shape(job, row, shown, shape, prompt)
        if seen.recipes is None:
            return self._whole_way(job, row, shown, None)
        if seen.where is not None:
            return [seen.where]
        if seen.shares is not None:
            return [Tallied(share, recipe.digests(prompt)) for recipe, share in seen.shares]
        return self._specs(job, row.number, prompt, seen.recipes)

    def _specs(self, job: JobDef, number: int, prompt: str, recipes: list[Recipe]) -> list[RequestSpec]:
        """The requests of row ``number`` of a seen shape, made from the shape's recipes."""
        source = Source(self.manifest.display, job.name, job.index, number)
        return [spec for recipe in recipes for spec in recipe.specs(prompt, source)]

    def _shape(self, job: JobDef, cells: dict[str, str]) -> tuple[str | None, tuple[Any, ...] | None]:
        """A row's prompt and its shape; no shape for a row that must go the whole way."""
        prompt = cells.get("prompt")
        if prompt is None or not _PLAIN_PROMPT.fullmatch(prompt) or self._has_variables(cells):
            return prompt, None
        rest = cells.copy()
        del rest["prompt"]
        return prompt, (job.index, *rest.items())

    def records(self, job: JobDef, chunk: SheetChunk, shown: str
                ) -> Iterable[RequestSpec | Problem | KnownRow | Tallied]:
        """A chunk of a sheet's records (without a memo): a record like one made before (the same cells as read
        but for the prompt, which is plain) is made straight from its cells, without being read into a row: as
        its shape's :class:`KnownRow` (not counting), its keys (tally) or its requests from the recipes; the others
        go as rows. Requests and problems come in the rows' order; the tallies of the chunk come after them (a
        count's order does not matter)."""
        assert self.memo is None
        made: list[RequestSpec | Problem | KnownRow | Tallied] = []
        digests: dict[int, tuple[Share, list[bytes]]] = {}  # by share (its id): the chunk's keys
        at = chunk.names.index("prompt") if "prompt" in chunk.names else -1
        records = self.by_record
        for number, values in chunk.records:
            key = None
            if 0 <= at < len(values):
                prompt = values[at]
                values[at] = ""  # the record but for its prompt, as read
                key = (job.index, *values)
                values[at] = prompt
                seen = records.get(key)
                if seen is not None and prompt:  # an empty XLSX cell reads as None
                    prompt = prompt.strip()
                    if prompt and _PLAIN_PROMPT.fullmatch(prompt):
                        if seen.where is not None:
                            made.append(seen.where)
                        elif seen.shares is not None:
                            for recipe, share in seen.shares:
                                digests.setdefault(id(share), (share, []))[1].extend(recipe.digests(prompt))
                        else:
                            assert seen.recipes is not None  # only shapes with recipes are remembered
                            made.extend(self._specs(job, number, prompt, seen.recipes))
                        continue
            row = chunk.row(number, values)
            if row is None:
                continue
            made.extend(self(job, row, shown))
            if key is not None:  # remember the record's shape, if its later rows can be made from their cells
                seen = self.shapes.get(self._shape(job, row.cells)[1] or ())
                if seen is not None and seen.recipes is not None:
                    if len(records) >= MAX_ROW_SHAPES:
                        records.clear()
                    records[key] = seen
        made.extend(Tallied(share, keys) for share, keys in digests.values())
        return made

    def _first_of_shape(self, job: JobDef, row: SheetRow, shown: str, shape: tuple[Any, ...], prompt: str
                        ) -> list[RequestSpec | Problem]:
        """The first row of a shape, taken the whole way, and what later rows of its shape can be made from."""
        found: list[Recipe] = []
        made = list(self._whole_way(job, row, shown, found))
        if len(self.shapes) >= MAX_ROW_SHAPES:
            del self.shapes[next(iter(self.shapes))]
        seen = self.shapes[shape] = _Shape()
        if not found or not all(isinstance(i, RequestSpec) for i in made):
            return made  # recipes None: every row of this shape goes the whole way
        seen.recipes = [recipe.reused() for recipe in found]
        specs = [item for item in made if isinstance(item, RequestSpec)]
        if not self.counting:
            seen.where = KnownRow(job.name, tuple(sorted({s.region for s in specs})),
                                  tuple(sorted({s.model for s in specs})), ())
        elif self.tally and all(recipe.count > 0 for recipe in seen.recipes):
            source = Source(self.manifest.display, job.name, job.index, row.number)
            seen.shares = [(recipe, Share.of(next(iter(recipe.specs(prompt, source))))) for recipe in seen.recipes]
        return made

    def _has_variables(self, cells: dict[str, str]) -> bool:
        """Whether a row has a template variable cell (rows share a few sets of column names: worked out once each)."""
        names = tuple(cells)
        found = self.variables.get(names)
        if found is None:
            if len(self.variables) >= MAX_ROW_SHAPES:
                self.variables.clear()
            found = self.variables[names] = any(name.startswith(VAR_COLUMN_PREFIX) for name in names)
        return found

    def _whole_way(self, job: JobDef, row: SheetRow, shown: str,
                   recipes: list[Recipe] | None) -> Iterator[RequestSpec | Problem]:
        for item in self.manifest.row_template(job, row, shown):
            if isinstance(item, Template):
                yield from expand(item, self.manifest.settings, recipes)
            else:
                yield item


def iter_distinct(manifest: Manifest, shard: Shard | None = None) -> Iterator[RequestSpec | Problem]:
    """Like :func:`iter_requests`, without repeats of a request already seen."""
    seen: set[bytes] = set()
    for item in iter_requests(manifest, shard):
        if isinstance(item, RequestSpec):
            digest = bytes.fromhex(item.key)
            if digest in seen:
                continue
            seen.add(digest)
        yield item


@dataclass
class PlanSummary:
    """What a manifest would do: counts, images and estimated credits, by type, model and resolution."""

    manifest: str
    region: str
    protocol_profile: str
    jobs: int
    requests: int = 0
    distinct: int = 0
    estimated_credits: float = 0.0
    groups: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    group_credits: dict[tuple[str, str, str], float] = field(default_factory=dict)
    # Images the distinct image requests should give (each its `images`, else the service's default of 4), and
    # what those requests cost: credits per image is one over the other. Video groups have no entry.
    images: int = 0
    image_credits: float = 0.0
    group_images: dict[tuple[str, str, str], int] = field(default_factory=dict)
    local_images: int = 0
    local_image_bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    more_problems: int = 0
    # Distinct requests and their credits by region (jobs may name their own, over the manifest's).
    region_requests: Counter[str] = field(default_factory=Counter)
    region_credits: dict[str, float] = field(default_factory=dict)
    region_jobs: dict[str, set[str]] = field(default_factory=dict)  # the jobs sending there, for messages
    # Rows a memo recalled (their requests are in the ledger, and not counted above), and their models.
    known_rows: int = 0
    known_models: set[str] = field(default_factory=set)
    _shares: Counter[Share] = field(default_factory=Counter, repr=False)  # distinct requests counted, not settled

    def count(self, share: Share, distinct: int = 1) -> None:
        """``distinct`` more distinct requests of ``share`` (added up into the counts by :meth:`settle`)."""
        if distinct:
            self.distinct += distinct
            self._shares[share] += distinct

    def settle(self) -> None:
        """Add up the requests counted into the counts, credits and images by group and region. Credits are summed
        exactly and rounded once, so that the order requests are counted in cannot change a figure."""
        total, image_credits = Fraction(0), Fraction(0)
        groups: dict[tuple[str, str, str], Fraction] = {}
        regions: dict[str, Fraction] = {}
        for share, n in self._shares.items():
            group, region, credits = share.group, share.region, Fraction(share.credits) * n
            self.groups[group] += n
            groups[group] = groups.get(group, Fraction(0)) + credits
            total += credits
            self.region_requests[region] += n
            self.region_jobs.setdefault(region, set()).add(share.job)
            regions[region] = regions.get(region, Fraction(0)) + credits
            if share.images is not None:
                self.images += share.images * n
                image_credits += credits
                self.group_images[group] = self.group_images.get(group, 0) + share.images * n
        self._shares.clear()
        self.estimated_credits += float(total)
        self.image_credits += float(image_credits)
        for group, credits in groups.items():
            self.group_credits[group] = self.group_credits.get(group, 0.0) + float(credits)
        for region, credits in regions.items():
            self.region_credits[region] = self.region_credits.get(region, 0.0) + float(credits)

    @property
    def regions(self) -> list[str]:
        """The regions the requests go to, the manifest's first."""
        return sorted(self.region_requests, key=lambda region: (region != self.region, region))

    @property
    def duplicates(self) -> int:
        return self.requests - self.distinct

    @property
    def problem_count(self) -> int:
        return len(self.problems) + self.more_problems

    @property
    def credits_per_image(self) -> float | None:
        return catalog.credits_per_image(self.image_credits, self.images)

    def group_credits_per_image(self, group: tuple[str, str, str]) -> float | None:
        return catalog.credits_per_image(self.group_credits[group], self.group_images.get(group))

    def needs_a_bogus(self) -> list[str]:
        """The models of the plan that the live service refuses to plain HTTP clients (a browser-made a_bogus)."""
        return unsupported_live_models([*(model for _type, model, _resolution in self.groups), *self.known_models])

    def as_dict(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest, "region": self.region, "protocol_profile": self.protocol_profile,
            "jobs": self.jobs, "requests": self.requests, "distinct_requests": self.distinct,
            "duplicates": self.duplicates, "estimated_credits": self.estimated_credits,
            "images": self.images, "image_credits": self.image_credits,
            "estimated_credits_per_image": self.credits_per_image,
            "local_images_to_upload": self.local_images, "local_image_bytes": self.local_image_bytes,
            "groups": [
                {"type": t, "model": m, "resolution": r, "requests": n,
                 "estimated_credits": self.group_credits[(t, m, r)], "images": self.group_images.get((t, m, r)),
                 "estimated_credits_per_image": self.group_credits_per_image((t, m, r))}
                for (t, m, r), n in sorted(self.groups.items())
            ],
            # Only when jobs go to several regions, so that a one-region plan reads as it did.
            **({"regions": [{"region": region, "requests": self.region_requests[region],
                             "estimated_credits": self.region_credits[region]} for region in self.regions]}
               if len(self.region_requests) > 1 else {}),
        }


def summarize(manifest: Manifest, on_request: Callable[[RequestSpec], object] | None = None,
              shard: Shard | None = None, memo: RowMemo | None = None, counting: bool = True) -> PlanSummary:
    """One pass over the manifest: all problems, and the counts of what it would send (in ``shard``, if given).

    ``on_request`` is called with each distinct request as it is found (a plan written to a file uses it to write
    in the same pass, and throws the file away if a problem turns up). ``counting=False``: only the problems and
    where the requests go (``regions``, ``region_jobs``, the models of :meth:`PlanSummary.needs_a_bogus`) are
    right; the counts and credits leave out the rows of a shape already seen (the check a run makes before it
    plans, which counts again as it writes). With neither a callback nor a memo, the requests of spreadsheet rows of
    a shape already seen are counted from their keys (:class:`Tallied`), not built: the same summary, several
    times faster (a test compares the two on generated sheets).
    """
    summary = PlanSummary(manifest.display, manifest.settings.region, manifest.settings.protocol_profile,
                          len(manifest.jobs))
    seen: set[bytes] = set()
    reported: set[Problem] = set()  # rows inheriting the same job field repeat that field's problem
    # Without a memo or a callback, rows of a shape seen come as their keys (Tallied): the same counts, faster
    tally = counting and on_request is None and memo is None
    for item in iter_planned(manifest, shard, memo, counting=counting, tally=tally):
        if isinstance(item, Tallied):
            digests = item.digests if shard is None else [d for d in item.digests if shard.contains_digest(d)]
            before = len(seen)
            seen.update(digests)
            summary.requests += len(digests)
            summary.count(item.share, len(seen) - before)
            continue
        if isinstance(item, KnownRow):  # in the ledger already: only where it goes and with what model counts
            summary.known_rows += 1
            summary.known_models.update(item.models)
            for region in item.regions:
                summary.region_requests[region] += 0
                summary.region_jobs.setdefault(region, set()).add(item.job)
            continue
        if isinstance(item, Problem):
            if item in reported:
                continue
            if len(summary.problems) < MAX_PROBLEMS:
                summary.problems.append(item)
                reported.add(item)
            else:
                summary.more_problems += 1
            continue
        summary.requests += 1
        digest = bytes.fromhex(item.key)
        if digest in seen:
            continue
        seen.add(digest)
        summary.count(Share.of(item))
        if on_request is not None and not summary.problems:
            on_request(item)
    summary.settle()
    local = manifest.local_images()
    summary.local_images = len({info.sha256 for info in local.values()})
    summary.local_image_bytes = sum({info.sha256: info.size for info in local.values()}.values())
    return summary


def plan_web_id(manifest: Manifest, region: str | None = None) -> str:
    """The webId a plan shows for ``region`` (None: the manifest's): the manifest's setting, or one derived from the
    region (stable across runs)."""
    return manifest.settings.protocol.web_id or default_web_id(region or manifest.settings.region)


def plan_record(spec: RequestSpec, manifest: Manifest, web_id: str | None = None) -> dict[str, Any]:
    """One line of ``plan --format jsonl``: the request's identity, parameters and the exact HTTP request, as the
    request's own region sends it (``web_id``: the manifest's region's, worked out once)."""
    region = catalog.REGIONS[spec.region]
    if web_id is None or spec.region != manifest.settings.region:
        web_id = plan_web_id(manifest, spec.region)
    request = build_request(spec, region, manifest.settings.protocol, web_id=web_id)
    source: dict[str, Any] = {"file": spec.source.file, "job": spec.source.job}
    if spec.source.row is not None:
        source["row"] = spec.source.row
    return {
        "key": spec.key, "submit_id": spec.submit_id, "sample": spec.sample, "source": source,
        "params": spec.params(), "estimated_credits": spec.estimated_credits,
        "request": {"method": request.method, "path": request.path, "query": request.query, "body": request.body},
    }


def plan_line(record: Mapping[str, Any]) -> str:
    """One plan record as a line of ``plan --format jsonl``."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


# What differs between requests of one shape: filled into the shape's template, one value per slot.
_VARYING = ("key", "submit_id", "sample", "prompt", "negative_prompt", "seed", "row")


def _shape(spec: RequestSpec) -> tuple[Any, ...]:
    """Everything of a request that is not in :data:`_VARYING` (and whether each optional varying value is given):
    requests of one shape have one template."""
    return (spec.type, spec.region, spec.model, spec.model_key, spec.seed_given, spec.resolution,
            spec.estimated_credits, spec.ratio, spec.sample_strength, spec.references, spec.duration,
            spec.aspect_ratio, spec.fps, spec.first_frame, spec.end_frame, spec.image_count, spec.intelligent_ratio,
            spec.source.file, spec.source.job, spec.source.job_index, spec.source.row is None, spec.seed is None,
            spec.negative_prompt is None)


class PlanLines:
    """Plan records as JSON lines, each written from its shape's template: what does not vary between requests
    (the query, the draft's structure, the model's sizes and versions) is built and serialised once per shape,
    and per request only the varying values (and the node ids, which derive from the key) are filled in.

    The first request of each shape is also written the slow way, from :func:`plan_record`; a template that does
    not give the same text is not used (every line of that shape is then built in full), so a template can only
    ever make the same lines faster.
    """

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.web_id = plan_web_id(manifest)
        self.templates: dict[tuple[Any, ...], JsonTemplate | None] = {}
        self.roles: dict[int, list[str]] = {}  # by template: the node roles its slots need

    def full(self, spec: RequestSpec) -> str:
        """The line built from scratch."""
        return plan_line(plan_record(spec, self.manifest, self.web_id))

    def __call__(self, spec: RequestSpec) -> str:
        shape = _shape(spec)
        if shape not in self.templates:
            line = self.full(spec)
            # A marker in the request's own text (an image uri, say) would be taken for a slot: none then
            template = None if "@@" in line else self._template(spec)
            self.templates[shape] = template if template is not None and self._fill(template, spec) == line else None
            return line
        template = self.templates[shape]
        return self.full(spec) if template is None else self._fill(template, spec)

    def _template(self, spec: RequestSpec) -> JsonTemplate | None:
        # A request whose varying values are slot markers (markers where numbers go, too: text is what is cut)
        row: dict[str, Any] = {"row": slot("row")}
        markers: dict[str, Any] = {
            "key": slot("key"), "submit_id": slot("submit_id"), "sample": slot("sample"), "prompt": slot("prompt"),
            "negative_prompt": None if spec.negative_prompt is None else slot("negative_prompt"),
            "seed": None if spec.seed is None else slot("seed"),
            "source": spec.source if spec.source.row is None else replace(spec.source, **row)}
        marked = replace(spec, **markers)
        region = catalog.REGIONS[spec.region]
        web_id = self.web_id if spec.region == self.manifest.settings.region else plan_web_id(self.manifest,
                                                                                            spec.region)
        request = build_request(marked, region, self.manifest.settings.protocol, web_id=web_id,
                                node_ids=lambda role: slot(f"id:{role}"))
        record = plan_record(marked, self.manifest, self.web_id)
        record["request"] = {"method": request.method, "path": request.path, "query": request.query,
                             "body": request.body}
        try:
            template = JsonTemplate(plan_line(record), _is_token)
        except ValueError:
            return None
        if not template.names <= {*_VARYING, *(n for n in template.names if n.startswith("id:"))}:
            return None
        self.roles[id(template)] = sorted(name for name in template.names if name.startswith("id:"))
        return template

    def _fill(self, template: JsonTemplate, spec: RequestSpec) -> str:
        roles = self.roles[id(template)]
        values: dict[str, Any] = dict(zip(roles, node_ids(spec.key, [role[3:] for role in roles]), strict=True))
        values |= {"key": spec.key, "submit_id": spec.submit_id, "sample": spec.sample, "prompt": spec.prompt,
                   "negative_prompt": spec.negative_prompt, "seed": spec.seed, "row": spec.source.row}
        return template.fill(values)


def _is_token(name: str) -> bool:
    """Slots whose values are hex digits and dashes (the key, submit id and node ids): put in as they are."""
    return name in ("key", "submit_id") or name.startswith("id:")


def iter_plan_records(manifest: Manifest, shard: Shard | None = None) -> Iterator[dict[str, Any]]:
    """Every distinct request in full; call only for a manifest that :func:`summarize` found no problem in."""
    web_id = plan_web_id(manifest)
    for item in iter_distinct(manifest, shard):
        if isinstance(item, RequestSpec):
            yield plan_record(item, manifest, web_id)


def unsupported_live_models(names: Iterable[str]) -> list[str]:
    """Of ``names`` (model names or raw keys), the models the live service refuses without a browser's a_bogus."""
    found = (catalog.find_model(name) for name in names)
    return sorted({model.name for model in found if model is not None and catalog.needs_a_bogus(model)})


def a_bogus_warning(models: list[str]) -> str:
    """What validate and plan say about such models (a warning: the manifest is valid, and --sim runs them)."""
    return (f"warning: {', '.join(models)}: {catalog.A_BOGUS_REASON}; a live run refuses these models unless "
            "--allow-unsupported (a --sim rehearsal runs them)")
