"""The unit of work: one fully resolved draft request, before it is built into the service's envelope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.catalog import JobType


@dataclass(frozen=True, slots=True)
class ImageInput:
    """A reference or frame image: a local file (with what was read from it) or an image_uri on the service."""

    kind: str  # "file" or "uri"
    ref: str  # the path as written in the manifest, or the image_uri
    sha256: str | None = None  # files only: the content hash the cache key and uploads use
    width: int = 0
    height: int = 0
    format: str = ""
    strength: float | None = None  # references only

    @property
    def identity(self) -> str:
        """What makes two inputs the same image: the content hash of a file, or the uri itself."""
        return f"sha256:{self.sha256}" if self.kind == "file" else f"uri:{self.ref}"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a request came from, for reports and messages."""

    file: str
    job: str
    job_index: int
    row: int | None = None  # spreadsheet row number (the header is row 1)


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One expanded request: everything needed to build its draft, plus its stable identity."""

    key: str
    submit_id: str
    sample: int
    type: JobType
    region: str
    model: str  # the user-facing name
    model_key: str  # what the service is sent
    prompt: str
    seed: int | None  # None for image_to_image: the document's blend draft carries no seed
    seed_given: bool
    resolution: str
    source: Source
    estimated_credits: float
    negative_prompt: str | None = None
    ratio: str | None = None
    sample_strength: float | None = None
    references: tuple[ImageInput, ...] = ()
    duration: int | None = None
    aspect_ratio: str | None = None
    fps: int | None = None
    first_frame: ImageInput | None = None
    end_frame: ImageInput | None = None
    # Images asked for (gen_option.gen_count); None: the manifest names none, and none is sent (the service's
    # default applies). Text-to-image and image-to-image only.
    image_count: int | None = None
    intelligent_ratio: bool = False  # the model picks the ratio (image_ratio is not sent for text-to-image)

    @property
    def expected_images(self) -> int | None:
        """How many images this request should give: the count asked for, else the service's default; None for
        video (one video per request)."""
        if self.type == "video":
            return None
        return self.image_count if self.image_count is not None else catalog.DEFAULT_IMAGES_PER_REQUEST

    def images(self) -> tuple[ImageInput, ...]:
        """Every image this request needs on the service."""
        frames = tuple(f for f in (self.first_frame, self.end_frame) if f is not None)
        return self.references + frames

    def params(self) -> dict[str, Any]:
        """The generation parameters, as plain data (for plans, ledgers and reports)."""
        out: dict[str, Any] = {
            "type": self.type, "region": self.region, "model": self.model, "model_key": self.model_key,
            "prompt": self.prompt, "seed": self.seed, "seed_given": self.seed_given, "resolution": self.resolution,
        }
        if self.type == "video":
            out |= {"duration": self.duration, "aspect_ratio": self.aspect_ratio, "fps": self.fps}
            for name, frame in (("first_frame", self.first_frame), ("end_frame", self.end_frame)):
                if frame is not None:
                    out[name] = _image_data(frame)
        else:
            out |= {"ratio": self.ratio, "sample_strength": self.sample_strength}
            # Only when asked for, so that the params (and plans, ledgers) of requests without them are unchanged.
            if self.image_count is not None:
                out["images"] = self.image_count
            if self.intelligent_ratio:
                out["intelligent_ratio"] = True
            if self.type == "image":
                out["negative_prompt"] = self.negative_prompt
            else:
                out["references"] = [_image_data(r) for r in self.references]
        return out


def _image_data(image: ImageInput) -> dict[str, Any]:
    data: dict[str, Any] = {"kind": image.kind, "ref": image.ref}
    if image.sha256:
        data |= {"sha256": image.sha256, "width": image.width, "height": image.height, "format": image.format}
    if image.strength is not None:
        data["strength"] = image.strength
    return data


def _image_from(data: dict[str, Any]) -> ImageInput:
    return ImageInput(data["kind"], data["ref"], data.get("sha256"), int(data.get("width", 0)),
                      int(data.get("height", 0)), str(data.get("format", "")), data.get("strength"))


def spec_from_params(key: str, submit_id: str, sample: int, params: dict[str, Any], source: Source,
                     estimated_credits: float) -> RequestSpec:
    """A request rebuilt from what :meth:`RequestSpec.params` stored (the ledger keeps params, not objects)."""
    frames = {name: _image_from(params[name]) for name in ("first_frame", "end_frame") if params.get(name)}
    return RequestSpec(
        key=key, submit_id=submit_id, sample=sample, type=params["type"], region=params["region"],
        model=params["model"], model_key=params["model_key"], prompt=params["prompt"], seed=params.get("seed"),
        seed_given=bool(params.get("seed_given")), resolution=params["resolution"], source=source,
        estimated_credits=estimated_credits, negative_prompt=params.get("negative_prompt"),
        ratio=params.get("ratio"), sample_strength=params.get("sample_strength"),
        references=tuple(_image_from(r) for r in params.get("references", [])), duration=params.get("duration"),
        aspect_ratio=params.get("aspect_ratio"), fps=params.get("fps"), first_frame=frames.get("first_frame"),
        end_frame=frames.get("end_frame"), image_count=params.get("images"),
        intelligent_ratio=bool(params.get("intelligent_ratio")),
    )
