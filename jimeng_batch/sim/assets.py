"""The files the simulator hands out: PNG images, small MP4 videos, and the signed, expiring URLs that reach them.

Pixels are a pure function of (seed, prompt, index, width, height): a coarse grid of colours drawn from a hash and
scaled up, which is cheap to render at 4096x4096 and compresses to little. Videos are real ISO base media files
(``ftyp``, ``mdat``, ``moov``) carrying one Motion-JPEG frame per second, so that any MP4 parser (and ffmpeg) reads
them, without needing a video encoder.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import random
import struct
import zlib
from collections.abc import Iterable

from PIL import Image

__all__ = ["HIGH_KBPS", "PREVIEW_KBPS", "asset_signature", "mp4_bitrate", "mp4_boxes", "render_mp4", "render_png"]

# The two versions of a video the service hands out (protocol reference 2.4): the preview a poll lists, and the
# download version get_local_item_list names. Each file declares its bitrate in a `btrt` box; the download version
# is also really larger (its frames are encoded at a higher quality).
PREVIEW_KBPS = 1152
HIGH_KBPS = 6297
_JPEG_QUALITY = {PREVIEW_KBPS: 60, HIGH_KBPS: 95}

_GRID = 8  # colour cells per side
_CACHE_SIZE = 64


def _pixels_seed(seed: int, prompt: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}\x00{prompt}\x00{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _cells(seed: int, prompt: str, index: int) -> bytes:
    """The picture's colours: one RGB triple per cell of the grid, from the seed, the prompt and the index."""
    rng = random.Random(_pixels_seed(seed, prompt, index))
    return bytes(rng.getrandbits(8) for _ in range(_GRID * _GRID * 3))


