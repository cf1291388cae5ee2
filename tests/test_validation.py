"""A table of bad manifests, each with the exact location and message it must give."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import png, problems

from jimeng_batch.intake.manifest import SpreadsheetOptions

CASES = [
    pytest.param("jobs:\n  - type: image\n    prompt: a cat\nregoin: cn\n",
                 ["m.yaml:4:1: unknown key 'regoin' (did you mean 'region'?); allowed: version, region, defaults, "
                  "limits, budget, cache, output, protocol, costs, jobs"], id="typo-top-level-key"),
    pytest.param("jobs:\n  - type: image\n    promt: a cat\n",
                 ["m.yaml:3:5: unknown key 'promt' in jobs[1] (did you mean 'prompt'?); allowed: name, type, region, "
                  "vars, rows, prompt, negative_prompt, model, ratio, resolution, sample_strength, seed, count, "
                  "images, intelligent_ratio, references, reference_strength, duration, aspect_ratio, fps, "
                  "first_frame, end_frame"], id="typo-job-key"),
    pytest.param("defaults:\n  modle: jimeng-4.0\njobs:\n  - {type: image, prompt: a}\n",
                 ["m.yaml:2:3: unknown key 'modle' in defaults (did you mean 'model'?); allowed: region, "
                  "prompt, negative_prompt, model, ratio, resolution, sample_strength, seed, count, images, "
                  "intelligent_ratio, references, reference_strength, duration, aspect_ratio, fps, first_frame, "
                  "end_frame"], id="typo-in-defaults"),
    pytest.param("jobs:\n  - type: image\n    prompt: a cat\n    ratio: \"5:4\"\n",
                 ["m.yaml:4:12: jobs[1].ratio: '5:4' is not allowed (did you mean '3:4'?); allowed: 1:1, 3:4, 16:9, "
                  "4:3, 9:16, 2:3, 3:2, 21:9"], id="enum-lists-allowed-values"),
    pytest.param("jobs:\n  - type: imgae\n    prompt: a cat\n",
                 ["m.yaml:2:11: jobs[1].type: 'imgae' is not allowed (did you mean 'image'?); allowed: image, "
                  "image_to_image, video"], id="unknown-job-type"),
    pytest.param("jobs:\n  - prompt: a cat\n", ["m.yaml:2:5: jobs[1]: missing required key 'type'"],
                 id="missing-type"),
    pytest.param("jobs:\n  - type: image\n    prompt: a cat\n    model: jimeng-5.0\n    resolution: 1k\n",
                 ["m.yaml:5:17: jimeng-5.0 does not support resolution 1k; image resolutions it supports: 2k, 4k"],
                 id="model-resolution"),
    pytest.param("jobs:\n  - type: video\n    prompt: a cat\n    model: jimeng-video-2.0\n    duration: [5, 10]\n",
                 ["m.yaml:5:19: jimeng-video-2.0 does not allow a duration of 10 s; allowed: 5"],
                 id="video-duration-points-at-the-list-item"),
    pytest.param("jobs:\n  - type: video\n    prompt: a\n    model: jimeng-video-seedance-2.0\n    duration: 3\n",
                 ["m.yaml:5:15: jimeng-video-seedance-2.0 does not allow a duration of 3 s; allowed: 4-15 "
                  "(whole seconds)"], id="video-duration-range"),
    pytest.param("jobs:\n  - type: video\n    prompt: a\n    resolution: 2k\n",
                 ["m.yaml:4:17: jimeng-video-3.0 does not support resolution 2k; video resolutions it supports: "
                  "720p, 1080p"], id="image-resolution-on-video"),
    pytest.param("jobs:\n  - type: image\n    prompt: \"a {animl}\"\n    vars:\n      animal: [cat, dog]\n",
                 ["m.yaml:3:13: prompt: unknown template variable '{animl}' (did you mean 'animal'?); defined: animal",
                  "m.yaml:5:15: variable 'animal' lists several values but no prompt uses {animal}; it would repeat "
                  "identical requests"], id="unknown-template-variable"),
    pytest.param("jobs:\n  - type: image\n    prompt: \"a {cat}\"\n",
                 ["m.yaml:3:13: prompt: unknown template variable '{cat}'; this job defines no `vars`"],
                 id="template-variable-without-vars"),
    pytest.param("jobs:\n  - type: image\n    prompt: \"a {cat\"\n",
                 ["m.yaml:3:13: prompt: a lone '{' at character 3; write '{{' for a literal brace"], id="lone-brace"),
    pytest.param("jobs:\n  - type: image_to_image\n    prompt: a cat\n",
                 ["m.yaml:2:5: image_to_image jobs need at least one reference image (`references`)"],
                 id="image-to-image-without-references"),
    pytest.param("jobs:\n  - type: video\n    prompt: a cat\n    first_frame: nope.png\n",
                 ["m.yaml:4:18: image 'nope.png': no such file (looked in .)"], id="missing-frame-image"),
    pytest.param("jobs:\n  - type: image\n    prompt: a cat\n    model: jimeng-4.O\n",
                 ["m.yaml:4:12: unknown model 'jimeng-4.O' (did you mean 'jimeng-4.7'?); image models: jimeng-5.0-pro, "
                  "jimeng-5.0, jimeng-4.7, jimeng-4.6, jimeng-4.5, jimeng-4.1, jimeng-4.0, jimeng-3.1, jimeng-3.0, "
                  "jimeng-2.1, jimeng-2.0-pro, jimeng-2.0, jimeng-1.4, jimeng-xl-pro, nanobanana, nanobananapro (or "
                  "their raw keys; see `jimeng-batch models`)"], id="unknown-model"),
    pytest.param("jobs:\n  - type: image\n    prompt: a cat\n    model: jimeng-video-3.0\n",
                 ["m.yaml:4:12: jimeng-video-3.0 is a video model; image jobs need an image model"],
                 id="video-model-on-image-job"),
    pytest.param("region: us\njobs:\n  - type: image\n    prompt: a cat\n    model: jimeng-3.1\n",
                 ["m.yaml:5:12: jimeng-3.1 is not offered in region us; it is offered in: cn"],
                 id="model-not-in-region"),
    pytest.param("jobs:\n  - type: image\n    prompt: a cat\n    prompt: a dog\n",
                 ["m.yaml:4:5: duplicate key 'prompt' (first given at line 3); give each key once"],
                 id="duplicate-key"),
    pytest.param("jobs:\n  - type: image\n    prompt: [a cat\n",
                 ["m.yaml:4:1: YAML syntax error: expected ',' or ']', but got '<stream end>'"], id="yaml-syntax"),
    pytest.param("jobs:\n  - type: image\n    prompt: a cat\n    count: two\n",
                 ["m.yaml:4:12: jobs[1].count: expected a whole number, got 'two'"], id="wrong-value-type"),
    pytest.param("jobs:\n  - type: image\n    prompt: [a cat, 5]\n",
                 ["m.yaml:3:21: jobs[1].prompt[2]: expected text, got 5"], id="bad-list-item"),
    pytest.param("jobs:\n  - type: image\n    prompt: a cat\n    seed: 5\n    count: 3\n",
                 ["m.yaml:4:11: a fixed seed with count > 1 would make identical samples; list several seeds, or "
                  "leave seed out"], id="fixed-seed-with-count"),
    pytest.param("jobs:\n  - type: image\n    prompt: a cat\n    duration: 5\n",
                 ["m.yaml:4:15: duration does not apply to image jobs (it is for video jobs)"],
                 id="field-of-another-type"),
    pytest.param("jobs:\n  - type: image_to_image\n    prompt: a\n    seed: 1\n    references: [tos-x]\n",
                 ["m.yaml:4:11: seed does not apply to image_to_image jobs (it is for image and video jobs)"],
                 id="blend-takes-no-seed"),
    pytest.param("jobs: []\n", ["m.yaml:1:7: jobs: the list must have at least 1 item(s)"], id="no-jobs"),
    pytest.param("jobs:\n  - type: image_to_image\n    prompt: a\n    references:\n"
                 "      - {image: a.png, uri: tos-x}\n",
                 ["m.yaml:5:9: jobs[1].references[1]: give either `image` or `uri`, not both"],
                 id="reference-image-and-uri"),
    pytest.param("cache: {ttl: sometimes}\njobs:\n  - {type: image, prompt: a}\n",
                 ["m.yaml:1:14: cache.ttl: expected a number or 'forever', got 'sometimes'"], id="cache-ttl"),
    pytest.param("jobs:\n  - type: video\n    prompt: a cat\n    fps: 30\n",
                 ["m.yaml:4:10: fps 30 is not allowed; allowed: 24"], id="fps"),
    pytest.param("jobs:\n  - {type: image, prompt: a, name: x}\n  - {type: image, prompt: b, name: x}\n",
                 ["m.yaml:3:36: job name 'x' is already used at m.yaml:2:5; names must be unique"],
                 id="duplicate-job-name"),
    pytest.param("jobs:\n  - {type: image, prompt: a, sample_strength: 1.5}\n",
                 ["m.yaml:2:47: jobs[1].sample_strength: 1.5 is above the maximum of 1"], id="above-maximum"),
    pytest.param("", ["m.yaml:1:1: the file is empty; a manifest needs at least `jobs:`"], id="empty-file"),
    pytest.param("- just\n- a list\n", ["m.yaml:1:1: the document: expected a mapping, got a list"],
                 id="not-a-mapping"),
    pytest.param("jobs:\n  - type: image\n    rows: missing.csv\n",
                 ["m.yaml:3:11: rows file 'missing.csv' not found"], id="missing-rows-file"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_bad_manifest_gives_located_message(write: Callable[..., Path], text: str, expected: list[str]) -> None:
    assert problems(write("m.yaml", text)) == expected


def test_all_problems_are_reported_in_one_pass(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        jobs:
          - type: image
            prompt: a cat
            model: jimeng-5.0
            resolution: 1k
          - type: video
            prompt: "{x}"
            duration: 7
          - type: image_to_image
            prompt: edit
            references: [missing.png]
        """)
    found = problems(path)
    assert [p.split(": ")[0] for p in found] == ["m.yaml:5:17", "m.yaml:7:13", "m.yaml:8:15", "m.yaml:11:18"]


