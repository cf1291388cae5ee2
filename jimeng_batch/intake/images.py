"""Local reference and frame images: read once, checked against what the service accepts, hashed."""

from __future__ import annotations

import errno
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from jimeng_batch.protocol import catalog


@dataclass(frozen=True, slots=True)
class LocalImage:
    """What was read from an image file."""

    sha256: str
    size: int
    width: int
    height: int
    format: str  # lower case, as the service's image objects carry it ("png", "jpeg", "webp")


class ImageProblem(ValueError):
    """An image file is missing, unreadable or not one the service accepts."""


class MissingImage(ImageProblem, FileNotFoundError):
    """The image file does not exist."""


def inspect_image(path: Path) -> LocalImage:
    """Read ``path`` and check it is an image the service accepts; raise ImageProblem saying why not."""
    from PIL import (  # Pillow is only needed when a manifest names local images
        Image,
        UnidentifiedImageError,
    )

    try:
        if not path.exists():
            raise MissingImage("no such file")
        if not path.is_file():
            raise ImageProblem("not a file")
        data = path.read_bytes()
    except ImageProblem:
        raise
    except ValueError as exc:  # os.stat refuses a NUL in a name
        raise ImageProblem("the name holds a NUL character, which no file name can") from exc
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise ImageProblem("the name is longer than the file system allows") from exc
        raise ImageProblem(f"cannot be read ({exc.strerror})") from exc
    if len(data) > catalog.REFERENCE_IMAGE_MAX_BYTES:
        raise ImageProblem(
            f"{len(data) / 1048576:.1f} MiB is too large; the service accepts at most "
            f"{catalog.REFERENCE_IMAGE_MAX_BYTES // 1048576} MiB"
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = (image.format or "").upper()
            width, height = image.size
            image.verify()
    except Image.DecompressionBombError as exc:  # a header claiming gigapixels: refused before decoding
        raise ImageProblem(f"claims more pixels than any image the service accepts ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageProblem(
            f"not an image the service accepts ({', '.join(catalog.REFERENCE_IMAGE_FORMATS)})"
        ) from exc
    if kind not in catalog.REFERENCE_IMAGE_FORMATS:
        raise ImageProblem(f"a {kind} image; allowed formats: {', '.join(catalog.REFERENCE_IMAGE_FORMATS)}")
    low, high = catalog.REFERENCE_IMAGE_MIN_SIDE, catalog.REFERENCE_IMAGE_MAX_SIDE
    if min(width, height) < low or max(width, height) > high:
        raise ImageProblem(f"{width}x{height} pixels; each side must be between {low} and {high} pixels")
    return LocalImage(hashlib.sha256(data).hexdigest(), len(data), width, height, kind.lower())
