"""Templates to requests: the matrix, template variables, samples, keys, submit ids and seeds. Pure.

The same template always gives the same requests, in the same order, with the same keys, ``submit_id`` s and
seeds, in any process on any machine: everything derives from the canonical parameters through SHA-256.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring  # the C escaper json.dumps uses
from typing import Any

from jimeng_batch.errors import Problem
from jimeng_batch.intake.manifest import MATRIX_FIELDS, Settings, Template
from jimeng_batch.intake.rules import (
    as_list,
    check_combination,
    check_template,
    resolve_model,
)
from jimeng_batch.intake.templating import render
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.catalog import Model, VideoModel
from jimeng_batch.protocol.ids import uuid5_text
from jimeng_batch.protocol.json_template import JsonTemplate, slot
from jimeng_batch.protocol.request_spec import ImageInput, RequestSpec, Source

# Bump when the canonical form changes: it changes every key, so old ledgers and caches no longer match.
KEY_VERSION = 1
KEY_HEX_CHARS = 32
KEY_BYTES = KEY_HEX_CHARS // 2
# The namespace of submit_ids: uuid5(namespace, key).
SUBMIT_ID_NAMESPACE = uuid.UUID("6f1f3c0e-8d0a-5b57-9a43-6a696d656e67")


def type_defaults(job_type: str) -> dict[str, Any]:
    """The values a request of this type takes for fields the manifest leaves out."""
    if job_type == "video":
        return {
            "model": catalog.DEFAULT_VIDEO_MODEL, "resolution": catalog.DEFAULT_VIDEO_RESOLUTION,
            "duration": catalog.DEFAULT_VIDEO_DURATION, "aspect_ratio": catalog.DEFAULT_VIDEO_ASPECT_RATIO,
            "fps": catalog.DEFAULT_FPS,
        }
    defaults: dict[str, Any] = {
        "model": catalog.DEFAULT_IMAGE_MODEL, "resolution": catalog.DEFAULT_IMAGE_RESOLUTION,
        "ratio": catalog.DEFAULT_IMAGE_RATIO, "sample_strength": catalog.DEFAULT_SAMPLE_STRENGTH,
    }
    if job_type == "image":
        defaults["negative_prompt"] = ""
    return defaults


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(canonical: dict[str, Any]) -> tuple[str, str]:
    """The key (32 hex digits) of a request's canonical parameters, and the full digest."""
    digest = hashlib.sha256(canonical_json({"v": KEY_VERSION, **canonical}).encode("utf-8")).hexdigest()
    return digest[:KEY_HEX_CHARS], digest


def submit_id_for(key: str) -> str:
    return uuid5_text(SUBMIT_ID_NAMESPACE, key)


def derived_seed(digest: str) -> int:
    """A seed in the document's range, from the part of the digest the key does not show."""
    return catalog.SEED_BASE + int(digest[KEY_HEX_CHARS:KEY_HEX_CHARS + 16], 16) % catalog.SEED_SPAN


def _image_identity(image: ImageInput) -> list[Any]:
    return [image.identity, image.strength]


