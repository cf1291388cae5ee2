"""Test-side helpers for the simulator: a caller that builds valid requests (query, headers, Sign, cookie), envelopes
made from the API document's example drafts, and the ImageX upload flow.

These stand in for the real client (a later issue) so that the simulator's tests send exactly what the protocol
says; every knob can be overridden to send something wrong on purpose.
"""

from __future__ import annotations

import copy
import io
import json
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from PIL import Image

from jimeng_batch.protocol import aws4, catalog
from jimeng_batch.protocol.signing import web_sign
from jimeng_batch.sim import FakeClock, SimConfig, SimServer, running_simulator

DOCUMENT = Path(__file__).parent / "data" / "document"
TOKEN = "sess0123456789abcdef0123456789ab"  # 32 characters, like a real sessionid
OTHER_TOKEN = "othr0123456789abcdef0123456789ab"


def document(name: str) -> Any:
    return json.loads((DOCUMENT / name).read_text(encoding="utf-8"))


class RecordingSleep:
    """Replaces the server's asyncio.sleep: remembers what it was asked to wait, waits for nothing."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


# ----------------------------------------------------------------------------------------------------------------
# Envelopes
# ----------------------------------------------------------------------------------------------------------------


def envelope(draft: dict[str, Any], submit_id: str, root_model: str,
             extend: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "extend": extend if extend is not None else {"root_model": root_model, "template_id": ""},
        "submit_id": submit_id,
        "metrics_extra": "metrics_json_string",
        "draft_content": json.dumps(draft, ensure_ascii=False),
        "http_common_info": {"aid": 513695},
    }


def image_draft(prompt: str = "a lighthouse at dusk", **core: Any) -> dict[str, Any]:
    draft = copy.deepcopy(document("image_draft.json"))
    params = draft["component_list"][0]["abilities"]["generate"]["core_param"]
    params["prompt"] = prompt
    info = core.pop("large_image_info", None)
    params.update(core)
    if info:
        params["large_image_info"].update(info)
    return draft


def image_envelope(submit_id: str = "submit-1", prompt: str = "a lighthouse at dusk", **core: Any) -> dict[str, Any]:
    # 1k keeps the rendered PNGs small in tests.
    core.setdefault("large_image_info", {"width": 1024, "height": 1024, "resolution_type": "1k"})
    draft = image_draft(prompt, **core)
    model = draft["component_list"][0]["abilities"]["generate"]["core_param"]["model"]
    return envelope(draft, submit_id, model)


def video_envelope(submit_id: str = "video-1", prompt: str = "waves", **params: Any) -> dict[str, Any]:
    draft = copy.deepcopy(document("video_draft.json"))
    t2v = draft["component_list"][0]["abilities"]["gen_video"]["text_to_video_params"]
    inputs = t2v["video_gen_inputs"][0]
    inputs["prompt"] = prompt
    for key in ("duration_ms", "resolution"):
        if key in params:
            inputs[key] = params.pop(key)
    t2v.update(params)
    body = document("video_request.json")["body"]
    return envelope(draft, submit_id, t2v["model_req_key"], {**body["extend"], "root_model": t2v["model_req_key"]})


def blend_envelope(submit_id: str = "blend-1", uri: str = "image_uri_1") -> dict[str, Any]:
    draft = copy.deepcopy(document("blend_draft.json"))
    ability = draft["component_list"][0]["abilities"]["blend"]["ability_list"][0]
    ability["image_uri_list"] = [uri]
    ability["image_list"][0]["image_uri"] = ability["image_list"][0]["uri"] = uri
    return envelope(draft, submit_id, "high_aes_general_v40")


def png_bytes(width: int = 32, height: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# A caller with valid defaults
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Caller:
    """Sends protocol-correct requests to a simulator; overrides make them wrong on purpose."""

    client: httpx.Client
    clock: Callable[[], float]
    token: str | None = TOKEN
    profile: str = "document"
    headers_override: dict[str, str | None] = field(default_factory=dict)
    query_override: dict[str, str | None] = field(default_factory=dict)

    def query(self) -> dict[str, str]:
        versions = catalog.PROTOCOL_PROFILES[self.profile]
        query = {
            "aid": "513695", "device_platform": "web", "region": "cn", "webId": "7000000000000000000",
            "da_version": versions.da_version, "web_version": versions.web_version,
            "aigc_features": versions.aigc_features, "web_component_open_flag": "1", "os": versions.os,
        }
        for key, value in self.query_override.items():
            if value is None:
                query.pop(key, None)
            else:
                query[key] = value
        return query

    def headers(self, path: str) -> dict[str, str]:
        device_time = str(int(self.clock()))
        headers = {
            "Appid": "513695", "Appvr": "8.4.0", "Pf": "7", "Device-Time": device_time, "Sign-Ver": "1",
            "Tdid": "", "Sign": web_sign(path, platform="7", app_version="8.4.0", device_time=device_time),
        }
        if self.token is not None:
            headers["Cookie"] = f"_tea_web_id=7000000000000000000; sessionid={self.token}; sessionid_ss={self.token}"
        for key, value in self.headers_override.items():
            if value is None:
                headers.pop(key, None)
            else:
                headers[key] = value
        return headers

    def post(self, path: str, body: Any, *, mweb: bool = True) -> httpx.Response:
        return self.client.post(path, params=self.query() if mweb else None, headers=self.headers(path), json=body)

    def api(self, path: str, body: Any, *, mweb: bool = True) -> dict[str, Any]:
        response = self.post(path, body, mweb=mweb)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.api("/mweb/v1/aigc_draft/generate", body)

    def poll(self, history_ids: list[str] | None = None, submit_ids: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if history_ids is not None:
            body["history_ids"] = history_ids
        if submit_ids is not None:
            body["submit_ids"] = submit_ids
        return self.api("/mweb/v1/get_history_by_ids", body)

    def credits(self) -> dict[str, Any]:
        return self.api("/commerce/v1/benefits/user_credit", {}, mweb=False)

    # -- ImageX -------------------------------------------------------------------------------------------------

    def upload_token(self) -> dict[str, Any]:
        answer = self.api("/mweb/v1/get_upload_token", {"scene": 2})
        assert answer["ret"] == "0", answer
        data: dict[str, Any] = answer["data"]
        return data

    def imagex(
        self,
        method: str,
        params: list[tuple[str, str]],
        creds: aws4.Credentials,
        body: bytes = b"",
        *,
        tamper: Callable[[dict[str, str]], None] | None = None,
        encode_query: bool = False,
        region: str = "cn-north-1",
    ) -> httpx.Response:
        """A signed ImageX call; ``tamper`` may change the signed headers before sending."""
        signed = aws4.sign(
            method=method, path="/", params=params, headers={}, body=body, credentials=creds, region=region,
            service="imagex", timestamp=aws4.amz_date(self.clock()), encode_query=encode_query,
            sign_content_sha256=bool(body),
        )
        if tamper is not None:
            tamper(signed)
        query = aws4.canonical_query(params, encode=True) if encode_query else "&".join(
            f"{quote(k)}={quote(v)}" for k, v in params
        )
        return self.client.request(method, "/?" + query, headers=signed, content=body)

    def upload(self, data: bytes) -> dict[str, Any]:
        """The whole ImageX flow; the CommitImageUpload answer."""
        token = self.upload_token()
        creds = aws4.Credentials(token["access_key_id"], token["secret_access_key"], token["session_token"])
        service = token["service_id"]
        apply = self.imagex("GET", apply_params(service, len(data)), creds)
        assert apply.status_code == 200, apply.text
        address = apply.json()["Result"]["UploadAddress"]
        store = address["StoreInfos"][0]
        host = address["UploadHosts"][0]
        uploaded = self.client.post(
            f"http://{host}/upload/v1/{store['StoreUri']}", content=data,
            headers={"Authorization": store["Auth"], "Content-CRC32": format(zlib.crc32(data) & 0xFFFFFFFF, "x"),
                     "Content-Type": "application/octet-stream"},
        )
        assert uploaded.status_code == 200 and uploaded.json()["code"] == 2000, uploaded.text
        commit_body = json.dumps({"SessionKey": address["SessionKey"]}).encode()
        commit = self.imagex("POST", commit_params(service), creds, commit_body)
        assert commit.status_code == 200, commit.text
        result: dict[str, Any] = commit.json()["Result"]
        return result


def apply_params(service_id: str, size: int) -> list[tuple[str, str]]:
    return [("Action", "ApplyImageUpload"), ("Version", "2018-08-01"), ("ServiceId", service_id),
            ("FileSize", str(size)), ("s", "abc123")]


def commit_params(service_id: str) -> list[tuple[str, str]]:
    return [("Action", "CommitImageUpload"), ("Version", "2018-08-01"), ("ServiceId", service_id)]


@dataclass
class Harness:
    """A running simulator, its fake clock and a caller for the default account."""

    server: SimServer
    clock: FakeClock
    sleep: RecordingSleep
    client: httpx.Client
    caller: Caller

    def as_account(self, token: str | None, **overrides: Any) -> Caller:
        return Caller(self.client, self.clock, token=token, profile=self.caller.profile, **overrides)


@contextmanager
def simulator(config: SimConfig | None = None, *, caller_profile: str | None = None, state_path: Path | None = None,
              clock: FakeClock | None = None) -> Iterator[Harness]:
    """A simulator on an ephemeral port with a fake clock, and an httpx client closed afterwards."""
    config = config or SimConfig()
    clock = clock or FakeClock()
    sleep = RecordingSleep()
    with running_simulator(config, clock=clock, sleep=sleep, state_path=state_path) as server, \
            httpx.Client(base_url=server.base_url, timeout=10) as client:
        caller = Caller(client, clock, profile=caller_profile or config.profile)
        yield Harness(server, clock, sleep, client, caller)
