"""One run, one pool, several regions: each job may name its own region, and each request goes with a token of
that region to that region's hosts (issue 13's acceptance test: "two tokens with different region prefixes and one
with a proxy run in one pool, each to its own hosts").

Intake first (a job's region in its keys, its model rules and its draft), then runs over real HTTP on 127.0.0.1:
two simulators, each behind a recording front (``--base-url cn=URL1,us=URL2``), and a forwarding proxy.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import png, problems, run_main, summary_of
from http_fronts import Seen, files_holding, recording_front
from run_helpers import NoWait, drive, fast_options, simulator, write_manifest

from jimeng_batch.engine.executor import Executor
from jimeng_batch.engine.states import State
from jimeng_batch.intake.manifest import SpreadsheetOptions, load_manifest
from jimeng_batch.intake.plan import iter_plan_records
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.tokens import parse_tokens

SID_A = "a1b2c3d4e5f60718293a4b5c6d7e8f90"  # 32 hex characters, as a real CN sessionid
SID_B = "b2c3d4e5f60718293a4b5c6d7e8f90a1"
SID_C = "c3d4e5f60718293a4b5c6d7e8f90a1b2"
SID_D = "d4e5f60718293a4b5c6d7e8f90a1b2c3"
PASSWORD = "pa@ss-w0rd:secret"  # an '@' and a ':' in the proxy's password
US_AID, CN_AID = "513641", "513695"
CN_QUERY = catalog.REGIONS["cn"].query_region

TWO_REGIONS = """
    region: cn
    jobs:
      - name: china
        type: image
        model: jimeng-4.0
        resolution: 1k
        prompt: [a red kite, a blue boat, a green hill]
      - name: abroad
        type: image
        region: us
        model: jimeng-4.0
        resolution: 1k
        prompt: [a white cat, a black dog, a grey owl, a brown fox]
      - name: abroad-winter
        type: image_to_image
        region: us
        model: jimeng-4.0
        resolution: 1k
        prompt: [make it winter, make it night]
        references: [ref.png]
      - name: china-winter
        type: image_to_image
        model: jimeng-4.0
        resolution: 1k
        prompt: make it snow
        references: [ref.png]
