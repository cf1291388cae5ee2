"""The account's own catalog (get_common_config): read, compared with the built-in one, and checked against before
anything is spent; `models --live`, `validate --live`, `run`, the cached copy a resume uses, and unreadable answers.

Everything runs over real HTTP against one simulator whose catalog each test sets (``set_catalog``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_main
from hypothesis import given, settings
from hypothesis import strategies as st
from run_helpers import TOKEN, simulator, write_manifest
from sim_helpers import simulator as harness
from test_answers import JSON, SCALARS

from jimeng_batch.engine.account_catalog import CATALOG_NAME
from jimeng_batch.protocol import answers, catalog, live_catalog
from jimeng_batch.protocol.live_catalog import (
    AccountCatalog,
    OfferedImageModel,
    OfferedResolution,
    OfferedVideoModel,
    RatioSize,
)
from jimeng_batch.sim import SimServer
from jimeng_batch.sim.config import SimCatalog
from jimeng_batch.sim.offered import image_config, video_config

# An account offered one model more, one less and one changed.
DIFFERENT: dict[str, Any] = {
    "add": [{"key": "high_aes_general_v60", "name": "Seedream 6.0"}],
    "remove": ["jimeng-2.1"],
    "change": {"jimeng-4.0": {"name": "Seedream 4.0", "resolutions": ["2k", "4k"], "counts": [1, 2],
                              "ratios": ["1:1", "16:9"]},
               "jimeng-video-3.0": {"durations": [5]}},
}
RETIRED_40: dict[str, Any] = {"remove": ["jimeng-4.0"]}
LABEL = "tokA…(32)"

RETIRED_AND_1K = """
    jobs:
      - name: pics
        type: image
        model: [jimeng-4.0, jimeng-2.1]
        resolution: 1k
        prompt: a red kite
"""
OFFERED = """
    jobs:
      - name: pics
        type: image
        model: jimeng-4.0
        resolution: 2k
        ratio: "16:9"
        prompt: [a red kite, a blue boat]
"""


@pytest.fixture(scope="module")
def server() -> Iterator[SimServer]:
    with simulator() as running:
        yield running


@pytest.fixture
def account(server: SimServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
            ) -> Iterator[Callable[[dict[str, Any]], SimServer]]:
    """Set the simulated account's catalog; the token is given in the environment, as a user would."""
    monkeypatch.chdir(tmp_path)  # messages name files relative to here
    for name in ("JIMENG_BASE_URL", "JIMENG_IMAGEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JIMENG_SESSIONID", TOKEN)

    def set_catalog(changes: dict[str, Any]) -> SimServer:
        server.state.set_catalog(changes)
        return server

    yield set_catalog
    server.state.set_catalog({})


def _calls(server: SimServer, endpoint: str) -> int:
    return int(server.stats()["requests"].get(endpoint, 0))


def _run_args(manifest: Path, server: SimServer, out: Path, *extra: str) -> list[str]:
    return ["run", str(manifest), "--base-url", server.base_url, "--out", str(out), "--no-cache", "--no-report",
            "--poll-interval", "0.01", "--quiet", *extra]


# -- models --live -------------------------------------------------------------------------------------------------


