"""The catalog is consistent with itself, with the schemas, and with what the protocol reference captured."""

from __future__ import annotations

import pytest

from jimeng_batch.intake.schema import MANIFEST_SCHEMA, ROW_SCHEMA, load_schema
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.signing import web_sign


def enum_of(fragment: dict) -> list:  # type: ignore[type-arg]
    return fragment["oneOf"][0]["enum"]


def test_schema_enums_mirror_the_catalog() -> None:
    """The schemas repeat a few catalog tables for editors; they must never drift apart."""
    manifest = load_schema(MANIFEST_SCHEMA)
    fields = manifest["$defs"]["fields"]["properties"]
    assert enum_of(fields["ratio"]) == list(catalog.IMAGE_RATIOS)
    assert enum_of(fields["resolution"]) == list(catalog.IMAGE_RESOLUTIONS + catalog.VIDEO_RESOLUTIONS)
    assert enum_of(fields["aspect_ratio"]) == list(catalog.VIDEO_ASPECT_RATIOS)
    assert manifest["$defs"]["job"]["properties"]["type"]["enum"] == list(catalog.JOB_TYPES)
    assert manifest["properties"]["region"]["enum"] == list(catalog.REGIONS)
    protocol = manifest["properties"]["protocol"]["properties"]
    assert set(protocol) == {"profile", "file", *catalog.PROTOCOL_FIELDS}
    assert protocol["profile"]["enum"] == list(catalog.PROTOCOL_PROFILES)
    assert fields["references"]["maxItems"] == catalog.MAX_REFERENCES
    row = load_schema(ROW_SCHEMA)["properties"]
    assert enum_of(row["ratio"]) == list(catalog.IMAGE_RATIOS)
    job_fields = set(manifest["$defs"]["job"]["properties"]) - {"name", "vars", "rows"}
    assert set(row) == job_fields


def test_model_names_and_keys_are_unique() -> None:
    models = [*catalog.IMAGE_MODELS, *catalog.VIDEO_MODELS]
    assert len({m.name for m in models}) == len(models)
    assert len({m.key for m in models}) == len(models)


@pytest.mark.parametrize("model", catalog.IMAGE_MODELS, ids=lambda m: m.name)
def test_every_image_model_has_sizes_and_costs_for_its_resolutions(model: catalog.ImageModel) -> None:
    for resolution in model.resolutions:
        assert resolution in catalog.IMAGE_RESOLUTIONS
        assert resolution in model.cost
        for ratio in catalog.IMAGE_RATIOS:
            width, height = catalog.image_size(model, resolution, ratio)
            long_side = max(width, height)
            assert {"1k": 1000 <= long_side <= 2100, "2k": 2000 <= long_side <= 3100,
                    "4k": 4000 <= long_side <= 6200}[resolution]
            left, right = (int(x) for x in ratio.split(":"))
            assert abs(width / height - left / right) < 0.02, (ratio, width, height)


@pytest.mark.parametrize("model", catalog.VIDEO_MODELS, ids=lambda m: m.name)
def test_every_video_model_is_complete(model: catalog.VideoModel) -> None:
    assert model.durations and all(d > 0 for d in model.durations)
    assert set(model.resolutions) <= set(catalog.VIDEO_RESOLUTIONS)
    assert all(r in model.cost_per_second for r in model.resolutions)
    assert model.benefit_type and model.regions <= catalog.ALL_REGIONS


def test_the_documents_models_are_all_there() -> None:
    document = {
        "jimeng-4.0": "high_aes_general_v40", "jimeng-3.1": "high_aes_general_v30l_art_fangzhou:general_v3.0_18b",
        "jimeng-3.0": "high_aes_general_v30l:general_v3.0_18b", "jimeng-2.1": "high_aes_general_v21_L:general_v2.1_L",
        "jimeng-2.0-pro": "high_aes_general_v20_L:general_v2.0_L", "jimeng-2.0": "high_aes_general_v20:general_v2.0",
        "jimeng-1.4": "high_aes_general_v14:general_v1.4", "jimeng-xl-pro": "text2img_xl_sft",
        "jimeng-video-3.0-pro": "dreamina_ic_generate_video_model_vgfm_3.0_pro",
        "jimeng-video-3.0": "dreamina_ic_generate_video_model_vgfm_3.0",
        "jimeng-video-2.0": "dreamina_ic_generate_video_model_vgfm_lite",
        "jimeng-video-2.0-pro": "dreamina_ic_generate_video_model_vgfm1.0",
    }
    for name, key in document.items():
        model = catalog.find_model(name)
        assert model is not None and model.key == key
        assert catalog.find_model(key) is model


def test_regions() -> None:
    assert catalog.REGIONS["cn"].aid == 513695 and catalog.REGIONS["cn"].api_base == "https://jimeng.jianying.com"
    for code in ("us", "hk", "jp", "sg"):
        region = catalog.REGIONS[code]
        assert region.aid == 513641 and not region.sends_web_id
        # A session token only goes to the service's own hosts by default, never to a third-party proxy.
        assert "deno.dev" not in region.api_base


def test_sign_matches_the_captured_browser_request() -> None:
    assert web_sign("/mweb/v1/aigc_draft/generate", platform="7", app_version="8.4.0",
                    device_time=1771893826) == "19724735691862919106b8c4808a6ce7"


def test_cost_overrides() -> None:
    image = catalog.find_model("jimeng-4.0")
    video = catalog.find_model("jimeng-video-3.0")
    assert image is not None and video is not None
    table = catalog.CostTable({"jimeng-4.0": 3, "dreamina_ic_generate_video_model_vgfm_3.0": {"1080p": 10}})
    assert table.estimate(image, "2k") == 3
    assert table.estimate(video, "1080p", 5) == 50
    assert table.estimate(video, "720p", 5) == 10  # no override for 720p: the catalog's 2 per second


def test_protocol_overrides() -> None:
    live = catalog.PROTOCOL_PROFILES["live"]
    changed = live.with_overrides({"profile": "live", "da_version": "3.4.0"})
    assert changed.da_version == "3.4.0" and changed.app_version == live.app_version