"""
US_JOBS, CN_JOBS = {"abroad": 4, "abroad-winter": 2}, {"china": 3, "china-winter": 1}
COMMON = ["--poll-interval", "0.02", "--quiet", "--no-cache", "--concurrency", "1", "--no-report"]


def _ledger_rows(out: Path, query: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(out / "ledger.sqlite")
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def _api(seen: list[Seen]) -> list[Seen]:
    return [call for call in seen if call.cookie]


def _mweb(seen: list[Seen]) -> list[Seen]:
    return [call for call in _api(seen) if urlsplit(call.url).path.startswith("/mweb/")]


# -- intake --------------------------------------------------------------------------------------------------------


def test_a_jobs_region_is_its_requests_and_the_manifests_stays_the_default(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, TWO_REGIONS)
    png(tmp_path / "ref.png")
    records = list(iter_plan_records(load_manifest(path)))
    by_job = Counter((r["source"]["job"], r["params"]["region"]) for r in records)
    assert by_job == {("china", "cn"): 3, ("china-winter", "cn"): 1, ("abroad", "us"): 4, ("abroad-winter", "us"): 2}
    for record in records:
        query, body = record["request"]["query"], record["request"]["body"]
        us = record["params"]["region"] == "us"
        assert query["aid"] == (US_AID if us else CN_AID) and query["region"] == ("US" if us else CN_QUERY)
        assert body["http_common_info"]["aid"] == int(US_AID if us else CN_AID)
        assert ("webId" in query) == (not us)  # international regions send none, as the web app does
    # A job naming the manifest's own region is the same request as one naming none: the same key.
    same = write_manifest(tmp_path, "region: cn\njobs: [{type: image, region: cn, resolution: 1k, prompt: a}]\n",
                          "same.yaml")
    plain = write_manifest(tmp_path, "region: cn\njobs: [{type: image, resolution: 1k, prompt: a}]\n", "plain.yaml")
    [with_region], [without] = (list(iter_plan_records(load_manifest(p))) for p in (same, plain))
    assert with_region["key"] == without["key"]
    moved = write_manifest(tmp_path, "region: cn\njobs: [{type: image, region: us, resolution: 1k, prompt: a}]\n",
                           "moved.yaml")
    assert next(iter_plan_records(load_manifest(moved)))["key"] != without["key"]  # another site, another request


def test_the_plan_summary_counts_requests_by_region_when_there_are_several(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]
                                                                            ) -> None:
    path = write_manifest(tmp_path, TWO_REGIONS)
    png(tmp_path / "ref.png")
    summary = summary_of(path)
    assert summary.regions == ["cn", "us"] and summary.region_requests == {"cn": 4, "us": 6}
    assert summary.region_jobs == {"cn": {"china", "china-winter"}, "us": {"abroad", "abroad-winter"}}
    regions = summary.as_dict()["regions"]
    assert [(r["region"], r["requests"]) for r in regions] == [("cn", 4), ("us", 6)]
    code, out, err = run_main(["plan", str(path)], capsys)
    assert code == 0, err
    assert "by region: cn 4 request(s)" in out and "us 6 request(s)" in out
    one = write_manifest(tmp_path, "jobs: [{type: image, resolution: 1k, prompt: a}]\n", "one.yaml")
    assert "regions" not in summary_of(one).as_dict()  # a one-region plan reads as it did


def test_a_model_not_offered_in_the_jobs_own_region_is_a_located_problem(write: Callable[..., Path]) -> None:
    path = write("m.yaml", """
        region: cn
        defaults:
          region: us
        jobs:
          - {type: image, model: jimeng-4.0, resolution: 1k, prompt: fine in us}
          - {type: image, region: cn, model: jimeng-4.7, resolution: 1k, prompt: fine in cn}
          - type: image
            model: jimeng-4.7
            resolution: 1k
            prompt: not in us
          - {type: image, region: sg, model: nanobanana, resolution: 1k, prompt: fine in sg}
    """)
    assert problems(path) == [
        "m.yaml:8:12: jimeng-4.7 is not offered in the job's region us (set at m.yaml:3:11); it is "
        "offered in: cn"]
    # A row's region cell over --region; an empty cell leaves the row in --region's.
    sheet = write("s.csv", "prompt,model,region\na,jimeng-4.7,cn\nb,jimeng-4.7,us\nc,nanobanana,\nd,nanobanana,cn\n")
    assert problems(sheet, SpreadsheetOptions(region="us")) == [
        "s.csv:row 3, column model: jimeng-4.7 is not offered in the job's region us (set at s.csv:row 3, column "
        "region); it is offered in: cn",
        "s.csv:row 5, column model: nanobanana is not offered in the job's region cn (set at s.csv:row 5, column "
        "region); it is offered in: hk, jp, sg, us"]
    bad = write("bad.yaml", "jobs: [{type: image, region: mars, resolution: 1k, prompt: a}]\n")
    [said] = problems(bad)
    assert said.startswith("bad.yaml:1:30: jobs[1].region: 'mars' is not allowed") and "cn, us, hk, jp, sg" in said


# -- one run, one pool, two regions --------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_one_run_sends_each_request_with_a_token_of_its_region_to_its_regions_host(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    png(tmp_path / "ref.png")
    manifest = write_manifest(tmp_path, TWO_REGIONS)
    with simulator() as sim_us, simulator() as sim_cn, \
            recording_front(sim_us.base_url) as (us_host, at_us), \
            recording_front(sim_cn.base_url) as (cn_host, at_cn), \
            recording_front(via="test-proxy") as (proxy, at_proxy):
        port = urlsplit(proxy).port
        pool = tmp_path / "tokens.txt"
        # A and B (behind the proxy) are us tokens; C has no prefix: the manifest's region, cn. D is for jp, which
        # no job uses.
        pool.write_text(f"us-{SID_A}\nhttp://user:{PASSWORD}@127.0.0.1:{port}@us-{SID_B}\n{SID_C}\njp-{SID_D}\n",
                        encoding="utf-8")
        code, _, err = run_main(["run", str(manifest), "--out", "out", "--token-file", str(pool), "--base-url",
                                 f"cn={cn_host},us={us_host}", *COMMON], capsys)
        us_stats, cn_stats = sim_us.stats(), sim_cn.stats()
    assert code == 0, err
    assert "token jp:d4e5…(32) is for region jp; no request of this manifest goes there (cn, us): not used" in err
    out = tmp_path / "out"
    assert dict(_ledger_rows(out, "SELECT state, COUNT(*) FROM requests GROUP BY state")) == {"downloaded": 10}

    # The us host saw A and B only, with the international app id and region US; the cn host C only, with CN's.
    assert {call.session() for call in _api(at_us)} == {SID_A, SID_B}
    assert {call.session() for call in _api(at_cn)} == {SID_C}
    assert all(call.query["aid"] == US_AID and call.query["region"] == "US" for call in _mweb(at_us))
    assert all(call.query["aid"] == CN_AID and call.query["region"] == CN_QUERY for call in _mweb(at_cn))
    assert all(call.headers["appid"] == US_AID for call in _api(at_us))
    assert all(call.headers["appid"] == CN_AID for call in _api(at_cn))
    assert all("us-" not in call.cookie and "jp-" not in call.cookie for call in _api(at_us + at_cn + at_proxy))
    assert all(SID_D not in call.cookie for call in at_us + at_cn + at_proxy)  # the jp token sent nothing
    # Every submit reached the host of its own region: us jobs' submits on the us simulator, cn jobs' on the cn one.
    assert sum(us_stats["charges_by_submit_id"].values()) == 6 and set(us_stats["charges_by_submit_id"].values()) \
        == {1}
    assert sum(cn_stats["charges_by_submit_id"].values()) == 4 and set(cn_stats["charges_by_submit_id"].values()) \
        == {1}
    # B's calls all went through the proxy (API, uploads, downloads), A's and C's none.
    assert all(("via" in call.headers) == (call.session() == SID_B) for call in _api(at_us))
    assert not any("via" in call.headers for call in at_cn)
    assert {call.session() for call in _api(at_proxy)} == {SID_B}
    assert all(call.url.startswith(us_host + "/") for call in at_proxy)  # absolute-form, to the us host only
    # Each region's image was uploaded to its own ImageX (the base URL stands in for it), once per account.
    uploads_us = [c for c in at_us if "Action=ApplyImageUpload" in c.url]
    uploads_cn = [c for c in at_cn if "Action=ApplyImageUpload" in c.url]
    assert uploads_us and uploads_cn and len(uploads_cn) == 1
    scopes = {row[0] for row in _ledger_rows(out, "SELECT region FROM uploads")}
    assert scopes == {f"us@{us_host}", f"cn@{cn_host}"}
    # The ledger's origin and token of each request are its region's.
    for job, origin, token in _ledger_rows(out, "SELECT job, origin, token FROM requests"):
        if job in US_JOBS:
            assert origin == us_host and token in {"us:a1b2…(32)", "us:b2c3…(32)"}
        else:
            assert job in CN_JOBS and origin == cn_host and token == "c3d4…(32)"
    assert us_stats["downloads"] == 6 and cn_stats["downloads"] == 4
    for secret in (SID_A, SID_B, SID_C, SID_D, PASSWORD, "pa%40ss"):
        assert files_holding(out, secret) == []
        assert secret not in err


@pytest.mark.usefixtures("clean_env")
def test_a_region_no_token_serves_is_refused_before_anything_is_sent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    png(tmp_path / "ref.png")
    manifest = write_manifest(tmp_path, TWO_REGIONS)
    with recording_front(refuse=500) as (host, seen):
        monkeypatch.setenv("JIMENG_SESSIONID", f"{SID_C},jp-{SID_D}")
        code, out, err = run_main(["run", str(manifest), "--base-url", host, "--quiet"], capsys)
    assert code == 2, err
    assert ("JIMENG_SESSIONID: no token for region us (jobs abroad, abroad-winter): add a token with the region's "
            "prefix (us-)") in err
    assert "Traceback" not in err and seen == [] and not (tmp_path / "out").exists()
    for secret in (SID_C, SID_D):
        assert secret not in out + err


# -- resume ----------------------------------------------------------------------------------------------------------


class FakeTime:
    """One clock for the executor and both simulators, moved forward only by the executor's sleeps."""

    def __init__(self) -> None:
        import time

        from jimeng_batch.sim import FakeClock

        self.clock = FakeClock(time.time())
        self.sleep = NoWait(advance=self.clock.advance)


