"""Dataset export: the imagefolder layout, its metadata and card, loading it with `datasets`, videos, refusals."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_main
from run_helpers import write_manifest

import jimeng_batch as jb
from jimeng_batch import __version__

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


def test_imagefolder_layout_metadata_and_card(run_folder: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "dataset"
    code, out, err = run_main(["export", str(run_folder / "out"), "--to", str(target)], capsys)
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
    assert list(records[0]) == list(records[-1])  # every line has the same fields, so every column has a type
    assert {r["model"] for r in records} == {"jimeng-4.0", "jimeng-3.1"} and {r["ratio"] for r in records} == {
        "1:1", "16:9"}
    card = (target / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "task_categories: [text-to-image]" in card
    assert _sha(run_folder / "m.yaml") in card and f"jimeng-batch {__version__}" in card
    assert "files: 16 (images), from 4 request(s)" in card
    assert f"jimeng-batch run {run_folder / 'm.yaml'} --out out" in card


def test_the_folder_loads_with_datasets(run_folder: Path, tmp_path: Path) -> None:
    """`datasets.load_dataset("imagefolder", data_dir=DIR)`, offline, in a process of its own (its settings are
    read from the environment when it is imported)."""
    pytest.importorskip("datasets")
    target = tmp_path / "dataset"
    code = subprocess.run([sys.executable, "-m", "jimeng_batch", "export", str(run_folder / "out"), "--to",
                           str(target)], capture_output=True, text=True, check=False)
    assert code.returncode == 0, code.stderr
    script = (
        "import json, sys, datasets\n"
        "data = datasets.load_dataset('imagefolder', data_dir=sys.argv[1], cache_dir=sys.argv[2])\n"
        "train = data['train']\n"
        "row = train[0]\n"
        "print(json.dumps({'splits': list(data), 'rows': train.num_rows, 'columns': train.column_names,\n"
        "                  'size': list(row['image'].size), 'prompt': row['prompt']}))\n"
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


def test_videos_get_the_same_layout(run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "videos"
    code, out, err = run_main(["export", str(run_folder / "out"), "--to", str(target), "--format", "videofolder"],
                              capsys)
    assert code == 0, err
    assert "1 file(s) from 1 request(s)" in out and "left out (export them with --format imagefolder)" in out
    (record,) = [json.loads(line) for line in (target / "train" / "metadata.jsonl").read_text().splitlines()]
    assert record["file_name"].endswith(".mp4") and record["duration"] == 5 and record["model"] == "jimeng-video-3.0"
    assert json.loads(record["first_frame"]) == {"kind": "uri", "ref": "image_uri_1"}
    assert _sha(target / "train" / record["file_name"]) == record["sha256"]
    assert "task_categories: [text-to-video]" in (target / "README.md").read_text(encoding="utf-8")


def test_an_export_does_not_mix_into_another_folder(run_folder: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "notes.txt").write_text("mine", encoding="utf-8")
    code, _, err = run_main(["export", str(run_folder / "out"), "--to", str(target)], capsys)
    assert code == 2 and "is not empty (use --force" in err
    code, _, err = run_main(["export", str(run_folder / "out"), "--to", str(target), "--force"], capsys)
    assert code == 0, err
    assert (target / "notes.txt").read_text(encoding="utf-8") == "mine"  # --force replaces only an export
    assert len((target / "train" / "metadata.jsonl").read_text().splitlines()) == 16
    code, _, err = run_main(["export", str(tmp_path), "--to", str(tmp_path / "x")], capsys)
    assert code == 2 and "no ledger here" in err