def expand(template: Template, settings: Settings, recipes: list[Recipe] | None = None
           ) -> Iterator[RequestSpec | Problem]:
    """Every request of a template, or the problems that stop it from being expanded (``recipes``: collects the
    recipe of each combination that makes requests)."""
    problems = check_template(template)
    yield from problems
    fields = type_defaults(template.type) | template.fields
    axes = [(name, as_list(fields[name])) for name in MATRIX_FIELDS if name in fields]
    axes += [(f"var:{name}", as_list(value)) for name, value in template.vars.items()]
    count = int(fields.get("count", 1))
    too_many = _too_many(template, axes, count, settings.max_requests)
    if too_many is not None:
        yield too_many
        return
    seen_problems: set[Problem] = set()
    models: dict[str, Model | Problem] = {}
    region = job_region(template, settings)
    for choice in itertools.product(*(range(len(values)) for _, values in axes)):
        values = fields | {name: axis[choice[i]] for i, (name, axis) in enumerate(axes)}
        # Where to point a problem: the list item when the field is a list, else the field itself.
        indexes = {name: (choice[i] if isinstance(fields.get(name), list) else None) for i, (name, _) in
                   enumerate(axes)}
        if "prompt" not in values:
            values["prompt"] = ""  # reported by check_template; the combination checks still run
        model_name = str(values["model"])
        if "model" in template.rejected:
            continue  # the default model stands in for one the schema rejected: nothing of the user's to check
        if model_name not in models:
            models[model_name] = resolve_model(model_name, template.type,
                                               None if "region" in template.rejected else region,
                                               template.locate("model", indexes.get("model")),
                                               given_in=template.locate("region") if "region" in template.spots
                                               else None)
        model = models[model_name]
        found = [model] if isinstance(model, Problem) else check_combination(model, values, template, indexes)
        if found:
            for problem in found:
                if problem not in seen_problems:
                    seen_problems.add(problem)
                    yield problem
            continue
        if problems or template.rejected:  # problems were reported; the combinations are still checked
            continue
        assert not isinstance(model, Problem)
        recipe, prompt = _recipe(template, settings, region, model, fields, values, count)
        if recipes is not None:
            recipes.append(recipe)
        yield from recipe.specs(prompt, template.source)


def _too_many(template: Template, axes: list[tuple[str, list[Any]]], count: int, limit: int) -> Problem | None:
    """The problem of a matrix that would expand past ``limit`` requests, found before expanding it."""
    lists = [(name.removeprefix("var:"), len(values)) for name, values in axes if len(values) > 1]
    total = math.prod(n for _, n in lists) * count
    if total <= limit:
        return None
    factors = [f"{n} ({name})" for name, n in lists]
    if count > 1:
        factors.append(f"{count} (count)")
    return Problem(template.anchor or template.locate("prompt"),
                   f"this job would expand to {total:,} requests ({' × '.join(factors)}), more than the "
                   f"{limit:,} a job may have; split it, shorten its lists, or raise --max-requests")


def job_region(template: Template, settings: Settings) -> str:
    """The region a template's requests are sent to: its own ``region`` (a job's, its defaults', a row's), else the
    manifest's (for a spreadsheet, ``--region``)."""
    return str(template.fields.get("region", settings.region))


@dataclass
class Recipe:
    """How one matrix combination of a template becomes its requests, the prompt aside: the requests of another
    template that differs only in a prompt without placeholders are ``specs(prompt, source)``, the same as
    expanding that template would give."""

    params: dict[str, Any]  # the canonical parameters (the key's input), with the combination's prompt
    fields: dict[str, Any]  # the RequestSpec fields that are not the prompt's or the sample's
    count: int
    given_seed: Any
    # The canonical text of the key's input as a %-format of two values, the prompt as JSON and the sample (see
    # :meth:`reused`); None: each key is serialised in full
    key_format: str | None = None

    def reused(self) -> Recipe:
        """This recipe, made ready to be used for many prompts: the key's canonical text is cut once at the prompt
        and the sample, then only filled in (the text it gives is checked against the canonical form once; not
        used if it differs)."""
        marked = canonical_json({"v": KEY_VERSION, **self.params, "prompt": slot("prompt"), "sample": slot("sample")})
        if "@@" not in canonical_json(self.params):  # no marker of the user's own to be taken for a slot
            template = JsonTemplate(marked)
            # Sorted keys put the prompt before the sample, each once and at the top level: two plain values
            if template.places == [("prompt", "", 1), ("sample", "", 1)]:
                sample = {"v": KEY_VERSION, **self.params, "sample": 0}
                if template.format % (encode_basestring(self.params["prompt"]), 0) == canonical_json(sample):
                    self.key_format = template.format
        return self

    def _key(self, params: dict[str, Any], prompt: str, sample: int) -> tuple[str, str]:
        if self.key_format is None:
            return request_key({**params, "sample": sample})
        digest = hashlib.sha256((self.key_format % (encode_basestring(prompt), sample)).encode("utf-8")).hexdigest()
        return digest[:KEY_HEX_CHARS], digest

    def digests(self, prompt: str) -> list[bytes]:
        """The keys of :meth:`specs` (``prompt``) as their 16 bytes, without the requests: what counting needs."""
        if self.key_format is None:
            params = self.params | {"prompt": prompt}
            return [bytes.fromhex(self._key(params, prompt, sample)[0]) for sample in range(self.count)]
        text, key_format = encode_basestring(prompt), self.key_format
        return [hashlib.sha256((key_format % (text, sample)).encode("utf-8")).digest()[:KEY_BYTES]
                for sample in range(self.count)]

    def specs(self, prompt: str, source: Source) -> Iterator[RequestSpec]:
        params = self.params if prompt == self.params["prompt"] else self.params | {"prompt": prompt}
        job_type = self.fields["type"]
        for sample in range(self.count):
            key, digest = self._key(params, prompt, sample)
            yield RequestSpec(key=key, submit_id=submit_id_for(key), sample=sample, prompt=prompt,
                              seed=_seed(job_type, self.given_seed, digest), source=source, **self.fields)