def test_a_two_region_run_interrupted_resumes_each_request_on_its_own_region_and_pays_nothing_twice(
        tmp_path: Path) -> None:
    png(tmp_path / "ref.png")
    manifest = write_manifest(tmp_path, TWO_REGIONS)
    out = tmp_path / "out"
    time = FakeTime()
    pool = parse_tokens(f"us-{SID_A}\n{SID_C}\n")
    latency = {"generation": 30.0}
    with simulator(latency=latency, clock=time.clock, max_clock_skew_s=None) as sim_us, \
            simulator(latency=latency, clock=time.clock, max_clock_skew_s=None) as sim_cn:
        routes = {"us": sim_us.base_url, "cn": sim_cn.base_url}

        def interrupt_once_both_submitted(executor: Executor, counts: Counter[State]) -> None:
            if counts[State.SUBMITTED] >= 2 and not executor.interrupted:
                executor.interrupt()  # as a first Ctrl-C: no new submits, what is in flight is finished

        first = drive(manifest, None, out=out, pool=pool, base_url=routes.get, clock=time.clock, sleep=time.sleep,
                      options=fast_options(download=False, concurrency=1), on_change=interrupt_once_both_submitted)
        first.ledger.close()
        assert first.result.interrupted
        left = Counter(first.result.counts)
        assert left["skipped"] >= 6 and left["succeeded"] == 2, left  # one request of each region was sent
        after_first = {"us": Counter(sim_us.stats()["charges_by_submit_id"]),
                       "cn": Counter(sim_cn.stats()["charges_by_submit_id"])}
        assert sum(after_first["us"].values()) == 1 and sum(after_first["cn"].values()) == 1

        second = drive(manifest, None, out=out, pool=pool, base_url=routes.get, clock=time.clock, sleep=time.sleep)
        origins = second.column("origin")
        jobs = second.column("job")
        second.ledger.close()
        us_charges = sim_us.stats()["charges_by_submit_id"]
        cn_charges = sim_cn.stats()["charges_by_submit_id"]
    assert second.result.counts == {"downloaded": 10}
    assert set(us_charges.values()) == {1} and len(us_charges) == 6  # every us request paid once, on the us host
    assert set(cn_charges.values()) == {1} and len(cn_charges) == 4
    assert not set(us_charges) & set(cn_charges)
    assert all(origins[key] == routes["us" if jobs[key] in US_JOBS else "cn"] for key in origins)