def test_models_live_shows_new_missing_and_changed_models(account: Callable[[dict[str, Any]], SimServer],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    server = account(DIFFERENT)
    code, out, err = run_main(["models", "--live", "--base-url", server.base_url], capsys)
    assert code == 0, err
    rows = {line.split()[0] + " " + line.split()[2]: line for line in out.splitlines()
            if line.strip().startswith(("new", "missing", "changed"))}
    assert set(rows) == {"new high_aes_general_v60", "missing high_aes_general_v21_L:general_v2.1_L",
                         "changed high_aes_general_v40", "changed dreamina_ic_generate_video_model_vgfm_3.0"}
    assert "Seedream 6.0" in rows["new high_aes_general_v60"]  # the UI name, as the service says it
    changed = rows["changed high_aes_general_v40"]
    assert "jimeng-4.0" in changed and "Seedream 4.0" in changed and "resolutions: -1k" in changed
    for line in ("ratios (2k): -3:4, -4:3, -9:16, -2:3, -3:2, -21:9", "counts: -3, -4"):
        assert line in out  # what differs, one line each
    assert "durations: -10" in rows["changed dreamina_ic_generate_video_model_vgfm_3.0"]
    assert f"for {LABEL}" in out and TOKEN not in out + err
    assert "1 new, 1 missing, 2 changed" in out


def test_models_live_json(account: Callable[[dict[str, Any]], SimServer],
                          capsys: pytest.CaptureFixture[str]) -> None:
    server = account(DIFFERENT)
    code, out, _ = run_main(["models", "--live", "--base-url", server.base_url, "--json", "--type", "image"], capsys)
    assert code == 0
    shown = json.loads(out)
    assert shown["host"] == server.base_url and shown["account"] == LABEL and shown["region"] == "cn"
    assert [m["key"] for m in shown["new"]] == ["high_aes_general_v60"]
    assert shown["new"][0]["name"] == "Seedream 6.0" and shown["new"][0]["counts"] == [1, 2, 3, 4]
    assert [m["key"] for m in shown["missing"]] == ["high_aes_general_v21_L:general_v2.1_L"]
    (change,) = shown["changed"]  # --type image leaves the video model out
    assert (change["key"], change["builtin_name"], change["account_name"]) == (
        "high_aes_general_v40", "jimeng-4.0", "Seedream 4.0")
    fields = {f["field"]: f for f in change["changes"]}
    assert fields["resolutions"]["removed"] == ["1k"]
    assert fields["counts"]["account"] == ["1", "2"]
    assert fields["ratios (2k)"]["account"] == ["1:1", "16:9"]
    offered = {m["key"]: m for m in shown["offered"]}
    assert offered["high_aes_general_v40"]["resolutions"] == {"2k": ["1:1", "16:9"], "4k": ["1:1", "16:9"]}
    assert offered["high_aes_general_v50"]["intelligent_ratio"] is True
    assert offered["high_aes_general_v30l:general_v3.0_18b"]["intelligent_ratio"] is False


def test_models_live_needs_a_readable_catalog(account: Callable[[dict[str, Any]], SimServer],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    server = account({"malformed": True})
    code, out, err = run_main(["models", "--live", "--base-url", server.base_url], capsys)
    assert code == 3 and out == ""
    assert "could not be read" in err and "data.model_list: text, not a list" in err


# -- validate --live -----------------------------------------------------------------------------------------------


def test_validate_live_refuses_a_retired_model_and_an_unoffered_resolution(
        account: Callable[[dict[str, Any]], SimServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = account(DIFFERENT)
    manifest = write_manifest(tmp_path, RETIRED_AND_1K)
    code, _, _ = run_main(["validate", str(manifest)], capsys)
    assert code == 0  # the built-in catalog still has both at 1k: the failure this check is for
    code, out, err = run_main(["validate", str(manifest), "--live", "--base-url", server.base_url], capsys)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0] == "2 problems found"
    assert lines[1].startswith("m.yaml:4:25: job 'pics': model: jimeng-2.1 (high_aes_general_v21_L:general_v2.1_L) "
                               "is not offered to this account (the account's catalog, read from "
                               f"{server.base_url} for {LABEL} at ")
    assert "image models it offers: jimeng-5.0-pro, " in lines[1]
    assert lines[1].endswith("; 1 more it does not know yet (see `jimeng-batch models --live`)")
    assert lines[2].startswith("m.yaml:5:17: job 'pics': resolution: jimeng-4.0 ('Seedream 4.0') is not offered at "
                               "1k to this account")
    assert lines[2].endswith("; it offers: 2k, 4k")
    assert TOKEN not in err


def test_validate_live_locates_a_spreadsheet_cell_and_an_unoffered_ratio(
        account: Callable[[dict[str, Any]], SimServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = account(DIFFERENT)
    rows = tmp_path / "rows.csv"
    rows.write_text("prompt,model,resolution,ratio\na kite,jimeng-4.0,2k,3:4\na boat,jimeng-4.0,2k,16:9\n",
                    encoding="utf-8")
    code, _, err = run_main(["validate", str(rows), "--live", "--base-url", server.base_url], capsys)
    assert code == 2
    assert err.splitlines()[1].startswith("rows.csv:row 2, column ratio: job 'rows': ratio: jimeng-4.0 "
                                          "('Seedream 4.0') at 2k is not offered in 3:4")
    assert err.splitlines()[1].endswith("ratios it offers there: 1:1, 16:9")


def test_validate_live_refuses_an_image_count_and_intelligent_ratio_the_account_is_not_offered(
        account: Callable[[dict[str, Any]], SimServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The account makes 1 or 2 images per request of jimeng-4.0, and (its feats say) does not pick the ratio."""
    server = account({"change": {"jimeng-4.0": {"counts": [1, 2], "intelligent_ratio": False}}})
    manifest = write_manifest(tmp_path, "jobs:\n  - name: pics\n    type: image\n    model: jimeng-4.0\n"
                                        "    prompt: a cat\n    images: [2, 4]\n    intelligent_ratio: true\n")
    code, _, err = run_main(["validate", str(manifest)], capsys)
    assert code == 0, err  # the built-in catalog allows both
    code, out, err = run_main(["validate", str(manifest), "--live", "--base-url", server.base_url], capsys)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0] == "2 problems found", err
    assert lines[1].startswith("m.yaml:6:17: job 'pics': images: jimeng-4.0 does not make 4 image(s) per request "
                               "for this account"), lines[1]
    assert lines[1].endswith("counts it offers: 1, 2")
    assert lines[2].startswith("m.yaml:7:24: job 'pics': intelligent_ratio: jimeng-4.0 does not pick its own ratio "
                               "for this account"), lines[2]


def test_validate_live_passes_what_is_offered(account: Callable[[dict[str, Any]], SimServer], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    server = account(DIFFERENT)
    code, out, err = run_main(["validate", str(write_manifest(tmp_path, OFFERED)), "--live", "--base-url",
                               server.base_url], capsys)
    assert code == 0, err
    assert out.startswith("ok: m.yaml: 1 job(s), 2 request(s); offered to the account (the account's catalog, read "
                          f"from {server.base_url} for {LABEL} at ")


def test_validate_live_with_an_unreadable_catalog_warns_or_stops(
        account: Callable[[dict[str, Any]], SimServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = account({"malformed": True})
    manifest = write_manifest(tmp_path, RETIRED_AND_1K)
    code, out, err = run_main(["validate", str(manifest), "--live", "--base-url", server.base_url], capsys)
    assert code == 0 and out.startswith("ok: m.yaml")
    assert err.startswith(f"warning: the account's catalog could not be read from {server.base_url}: "
                          "/mweb/v1/get_common_config: malformed answer: data.model_list: text, not a list")
    assert err.rstrip().endswith("; checked against the built-in catalog only")
    code, out, err = run_main(["validate", str(manifest), "--live", "--base-url", server.base_url,
                               "--account-catalog", "require"], capsys)
    assert code == 3 and out == "" and "could not be read" in err


# -- run and resume ------------------------------------------------------------------------------------------------


def test_run_refuses_what_the_account_is_not_offered_before_any_submit(
        account: Callable[[dict[str, Any]], SimServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = account(DIFFERENT)
    before = _calls(server, "generate"), _calls(server, "get_upload_token")
    code, _, err = run_main(_run_args(write_manifest(tmp_path, RETIRED_AND_1K), server, tmp_path / "out"), capsys)
    assert code == 2
    assert "m.yaml:4:25: job 'pics': model: jimeng-2.1" in err and "m.yaml:5:17: job 'pics': resolution:" in err
    assert (_calls(server, "generate"), _calls(server, "get_upload_token")) == before  # nothing sent, nothing spent
    cached = json.loads((tmp_path / "out" / CATALOG_NAME).read_text(encoding="utf-8"))
    assert cached["host"] == server.base_url and cached["account"] == LABEL and cached["read_at"].endswith("Z")
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_resume_checks_against_the_cached_catalog(account: Callable[[dict[str, Any]], SimServer], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    server = account(DIFFERENT)
    manifest, out = write_manifest(tmp_path, OFFERED), tmp_path / "out"
    reads = _calls(server, "common_config")
    code, _, err = run_main(_run_args(manifest, server, out), capsys)
    assert code == 0, err
    assert _calls(server, "common_config") == reads + 1
    cached = (out / CATALOG_NAME).read_bytes()
    account(RETIRED_40)  # the account loses the model between the two runs
    code, _, err = run_main(["resume", str(out), "--quiet"], capsys)
    assert code == 0, err  # the plan is unchanged: checked against the catalog it was checked against
    assert _calls(server, "common_config") == reads + 1 and (out / CATALOG_NAME).read_bytes() == cached
    code, _, err = run_main(["resume", str(out), "--quiet", "--fresh-catalog"], capsys)
    assert code == 2 and "model: jimeng-4.0 (high_aes_general_v40) is not offered to this account" in err
    assert _calls(server, "common_config") == reads + 2


def test_a_malformed_catalog_warns_and_the_built_in_one_stands(
        account: Callable[[dict[str, Any]], SimServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = account({"malformed": True, "remove": ["jimeng-4.0"]})
    submits = _calls(server, "generate")
    code, _, err = run_main(_run_args(write_manifest(tmp_path, OFFERED), server, tmp_path / "out"), capsys)
    assert code == 0, err
    assert ("warning: the account's catalog could not be read from " f"{server.base_url}: "
            "/mweb/v1/get_common_config: malformed answer: data.model_list: text, not a list; checking against the "
            "built-in catalog only") in err
    assert _calls(server, "generate") == submits + 2
    assert not (tmp_path / "out" / CATALOG_NAME).exists()
    assert "could not be read" in (tmp_path / "out" / "run.log").read_text(encoding="utf-8")


def test_a_required_catalog_that_cannot_be_read_stops_before_any_submit(
        account: Callable[[dict[str, Any]], SimServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = account({"malformed": True})
    submits = _calls(server, "generate")
    code, _, err = run_main(_run_args(write_manifest(tmp_path, OFFERED), server, tmp_path / "out",
                                      "--account-catalog", "require"), capsys)
    assert code == 3
    assert "not starting" in err and "stopped early: the account's catalog could not be read" in err
    assert _calls(server, "generate") == submits


def test_without_a_token_no_catalog_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A rehearsal with the simulator's demo session checks against the built-in catalog, as before."""
    monkeypatch.delenv("JIMENG_SESSIONID", raising=False)
    (tmp_path / "sim.yaml").write_text("images_per_request: 1\ncatalog: {remove: [jimeng-4.0]}\n", encoding="utf-8")
    code, _, err = run_main(["run", str(write_manifest(tmp_path, OFFERED)), "--sim", "--sim-config",
                             str(tmp_path / "sim.yaml"), "--out", str(tmp_path / "out"), "--no-cache",
                             "--no-report", "--poll-interval", "0.01", "--quiet"], capsys)
    assert code == 0, err
    assert not (tmp_path / "out" / CATALOG_NAME).exists()


# -- the simulator's endpoints -------------------------------------------------------------------------------------


def test_the_catalog_endpoints_pass_the_gate_of_every_mweb_call() -> None:
    with harness() as sim:
        good = sim.caller.api(live_catalog.IMAGE_CONFIG_PATH, dict(live_catalog.IMAGE_CONFIG_BODY))
        assert good["ret"] == "0" and good["data"]["model_list"]
        video = sim.caller.api(live_catalog.VIDEO_CONFIG_PATH, dict(live_catalog.VIDEO_CONFIG_BODY))
        assert video["ret"] == "0" and {o["key"] for o in video["data"]["model_list"][0]["options"]} == {
            "resolution", "video_aspect_ratio", "fps", "frames"}
        unsigned = sim.as_account(sim.caller.token, headers_override={"Sign": "0" * 32})
        permission = sim.server.state.outcome("permission").ret
        assert unsigned.api(live_catalog.IMAGE_CONFIG_PATH, {})["ret"] == permission
        assert sim.as_account(sim.caller.token, query_override={"da_version": None}).api(
            live_catalog.VIDEO_CONFIG_PATH, {})["ret"] == permission
        assert sim.caller.api(live_catalog.IMAGE_CONFIG_PATH, [1])["ret"] == "2002"  # a body that is not an object


@pytest.mark.parametrize("region", sorted(catalog.REGIONS))
def test_the_simulators_default_catalog_reads_as_the_built_in_one(region: str) -> None:
    query_region = catalog.REGIONS[region].query_region
    offered = AccountCatalog(live_catalog.read_image_models(image_config(SimCatalog(), query_region)),
                             live_catalog.read_video_models(video_config(SimCatalog(), query_region)))
    diff = live_catalog.compare(live_catalog.builtin_catalog(region), offered)
    assert (diff.new, diff.missing, diff.changed) == ((), (), ())
    assert len(diff.same) == len(offered.models) > 0


# -- the reader ----------------------------------------------------------------------------------------------------

CATALOG_KEYS = ["model_list", "model_req_key", "model_name", "resolution_map", "image_ratio_sizes", "ratio_type",
                "width", "height", "generate_count_options", "feats", "input_image_limit", "ability_name",
                "max_image_num", "commercial_config", "benefit_type", "options", "key", "enum_val", "string_value",
                "int_value", "2k", "base", "default"]
CATALOG_JSON = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=3), st.dictionaries(st.sampled_from(CATALOG_KEYS), children, max_size=6)),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(JSON, CATALOG_JSON), video=st.booleans())
def test_any_answer_is_read_or_refused_with_its_path(raw: Any, video: bool) -> None:
    reader = live_catalog.read_video_models if video else live_catalog.read_image_models
    try:
        models = reader(raw)
    except answers.Malformed as exc:
        assert exc.path.startswith("data")
        return
    for model in models:
        assert isinstance(model.key, str) and model.key and isinstance(model.name, str) and model.name
        json.dumps(live_catalog.to_json(AccountCatalog(*((), (model,)) if video else ((model,), ()))))


NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
WHOLE = st.integers(min_value=-(2**40), max_value=2**40)
IMAGE_MODELS = st.builds(
    OfferedImageModel, key=NAMES, name=NAMES,
    resolutions=st.lists(st.builds(OfferedResolution, NAMES, st.lists(st.builds(RatioSize, WHOLE, WHOLE, WHOLE),
                                                                      max_size=3).map(tuple)),
                         max_size=3, unique_by=lambda r: r.name).map(tuple),
    counts=st.lists(WHOLE, max_size=4).map(tuple), feats=st.lists(NAMES, max_size=3).map(tuple),
    input_image_limits=st.lists(st.tuples(NAMES, WHOLE), max_size=2).map(tuple), benefit_type=NAMES | st.just(""))
VIDEO_MODELS = st.builds(
    OfferedVideoModel, key=NAMES, name=NAMES, resolutions=st.lists(NAMES, max_size=3).map(tuple),
    ratios=st.lists(NAMES, max_size=3).map(tuple), fps=st.lists(WHOLE, max_size=2).map(tuple),
    frames=st.lists(WHOLE, max_size=4).map(tuple), benefit_type=NAMES | st.just(""))


@settings(max_examples=200, deadline=None)
@given(offered=st.builds(AccountCatalog, st.lists(IMAGE_MODELS, max_size=3).map(tuple),
                         st.lists(VIDEO_MODELS, max_size=3).map(tuple)))
def test_a_catalog_round_trips_through_its_cached_form(offered: AccountCatalog) -> None:
    stored = json.loads(json.dumps(live_catalog.to_json(offered), ensure_ascii=False))
    assert live_catalog.from_json(stored) == offered


@settings(max_examples=200, deadline=None)
@given(fps=st.lists(st.integers(-5, 60), max_size=2).map(tuple), frames=st.lists(st.integers(-5, 500), max_size=6))
def test_durations_are_whole_seconds_of_frames_at_the_first_frame_rate(fps: tuple[int, ...],
                                                                       frames: list[int]) -> None:
    durations = OfferedVideoModel("k", "n", fps=fps, frames=tuple(frames)).durations
    assert list(durations) == sorted(set(durations))
    if not fps or fps[0] <= 0:
        assert durations == ()
    else:
        assert set(durations) == {f // fps[0] for f in frames if f > 0 and f % fps[0] == 0}


@pytest.mark.parametrize(("data", "path"), [
    pytest.param({"model_list": {"a": 1}}, "data.model_list", id="list-is-an-object"),
    pytest.param({"model_list": [{"model_name": "x"}]}, "data.model_list[0].model_req_key", id="no-key"),
    pytest.param({"model_list": [{"model_req_key": "k", "resolution_map": {"2k": {"image_ratio_sizes": [
        {"ratio_type": "wide"}]}}}]}, "data.model_list[0].resolution_map.2k.image_ratio_sizes[0].ratio_type",
        id="ratio-type-text"),
    pytest.param({"model_list": [{"model_req_key": "k", "generate_count_options": [1, True]}]},
                 "data.model_list[0].generate_count_options[1]", id="count-boolean"),
    pytest.param({"model_list": [{"model_req_key": "k", "feats": "t2i"}]}, "data.model_list[0].feats",
                 id="feats-text"),
    pytest.param({"model_list": [{"model_req_key": "k"}] * (live_catalog.MAX_MODELS + 1)}, "data.model_list",
                 id="too-many-models"),
])
def test_malformed_image_answers_name_the_field(data: Any, path: str) -> None:
    with pytest.raises(answers.Malformed) as caught:
        live_catalog.read_image_models(data)
    assert caught.value.path == path


def test_a_video_entry_reads_durations_from_frames_and_fps() -> None:
    (model,) = live_catalog.read_video_models({"model_list": [{
        "model_req_key": "dreamina_seedance_40_mini", "model_name": "即梦 Seedance 2.0 mini",
        "options": [{"key": "resolution", "enum_val": {"string_value": ["720p"]}},
                    {"key": "fps", "enum_val": {"int_value": [24]}},
                    {"key": "frames", "enum_val": {"int_value": [96, 120, 144]}}],
        "commercial_config": {"video_model_commerce_config": {"base": {"default": {
            "benefit_type": "seedance_20_mini_720p_output"}}}}}]})
    assert (model.name, model.durations, model.resolutions, model.ratios) == (
        "即梦 Seedance 2.0 mini", (4, 5, 6), ("720p",), ())
    assert model.benefit_type == "seedance_20_mini_720p_output"
    with pytest.raises(answers.Malformed) as caught:
        live_catalog.read_video_models({"model_list": [{"model_req_key": "k", "options": [
            {"key": "frames", "enum_val": {"int_value": [96, "many"]}}]}]})
    assert caught.value.path == "data.model_list[0].options[0].enum_val.int_value[1]"


def test_service_options_need_live(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["models", "--base-url", "http://127.0.0.1:9"], capsys)
    assert code == 2 and "--base-url: only with --live" in err


@pytest.mark.parametrize(("changes", "message"), [
    pytest.param({"remove": ["jimeng-9"]}, "catalog: 'jimeng-9' is not a built-in model", id="unknown-removed"),
    pytest.param({"change": {"jimeng-4.0": {"ratios": ["5:4"]}}},
                 "catalog.change.jimeng-4.0.ratios: 5:4 not allowed; allowed: 1:1", id="unknown-ratio"),
    pytest.param({"add": [{"name": "x"}]}, "catalog.add[0].key: a model to add needs its model_req_key",
                 id="added-without-key"),
    pytest.param({"add": [{"key": "high_aes_general_v40"}]}, "is built in already", id="added-twice"),
    pytest.param({"change": {"jimeng-video-3.0": {"durations": [0]}}}, "durations: must be whole numbers, 1 or more",
                 id="zero-duration"),
])
def test_a_simulated_catalog_is_checked(changes: dict[str, Any], message: str) -> None:
    from jimeng_batch.errors import ConfigError
    from jimeng_batch.sim import config_from_mapping

    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"catalog": changes})
    assert message in str(caught.value)


def test_what_an_answer_leaves_out_is_not_a_change() -> None:
    """An entry with nothing but its key says nothing about resolutions, counts or features: it differs in nothing."""
    bare = AccountCatalog(live_catalog.read_image_models({"model_list": [{"model_req_key": "high_aes_general_v40"}]}))
    diff = live_catalog.compare(live_catalog.builtin_catalog("cn"), bare)
    assert diff.changed == () and diff.same == ("high_aes_general_v40",)
    without = AccountCatalog((OfferedImageModel("high_aes_general_v40", "Seedream 4.0", feats=("t2i",)),))
    (change,) = live_catalog.compare(live_catalog.builtin_catalog("cn"), without).changed
    assert [(f.field, f.builtin, f.account) for f in change.changes] == [("intelligent_ratio", ("true",), ("false",))]


def test_a_catalog_quoting_the_token_is_cached_and_shown_without_it(tmp_path: Path) -> None:
    """Server text (a model's name) passes the scrubber before it is kept or shown: a hostile host may quote the
    cookie in it."""
    import asyncio

    import httpx

    from jimeng_batch.engine.account_catalog import account_catalog, read_cached
    from jimeng_batch.protocol.client import JimengClient
    from jimeng_batch.protocol.tokens import Scrubber, Token

    token = Token(TOKEN)
    answer = {"ret": "0", "data": {"model_list": [{"model_req_key": "high_aes_general_v40",
                                                   "model_name": f"Seedream sessionid={TOKEN}"}]}}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=answer))

    async def read() -> Any:
        async with JimengClient(region=catalog.REGIONS["cn"], versions=catalog.PROTOCOL_PROFILES["live"],
                                web_id="1", base_url="http://127.0.0.1:9", transport=transport) as client:
            return await account_catalog(client, token, folder=tmp_path, scrub=Scrubber([token]))

    read_now = asyncio.run(read())
    assert read_now.copy is not None and read_now.copy.catalog.images[0].name == f"Seedream sessionid={LABEL}"
    assert TOKEN.encode() not in (tmp_path / CATALOG_NAME).read_bytes()
    cached = read_cached(tmp_path)
    assert cached is not None and cached.cached and cached.catalog == read_now.copy.catalog


@pytest.mark.parametrize("text", ["{", "[]", '{"version": 1, "catalog": {"images": {"model_list": 3}}}',
                                  '{"version": 99, "catalog": {}}'])
def test_a_cached_copy_that_cannot_be_read_is_read_again(tmp_path: Path, text: str) -> None:
    from jimeng_batch.engine.account_catalog import read_cached

    (tmp_path / CATALOG_NAME).write_text(text, encoding="utf-8")
    assert read_cached(tmp_path) is None
    assert read_cached(tmp_path / "nowhere") is None