def _picture(seed: int, prompt: str, index: int, width: int, height: int) -> Image.Image:
    small = Image.frombytes("RGB", (_GRID, _GRID), _cells(seed, prompt, index))
    return small.resize((width, height), Image.Resampling.NEAREST)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def render_png(seed: int, prompt: str, index: int, width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height``: a grid of colour cells, the same bytes for the same arguments.

    Written by hand rather than through Pillow, because it costs a fraction as much and downloads must not make the
    simulator the bottleneck of a benchmark: a palette image (one byte a pixel), where each band of cells is one
    real scanline followed by rows that the PNG "Up" filter turns into zeros, which compress almost for free.
    """
    palette = _cells(seed, prompt, index)
    compressor = zlib.compressobj(1)
    parts: list[bytes] = []
    repeat = b"\x02" + bytes(width)  # filter type 2 (Up): the same pixels as the row above
    for band in range(_GRID):
        top, bottom = band * height // _GRID, (band + 1) * height // _GRID
        if bottom == top:
            continue
        row = b"".join(bytes([band * _GRID + cell]) * ((cell + 1) * width // _GRID - cell * width // _GRID)
                       for cell in range(_GRID))
        parts.append(compressor.compress(b"\x00" + row))
        parts.append(compressor.compress(repeat * (bottom - top - 1)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)  # 8-bit, palette colour, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"PLTE", palette)
            + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


def _jpeg(image: Image.Image, quality: int = 60) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def render_mp4(seed: int, prompt: str, width: int, height: int, duration_s: int, fps: int = 24,
               bitrate_kbps: int = PREVIEW_KBPS) -> bytes:
    """A small valid MP4: one Motion-JPEG frame per second of ``duration_s``, ``width`` x ``height``.

    ``bitrate_kbps`` (PREVIEW_KBPS or HIGH_KBPS) picks the version: the higher one encodes its frames at a higher
    quality, and each declares its nominal bitrate in the sample entry's ``btrt`` box.

    Layout: ``ftyp``, then ``mdat`` with the frames, then ``moov`` (``mvhd``, one video ``trak`` whose sample table
    points into ``mdat``). Timescale is milliseconds; each frame lasts one second. ``fps`` is recorded as the
    nominal rate in the sample entry's name only; the track itself is 1 frame per second to stay small.
    """
    quality = _JPEG_QUALITY.get(bitrate_kbps, 60)
    frames = [_jpeg(_picture(seed, prompt, i, width, height), quality) for i in range(max(1, duration_s))]
    duration_ms = 1000 * len(frames)
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isom", b"iso2", b"mp41")
    mdat = _box(b"mdat", *frames)
    first_offset = len(ftyp) + 8

    mvhd = _full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, 1000, duration_ms),
        struct.pack(">IH", 0x00010000, 0x0100), bytes(10), _MATRIX, bytes(24), struct.pack(">I", 2),
    )
    tkhd = _full_box(
        b"tkhd", 0, 3,
        struct.pack(">IIII", 0, 0, 1, 0), struct.pack(">I", duration_ms), bytes(8),
        struct.pack(">hhhH", 0, 0, 0, 0), _MATRIX, struct.pack(">II", width << 16, height << 16),
    )
    mdhd = _full_box(b"mdhd", 0, 0, struct.pack(">IIII", 0, 0, 1000, duration_ms), struct.pack(">HH", 0x55C4, 0))
    hdlr = _full_box(b"hdlr", 0, 0, struct.pack(">I", 0), b"vide", bytes(12), b"VideoHandler\x00")
    vmhd = _full_box(b"vmhd", 0, 1, struct.pack(">HHHH", 0, 0, 0, 0))
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    name = f"jimeng-sim mjpeg {fps}fps".encode()[:31]
    sample_entry = _box(
        b"jpeg",
        bytes(6), struct.pack(">H", 1),  # reserved, data_reference_index
        bytes(16),  # pre_defined / reserved
        struct.pack(">HH", width, height),
        struct.pack(">II", 0x00480000, 0x00480000), bytes(4), struct.pack(">H", 1),
        bytes([len(name)]) + name + bytes(31 - len(name)),
        struct.pack(">Hh", 0x0018, -1),
        _box(b"btrt", struct.pack(">III", 0, bitrate_kbps * 1000, bitrate_kbps * 1000)),
    )
    stsd = _full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry)
    stts = _full_box(b"stts", 0, 0, struct.pack(">III", 1, len(frames), 1000))
    stsc = _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, len(frames), 1))
    stsz = _full_box(b"stsz", 0, 0, struct.pack(">II", 0, len(frames)), *(struct.pack(">I", len(f)) for f in frames))
    stco = _full_box(b"stco", 0, 0, struct.pack(">II", 1, first_offset))
    stbl = _box(b"stbl", stsd, stts, stsc, stsz, stco)
    minf = _box(b"minf", vmhd, dinf, stbl)
    mdia = _box(b"mdia", mdhd, hdlr, minf)
    trak = _box(b"trak", tkhd, mdia)
    moov = _box(b"moov", mvhd, trak)
    return ftyp + mdat + moov


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterable[tuple[bytes, int, int]]:
    """Walk the boxes at one level: (type, payload start, payload end). ``ValueError`` on a malformed size."""
    end = len(data) if end is None else end
    offset = start
    while offset < end:
        if offset + 8 > end:
            raise ValueError(f"truncated box header at {offset}")
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size < 8 or offset + size > end:
            raise ValueError(f"bad box size {size} for {kind!r} at {offset}")
        yield kind, offset + 8, offset + size
        offset += size


def mp4_bitrate(data: bytes) -> int | None:
    """The average bitrate (bits per second) an MP4 of :func:`render_mp4` declares in its ``btrt`` box, or None."""
    path = (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd")
    start, end = 0, len(data)
    for kind in path:
        found = next(((s, e) for k, s, e in mp4_boxes(data, start, end) if k == kind), None)
        if found is None:
            return None
        start, end = found
    entry = next(iter(mp4_boxes(data, start + 8, end)), None)  # stsd: version, flags and the entry count first
    if entry is None:
        return None
    _kind, entry_start, entry_end = entry
    for kind, box_start, box_end in mp4_boxes(data, entry_start + 78, entry_end):  # the visual sample entry's fields
        if kind == b"btrt" and box_end - box_start >= 12:
            return int(struct.unpack(">III", data[box_start:box_start + 12])[2])
    return None


def asset_signature(secret: bytes, name: str, expires: int) -> str:
    """The ``x-signature`` of an asset URL: an HMAC over the file name and its expiry."""
    return hmac.new(secret, f"{name}\n{expires}".encode(), hashlib.sha256).hexdigest()[:32]