def _recipe(template: Template, settings: Settings, region: str, model: Model, fields: dict[str, Any],
            values: dict[str, Any], count: int) -> tuple[Recipe, str]:
    """The recipe of one combination, and its prompt."""
    variables = {name[4:]: value for name, value in values.items() if name.startswith("var:")}
    prompt = render(str(values["prompt"]), variables)
    params: dict[str, Any] = {
        "region": region, "type": template.type, "model": model.key, "prompt": prompt,
        "resolution": values["resolution"],
    }
    extra: dict[str, Any] = {}
    if isinstance(model, VideoModel):
        first, end = fields.get("first_frame"), fields.get("end_frame")
        params |= {"duration": int(values["duration"]), "aspect_ratio": values["aspect_ratio"],
                   "fps": int(values["fps"]),
                   "first_frame": first.identity if first else None, "end_frame": end.identity if end else None}
        extra |= {"duration": params["duration"], "aspect_ratio": params["aspect_ratio"], "fps": params["fps"],
                  "first_frame": first, "end_frame": end}
    else:
        params |= {"ratio": values["ratio"], "sample_strength": float(values["sample_strength"])}
        extra |= {"ratio": params["ratio"], "sample_strength": params["sample_strength"]}
        if template.type == "image":
            params["negative_prompt"] = render(str(values["negative_prompt"]), variables)
            extra["negative_prompt"] = params["negative_prompt"]
        else:
            references: tuple[ImageInput, ...] = fields["references"]
            params["references"] = [_image_identity(r) for r in references]
            extra["references"] = references
        # Part of the key only when given, so that the keys (and seeds, submit ids) of requests without them stay
        # what they were. An explicit `images: 4` is sent, so it is a request of its own: the service's default
        # when nothing is sent is not known to be 4 for every model and every day.
        if values.get("images") is not None:
            params["images"] = extra["image_count"] = int(values["images"])
        if values.get("intelligent_ratio") is True:
            params["intelligent_ratio"] = extra["intelligent_ratio"] = True
    given_seed = values.get("seed")
    params["seed"] = given_seed
    credits = settings.costs.estimate(model, params["resolution"], params.get("duration"))
    spec_fields = {"type": template.type, "region": region, "model": model.name, "model_key": model.key,
                   "seed_given": given_seed is not None, "resolution": params["resolution"],
                   "estimated_credits": credits, **extra}
    return Recipe(params, spec_fields, count, given_seed), prompt


def _seed(job_type: str, given: Any, digest: str) -> int | None:
    if job_type == "image_to_image":
        return None
    return int(given) if given is not None else derived_seed(digest)
