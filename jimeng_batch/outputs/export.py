"""Dataset export: an output folder's downloaded files as a Hugging Face ``imagefolder`` (or ``videofolder``).

Layout (the ``datasets`` library's folder convention, one ``train`` split)::

    DIR/
      README.md                 the dataset card: manifest, its sha256, tool version, counts, how to regenerate
      train/
        metadata.jsonl          one line per file: file_name (relative to train/) plus the request's parameters
        <key>-<index>.<ext>     the files, hard-linked where possible and checked by sha256

``datasets.load_dataset("imagefolder", data_dir=DIR)`` loads it with every metadata field as a column. The
``datasets`` library infers each column's type from the JSON values (it reads no schema for metadata.jsonl), so
every line has the same fields, each with one shape: frames and references are real nested objects with the same
keys everywhere, and a field no file of the export has a value for is left out (the card names it) rather than
written as a column of nulls, which would have no type.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from jimeng_batch._version import __version__
from jimeng_batch.errors import ConfigError, LedgerError, OutputError
from jimeng_batch.files import copy_verified, make_folder
from jimeng_batch.intake.sources import display_path
from jimeng_batch.outputs import DEFAULT_LICENSE
from jimeng_batch.outputs.results import JSON_PARAM_COLUMNS, connect, is_missing, iter_results, read_runs

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
    left_out: tuple[str, ...] = ()  # metadata fields no exported file has a value for


def _plain(value: Any) -> Any:
    """A cell as a JSON value (None for missing, Python numbers for numpy ones)."""
    if isinstance(value, list):
        return value
    if is_missing(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _nested(value: Any) -> Any:
    """A frame or the references as stored (JSON text in the results table), decoded into objects."""
    if is_missing(value):
        return None
    return json.loads(str(value))


def _has_value(value: Any) -> bool:
    return value is not None and value != [] and value != {}


def _same_keys(records: list[dict[str, Any]], name: str) -> None:
    """Give every object of field ``name`` (a frame, or each reference of a list) the same keys, None where an
    object has none: one struct type for the column, whatever mix of files and uris the requests had."""
    objects = [item for record in records
               for item in (record[name] if isinstance(record[name], list) else [record[name]])
               if isinstance(item, dict)]
    keys = sorted({key for item in objects for key, value in item.items() if value is not None})
    for item in objects:
        item.update({key: item.get(key) for key in keys})
        for key in [key for key in item if key not in keys]:
            del item[key]


def metadata_records(results: pd.DataFrame, kind: str, to: Path | None = None,
                     manifests: Mapping[str, str] | None = None, *, same_keys: bool = True) -> list[dict[str, Any]]:
    """One metadata line per downloaded file of ``kind`` ("image" or "video"), every line with the same fields.

    ``source_file`` (the manifest) is relative to the dataset folder ``to`` when given, so the dataset can be moved
    with its repository; ``manifests``: each manifest as the ledger names it (relative to where the run was
    started) -> its absolute path (see :func:`manifest_paths`); ``same_keys=False`` leaves the nested objects'
    keys as they are, for a caller that gathers batches and gives them one set of keys at the end
    (:func:`same_nested_keys`).
    """
    wanted = results[(results["state"] == "downloaded")
                     & ((results["type"] == "video") == (kind == "video"))].sort_values("ord")
    fields = (*_COMMON_FIELDS, *_KIND_FIELDS[kind])
    records: list[dict[str, Any]] = []
    for row in wanted.to_dict(orient="records"):
        for index, path in enumerate(row["asset_paths"]):
            manifest = (manifests or {}).get(str(row["manifest"]), str(row["manifest"]))
            values = {**row, "index": index, "source_file": _relative(manifest, to),
                      "source_row": row["row"], "width": row["asset_widths"][index],
                      "height": row["asset_heights"][index], "format": row["asset_formats"][index],
                      "sha256": row["asset_sha256"][index]}
            record: dict[str, Any] = {"file_name": Path(path).name}
            record |= {name: (_nested(values.get(name)) if name in JSON_PARAM_COLUMNS else _plain(values.get(name)))
                       for name in fields}
            record["_source"] = path  # not written: where to copy the file from
            records.append(record)
    if same_keys:
        same_nested_keys(records, kind)
    return records


def same_nested_keys(records: list[dict[str, Any]], kind: str) -> None:
    """Every nested object of a column (frames, references) with the same keys, so the column has one type."""
    fields = (*_COMMON_FIELDS, *_KIND_FIELDS[kind])
    for name in JSON_PARAM_COLUMNS:
        if name in fields:
            _same_keys(records, name)


def manifest_paths(runs: pd.DataFrame) -> dict[str, str]:
    """Each manifest as the runs name it -> its absolute path (what the run resolved, stored with its options): the
    ledger names a manifest as it was given, relative to the folder the run was started in, not this one."""
    paths: dict[str, str] = {}
    for row in runs.itertuples():
        absolute = json.loads(str(row.options or "{}")).get("manifest")
        if absolute:
            paths[str(row.manifest)] = str(absolute)
    return paths


def drop_empty_fields(records: list[dict[str, Any]]) -> tuple[str, ...]:
    """Remove from every record the fields without a value on any line (a column of nulls has no type when the
    ``datasets`` library reads the JSON); the names removed."""
    if not records:
        return ()
    empty = tuple(name for name in records[0] if not any(_has_value(record[name]) for record in records))
    for record in records:
        for name in empty:
            del record[name]
    return empty


def _relative(manifest: str, to: Path | None) -> str:
    """The manifest's path relative to the dataset folder (as recorded when ``to`` is None or on another drive)."""
    if to is None:
        return manifest
    try:
        return Path(os.path.relpath(Path(manifest).resolve(), to.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return manifest


def export_dataset(out_dir: Path, to: Path, fmt: str = "imagefolder", *, force: bool = False,
                   allow_mixed_origins: bool = False, allow_simulated: bool = False,
                   license: str = DEFAULT_LICENSE, cwd: Path | None = None) -> Exported:
    """Write the dataset folder ``to`` from ``out_dir``'s ledger and files; ``cwd``: where the card's regenerate
    commands are run from (default: the working directory)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}")
    if not license.strip() or any(c.isspace() for c in license.strip()):
        raise ConfigError(f"--license: '{license}' is not a license identifier (such as other, cc-by-4.0, mit)")
    kind = FORMATS[fmt]
    # The results a batch of requests at a time (as a report reads them): what stays is a record per file.
    records: list[dict[str, Any]] = []
    states: Counter[str] = Counter()
    other = 0
    db = connect(out_dir)
    try:
        runs = read_runs(db)
        manifests = manifest_paths(runs)
        for batch in iter_results(db):
            records += metadata_records(batch, kind, to, manifests, same_keys=False)
            downloaded = batch[batch["state"] == "downloaded"]
            other += int(((downloaded["type"] == "video") != (kind == "video")).sum())
            states.update(str(state) for state in batch["state"])
    finally:
        db.close()
    same_nested_keys(records, kind)
    if not records:
        raise ConfigError(_nothing_to_export(out_dir, states, fmt, other))
    origins = sorted({str(record["origin"]) for record in records})
    if len(origins) > 1 and not allow_mixed_origins:
        # A dataset of simulator noise and real generations (or of two services) would pass for one thing.
        raise ConfigError(f"{display_path(out_dir)}: its files come from {len(origins)} origins "
                          f"({', '.join(origins)}); export them apart, or give --allow-mixed-origins")
    simulated = sum(1 for record in records if record["simulated"])
    if simulated and not allow_simulated:
        # Noise images from the rehearsal server must never be published as a dataset by mistake.
        raise ConfigError(f"{display_path(out_dir)}: {simulated} of its {len(records)} file(s) come from the "
                          "simulator (noise, not generations); export a simulated run only with --allow-simulated")
    left_out = drop_empty_fields(records)
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
        card = dataset_card(runs, records, fmt, requests, out_dir, license=license, left_out=left_out,
                            cwd=cwd)
        (split / METADATA).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        (to / CARD).write_text(card, encoding="utf-8")
    except OSError as exc:  # full, or turned read-only half-way: the run's folder is untouched
        raise OutputError(f"{display_path(to)}: cannot be written ({exc.strerror or exc})") from exc
    return Exported(to, len(records), requests, other, left_out)


def _nothing_to_export(out_dir: Path, counts: Counter[str], fmt: str, other: int) -> str:
    """Why an export would be empty, and what would not be."""
    kind = FORMATS[fmt]
    where = f"{display_path(out_dir)}: nothing to export as {fmt}: no downloaded {kind}s"
    if other:
        other_fmt = next(name for name in FORMATS if name != fmt)
        return f"{where} ({other} downloaded request(s) of the other kind: use --format {other_fmt})"
    described = ", ".join(f"{state} {count}" for state, count in sorted(counts.items())) or "no requests"
    return f"{where} (the ledger holds {described}; run or resume it first)"


def _prepare(to: Path, force: bool) -> None:
    """Refuse to mix an export into a folder holding something else; with ``force``, replace an earlier export."""
    if to.exists() and not to.is_dir():
        raise ConfigError(f"--to: {display_path(to)} is a file, not a folder")
    if to.is_dir() and any(to.iterdir()):
        if not force:
            raise ConfigError(f"--to: {display_path(to)} is not empty (use --force to replace an earlier export)")
        shutil.rmtree(to / SPLIT, ignore_errors=True)
        (to / CARD).unlink(missing_ok=True)


def regenerate_commands(runs: pd.DataFrame, out_dir: Path, cwd: Path | None = None) -> list[str]:
    """The `jimeng-batch run` lines that make each manifest's requests again, as its last run was started: the
    manifest and the output folder relative to ``cwd`` (the repository the command is run in), with the options
    that decide what is planned and where it is sent (--sim, --sim-config, --shard, --base-url)."""
    base = (cwd or Path.cwd()).resolve()
    commands: list[str] = []
    for _, group in runs.groupby("manifest_sha256", sort=False):
        last = group.iloc[-1]
        options = json.loads(str(last["options"] or "{}"))
        config = options.get("config") or {}
        path = Path(str(options.get("manifest") or last["manifest"]))
        parts = ["jimeng-batch", "run", _shell(_from(base, path)), "--out", _shell(_from(base, out_dir))]
        if config.get("sim"):
            parts.append("--sim")
        if config.get("sim_config"):
            parts += ["--sim-config", _shell(_from(base, Path(str(config["sim_config"]))))]
        if config.get("shard"):
            parts += ["--shard", str(config["shard"])]
        if config.get("base_url"):
            parts += ["--base-url", _shell(str(config["base_url"]))]
        command = " ".join(parts)
        if command not in commands:
            commands.append(command)
    return commands


def _from(base: Path, path: Path) -> str:
    """``path`` relative to ``base`` when it is below it (else as it is): a command that works from ``base``."""
    try:
        return path.resolve().relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _shell(text: str) -> str:
    return shlex.quote(text)


def dataset_card(runs: pd.DataFrame, records: list[dict[str, Any]], fmt: str, requests: int,
                 out_dir: Path, *, license: str = DEFAULT_LICENSE, left_out: tuple[str, ...] = (),
                 cwd: Path | None = None) -> str:
    """The README.md of the dataset: what made it, where it comes from, and how to make it again."""
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
    export_line = (f"jimeng-batch export {_shell(_from((cwd or Path.cwd()).resolve(), out_dir))} --to DIR "
                   f"--format {fmt} --license {license}" + (" --allow-simulated" if simulated else ""))
    lines = [
        "---",
        f"pretty_name: jimeng-batch {fmt} export of {out_dir.name}{' (simulated)' if simulated else ''}",
        f"license: {license}",
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
        "## License",
        "",
        f"`{license}`" + (": the files are subject to the terms of the service that generated them."
                          if license == DEFAULT_LICENSE else "."),
        "",
        "## Origin",
        "",
        ("Simulated: the files are the simulator's, not generations." if simulated == len(records) else
         "Live: the files were generated by the service." if not simulated else
         "Mixed: simulated and live files (exported together with --allow-mixed-origins)."),
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
        "plans the same requests with the same seeds. From the repository the manifest is in:",
        "",
        "```sh",
        *regenerate_commands(runs, out_dir, cwd),
        export_line,
        "```",
        "",
        "The service does not promise identical pixels for identical seeds. `metadata.jsonl` has, for each file, "
        "its request key, prompt, model, seed, ratio, resolution and sha256; `source_file` is the manifest's path "
        "relative to this folder.",
        "",
    ]
    if left_out:
        lines += [f"Fields without a value for any file of this export, left out of `metadata.jsonl`: "
                  f"{', '.join(f'`{name}`' for name in left_out)}.", ""]
    return "\n".join(lines)
