"""The unit of work: one fully resolved draft request, before it is built into the service's envelope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jimeng_batch.catalog import JobType


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

    def images(self) -> tuple[ImageInput, ...]:
        """Every image this request needs on the service."""
        frames = tuple(f for f in (self.first_frame, self.end_frame) if f is not None)
        return self.references + frames

    def params(self) -> dict[str, Any]:
        """The generation parameters, as plain data (for plans, ledgers and reports)."""
        out: dict[str, Any] = {
            "type": self.type, "region": self.region, "model": self.model, "model_key": self.model_key,
            "prompt": self.prompt, "seed": self.seed, "resolution": self.resolution,
        }
        if self.type == "video":
            out |= {"duration": self.duration, "aspect_ratio": self.aspect_ratio, "fps": self.fps}
            for name, frame in (("first_frame", self.first_frame), ("end_frame", self.end_frame)):
                if frame is not None:
                    out[name] = _image_data(frame)
        else:
            out |= {"ratio": self.ratio, "sample_strength": self.sample_strength}
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
