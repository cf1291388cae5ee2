"""Rules a JSON Schema cannot express, checked in code and reported in the same located shape. Pure.

Two levels: a template's own consistency (fields that fit its type, references, placeholders, seeds), and each
combination of the matrix (the model exists, is offered in the region, supports the resolution and duration).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jimeng_batch.errors import Location, Problem
from jimeng_batch.intake.manifest import FIELDS_BY_TYPE, Template
from jimeng_batch.intake.schema import allowed_list, did_you_mean
from jimeng_batch.intake.templating import TemplateSyntaxError, placeholders
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.catalog import ImageModel, JobType, Model, VideoModel

TEMPLATED_FIELDS = ("prompt", "negative_prompt")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def check_template(template: Template) -> list[Problem]:
    """Problems of a template as a whole, before its matrix is expanded."""
    problems: list[Problem] = []
    allowed = FIELDS_BY_TYPE[template.type]
    for name in template.fields:
        if name not in allowed:
            fits = [t for t, names in FIELDS_BY_TYPE.items() if name in names]
            problems.append(Problem(template.locate(name), f"{name} does not apply to {template.type} jobs "
                                                           f"(it is for {' and '.join(fits)} jobs)"))
    rejected = template.rejected  # said by the schema already: no rule about what is not there
    if "prompt" not in template.fields and not rejected & {"prompt", "rows"}:
        problems.append(Problem(_anchor(template), "missing prompt: every request needs one"))
    if (template.type == "image_to_image" and not template.fields.get("references")
            and "references" not in rejected):
        problems.append(Problem(template.locate("references") if "references" in template.spots else _anchor(template),
                                "image_to_image jobs need at least one reference image (`references`)"))
    if template.fields.get("count", 1) > 1 and "seed" in template.fields:
        problems.append(Problem(template.locate("seed"), "a fixed seed with count > 1 would make identical samples; "
                                                         "list several seeds, or leave seed out"))
    problems.extend(_check_placeholders(template))
    return problems


def _anchor(template: Template) -> Location:
    assert template.anchor is not None
    return template.anchor


def _check_placeholders(template: Template) -> Iterator[Problem]:
    used: set[str] = set()
    # Whether every prompt could be read: one that cannot (a lone `{`) may use any variable.
    complete = not template.rejected & set(TEMPLATED_FIELDS)
    for name in TEMPLATED_FIELDS:
        if name not in template.fields:
            continue
        value = template.fields[name]
        for index, text in enumerate(as_list(value)):
            where = template.locate(name, index if isinstance(value, list) else None)
            try:
                names = placeholders(str(text))
            except TemplateSyntaxError as exc:
                yield Problem(where, f"{name}: {exc}")
                complete = False
                continue
            for variable in names:
                used.add(variable)
                if variable not in template.vars and not template.rejected & {"vars", f"var:{variable}"}:
                    known = list(template.vars)
                    hint = did_you_mean(variable, known)
                    listing = f"; defined: {allowed_list(known)}" if known else "; this job defines no `vars`"
                    yield Problem(where, f"{name}: unknown template variable '{{{variable}}}'{hint}{listing}")
    for variable, value in template.vars.items():
        # An unused list would multiply identical requests; an unused single value is harmless.
        if isinstance(value, list) and len(value) > 1 and variable not in used and complete:
            yield Problem(template.locate(variable),
                          f"variable '{variable}' lists several values but no prompt uses {{{variable}}}; "
                          "it would repeat identical requests")


def resolve_model(name: str, job_type: JobType, region: str | None, where: Location,
                  given_in: Location | None = None) -> Model | Problem:
    """The catalog model for ``name``, or the problem with using it for this job type and region (``given_in``:
    where the job named its own region, said with the problem; None: the manifest's region). ``region`` None: not
    known (the job's own was rejected by the schema), not checked."""
    model = catalog.find_model(name)
    wanted = catalog.model_kind_for(job_type)
    if model is None:
        names = [m.name for m in (catalog.VIDEO_MODELS if wanted == "video" else catalog.IMAGE_MODELS)]
        return Problem(where, f"unknown model '{name}'{did_you_mean(name, names)}; {wanted} models: "
                              f"{allowed_list(names)} (or their raw keys; see `jimeng-batch models`)")
    if model.kind != wanted:
        article = "an" if wanted == "image" else "a"
        return Problem(where, f"{model.name} is a {model.kind} model; {job_type} jobs need {article} {wanted} model")
    if region is not None and region not in model.regions:
        whose = f"the job's region {region} (set at {given_in})" if given_in is not None else f"region {region}"
        return Problem(where, f"{model.name} is not offered in {whose}; it is offered in: "
                              f"{allowed_list(sorted(model.regions))}")
    return model


def check_combination(model: Model, values: dict[str, Any], template: Template,
                      indexes: dict[str, int | None]) -> list[Problem]:
    """Problems of one matrix combination: what the model supports."""
    problems: list[Problem] = []
    resolution = values["resolution"]
    rejected = template.rejected  # a default stands in for each of these: it is not the user's to check
    if resolution not in model.resolutions and "resolution" not in rejected:
        kind = "video" if isinstance(model, VideoModel) else "image"
        problems.append(Problem(template.locate("resolution", indexes.get("resolution")),
                                f"{model.name} does not support resolution {resolution}; {kind} resolutions it "
                                f"supports: {allowed_list(model.resolutions)}"))
    if isinstance(model, VideoModel):
        duration = values["duration"]
        if duration not in model.durations and "duration" not in rejected:
            problems.append(Problem(template.locate("duration", indexes.get("duration")),
                                    f"{model.name} does not allow a duration of {duration} s; allowed: "
                                    f"{_seconds(model.durations)}"))
        fps = values["fps"]
        if fps not in catalog.VIDEO_FPS and "fps" not in rejected:
            problems.append(Problem(template.locate("fps"),
                                    f"fps {fps} is not allowed; allowed: {allowed_list(catalog.VIDEO_FPS)}"))
    else:
        assert isinstance(model, ImageModel)
        problems.extend(_check_image_output(model, values, template, indexes))
    return problems


def _check_image_output(model: ImageModel, values: dict[str, Any], template: Template,
                        indexes: dict[str, int | None]) -> Iterator[Problem]:
    """What the model makes: how many images per request (gen_count), and whether it may pick the ratio."""
    rejected = template.rejected
    images = values.get("images")
    if images is not None and images > model.max_images and "images" not in rejected:
        larger = [f"{m.name} makes up to {m.max_images}" for m in catalog.IMAGE_MODELS if m.max_images >= images]
        hint = f" ({'; '.join(larger)})" if larger else ""
        yield Problem(template.locate("images", indexes.get("images")),
                      f"{model.name} makes 1 to {model.max_images} images per request, not {images}{hint}")
    if values.get("intelligent_ratio") is True and not model.intelligent_ratio and "intelligent_ratio" not in rejected:
        yield Problem(template.locate("intelligent_ratio"),
                      f"{model.name} does not offer intelligent_ratio; models that do: "
                      f"{allowed_list(catalog.INTELLIGENT_RATIO_MODELS)}")


def _seconds(durations: tuple[int, ...]) -> str:
    """4, 5, ..., 15 as '4-15'; other sets listed."""
    if len(durations) > 3 and list(durations) == list(range(durations[0], durations[-1] + 1)):
        return f"{durations[0]}-{durations[-1]} (whole seconds)"
    return allowed_list(durations)