def test_problems_in_another_folder_say_where_images_were_looked_for(write: Callable[..., Path]) -> None:
    write("sub/ok.png", "not an image")
    path = write("sub/m.yaml", "jobs:\n  - type: video\n    prompt: a\n    first_frame: ok.png\n")
    assert problems(path) == ["sub/m.yaml:4:18: image 'ok.png': not an image the service accepts (PNG, JPEG, WEBP)"]


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((32, 32), "32x32 pixels; each side must be between 64 and 8192 pixels"),
        ((100, 9000), "100x9000 pixels; each side must be between 64 and 8192 pixels"),
    ],
)
def test_reference_image_dimensions_are_checked(write: Callable[..., Path], tmp_path: Path,
                                                size: tuple[int, int], message: str) -> None:
    png(tmp_path / "small.png", size)
    path = write("m.yaml", "jobs:\n  - type: image_to_image\n    prompt: a\n    references: [small.png]\n")
    assert problems(path) == [f"m.yaml:4:18: image 'small.png': {message}"]


def test_gif_references_are_refused(write: Callable[..., Path], tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (100, 100)).save(tmp_path / "a.gif")
    path = write("m.yaml", "jobs:\n  - type: image_to_image\n    prompt: a\n    references: [a.gif]\n")
    assert problems(path) == ["m.yaml:4:18: image 'a.gif': a GIF image; allowed formats: PNG, JPEG, WEBP"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("prompt,modle\na,jimeng-4.0\n",
                     ["s.csv:row 1, column modle: unknown column 'modle' (did you mean 'model'?); allowed: type, "
                      "region, prompt, negative_prompt, model, ratio, resolution, sample_strength, seed, count, "
                      "images, intelligent_ratio, reference_strength, duration, aspect_ratio, fps, references, "
                      "first_frame, end_frame, or var.NAME for a template variable"], id="unknown-column"),
        pytest.param("prompt,seed\na,abc\n", ["s.csv:row 2, column seed: 'abc' is not a whole number"],
                     id="not-a-number"),
        pytest.param("prompt,ratio\na,1:1\nb,7:5\n",
                     ["s.csv:row 3, column ratio: '7:5' is not allowed; allowed: 1:1, 3:4, 16:9, 4:3, 9:16, 2:3, 3:2, "
                      "21:9"], id="enum"),
        pytest.param("prompt,model\na,jimeng-4.0|jimeng-9\n",
                     ["s.csv:row 2, column model: unknown model 'jimeng-9' (did you mean 'jimeng-5.0'?); image models: "
                      "jimeng-5.0-pro, jimeng-5.0, jimeng-4.7, jimeng-4.6, jimeng-4.5, jimeng-4.1, jimeng-4.0, "
                      "jimeng-3.1, jimeng-3.0, jimeng-2.1, jimeng-2.0-pro, jimeng-2.0, jimeng-1.4, jimeng-xl-pro, "
                      "nanobanana, nanobananapro (or their raw keys; see `jimeng-batch models`)"], id="list-item"),
        pytest.param("prompt,model\n,jimeng-4.0\n", ["s.csv:row 2: missing prompt: every request needs one"],
                     id="missing-prompt"),
        pytest.param("prompt\n\"a {x}\"\n", ["s.csv:row 2, column prompt: unknown template variable '{x}'; this job "
                                            "defines no `vars`"], id="unknown-variable"),
        pytest.param("prompt\na,b\n", ["s.csv:row 2: 1 cell(s) beyond the last named column; name the column or "
                                       "clear them"], id="cells-beyond-header"),
        pytest.param("prompt,prompt\na,b\n", ["s.csv:row 1, column prompt: column 'prompt' appears twice; give each "
                                              "column once"], id="repeated-column"),
        pytest.param("prompt,var.a b\nx,y\n", ["s.csv:row 1, column var.a b: 'var.a b' is not a valid variable "
                                               "column; use var.NAME with NAME made of letters, digits and _"],
                     id="bad-var-column"),
        pytest.param("prompt,count\na,0\n", ["s.csv:row 2, column count: 0 is below the minimum of 1"],
                     id="count-minimum"),
        pytest.param("prompt,model\n", ["s.csv:row 2: no request rows below the header; add a row per request"],
                     id="no-rows"),
        pytest.param("prompt,model\n,\n\n", ["s.csv:row 2: no request rows below the header; add a row per "
                                               "request"], id="only-blank-rows"),
    ],
)
def test_bad_spreadsheet_gives_row_and_column(write: Callable[..., Path], text: str, expected: list[str]) -> None:
    assert problems(write("s.csv", text)) == expected


def test_video_spreadsheet_rows_take_cli_type(write: Callable[..., Path]) -> None:
    path = write("s.csv", "prompt,duration\na,7\n")
    assert problems(path, SpreadsheetOptions(type="video")) == [
        "s.csv:row 2, column duration: jimeng-video-3.0 does not allow a duration of 7 s; allowed: 5, 10"
    ]
