"""Output count (`images`, sent as `gen_option.gen_count`) and `intelligent_ratio`: from the manifest to the body the
simulator receives, the files a run downloads, the plan and the report."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, problems, run_main, summary_of
from run_helpers import drive, simulator, write_manifest
from sim_helpers import image_envelope
from sim_helpers import simulator as sim_harness

from jimeng_batch.intake.manifest import load_manifest
from jimeng_batch.intake.plan import iter_plan_records
from jimeng_batch.outputs.report import write_report
from jimeng_batch.protocol import catalog
from jimeng_batch.sim import SimConfig, SimServer
from jimeng_batch.sim.validate import DraftError, parse_submission

ABILITIES = ("draft_content", "component_list", 0, "abilities")


def received_bodies(server: SimServer) -> list[dict[str, Any]]:
    """Every submit body the simulator receives from now on (its own submit, wrapped)."""
    bodies: list[dict[str, Any]] = []
    original = server.state.submit

    def submit(account: Any, body: Any) -> Any:
        bodies.append(body)
        return original(account, body)

    server.state.submit = submit  # type: ignore[method-assign]
    return bodies


def abilities(body: dict[str, Any]) -> dict[str, Any]:
    draft = json.loads(body["draft_content"])
    return draft["component_list"][0]["abilities"]  # type: ignore[no-any-return]


def records(path: Path) -> list[dict[str, Any]]:
    return list(iter_plan_records(load_manifest(path)))


# --------------------------------------------------------------------------------------------------------------
# What is sent, and what a run downloads
# --------------------------------------------------------------------------------------------------------------


def test_one_image_is_asked_for_in_a_gen_option_sibling_and_one_file_is_downloaded(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, """
        jobs:
          - {name: one, type: image, model: jimeng-4.0, resolution: 1k, images: 1, prompt: [a kite, a boat]}
        """)
    with simulator(images_per_request=4) as server:  # the service's default, which `images` must override
        bodies = received_bodies(server)
        run = drive(manifest, server, out=tmp_path / "out")
    assert run.exit_code == 0
    assert len(bodies) == 2
    for body in bodies:
        found = abilities(body)
        assert found["gen_option"]["gen_count"] == 1
        assert found["gen_option"]["generate_all"] is False
        assert found["gen_option"]["type"] == "" and found["gen_option"]["id"]
        assert "gen_option" not in found["generate"]
    files = sorted(p.name for p in (run.out / "assets").iterdir())
    keys = set(run.states())
    assert len(files) == 2 and {name.rsplit("-", 1)[0] for name in files} == keys
    assert all(name.endswith("-0.png") for name in files)
    per_request = run.ledger.db.execute("SELECT key, COUNT(*) FROM assets GROUP BY key").fetchall()
    assert sorted(n for _, n in per_request) == [1, 1]


def test_without_images_nothing_new_is_sent_and_the_service_default_comes_back(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, """
        jobs:
          - {name: four, type: image, model: jimeng-4.0, resolution: 1k, prompt: a kite}
        """)
    with simulator(images_per_request=4) as server:
        bodies = received_bodies(server)
        run = drive(manifest, server, out=tmp_path / "out")
    assert run.exit_code == 0
    (body,) = bodies
    assert "gen_option" not in abilities(body)
    assert json.loads(body["metrics_extra"])["generateCount"] == 1
    assert len(list((run.out / "assets").iterdir())) == 4


def test_image_to_image_sends_gen_option_beside_blend(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        jobs:
          - {type: image_to_image, model: jimeng-4.0, images: 2, prompt: winter, references: [tos-cn-i-x/y]}
        """)
    (record,) = records(path)
    found = abilities(record["request"]["body"])
    assert found["gen_option"]["gen_count"] == 2
    assert "gen_option" not in found["blend"]
    assert record["params"]["images"] == 2


def test_eight_images_on_5_0_lite_are_accepted(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        jobs:
          - {type: image, model: jimeng-5.0, images: 8, prompt: a kite}
        """)
    (record,) = records(path)
    assert abilities(record["request"]["body"])["gen_option"]["gen_count"] == 8
    assert summary_of(path).images == 8


def test_eight_images_on_4_0_are_refused_with_the_place_and_the_range(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        jobs:
          - type: image
            model: jimeng-4.0
            images: 8
            prompt: a kite
        """)
    assert problems(path) == ["m.yaml:4:13: jimeng-4.0 makes 1 to 4 images per request, not 8 (jimeng-5.0 makes up "
                              "to 8)"]