# -- doctor and credits ----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_doctor_and_credits_check_each_token_on_its_own_regions_hosts_unless_a_region_is_given(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JIMENG_SESSIONID", f"us-{SID_A},{SID_C}")
    with simulator() as sim_us, simulator() as sim_cn, \
            recording_front(sim_us.base_url) as (us_host, at_us), \
            recording_front(sim_cn.base_url) as (cn_host, at_cn):
        routes = ["--base-url", f"cn={cn_host},us={us_host}"]
        code, out, err = run_main(["doctor", *routes, "--json"], capsys)
        assert code == 0, err
        checked = {entry["token"]: entry["region"] for entry in json.loads(out)["tokens"]}
        assert checked == {"us:a1b2…(32)": "us", "c3d4…(32)": "cn"}
        assert {call.session() for call in _api(at_us)} == {SID_A} and {call.session() for call in _api(at_cn)} == {
            SID_C}
        assert all(call.headers["appid"] == US_AID for call in _api(at_us))
        assert all(call.headers["appid"] == CN_AID for call in _api(at_cn))
        code, out, err = run_main(["credits", *routes, "--json"], capsys)
        assert code == 0, err
        assert [line["token"] for line in json.loads(out)["tokens"]] == ["us:a1b2…(32)", "c3d4…(32)"]
        seen_us = len(at_us)
        code, out, err = run_main(["doctor", *routes, "--region", "cn", "--json"], capsys)  # as before: cn only
        assert code == 0, err
        assert [entry["token"] for entry in json.loads(out)["tokens"]] == ["c3d4…(32)"]
        assert "token us:a1b2…(32) is for region us" in err and len(at_us) == seen_us


# -- the circuit breaker ---------------------------------------------------------------------------------------------


