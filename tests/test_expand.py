"""Expansion: matrix counts, template variables, samples, stable keys, submit ids and seeds."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import png, summary_of

from jimeng_batch.intake.expand import SUBMIT_ID_NAMESPACE
from jimeng_batch.intake.manifest import load_manifest
from jimeng_batch.intake.plan import iter_distinct, iter_requests
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.request_spec import RequestSpec


def specs(path: Path) -> list[RequestSpec]:
    found = [item for item in iter_distinct(load_manifest(path)) if isinstance(item, RequestSpec)]
    return found


@pytest.mark.parametrize(
    ("job", "count"),
    [
        pytest.param("prompt: a", 1, id="single"),
        pytest.param("prompt: [a, b, c]", 3, id="prompt-list"),
        pytest.param("prompt: a\n    model: [jimeng-4.0, jimeng-3.0]\n    ratio: ['1:1', '16:9', '9:16']", 6,
                     id="model-x-ratio"),
        pytest.param("prompt: a\n    count: 4", 4, id="count"),
        pytest.param("prompt: '{a} {b}'\n    vars: {a: [x, y], b: [1, 2, 3]}\n    count: 2", 12, id="vars-x-count"),
        pytest.param("prompt: a\n    seed: [1, 2, 3]\n    resolution: [1k, 2k]", 6, id="seed-x-resolution"),
        pytest.param("prompt: '{a}'\n    vars: {a: [x, y], fixed: z}", 2, id="unused-single-var-is-fine"),
    ],
)
def test_matrix_expands_to_the_cartesian_product(write: Callable[..., Path], job: str, count: int) -> None:
    path = write("m.yaml", f"jobs:\n  - type: image\n    {job}\n")
    assert summary_of(path).distinct == count
    assert len(specs(path)) == count


def test_templates_fill_placeholders_and_keep_literal_braces(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        jobs:
          - type: image
            prompt: "{{json}} a {animal} in {place}"
            negative_prompt: "{animal} blur"
            vars: {animal: [cat, dog], place: snow}
        """)
    found = specs(path)
    assert [s.prompt for s in found] == ["{json} a cat in snow", "{json} a dog in snow"]
    assert [s.negative_prompt for s in found] == ["cat blur", "dog blur"]


