"""The command line: exit codes, messages without tracebacks, plan output, determinism across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import REPO, run_main
from run_helpers import planned_folder

from jimeng_batch.cli import cli
from jimeng_batch.protocol import catalog


def test_validate_ok_and_bad(write: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    good = write("good.yaml", "jobs:\n  - {type: image, prompt: a, count: 2}\n")
    bad = write("bad.yaml", "jobs:\n  - {type: image, promt: a}\n")
    code, out, err = run_main(["validate", str(good)], capsys)
    assert (code, out) == (0, "ok: good.yaml: 1 job(s), 2 request(s)\n")
    code, out, err = run_main(["validate", str(good), str(bad)], capsys)
    assert code == 2
    assert out == "ok: good.yaml: 1 job(s), 2 request(s)\n"
    assert err.startswith("1 problem found\nbad.yaml:2:19: unknown key 'promt' in jobs[1] (did you mean 'prompt'?)")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["validate", "missing.yaml"], "missing.yaml: no such file", id="missing-file"),
        pytest.param(["validate", "notes.txt"], "notes.txt: unknown manifest type '.txt'; use .yaml, .yml, .csv or "
                                                ".xlsx", id="unknown-suffix"),
        pytest.param(["plan", "folder.yaml"], "Invalid value for 'FILE': File 'folder.yaml' is a directory.",
                     id="folder"),
    ],
)
def test_bad_files_exit_2_with_one_line(write: Callable[..., Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    write("notes.txt", "hello")
    (tmp_path / "folder.yaml").mkdir()
    code, _out, err = run_main(args, capsys)
    assert code == 2
    assert err.strip().endswith(message)
    assert "Traceback" not in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["plan"], capsys)
    assert code == 2 and "Missing argument 'FILE'" in err
    code, _, err = run_main(["plan", "x.yaml", "--format", "xml"], capsys)
    assert code == 2 and "'xml' is not one of" in err


def test_plan_summary_counts_and_credits(write: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = write("m.yaml", """
        jobs:
          - {type: image, prompt: [a, b], model: [jimeng-4.0, jimeng-3.0]}
          - {type: video, prompt: c, duration: 10}
        """)
    code, out, _ = run_main(["plan", str(path)], capsys)
    assert code == 0
    assert "Plan for m.yaml (region cn, protocol live)" in out
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert "image jimeng-3.0 2k 2 8 2 0.25" in lines
    assert "image jimeng-4.0 2k 2 8 2 0.25" in lines
    assert "video jimeng-video-3.0 720p 1 – 20 –" in lines
    assert "total 5 16 24 0.25" in lines
    code, out, _ = run_main(["plan", str(path), "--format", "json"], capsys)
    data = json.loads(out)
    assert (data["distinct_requests"], data["estimated_credits"], len(data["groups"])) == (5, 24.0, 3)


def test_plan_summary_writes_large_credits_in_full(write: Callable[..., Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # `g` formatting wrote a million credits as 1e+06 in the table a person reviews a batch by
    path = write("m.yaml", """
        costs: {jimeng-4.0: 250000}
        jobs:
          - {type: image, prompt: [a, b, c, d], model: jimeng-4.0, images: 1}
        """)
    code, out, _ = run_main(["plan", str(path)], capsys)
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert code == 0 and "e+" not in out
    assert "total 4 4 1000000 250000" in lines


def test_plan_jsonl_has_every_request_in_full(write: Callable[..., Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = write("m.yaml", "jobs:\n  - {type: image, prompt: [a, b, a], count: 2}\n")
    out_file = tmp_path / "plan.jsonl"
    code, out, _ = run_main(["plan", str(path), "--format", "jsonl", "--out", str(out_file)], capsys)
    assert code == 0 and "4 distinct request(s); 2 duplicate(s)" in out
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(records) == 4
    record = records[0]
    assert record["request"]["path"] == "/mweb/v1/aigc_draft/generate"
    assert record["request"]["body"]["submit_id"] == record["submit_id"]
    draft = json.loads(record["request"]["body"]["draft_content"])
    assert draft["component_list"][0]["abilities"]["generate"]["core_param"]["seed"] == record["params"]["seed"]
    assert not (tmp_path / "plan.jsonl.tmp").exists()


def test_invalid_plan_writes_nothing(write: Callable[..., Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = write("m.yaml", "jobs:\n  - {type: image, prompt: a, model: nope}\n")
    code, out, err = run_main(["plan", str(path), "--format", "jsonl", "--out", "plan.jsonl"], capsys)
    assert code == 2 and out == "" and "unknown model 'nope'" in err
    assert not (tmp_path / "plan.jsonl").exists()


def test_plan_is_byte_identical_across_processes(tmp_path: Path) -> None:
    """Two interpreters with different hash seeds print the same plan, byte for byte."""
    outputs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        result = subprocess.run(
            [sys.executable, "-m", "jimeng_batch", "plan", "jobs/dataset.yaml", "--format", "jsonl"],
            cwd=REPO, env=env, capture_output=True, check=True,
        )
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    assert outputs[0].count(b"\n") == 144


def test_schema_command_prints_the_schema() -> None:
    result = CliRunner().invoke(cli, ["schema"])
    schema = json.loads(result.output)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "jobs" in schema["properties"]
    row = json.loads(CliRunner().invoke(cli, ["schema", "--row"]).output)
    assert "prompt" in row["properties"]


def test_models_lists_the_catalog() -> None:
    result = CliRunner().invoke(cli, ["models", "--json"])
    names = [m["name"] for m in json.loads(result.output)]
    assert names == list(catalog.MODEL_NAMES)
    video = json.loads(CliRunner().invoke(cli, ["models", "--json", "--type", "video", "--region", "us"]).output)
    assert {m["name"] for m in video} == {"jimeng-video-3.5-pro", "jimeng-video-3.0"}
    table = CliRunner().invoke(cli, ["models"]).output
    assert "high_aes_general_v40" in table and "4-15" in table


def test_models_say_how_many_images_each_makes_and_which_pick_the_ratio() -> None:
    rows = {m["name"]: m for m in json.loads(CliRunner().invoke(cli, ["models", "--json", "--type", "image"]).output)}
    assert (rows["jimeng-5.0"]["max_images"], rows["jimeng-5.0"]["intelligent_ratio"]) == (8, True)
    assert (rows["jimeng-4.0"]["max_images"], rows["jimeng-3.0"]["intelligent_ratio"]) == (4, False)
    table = CliRunner().invoke(cli, ["models", "--type", "image"]).output
    assert "1-8, intelligent ratio" in table


def _every_option() -> list[tuple[str, click.Option]]:
    """Every option of every command (groups walked), with the command's name."""
    found: list[tuple[str, click.Option]] = []

    def walk(group: click.Group, prefix: str) -> None:
        for name, command in sorted(group.commands.items()):
            if isinstance(command, click.Group):
                walk(command, f"{prefix}{name} ")
                continue
            found.extend([(f"{prefix}{name}", p) for p in command.params
                          if isinstance(p, click.Option) and p.name not in ("help", "version")])

    walk(cli, "")
    return found