def test_the_circuit_breaker_counts_each_regions_host_apart(tmp_path: Path) -> None:
    """The us host refuses every connection while the cn host answers: the cn successes do not hide the us outage,
    and the stop names the us host."""
    manifest = write_manifest(tmp_path, TWO_REGIONS[:TWO_REGIONS.index("      - name: abroad-winter")])
    with socket.socket() as probe, simulator() as sim_cn:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening: connections refused
        run = drive(manifest, None, out=tmp_path / "out", pool=parse_tokens(f"us-{SID_A}\n{SID_C}\n"),
                    base_url={"us": closed, "cn": sim_cn.base_url}.get, options=fast_options(concurrency=1))
        jobs = run.column("job")
        states = run.column("state")
        run.ledger.close()
    assert run.result.stop_reason == "unreachable"
    assert run.result.stop_message is not None and run.result.stop_message.startswith(f"cannot reach {closed}:")
    assert {states[key] for key in states if jobs[key] in US_JOBS} == {"skipped"}  # nothing failed, nothing sent
    assert {states[key] for key in states if jobs[key] in CN_JOBS} <= {"downloaded", "skipped"}


# -- the account's catalog, per region -------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_each_jobs_region_is_checked_against_that_regions_account_catalog(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The us account is not offered jimeng-4.0, the cn one is: only the us job is refused, by validate --live and
    by run, each region's catalog read with that region's token from that region's host and kept apart."""
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path, TWO_REGIONS[:TWO_REGIONS.index("      - name: abroad-winter")])
    monkeypatch.setenv("JIMENG_SESSIONID", f"us-{SID_A},{SID_C}")
    with simulator() as sim_us, simulator() as sim_cn:
        sim_us.state.set_catalog({"remove": ["jimeng-4.0"]})
        routes = ["--base-url", f"cn={sim_cn.base_url},us={sim_us.base_url}"]
        code, out, err = run_main(["validate", str(manifest), "--live", *routes], capsys)
        assert code == 2 and out == "", err
        assert err.splitlines()[0] == "1 problem found", err
        assert "job 'abroad': model: jimeng-4.0" in err and "is not offered to this account" in err
        assert f"read from {sim_us.base_url} for us:a1b2…(32)" in err and "job 'china'" not in err
        code, _, err = run_main(["run", str(manifest), "--out", "out", *routes, *COMMON], capsys)
        assert code == 2 and "job 'abroad': model: jimeng-4.0" in err and "job 'china'" not in err, err
        assert sim_us.stats()["charges_by_submit_id"] == {} and sim_cn.stats()["charges_by_submit_id"] == {}
        sim_us.state.set_catalog({})
        code, _, err = run_main(["run", str(manifest), "--out", "out", "--fresh-catalog", *routes, *COMMON],
                                capsys)
        assert code == 0, err
    kept = {name: json.loads((tmp_path / "out" / name).read_text(encoding="utf-8"))
            for name in ("catalog.json", "catalog.us.json")}
    assert (kept["catalog.json"]["host"], kept["catalog.json"]["account"]) == (sim_cn.base_url, "c3d4…(32)")
    assert (kept["catalog.us.json"]["host"], kept["catalog.us.json"]["account"]) == (sim_us.base_url,
                                                                                      "us:a1b2…(32)")


# -- credits: the pre-flight check and the daily claim, per region ---------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_the_preflight_check_and_the_daily_claim_go_per_region(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The cn account's 1000 credits do not pay for the us requests: the us account's 2 cannot cover them. The
    daily claim is made on each token's own host, and then the us account can."""
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path, TWO_REGIONS[:TWO_REGIONS.index("      - name: abroad-winter")])
    monkeypatch.setenv("JIMENG_SESSIONID", f"us-{SID_A},{SID_C}")
    with simulator(default_credits=2) as sim_us, simulator() as sim_cn:
        routes = ["--base-url", f"cn={sim_cn.base_url},us={sim_us.base_url}", "--preflight", "stop"]
        code, _, err = run_main(["run", str(manifest), "--out", "out", *routes, *COMMON], capsys)
        assert code == 3, err
        assert "preflight: the plan of region us needs about 4 credits; the account(s) have 2; not starting" in err
        assert "region cn" not in err  # its account covers its requests
        assert sim_us.stats()["charges_by_submit_id"] == {} and sim_cn.stats()["charges_by_submit_id"] == {}
        code, _, err = run_main(["resume", "out", "--claim-daily", "--quiet"], capsys)
        assert code == 0, err
        assert "daily claim on us:a1b2…(32): claimed 50" in err and "daily claim on c3d4…(32): claimed 50" in err
        claims = (sim_us.stats()["requests"].get("credit_receive"), sim_cn.stats()["requests"].get("credit_receive"))
        assert claims == (1, 1)
        assert sum(sim_us.stats()["charges_by_submit_id"].values()) == 4
        assert sum(sim_cn.stats()["charges_by_submit_id"].values()) == 3
