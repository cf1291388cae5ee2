"""The files the simulator serves: real PNGs and structurally valid MP4s, deterministic from seed and prompt."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from jimeng_batch.sim.assets import asset_signature, mp4_boxes, render_mp4, render_png


def test_png_has_the_asked_size_and_is_deterministic() -> None:
    data = render_png(1, "a cat", 0, 300, 200)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (300, 200)
    render_png.cache_clear()
    assert render_png(1, "a cat", 0, 300, 200) == data


@pytest.mark.parametrize(
    "other",
    [
        pytest.param((2, "a cat", 0), id="seed"),
        pytest.param((1, "a dog", 0), id="prompt"),
        pytest.param((1, "a cat", 1), id="index"),
    ],
)
def test_png_pixels_depend_on_seed_prompt_and_index(other: tuple[int, str, int]) -> None:
    assert render_png(*other, 64, 64) != render_png(1, "a cat", 0, 64, 64)


def test_large_png_renders() -> None:
    image = Image.open(io.BytesIO(render_png(3, "big", 0, 4096, 4096)))
    assert image.size == (4096, 4096)


def _children(data: bytes, start: int, end: int) -> dict[bytes, tuple[int, int]]:
    return {kind: (s, e) for kind, s, e in mp4_boxes(data, start, end)}


def test_mp4_box_structure() -> None:
    data = render_mp4(5, "waves", 320, 180, 3)
    top = list(mp4_boxes(data))
    assert [kind for kind, _, _ in top] == [b"ftyp", b"mdat", b"moov"]
    assert top[-1][2] == len(data)
    assert data[8:12] == b"isom"
    boxes = _children(data, 0, len(data))
    moov = _children(data, *boxes[b"moov"])
    mvhd_start = moov[b"mvhd"][0]
    timescale, duration = struct.unpack(">II", data[mvhd_start + 12:mvhd_start + 20])
    assert duration / timescale == 3.0
    trak = _children(data, *moov[b"trak"])
    tkhd_start = trak[b"tkhd"][0]
    width, height = struct.unpack(">II", data[tkhd_start + 76:tkhd_start + 84])
    assert (width >> 16, height >> 16) == (320, 180)
    mdia = _children(data, *trak[b"mdia"])
    hdlr_start = mdia[b"hdlr"][0]
    assert data[hdlr_start + 8:hdlr_start + 12] == b"vide"
    stbl = _children(data, *_children(data, *mdia[b"minf"])[b"stbl"])
    assert set(stbl) == {b"stsd", b"stts", b"stsc", b"stsz", b"stco"}
    # The sample table points at three JPEG frames inside mdat, each decoding at the track's size.
    stsz_start = stbl[b"stsz"][0]
    count = struct.unpack(">I", data[stsz_start + 8:stsz_start + 12])[0]
    sizes = struct.unpack(f">{count}I", data[stsz_start + 12:stsz_start + 12 + 4 * count])
    offset = struct.unpack(">I", data[stbl[b"stco"][0] + 8:stbl[b"stco"][0] + 12])[0]
    assert offset == boxes[b"mdat"][0] and sum(sizes) == boxes[b"mdat"][1] - boxes[b"mdat"][0]
    for size in sizes:
        frame = Image.open(io.BytesIO(data[offset:offset + size]))
        assert frame.format == "JPEG" and frame.size == (320, 180)
        offset += size
    assert count == 3


def test_mp4_is_deterministic() -> None:
    first = render_mp4(5, "waves", 64, 64, 2)
    render_mp4.cache_clear()
    assert render_mp4(5, "waves", 64, 64, 2) == first
    assert render_mp4(6, "waves", 64, 64, 2) != first


def test_mp4_boxes_reject_bad_sizes() -> None:
    with pytest.raises(ValueError):
        list(mp4_boxes(struct.pack(">I4s", 100, b"ftyp")))
    with pytest.raises(ValueError):
        list(mp4_boxes(b"\x00\x00"))


def test_asset_signature_covers_name_and_expiry() -> None:
    base = asset_signature(b"k", "1-0.png", 100)
    assert base != asset_signature(b"k", "1-1.png", 100)
    assert base != asset_signature(b"k", "1-0.png", 101)
    assert base != asset_signature(b"other", "1-0.png", 100)
