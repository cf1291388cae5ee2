"""Simulated runs for the report's tests: a mixed one (images, a blocked prompt, a first/last-frame video), its
rerun served from the result cache, and a large one, all through the command line at zero simulator latency."""

from __future__ import annotations

import contextlib
import shutil
import textwrap
from pathlib import Path

from conftest import REPO

ZERO_LATENCY = """
    max_in_flight: null
    latency: {submit: 0, poll: 0, queue: 0, generation: 0}
"""
MIXED = """
    jobs:
      - name: pics
        type: image
        model: [jimeng-4.0, jimeng-3.1]
        resolution: 1k
        ratio: [1:1, 16:9]
        prompt: [a red kite, a forbidden cat]
      - name: clip
        type: video
        model: jimeng-video-3.0
        prompt: slow dolly shot at dusk
        first_frame: assets/first_frame.png
        end_frame: assets/end_frame.png
        duration: 5
        aspect_ratio: "16:9"
        resolution: 720p
"""
LARGE_REQUESTS = 220


def cli(args: list[str]) -> int:
    """The command line in-process (its output left to pytest's capture): its exit code."""
    from jimeng_batch.cli import main

    try:
        main(args)
    except SystemExit as exit_info:
        return int(exit_info.code or 0)
    return 0


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def sim_run(folder: Path, manifest: Path, out: str, *extra: str) -> int:
    """`run --sim` of ``manifest`` into ``folder/out`` at zero latency, with the result cache in ``folder``."""
    config = write(folder, "zero.yaml", ZERO_LATENCY)
    with contextlib.chdir(folder):  # the manifest's path as a user gives it: relative to where they are
        return cli(["run", str(manifest.relative_to(folder)), "--sim", "--sim-config", str(config), "--out",
                    str(folder / out), "--poll-interval", "0.01", "--quiet", "--cache-path",
                    str(folder / "cache.sqlite"), *extra])


def copy_frames(folder: Path) -> None:
    """The repository's two frame images, in ``folder/assets`` (where the manifests here name them)."""
    (folder / "assets").mkdir(exist_ok=True)
    for name in ("first_frame.png", "end_frame.png"):
        shutil.copy(REPO / "jobs" / "assets" / name, folder / "assets" / name)


def mixed_manifest(folder: Path) -> Path:
    """:data:`MIXED` with the repository's two frame images beside it."""
    copy_frames(folder)
    return write(folder, "mixed.yaml", MIXED)


def video_manifest(folder: Path) -> Path:
    """jobs/video_frames.yaml with its frames beside it."""
    copy_frames(folder)
    return write(folder, "video.yaml", (REPO / "jobs" / "video_frames.yaml").read_text(encoding="utf-8"))


def large_manifest(folder: Path) -> Path:
    prompts = ", ".join(f"scene {n}" for n in range(LARGE_REQUESTS - 2)) + ", forbidden one, forbidden two"
    return write(folder, "large.yaml", f"""
        jobs:
          - name: many
            type: image
            model: jimeng-4.0
            resolution: 1k
            images: 1
            prompt: [{prompts}]
    """)
