"""Dataset export: an output folder's downloaded files as a Hugging Face ``imagefolder`` (or ``videofolder``).

Layout (the ``datasets`` library's folder convention, one ``train`` split)::

    DIR/
      README.md                 the dataset card: manifest, its sha256, tool version, counts, how to regenerate
      train/
        metadata.jsonl          one line per file: file_name (relative to train/) plus the request's parameters
        <key>-<index>.<ext>     the files, hard-linked where possible and checked by sha256

``datasets.load_dataset("imagefolder", data_dir=DIR)`` loads it with every metadata field as a column.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from jimeng_batch._version import __version__
from jimeng_batch.errors import ConfigError, LedgerError, OutputError
from jimeng_batch.files import copy_verified, make_folder
from jimeng_batch.intake.sources import display_path
from jimeng_batch.outputs.results import is_missing, read_tables, results_frame

FORMATS = {"imagefolder": "image", "videofolder": "video"}
SPLIT = "train"
METADATA = "metadata.jsonl"
CARD = "README.md"

_COMMON_FIELDS = ("key", "index", "type", "prompt", "model", "model_key", "seed", "resolution", "job",
                  "source_file", "source_row", "sample", "width", "height", "format", "sha256", "origin", "simulated")
_KIND_FIELDS = {"image": ("negative_prompt", "ratio", "sample_strength", "references"),
                "video": ("duration", "aspect_ratio", "fps", "first_frame", "end_frame")}


@dataclass(frozen=True)
class Exported:
    """What an export wrote."""

    folder: Path
    files: int
    requests: int
    other_kind: int  # downloaded requests of the other kind, left out (export them with the other format)


def _plain(value: Any) -> Any:
    """A cell as a JSON value (None for missing, Python numbers for numpy ones)."""
    if isinstance(value, list):
        return value
    if is_missing(value):
        return None
    return value.item() if hasattr(value, "item") else value


def metadata_records(results: pd.DataFrame, kind: str) -> list[dict[str, Any]]:
    """One metadata line per downloaded file of ``kind`` ("image" or "video"), every line with the same fields."""
    wanted = results[(results["state"] == "downloaded")
                     & ((results["type"] == "video") == (kind == "video"))].sort_values("ord")
    fields = (*_COMMON_FIELDS, *_KIND_FIELDS[kind])
    records: list[dict[str, Any]] = []
    for row in wanted.to_dict(orient="records"):
        for index, path in enumerate(row["asset_paths"]):
            values = {**row, "index": index, "source_file": row["manifest"], "source_row": row["row"],
                      "width": row["asset_widths"][index], "height": row["asset_heights"][index],
                      "format": row["asset_formats"][index], "sha256": row["asset_sha256"][index]}
            record: dict[str, Any] = {"file_name": Path(path).name}
            record |= {name: _plain(values.get(name)) for name in fields}
            record["_source"] = path  # not written: where to copy the file from
            records.append(record)
    return records


def export_dataset(out_dir: Path, to: Path, fmt: str = "imagefolder", *, force: bool = False,
                   allow_mixed_origins: bool = False) -> Exported:
    """Write the dataset folder ``to`` from ``out_dir``'s ledger and files."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}")
    kind = FORMATS[fmt]
    tables = read_tables(out_dir)
    results = results_frame(tables)
    records = metadata_records(results, kind)
    origins = sorted({str(record["origin"]) for record in records})
    if len(origins) > 1 and not allow_mixed_origins:
        # A dataset of simulator noise and real generations (or of two services) would pass for one thing.
        raise ConfigError(f"{display_path(out_dir)}: its files come from {len(origins)} origins "
                          f"({', '.join(origins)}); export them apart, or give --allow-mixed-origins")
    downloaded = results[results["state"] == "downloaded"]
    other = int(((downloaded["type"] == "video") != (kind == "video")).sum())
    _prepare(to, force)
    split = to / SPLIT
    make_folder(split, "--to")
    requests = len({record["key"] for record in records})
    try:
        lines = []
        for record in records:
            source = out_dir / record.pop("_source")
            if not source.is_file():
                raise LedgerError(f"{display_path(source)}: listed in the ledger but missing; run `jimeng-batch "
                                  "resume` to download it again")
            if not copy_verified(source, split / record["file_name"], record["sha256"]):
                raise LedgerError(f"{display_path(source)}: its content no longer matches the sha256 in the ledger")
            lines.append(json.dumps(record, ensure_ascii=False))
        (split / METADATA).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        (to / CARD).write_text(dataset_card(tables.runs, records, fmt, requests, out_dir), encoding="utf-8")
    except OSError as exc:  # full, or turned read-only half-way: the run's folder is untouched
        raise OutputError(f"{display_path(to)}: cannot be written ({exc.strerror or exc})") from exc
    return Exported(to, len(records), requests, other)


