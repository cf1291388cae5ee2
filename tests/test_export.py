"""Dataset export: the imagefolder layout, its metadata and card, loading it with `datasets`, videos, refusals
(an empty selection, a simulated run without --allow-simulated)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_main
from run_helpers import planned_folder, write_manifest

import jimeng_batch as jb
from jimeng_batch import __version__
from jimeng_batch.outputs.export import metadata_records

IMAGES = """
    jobs:
      - name: pics
        type: image
        model: [jimeng-4.0, jimeng-3.1]
        resolution: 1k
        ratio: ["1:1", "16:9"]
        prompt: [a red kite, a forbidden cat]
      - name: clip
        type: video
        model: jimeng-video-3.0
        prompt: a slow pan
        first_frame: uri:image_uri_1
        duration: 5
"""


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of images (four downloaded, four blocked) and one video on the simulator, without a report."""
    base = tmp_path_factory.mktemp("export")
    path = write_manifest(base, IMAGES)
    done = jb.run(path, out=base / "out", sim=True, poll_interval=0.01, quiet=True, use_cache=False, report=False)
    assert done.counts == {"downloaded": 5, "blocked": 4}
    return base


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_imagefolder_layout_metadata_and_card(run_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "dataset"
    monkeypatch.chdir(run_folder)  # the repository the manifest is in
    code, out, err = run_main(["export", "out", "--to", str(target), "--allow-simulated"], capsys)
    assert code == 0, err
    assert "16 file(s) from 4 request(s)" in out and "1 request(s) of the other kind" in out
    split = target / "train"
    records = [json.loads(line) for line in (split / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 16
    assert sorted(p.name for p in split.iterdir() if p.name != "metadata.jsonl") == sorted(
        r["file_name"] for r in records)
    for record in records:
        # the documented imagefolder rule: file_name is relative to the folder metadata.jsonl is in
        assert "/" not in record["file_name"] and (split / record["file_name"]).is_file()
        assert _sha(split / record["file_name"]) == record["sha256"]
        assert {"prompt", "model", "seed", "ratio", "resolution", "key"} <= set(record)
        assert record["prompt"] == "a red kite" and record["resolution"] == "1k"
        assert isinstance(record["seed"], int) and len(record["key"]) == 32
        # the manifest, relative to the dataset folder (an absolute path would name the exporting machine)
        assert not Path(record["source_file"]).is_absolute()
        assert (target / record["source_file"]).resolve() == (run_folder / "m.yaml").resolve()
    assert list(records[0]) == list(records[-1])  # every line has the same fields, so every column has a type
    for name in records[0]:  # ... and each has a value somewhere: a column of nulls has no type
        assert any(r[name] is not None for r in records), name
    assert "source_row" not in records[0] and "references" not in records[0]  # YAML rows, no references
    assert {r["model"] for r in records} == {"jimeng-4.0", "jimeng-3.1"} and {r["ratio"] for r in records} == {
        "1:1", "16:9"}
    card = (target / "README.md").read_text(encoding="utf-8")
    header = card.split("---\n")[1]
    assert card.startswith("---\n") and "task_categories: [text-to-image]" in header
    assert "license: other\n" in header and "configs:\n  - config_name: default\n    data_dir: train\n" in header
    assert _sha(run_folder / "m.yaml") in card and f"jimeng-batch {__version__}" in card
    assert "files: 16 (images), from 4 request(s)" in card
    assert "**Simulated.**" in card and "Simulated: the files are the simulator's" in card
    # the command that reproduces the run: the manifest and the folder relative to where it was run, with --sim
    assert "\njimeng-batch run m.yaml --out out --sim\n" in card
    assert "jimeng-batch export out --to DIR --format imagefolder --license other --allow-simulated" in card
    assert "left out of `metadata.jsonl`: `source_row`, `references`." in card


def test_the_folder_loads_with_datasets(run_folder: Path, tmp_path: Path) -> None:
    """`datasets.load_dataset("imagefolder", data_dir=DIR)`, offline, in a process of its own (its settings are
    read from the environment when it is imported)."""
    pytest.importorskip("datasets")
    target = tmp_path / "dataset"
    code = subprocess.run([sys.executable, "-m", "jimeng_batch", "export", str(run_folder / "out"), "--to",
                           str(target), "--allow-simulated"], capture_output=True, text=True, check=False)
    assert code.returncode == 0, code.stderr
    script = (
        "import json, sys, datasets\n"
        "data = datasets.load_dataset('imagefolder', data_dir=sys.argv[1], cache_dir=sys.argv[2])\n"
        "train = data['train']\n"
        "row = train[0]\n"
        "print(json.dumps({'splits': list(data), 'rows': train.num_rows, 'columns': train.column_names,\n"
        "                  'size': list(row['image'].size), 'prompt': row['prompt'],\n"
        "                  'types': {name: str(feature) for name, feature in train.features.items()}}))\n"
    )
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", script, str(target), str(tmp_path / "cache")], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["splits"] == ["train"] and loaded["rows"] == 16
    assert {"image", "prompt", "model", "seed", "ratio", "resolution", "key"} <= set(loaded["columns"])
    assert loaded["size"] in ([1024, 1024], [1664, 936]) and loaded["prompt"] == "a red kite"
    untyped = [name for name, feature in loaded["types"].items() if "null" in feature]
    assert not untyped, untyped  # every column has a type
    assert "string" in loaded["types"]["source_file"] and "int64" in loaded["types"]["seed"]


def test_videos_get_the_same_layout(run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "videos"
    code, out, err = run_main(["export", str(run_folder / "out"), "--to", str(target), "--format", "videofolder",
                               "--allow-simulated"], capsys)
    assert code == 0, err
    assert "1 file(s) from 1 request(s)" in out and "left out (export them with --format imagefolder)" in out
    (record,) = [json.loads(line) for line in (target / "train" / "metadata.jsonl").read_text().splitlines()]
    assert record["file_name"].endswith(".mp4") and record["duration"] == 5 and record["model"] == "jimeng-video-3.0"
    assert record["first_frame"] == {"kind": "uri", "ref": "image_uri_1"}  # an object, not JSON inside JSON
    assert "end_frame" not in record  # no request had one: not a column of nulls
    assert _sha(target / "train" / record["file_name"]) == record["sha256"]
    assert "task_categories: [text-to-video]" in (target / "README.md").read_text(encoding="utf-8")


def test_an_export_does_not_mix_into_another_folder(run_folder: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "notes.txt").write_text("mine", encoding="utf-8")
    code, _, err = run_main(["export", str(run_folder / "out"), "--to", str(target), "--allow-simulated"], capsys)
    assert code == 2 and "is not empty (use --force" in err
    code, _, err = run_main(["export", str(run_folder / "out"), "--to", str(target), "--force",
                             "--allow-simulated"], capsys)
    assert code == 0, err
    assert (target / "notes.txt").read_text(encoding="utf-8") == "mine"  # --force replaces only an export
    assert len((target / "train" / "metadata.jsonl").read_text().splitlines()) == 16
    code, _, err = run_main(["export", str(tmp_path), "--to", str(tmp_path / "x")], capsys)
    assert code == 2 and "no ledger here" in err


def test_a_simulated_run_is_exported_only_when_allowed(run_folder: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "dataset"
    code, _, err = run_main(["export", str(run_folder / "out"), "--to", str(target)], capsys)
    assert code == 2 and "16 of its 16 file(s) come from the simulator" in err and "--allow-simulated" in err
    assert not target.exists()  # nothing written
    code, _, err = run_main(["export", str(run_folder / "out"), "--to", str(target), "--allow-simulated",
                             "--license", "cc-by-4.0"], capsys)
    assert code == 0, err
    assert "license: cc-by-4.0\n" in (target / "README.md").read_text(encoding="utf-8")
    code, _, err = run_main(["export", str(run_folder / "out"), "--to", str(tmp_path / "x"), "--allow-simulated",
                             "--license", "my license"], capsys)
    assert code == 2 and "--license: 'my license' is not a license identifier" in err


def test_an_empty_selection_is_refused(run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An imagefolder export of a video-only run, or of a run with nothing downloaded, exits 2 saying why."""
    videos_only = tmp_path / "videos-only"
    shutil.copytree(run_folder / "out", videos_only)
    db = sqlite3.connect(videos_only / "ledger.sqlite")
    with db:  # the images blocked: what is left downloaded is the video
        db.execute("UPDATE requests SET state = 'blocked' WHERE key IN "
                   "(SELECT key FROM assets WHERE path NOT LIKE '%.mp4')")
    db.close()
    code, out, err = run_main(["export", str(videos_only), "--to", str(tmp_path / "a"), "--allow-simulated"],
                              capsys)
    assert code == 2 and not out
    assert "nothing to export as imagefolder: no downloaded images" in err and "use --format videofolder" in err
    assert not (tmp_path / "a").exists()
    planned = planned_folder(write_manifest(tmp_path, IMAGES), tmp_path / "planned")
    for fmt in ("imagefolder", "videofolder"):
        code, _, err = run_main(["export", str(planned), "--to", str(tmp_path / "b"), "--format", fmt], capsys)
        assert code == 2 and f"nothing to export as {fmt}" in err
        assert "the ledger holds planned 9; run or resume it first" in err


def test_frames_and_references_are_objects_of_one_shape(run_folder: Path) -> None:
    """A file reference (with its sha256 and size) and a uri in the same export: every object gets the same keys,
    so the column has one struct type."""
    from jimeng_batch.outputs.results import results_table

    results = results_table(run_folder / "out")
    video = results[results["type"] == "video"].copy()
    twin = video.copy()
    twin["key"], twin["ord"] = "f" * 32, 99
    twin["first_frame"] = json.dumps({"kind": "file", "ref": "frames/a.png", "sha256": "0" * 64, "width": 8,
                                      "height": 8, "format": "png"})
    records = metadata_records(pd.concat([video, twin]), "video")
    assert [r["first_frame"] for r in records] == [
        {"kind": "uri", "ref": "image_uri_1", "sha256": None, "width": None, "height": None, "format": None},
        {"kind": "file", "ref": "frames/a.png", "sha256": "0" * 64, "width": 8, "height": 8, "format": "png"}]


def test_source_file_is_relative_to_the_dataset_wherever_the_run_was_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The ledger names the manifest as the run was given it (`m.yaml`, relative to where `run` started); an
    export from elsewhere still points at the file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    write_manifest(repo, "jobs:\n  - {type: image, model: jimeng-4.0, resolution: 1k, prompt: a kite, count: 1}\n")
    monkeypatch.chdir(repo)
    jb.run(Path("m.yaml"), out=Path("out"), sim=True, poll_interval=0.01, quiet=True, use_cache=False, report=False)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["export", "repo/out", "--to", "data/set", "--allow-simulated"], capsys)
    assert code == 0, err
    (record, *_) = [json.loads(line) for line in (tmp_path / "data" / "set" / "train" / "metadata.jsonl")
                    .read_text(encoding="utf-8").splitlines()]
    assert record["source_file"] == "../../repo/m.yaml"
    # the card's commands work from where the export was made
    card = (tmp_path / "data" / "set" / "README.md").read_text(encoding="utf-8")
    assert "jimeng-batch run repo/m.yaml --out repo/out --sim\n" in card


def test_an_export_read_in_batches_is_the_same(run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The export reads the results a batch of requests at a time: batches of one request give the same lines, in
    the same order, as one batch of all."""
    from jimeng_batch.outputs import results

    lines = []
    for batch in (None, 1):
        if batch:
            monkeypatch.setattr(results, "BATCH_REQUESTS", batch)
        target = tmp_path / f"set{batch}"
        code, _, err = run_main(["export", str(run_folder / "out"), "--to", str(target), "--allow-simulated"],
                                capsys)
        assert code == 0, err
        lines.append((target / "train" / "metadata.jsonl").read_text(encoding="utf-8"))
    assert lines[0] == lines[1] and lines[0].count("\n") > 1
