"""A manifest checked against what one account is offered (its own catalog, read from the service). Pure.

The built-in rules (:mod:`jimeng_batch.intake.rules`) say what a model can do; an account's catalog says what this
account may use: a retired model, or a resolution, ratio or duration the account is not offered for a model, is a
located problem before anything is spent, and so is a count of images (``images``) or ``intelligent_ratio`` it does
not offer for the model. Only what the account's catalog does say refuses anything: a field it
leaves out (no ratios listed for a model, say) is not checked.

A matrix is a product, so checking each listed value of a field against each listed model finds every combination
that is not offered without expanding the matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jimeng_batch.errors import Problem
from jimeng_batch.intake.expand import job_region, type_defaults
from jimeng_batch.intake.manifest import Manifest, Template
from jimeng_batch.intake.plan import MAX_PROBLEMS
from jimeng_batch.intake.schema import allowed_list
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.live_catalog import AccountCatalog, OfferedImageModel, OfferedVideoModel


def check_offered(manifest: Manifest, offered: AccountCatalog, source: str = "the account's catalog",
                  region: str | None = None) -> list[Problem]:
    """Every use of something ``offered`` does not offer, located (at most :data:`MAX_PROBLEMS`).

    ``source`` says where the catalog came from, for the messages. Call it on a manifest whose own problems were
    checked first (its models are known to the built-in catalog). ``region``: only the jobs that go there (an
    account's catalog is one region's); None: every job.
    """
    found: list[Problem] = []
    seen: set[Problem] = set()  # spreadsheet rows inheriting one job field repeat its problem
    for item in manifest.templates():
        if not isinstance(item, Template) or (region is not None and job_region(item, manifest.settings) != region):
            continue
        for problem in _template_problems(item, offered, source):
            if problem not in seen:
                seen.add(problem)
                found.append(problem)
                if len(found) >= MAX_PROBLEMS:
                    return found
    return found


def _indexed(template: Template, fields: dict[str, Any], name: str) -> list[tuple[Any, int | None]]:
    """The values of a field, each with its list index (None when the field is not a list)."""
    value = fields.get(name)
    if value is None:
        return []
    if isinstance(value, list):
        return list(zip(value, range(len(value)), strict=True))
    return [(value, None)]


def _template_problems(template: Template, offered: AccountCatalog, source: str) -> Iterator[Problem]:
    fields = type_defaults(template.type) | template.fields
    kind = catalog.model_kind_for(template.type)
    job = f"job '{template.job}'"
    for name, index in _indexed(template, fields, "model"):
        model = catalog.find_model(str(name))
        if model is None:
            continue  # the built-in rules said so already
        theirs = offered.find(model.key)
        if theirs is None or theirs.kind != kind:
            yield Problem(template.locate("model", index),
                          f"{job}: model: {model.name} ({model.key}) is not offered to this account ({source}); "
                          f"{kind} models it offers: {_usable(offered, kind)}")
            continue
        label = f"{model.name}" if theirs.name in (model.name, model.key) else f"{model.name} ('{theirs.name}')"
        if isinstance(theirs, OfferedImageModel):
            yield from _image_problems(template, fields, theirs, label, job, source)
        else:
            yield from _video_problems(template, fields, theirs, label, job, source)


def _usable(offered: AccountCatalog, kind: str) -> str:
    """The offered models a manifest can name (the built-in catalog knows them), and how many more there are."""
    listed = offered.videos if kind == "video" else offered.images
    known = [m.name for m in map(catalog.find_model, (o.key for o in listed)) if m is not None]
    text = allowed_list(known) if known else "none the built-in catalog knows"
    unknown = len(listed) - len(known)
    if unknown:
        text += f"; {unknown} more it does not know yet (see `jimeng-batch models --live`)"
    return text


def _image_problems(template: Template, fields: dict[str, Any], theirs: OfferedImageModel, label: str, job: str,
                    source: str) -> Iterator[Problem]:
    offered_resolutions = theirs.resolution_names
    usable = []
    for resolution, index in _indexed(template, fields, "resolution"):
        if offered_resolutions and resolution not in offered_resolutions:
            yield Problem(template.locate("resolution", index),
                          f"{job}: resolution: {label} is not offered at {resolution} to this account ({source}); "
                          f"it offers: {allowed_list(offered_resolutions)}")
        else:
            usable.append(resolution)
    counts = theirs.counts
    for images, index in _indexed(template, fields, "images"):
        if counts and images not in counts:
            yield Problem(template.locate("images", index),
                          f"{job}: images: {label} does not make {images} image(s) per request for this account "
                          f"({source}); counts it offers: {allowed_list(counts)}")
    # Only a catalog that lists a model's feats can say intelligent_ratio is not among them.
    if fields.get("intelligent_ratio") is True and theirs.feats and not theirs.intelligent_ratio:
        yield Problem(template.locate("intelligent_ratio", None),
                      f"{job}: intelligent_ratio: {label} does not pick its own ratio for this account ({source}); "
                      "give a ratio instead")
    for ratio, index in _indexed(template, fields, "ratio"):
        for resolution in usable:
            ratios = theirs.ratios_at(str(resolution))
            if ratios and ratio not in ratios:
                yield Problem(template.locate("ratio", index),
                              f"{job}: ratio: {label} at {resolution} is not offered in {ratio} to this account "
                              f"({source}); ratios it offers there: {allowed_list(ratios)}")


def _video_problems(template: Template, fields: dict[str, Any], theirs: OfferedVideoModel, label: str, job: str,
                    source: str) -> Iterator[Problem]:
    checks = (("resolution", theirs.resolutions, "resolutions"), ("duration", theirs.durations, "durations (s)"),
              ("aspect_ratio", theirs.ratios, "aspect ratios"))
    for name, allowed, what in checks:
        for value, index in _indexed(template, fields, name):
            if allowed and value not in allowed:
                yield Problem(template.locate(name, index),
                              f"{job}: {name}: {label} is not offered with {name.replace('_', ' ')} {value} to this "
                              f"account ({source}); {what} it offers: {allowed_list(allowed)}")