def test_images_beyond_any_model_are_refused_by_the_schema(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        jobs:
          - {type: image, images: 9, prompt: a kite}
        """)
    (problem,) = problems(path)
    assert problem.startswith("m.yaml:2:") and "images" in problem and "8" in problem


def test_images_on_a_video_job_is_refused(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        jobs:
          - type: video
            images: 2
            prompt: waves
        """)
    (problem,) = problems(path)
    assert problem.startswith("m.yaml:3:")
    assert "images does not apply to video jobs" in problem


def test_a_default_images_is_skipped_for_video_jobs(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        defaults: {images: 2}
        jobs:
          - {type: image, prompt: a kite}
          - {type: video, prompt: waves}
        """)
    summary = summary_of(path)
    assert (summary.distinct, summary.images) == (2, 2)


def test_images_is_a_matrix_field(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        jobs:
          - {type: image, model: jimeng-4.0, images: [1, 2], prompt: a kite}
        """)
    counts = sorted(abilities(r["request"]["body"])["gen_option"]["gen_count"] for r in records(path))
    assert counts == [1, 2]
    assert summary_of(path).images == 3


def test_a_matrix_item_beyond_the_model_is_located_at_the_item(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        jobs:
          - type: image
            model: jimeng-4.0
            images: [2, 6]
            prompt: a kite
        """)
    (problem,) = problems(path)
    assert problem.startswith("m.yaml:4:")
    assert "not 6" in problem


def test_a_spreadsheet_column_images(write: Callable[..., Path]) -> None:
    path = write("rows.csv", "prompt,model,images\na kite,jimeng-4.0,1\na boat,jimeng-5.0,8\na hill,jimeng-4.0,\n")
    manifest = load_manifest(path)
    counts = [abilities(r["request"]["body"]).get("gen_option", {}).get("gen_count")
              for r in iter_plan_records(manifest)]
    assert counts == [1, 8, None]
    assert summary_of(path).images == 1 + 8 + 4


def test_a_bad_spreadsheet_cell_images_is_located(write: Callable[..., Path]) -> None:
    path = write("rows.csv", "prompt,model,images\na kite,jimeng-4.0,5\na boat,jimeng-4.0,two\n")
    found = problems(path)
    assert "rows.csv:row 2, column images: jimeng-4.0 makes 1 to 4 images per request, not 5 (jimeng-5.0 makes up " \
        "to 8)" in found
    assert "rows.csv:row 3, column images: 'two' is not a whole number" in found


def test_an_explicit_default_count_is_sent_and_is_its_own_request(write: Callable[..., Path]) -> None:
    plain = write("a.yaml", "jobs:\n  - {type: image, model: jimeng-4.0, prompt: a kite}\n")
    four = write("b.yaml", "jobs:\n  - {type: image, model: jimeng-4.0, prompt: a kite, images: 4}\n")
    (without,), (with_four,) = records(plain), records(four)
    assert "gen_option" not in abilities(without["request"]["body"])
    assert abilities(with_four["request"]["body"])["gen_option"]["gen_count"] == 4
    assert with_four["key"] != without["key"]
    assert summary_of(plain).images == summary_of(four).images == 4


# Computed on the code before `images` existed: a manifest without `images` (or `intelligent_ratio`) keeps its keys,
# submit ids, drafts and plan lines byte for byte.
GOLDEN_MANIFEST = """
    # The constants of the live profile when the hash was taken: the hash pins the drafts, not the profile's version.
    protocol: {da_version: "3.3.9"}
    jobs:
      - name: t2i
        type: image
        model: jimeng-4.0
        prompt: a lighthouse at dusk
        ratio: "16:9"
      - name: i2i
        type: image_to_image
        model: jimeng-5.0
        prompt: make it winter
        references: ["tos-cn-i-abc/def"]
      - name: vid
        type: video
        prompt: waves
"""
GOLDEN_KEYS = [
    ("fffab53241240198a5de6f2ed5250642", "f0c3a295-ba20-5c85-bdc6-a6f7836d4db7"),
    ("1b9b251d095a5ea5cb6ece4ad14267b1", "1a20c9e0-78ee-5e94-a43c-60e4831aaeab"),
    ("9f4e69f75e1c91cde5944e5da6e34e48", "88b155e3-90b7-5e43-ba70-3e93d32048f8"),
]
GOLDEN_JSONL_SHA256 = "bd64e99e5388af50662c361b04aa96d9a9275d679f033b9f514c5aef119c5518"


def test_without_images_keys_submit_ids_and_drafts_are_unchanged(write: Callable[..., Path],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = write("g.yaml", GOLDEN_MANIFEST)
    code, out, _ = run_main(["plan", str(path), "--format", "jsonl"], capsys)
    assert code == 0
    assert [(line["key"], line["submit_id"]) for line in map(json.loads, out.splitlines())] == GOLDEN_KEYS
    assert hashlib.sha256(out.encode("utf-8")).hexdigest() == GOLDEN_JSONL_SHA256


# --------------------------------------------------------------------------------------------------------------
# intelligent_ratio
# --------------------------------------------------------------------------------------------------------------


def core_param(record: dict[str, Any], ability: str = "generate") -> dict[str, Any]:
    return abilities(record["request"]["body"])[ability]["core_param"]  # type: ignore[no-any-return]


def test_intelligent_ratio_drops_image_ratio_on_the_models_that_allow_it(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        jobs:
          - {type: image, model: [jimeng-4.0, jimeng-4.7, jimeng-5.0], intelligent_ratio: true, prompt: a kite}
        """)
    found = records(path)
    assert len(found) == 3
    for record in found:
        core = core_param(record)
        assert core["intelligent_ratio"] is True
        assert "image_ratio" not in core
        # The pixel budget of the job's resolution (at its ratio, 1:1 by default) still goes in large_image_info.
        assert (core["large_image_info"]["width"], core["large_image_info"]["height"]) == (2048, 2048)
        assert record["params"]["intelligent_ratio"] is True


