"""Planning: every request a manifest describes, checked and counted, at zero cost.

A plan makes two streaming passes over the manifest: the first finds every problem and counts the requests; the
second, only when there were no problems, writes each distinct request in full. Spreadsheet rows are read again
rather than kept, so memory stays flat however long the file (only the 16-byte digest of each key is kept, to
drop duplicates: identical requests share one submission).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from jimeng_batch.errors import Problem
from jimeng_batch.intake.expand import expand
from jimeng_batch.intake.manifest import Manifest, Template
from jimeng_batch.intake.sharding import Shard
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.drafts import build_request, default_web_id
from jimeng_batch.protocol.request_spec import RequestSpec

MAX_PROBLEMS = 1000  # beyond this only a count is kept, so a broken million-row file cannot exhaust memory


def iter_requests(manifest: Manifest, shard: Shard | None = None) -> Iterator[RequestSpec | Problem]:
    """Every request of the manifest (of ``shard`` only, if given), in order, or the problems found on the way
    (duplicates included)."""
    for item in manifest.templates():
        if isinstance(item, Template):
            for expanded in expand(item, manifest.settings):
                if shard is None or not isinstance(expanded, RequestSpec) or shard.contains(expanded.key):
                    yield expanded
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
        return unsupported_live_models(model for _type, model, _resolution in self.groups)

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
              shard: Shard | None = None) -> PlanSummary:
    """One pass over the manifest: all problems, and the counts of what it would send (in ``shard``, if given).

    ``on_request`` is called with each distinct request as it is found (a plan written to a file uses it to write
    in the same pass, and throws the file away if a problem turns up).
    """
    summary = PlanSummary(manifest.display, manifest.settings.region, manifest.settings.protocol_profile,
                          len(manifest.jobs))
    seen: set[bytes] = set()
    reported: set[Problem] = set()  # rows inheriting the same job field repeat that field's problem
    for item in iter_requests(manifest, shard):
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
        summary.distinct += 1
        group = (item.type, item.model, item.resolution)
        summary.groups[group] += 1
        summary.group_credits[group] = summary.group_credits.get(group, 0.0) + item.estimated_credits
        summary.estimated_credits += item.estimated_credits
        summary.region_requests[item.region] += 1
        summary.region_jobs.setdefault(item.region, set()).add(item.source.job)
        summary.region_credits[item.region] = summary.region_credits.get(item.region, 0.0) + item.estimated_credits
        images = item.expected_images
        if images is not None:
            summary.images += images
            summary.image_credits += item.estimated_credits
            summary.group_images[group] = summary.group_images.get(group, 0) + images
        if on_request is not None and not summary.problems:
            on_request(item)
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


def record_writer(manifest: Manifest) -> Callable[[RequestSpec], dict[str, Any]]:
    """A function from a request to its plan record (the webId is worked out once)."""
    web_id = plan_web_id(manifest)
    return lambda spec: plan_record(spec, manifest, web_id)


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