# Options whose value has a unit, by how their name ends, and the words their help must use for it.
_UNITS = {"-bytes": "bytes", "-per-second": "per second", "-deadline": "second", "-interval": "second",
          "-floor": "second", "-ttl": "second", "-rate": "bytes per second", "budget": "credits"}


def test_every_option_says_its_default_and_unit() -> None:
    options = _every_option()
    assert len(options) > 100  # every command's, the shared run options once per command
    undocumented = [f"{command} {option.opts[0]}" for command, option in options if not (option.help or "").strip()]
    assert not undocumented
    no_default = [f"{command} {option.opts[0]}" for command, option in options
                  if not option.required and "default" not in (option.help or "").lower()
                  and not (option.show_default and option.default is not None)]
    assert not no_default
    no_unit = [f"{command} {option.opts[0]}" for command, option in options
               for ending, unit in _UNITS.items()
               if option.opts[0].endswith(ending) and unit not in (option.help or "").lower()]
    assert not no_unit
    text = CliRunner().invoke(cli, ["run", "--help"], terminal_width=110).output
    assert "(default 16777216, 16 MiB)" in " ".join(text.split())  # the rate-limit and retry options say theirs
    assert "default: no limit" in " ".join(text.split()) and "1 s doubling to 60 s" in " ".join(text.split())


def test_models_show_estimated_credits() -> None:
    video = CliRunner().invoke(cli, ["models", "--type", "video"]).output
    row = next(line for line in video.splitlines() if "│ jimeng-video-3.0 " in line)
    assert "est. credits" in video and "720p 2, 1080p 3/s" in row
    images = CliRunner().invoke(cli, ["models", "--type", "image"]).output
    row = next(line for line in images.splitlines() if "│ jimeng-5.0 " in line)
    assert "2k 2, 4k 4 " in row and "1k" not in row  # only the resolutions the model has
    assert "estimate per request by resolution (images), per second of video" in images