def test_intelligent_ratio_on_a_blend_keeps_image_ratio(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        jobs:
          - {type: image_to_image, model: jimeng-4.5, intelligent_ratio: true, prompt: w, references: [tos-a/b]}
        """)
    (record,) = records(path)
    core = core_param(record, "blend")
    assert core["intelligent_ratio"] is True
    assert core["image_ratio"] == catalog.IMAGE_RATIO_CODES["1:1"]


def test_intelligent_ratio_on_another_model_is_a_located_error(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        jobs:
          - type: image
            model: jimeng-3.0
            intelligent_ratio: true
            prompt: a kite
        """)
    (problem,) = problems(path)
    assert problem.startswith("m.yaml:4:24: jimeng-3.0 does not offer intelligent_ratio; models that do: ")
    assert "jimeng-4.0" in problem and "jimeng-5.0" in problem and "jimeng-3.1" not in problem


def test_intelligent_ratio_false_changes_nothing(write: Callable[..., Path]) -> None:
    plain = write("a.yaml", "jobs:\n  - {type: image, model: jimeng-3.0, prompt: a kite}\n")
    off = write("b.yaml", "jobs:\n  - {type: image, model: jimeng-3.0, prompt: a kite, intelligent_ratio: false}\n")
    (without,), (with_false,) = records(plain), records(off)
    assert (with_false["key"], with_false["params"], with_false["request"]) == \
        (without["key"], without["params"], without["request"])


def test_the_simulator_runs_an_intelligent_ratio_request(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, """
        jobs:
          - {name: smart, type: image, model: jimeng-4.0, resolution: 1k, intelligent_ratio: true, prompt: a kite}
        """)
    with simulator() as server:
        bodies = received_bodies(server)
        run = drive(manifest, server, out=tmp_path / "out")
    assert run.exit_code == 0
    assert "image_ratio" not in abilities(bodies[0])["generate"]["core_param"]


# --------------------------------------------------------------------------------------------------------------
# The simulator is as strict as the service
# --------------------------------------------------------------------------------------------------------------