def test_job_fields_override_defaults_and_video_defaults_skip_image_jobs(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        defaults:
          model: jimeng-3.0
          resolution: 1k
          duration: 10
        jobs:
          - {type: image, prompt: a}
          - {type: image, prompt: b, model: jimeng-4.0}
          - {type: video, prompt: c}
        """)
    found = specs(path)
    assert [(s.model, s.resolution) for s in found] == [("jimeng-3.0", "1k"), ("jimeng-4.0", "1k"),
                                                         ("jimeng-video-3.0", "720p")]
    assert found[2].duration == 10


def test_keys_and_seeds_are_stable_and_samples_differ(write: Callable[..., Path]) -> None:
    path = write("m.yaml", "jobs:\n  - {type: image, prompt: a, count: 4}\n")
    first, second = specs(path), specs(path)
    assert [s.key for s in first] == [s.key for s in second]
    assert len({s.key for s in first}) == 4 and len({s.seed for s in first}) == 4
    for spec in first:
        assert spec.submit_id == str(uuid.uuid5(SUBMIT_ID_NAMESPACE, spec.key))
        assert spec.seed is not None
        assert catalog.SEED_BASE <= spec.seed < catalog.SEED_BASE + catalog.SEED_SPAN
        assert not spec.seed_given


def test_given_seed_is_used_as_it_is(write: Callable[..., Path]) -> None:
    path = write("m.yaml", "jobs:\n  - {type: image, prompt: a, seed: [7, 4294967295]}\n")
    assert [(s.seed, s.seed_given) for s in specs(path)] == [(7, True), (4294967295, True)]


def test_key_ignores_names_and_order_but_not_parameters(write: Callable[..., Path]) -> None:
    one = specs(write("a.yaml", "jobs:\n  - {name: first, type: image, prompt: a, ratio: '1:1'}\n"))
    renamed = specs(write("b.yaml", "jobs:\n  - {ratio: '1:1', prompt: a, type: image, name: other}\n"))
    changed = specs(write("c.yaml", "jobs:\n  - {type: image, prompt: a, ratio: '16:9'}\n"))
    assert one[0].key == renamed[0].key
    assert one[0].key != changed[0].key


def test_identical_requests_share_one_submission(write: Callable[..., Path]) -> None:
    path = write("m.yaml", "jobs:\n  - {type: image, prompt: [a, a, b]}\n  - {type: image, prompt: b}\n")
    summary = summary_of(path)
    assert (summary.requests, summary.distinct, summary.duplicates) == (4, 2, 2)
    all_items = [i for i in iter_requests(load_manifest(path)) if isinstance(i, RequestSpec)]
    assert len(all_items) == 4 and len(specs(path)) == 2


def test_reference_content_is_in_the_key_not_its_name(write: Callable[..., Path], tmp_path: Path) -> None:
    png(tmp_path / "a.png", color="#112233")
    png(tmp_path / "copy-of-a.png", color="#112233")
    png(tmp_path / "b.png", color="#445566")
    keys = {}
    for name in ("a.png", "copy-of-a.png", "b.png"):
        path = write(f"{name}.yaml", f"jobs:\n  - {{type: image_to_image, prompt: x, references: [{name}]}}\n")
        keys[name] = specs(path)[0].key
    assert keys["a.png"] == keys["copy-of-a.png"] != keys["b.png"]


def test_reference_images_are_read_once_and_counted(write: Callable[..., Path], tmp_path: Path) -> None:
    png(tmp_path / "ref.png", (300, 200))
    path = write("m.yaml", """
        jobs:
          - type: image_to_image
            prompt: [one, two, three]
            references:
              - {image: ref.png, strength: 0.7}
              - uri:tos-cn-i-abc/def
        """)
    found = specs(path)
    assert len(found) == 3
    ref, uri = found[0].references
    assert (ref.kind, ref.width, ref.height, ref.format, ref.strength) == ("file", 300, 200, "png", 0.7)
    assert (uri.kind, uri.ref, uri.strength) == ("uri", "tos-cn-i-abc/def", 0.5)
    summary = summary_of(path)
    assert summary.local_images == 1


def test_costs_come_from_the_catalog_and_the_manifest(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        costs:
          jimeng-video-3.0: {720p: 3}
        jobs:
          - {type: image, prompt: a, resolution: [2k, 4k]}
          - {type: video, prompt: b, duration: [5, 10]}
        """)
    summary = summary_of(path)
    assert summary.estimated_credits == 1 + 2 + 3 * 5 + 3 * 10
    groups = {(t, m, r): n for (t, m, r), n in summary.groups.items()}
    assert groups == {("image", "jimeng-4.0", "2k"): 1, ("image", "jimeng-4.0", "4k"): 1,
                      ("video", "jimeng-video-3.0", "720p"): 2}


def test_raw_model_keys_are_accepted(write: Callable[..., Path]) -> None:
    path = write("m.yaml", "jobs:\n  - {type: image, prompt: a, model: high_aes_general_v40}\n")
    assert specs(path)[0].model == "jimeng-4.0"


def test_unquoted_ratio_is_read_as_a_ratio(write: Callable[..., Path]) -> None:
    # YAML 1.1 would read 16:9 as the base-60 number 969.
    path = write("m.yaml", "jobs:\n  - type: image\n    prompt: a\n    ratio: 16:9\n")
    assert specs(path)[0].ratio == "16:9"


def test_yaml_anchors_and_merge_keys_work(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        x-common: &common
          type: image
          model: jimeng-3.0
        jobs:
          - <<: *common
            prompt: a
        """)
    # Top-level x- keys are ignored: the place for anchors.
    assert [(s.prompt, s.model) for s in specs(path)] == [("a", "jimeng-3.0")]
    path = write("n.yaml", """
        jobs:
          - &first {type: image, prompt: a, model: jimeng-3.0}
          - <<: *first
            prompt: b
        """)
    assert [(s.prompt, s.model) for s in specs(path)] == [("a", "jimeng-3.0"), ("b", "jimeng-3.0")]