def test_the_plan_summary_shows_the_shard(write: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = write("m.yaml", "jobs:\n  - {type: image, prompt: [a, b, c, d, e, f], count: 1}\n")
    code, out, err = run_main(["plan", str(path), "--shard", "2/3"], capsys)
    assert code == 0, err
    assert out.startswith("Plan for m.yaml (region cn, protocol live, shard 2/3)")
    assert "distinct request(s) in shard 2/3" in out
    code, out, _ = run_main(["plan", str(path)], capsys)
    assert "shard" not in out


def test_report_of_a_planned_only_folder_is_clean(write: Callable[..., Path], tmp_path: Path) -> None:
    """No matplotlib warning (an empty legend) for a folder where nothing was sent yet: in a process of its own,
    with every warning an error."""
    folder = planned_folder(write("m.yaml", "jobs:\n  - {type: image, model: jimeng-4.0, prompt: [a, b]}\n"),
                            tmp_path / "out")
    done = subprocess.run([sys.executable, "-W", "error", "-m", "jimeng_batch", "report", str(folder),
                           "--no-summary"], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and "0 of 2 succeeded" in done.stdout


def test_every_example_job_validates(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    examples = [*sorted(str(p.relative_to(REPO)) for p in (REPO / "jobs").glob("*.yaml")), "jobs/prompts.csv"]
    code, out, err = run_main(["validate", *examples], capsys)
    assert code == 0, err
    assert out.count("ok: ") == len(examples) >= 6


def test_python_dash_m_works() -> None:
    result = subprocess.run([sys.executable, "-m", "jimeng_batch", "--version"], cwd=REPO, capture_output=True,
                            text=True, check=True)
    assert result.stdout.startswith("jimeng-batch, version ")


def test_run_status_and_resume_on_the_simulator(write: Callable[..., Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JIMENG_SESSIONID", raising=False)
    path = write("m.yaml", "jobs:\n  - {type: image, resolution: 1k, prompt: [a, b]}\n")
    common = ["--sim", "--poll-interval", "0.01", "--quiet", "--cache-path", str(tmp_path / "c.sqlite")]
    code, out, err = run_main(["run", str(path), "--out", "out", *common], capsys)
    assert code == 0, err
    assert "out: downloaded 2\nexit 0: all 2 downloaded\n" in err
    assert len(list((tmp_path / "out" / "assets").iterdir())) == 8
    code, out, _ = run_main(["status", "out"], capsys)
    assert code == 0 and "downloaded  2" in out and "last run: finished" in out
    code, out, _ = run_main(["status", "out", "--json"], capsys)
    assert json.loads(out)["counts"] == {"downloaded": 2}
    code, _, err = run_main(["resume", "out", "--quiet"], capsys)
    assert code == 0 and "out: downloaded 2\nexit 0: all 2 downloaded\n" in err


def test_run_without_a_token_is_a_clear_error(write: Callable[..., Path], capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JIMENG_SESSIONID", raising=False)
    path = write("m.yaml", "jobs:\n  - {type: image, prompt: a}\n")
    code, _, err = run_main(["run", str(path)], capsys)
    assert code == 2 and err.startswith("no session token: set JIMENG_SESSIONID")


def test_status_of_a_folder_without_a_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["status", str(tmp_path)], capsys)
    assert code == 2 and "no ledger here" in err


def test_an_invalid_manifest_runs_nothing(write: Callable[..., Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write("m.yaml", "jobs:\n  - {type: image, prompt: a, model: nope}\n")
    code, _, err = run_main(["run", str(path), "--sim", "--out", "out"], capsys)
    assert code == 2 and "unknown model 'nope'" in err
    assert not (tmp_path / "out").exists()


def test_an_unchanged_manifest_is_not_planned_again(write: Callable[..., Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JIMENG_SESSIONID", raising=False)
    from conftest import png

    png(tmp_path / "ref.png")
    write("rows.csv", "prompt\nfirst\n")
    path = write("m.yaml", "jobs:\n  - {type: image_to_image, resolution: 1k, rows: rows.csv, "
                           "references: [ref.png]}\n")
    common = ["--sim", "--poll-interval", "0.01", "--quiet", "--no-cache", "--out", "out"]
    log = tmp_path / "out" / "run.log"
    assert run_main(["run", str(path), *common], capsys)[0] == 0
    assert run_main(["run", str(path), *common], capsys)[0] == 0
    assert log.read_text().count("not planned again") == 1
    write("rows.csv", "prompt\nfirst\nsecond\n")  # a spreadsheet changed: plan again, the new row runs
    code, _, err = run_main(["run", str(path), *common], capsys)
    assert code == 0 and "out: downloaded 2\nexit 0: all 2 downloaded\n" in err
    assert log.read_text().count("not planned again") == 1
    png(tmp_path / "ref.png", color="#ffffff")  # an image changed: plan again
    code, _, err = run_main(["run", str(path), *common], capsys)
    assert log.read_text().count("not planned again") == 1
    assert code == 0 and "out: downloaded 4\nexit 0: all 4 downloaded\n" in err