def _with_abilities(body: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    draft = json.loads(body["draft_content"])
    change(draft["component_list"][0]["abilities"])
    return body | {"draft_content": json.dumps(draft)}


@pytest.mark.parametrize(("profile", "ret"), [("live", "3018"), ("document", "2005")])
def test_the_simulator_denies_gen_option_inside_generate(profile: str, ret: str) -> None:
    body = _with_abilities(image_envelope("inside-1"), lambda a: a["generate"].update(
        gen_option={"type": "", "id": "g", "generate_all": False, "gen_count": 1}))
    with sim_harness(SimConfig(profile=profile)) as harness:  # type: ignore[arg-type]
        answer = harness.caller.submit(body)
        stats = harness.server.stats()
    assert answer["ret"] == ret
    assert "gen_option" in answer["errmsg"] and "sibling" in answer["errmsg"]
    assert not stats["charges_by_submit_id"]


def test_the_simulator_takes_gen_option_beside_generate() -> None:
    body = _with_abilities(image_envelope("beside-1"), lambda a: a.update(
        gen_option={"type": "", "id": "g", "generate_all": False, "gen_count": 3}))
    assert parse_submission(body, known_uri=lambda uri: True).image_count == 3


def test_the_simulator_refuses_more_images_than_the_model_makes() -> None:
    body = _with_abilities(image_envelope("many-1"), lambda a: a.update(
        gen_option={"type": "", "id": "g", "generate_all": False, "gen_count": 5}))
    with pytest.raises(DraftError) as caught:
        parse_submission(body, known_uri=lambda uri: True)
    assert caught.value.field == "draft_content.component_list[0].abilities.gen_option.gen_count"
    assert "1 to 4" in caught.value.message


def test_the_simulator_refuses_intelligent_ratio_on_other_models() -> None:
    body = image_envelope("smart-1", model="high_aes_general_v30l:general_v3.0_18b", intelligent_ratio=True,
                          large_image_info={"width": 1328, "height": 1328, "resolution_type": "1k"})
    body = _with_abilities(body, lambda a: a["generate"]["core_param"].pop("image_ratio"))
    body["extend"]["root_model"] = "high_aes_general_v30l:general_v3.0_18b"
    with pytest.raises(DraftError) as caught:
        parse_submission(body, known_uri=lambda uri: True)
    assert caught.value.field == "draft_content.component_list[0].abilities.generate.core_param.intelligent_ratio"


# --------------------------------------------------------------------------------------------------------------
# Plans and reports show images and credits per image
# --------------------------------------------------------------------------------------------------------------


def test_plan_shows_images_and_credits_per_image(write: Callable[..., Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write("m.yaml", """
        jobs:
          - {type: image, model: jimeng-4.0, prompt: [a, b]}
          - {type: image, model: jimeng-5.0, prompt: c, images: 8}
          - {type: video, prompt: d}
        """)
    code, out, _ = run_main(["plan", str(path)], capsys)
    assert code == 0
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert "type model resolution requests images est. credits credits/image" in lines
    assert "image jimeng-4.0 2k 2 8 2 0.25" in lines
    assert "image jimeng-5.0 2k 1 8 2 0.25" in lines
    assert "video jimeng-video-3.0 720p 1 – 10 –" in lines
    assert "total 4 16 14 0.25" in lines
    assert "3 job(s); 4 distinct request(s)" in lines
    assert "images expected: 16 (each request's `images`, else the service's default of 4)" in lines
    code, out, _ = run_main(["plan", str(path), "--format", "json"], capsys)
    data = json.loads(out)
    assert (data["images"], data["image_credits"], data["estimated_credits_per_image"]) == (16, 4.0, 0.25)
    groups = {g["model"]: g for g in data["groups"]}
    assert (groups["jimeng-4.0"]["images"], groups["jimeng-4.0"]["estimated_credits_per_image"]) == (8, 0.25)
    assert (groups["jimeng-video-3.0"]["images"], groups["jimeng-video-3.0"]["estimated_credits_per_image"]) == \
        (None, None)


def test_the_report_counts_images_expected_and_downloaded(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, """
        jobs:
          - {name: few, type: image, model: jimeng-4.0, resolution: 1k, images: 2, prompt: [a kite, a boat]}
          - {name: many, type: image, model: jimeng-4.0, resolution: 1k, prompt: a hill}
        """)
    with simulator(images_per_request=4) as server:
        run = drive(manifest, server, out=tmp_path / "out")
    assert run.exit_code == 0
    report = write_report(run.out)
    images = report.metrics["images"]
    assert (images["expected"], images["downloaded"]) == (8, 8)
    assert images["creditsPerImage"] == pytest.approx(3 / 8)
    assert report.metrics["byModel"]["jimeng-4.0"]["imagesExpected"] == 8
    assert "8 of 8 images downloaded" in report.markdown
    assert "8 of 8 images downloaded" in (run.out / "report.html").read_text(encoding="utf-8")
    results = [json.loads(line) for line in (run.out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["images"] for r in results) == [2, 2, 4]


def test_the_readme_plan_example_is_what_plan_prints(write: Callable[..., Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Output count"):]
    manifest = section[section.index("```yaml\n") + 8:section.index("```\n", section.index("```yaml\n"))]
    shown = section[section.index("$ jimeng-batch plan few.yaml\n") + 29:]
    shown = shown[:shown.index("```\n")]
    path = write("few.yaml", manifest)
    code, out, _ = run_main(["plan", path.name], capsys)
    assert code == 0
    assert [line.rstrip() for line in out.splitlines()] == shown.splitlines()