def _prepare(to: Path, force: bool) -> None:
    """Refuse to mix an export into a folder holding something else; with ``force``, replace an earlier export."""
    if to.exists() and not to.is_dir():
        raise ConfigError(f"--to: {display_path(to)} is a file, not a folder")
    if to.is_dir() and any(to.iterdir()):
        if not force:
            raise ConfigError(f"--to: {display_path(to)} is not empty (use --force to replace an earlier export)")
        shutil.rmtree(to / SPLIT, ignore_errors=True)
        (to / CARD).unlink(missing_ok=True)


def dataset_card(runs: pd.DataFrame, records: list[dict[str, Any]], fmt: str, requests: int,
                 out_dir: Path) -> str:
    """The README.md of the dataset: what made it and how to make it again."""
    kind = FORMATS[fmt]
    manifests = runs.drop_duplicates(["manifest", "manifest_sha256"])[["manifest", "manifest_sha256",
                                                                      "tool_version"]]
    by_model = Counter(str(record["model"]) for record in records)
    size = "n<1K" if len(records) < 1000 else ("1K<n<10K" if len(records) < 10_000 else "10K<n<100K")
    task = "text-to-image" if kind == "image" else "text-to-video"
    simulated = sum(1 for record in records if record["simulated"])
    origins = Counter(str(record["origin"]) for record in records)
    made = ("**Simulated.** These files come from jimeng-batch's built-in simulator (a rehearsal: noise images), "
            "not from the Jimeng / Dreamina service" + ("" if simulated == len(records) else
                                                         f" ({simulated} of {len(records)} files)") + "."
            if simulated else "Generated by the Jimeng / Dreamina service through jimeng-batch.")
    lines = [
        "---",
        f"pretty_name: jimeng-batch {fmt} export of {out_dir.name}{' (simulated)' if simulated else ''}",
        f"task_categories: [{task}]",
        f"tags: [synthetic, jimeng-batch{', simulated' if simulated else ''}]",
        f"size_categories: [{size}]",
        "configs:",
        "  - config_name: default",
        f"    data_dir: {SPLIT}",
        "---",
        "",
        f"# {out_dir.name}",
        "",
        made,
        "",
        f"Made from the manifest(s) below; exported by jimeng-batch {__version__}. Load it "
        f'with `datasets.load_dataset("{fmt}", data_dir=...)`.',
        "",
        "## Origin",
        "",
        *[f"- `{origin}`: {count} file(s)" for origin, count in sorted(origins.items())],
        "",
        "## Counts",
        "",
        f"- files: {len(records)} ({kind}s), from {requests} request(s)",
        *[f"- {model}: {count} file(s)" for model, count in sorted(by_model.items())],
        "",
        "## Source",
        "",
        "| manifest | sha256 | jimeng-batch version |",
        "|---|---|---|",
        *[f"| `{row.manifest}` | `{row.manifest_sha256}` | {row.tool_version} |"
          for row in manifests.itertuples()],
        "",
        "## Regenerating",
        "",
        "Request keys, submit ids and seeds derive from the manifest alone, so the same manifest (same sha256) "
        "plans the same requests with the same seeds:",
        "",
        "```sh",
        *[f"jimeng-batch run {row.manifest} --out {out_dir.name}" for row in manifests.itertuples()],
        f"jimeng-batch export {out_dir.name} --to DIR --format {fmt}",
        "```",
        "",
        "The service does not promise identical pixels for identical seeds. `metadata.jsonl` has, for each file, "
        "its request key, prompt, model, seed, ratio, resolution and sha256.",
        "",
    ]
    return "\n".join(lines)
