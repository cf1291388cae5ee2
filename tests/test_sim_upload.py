"""The ImageX upload flow: credentials, AWS4 verification, byte upload with CRC32, commit, and use in drafts."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sim_helpers import (
    OTHER_TOKEN,
    Caller,
    Harness,
    apply_params,
    blend_envelope,
    commit_params,
    png_bytes,
    simulator,
    video_envelope,
)

from jimeng_batch.protocol import aws4
from jimeng_batch.sim import SimConfig


@pytest.fixture
def sim() -> Iterator[Harness]:
    with simulator(SimConfig(upload_token_ttl_s=600)) as harness:
        yield harness


def credentials(sim: Harness, caller: Caller | None = None) -> tuple[aws4.Credentials, str]:
    token = (caller or sim.caller).upload_token()
    return aws4.Credentials(token["access_key_id"], token["secret_access_key"], token["session_token"]), \
        token["service_id"]


def test_upload_token_shape(sim: Harness) -> None:
    token = sim.caller.upload_token()
    assert set(token) >= {"access_key_id", "secret_access_key", "session_token", "service_id"}
    assert token["service_id"] == "tb4s082cfz"
    assert token["expired_time"] - token["current_time"] == 600


def test_full_flow_and_use_in_a_blend_draft(sim: Harness) -> None:
    result = sim.caller.upload(png_bytes(40, 30))
    uri = result["Results"][0]["Uri"]
    assert result["Results"][0]["UriStatus"] == 2000
    plugin = result["PluginResult"][0]
    assert plugin["ImageUri"] == uri and (plugin["ImageWidth"], plugin["ImageHeight"]) == (40, 30)
    assert plugin["ImageFormat"] == "png"
    assert uri.startswith("tos-cn-i-tb4s082cfz/")
    assert sim.caller.submit(blend_envelope("mine", uri=uri))["ret"] == "0"
    refused = sim.as_account(OTHER_TOKEN).submit(blend_envelope("theirs", uri=uri))
    assert refused["ret"] == "2002" and "was not uploaded by this account" in refused["errmsg"]
    stats = sim.server.stats()
    assert stats["uploads"] == 1 and stats["upload_bytes"] == len(png_bytes(40, 30))


def test_unknown_uri_in_video_frames_is_refused(sim: Harness) -> None:
    body = video_envelope()
    draft = json.loads(body["draft_content"])
    frame = draft["component_list"][0]["abilities"]["gen_video"]["text_to_video_params"]["video_gen_inputs"][0]
    frame["end_frame_image"]["image_uri"] = frame["end_frame_image"]["uri"] = "tos-cn-i-x/never"
    body["draft_content"] = json.dumps(draft)
    answer = sim.caller.submit(body)
    assert answer["ret"] == "2002" and "end_frame_image.image_uri" in answer["errmsg"]


def test_upload_hosts_are_bare_host_port(sim: Harness) -> None:
    creds, service = credentials(sim)
    apply = sim.caller.imagex("GET", apply_params(service, 10), creds)
    assert apply.json()["Result"]["UploadAddress"]["UploadHosts"] == [sim.server.host_port]
    assert "://" not in sim.server.host_port


def test_uri_encoded_canonical_query_is_accepted(sim: Harness) -> None:
    creds, service = credentials(sim)
    params = [*apply_params(service, 10), ("note", "a b/c")]
    assert sim.caller.imagex("GET", params, creds, encode_query=True).status_code == 200


def _flip(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


def _replace_signature(headers: dict[str, str]) -> None:
    head, _, sig = headers["authorization"].rpartition("Signature=")
    headers["authorization"] = head + "Signature=" + _flip(sig)


Tamper = Callable[[dict[str, str]], None]

APPLY_TAMPERS = [
    pytest.param(_replace_signature, 403, "SignatureDoesNotMatch", id="signature-one-char"),
    pytest.param(lambda h: h.update({"x-amz-security-token": _flip(h["x-amz-security-token"])}), 401,
                 "InvalidSecurityToken", id="session-token"),
    pytest.param(lambda h: h.update({"authorization": h["authorization"].replace("Credential=AKTP",
                                                                               "Credential=AKXX")}),
                 401, "InvalidAccessKeyId", id="unknown-access-key"),
    pytest.param(lambda h: h.pop("authorization"), 401, "MissingAuthenticationToken", id="no-authorization"),
    pytest.param(lambda h: h.update({"authorization": "Bearer nothing"}), 401, "InvalidAuthorization",
                 id="not-aws4"),
    pytest.param(lambda h: h.update({"authorization": h["authorization"].replace("/imagex/", "/vod/")}), 403,
                 "InvalidCredentialScope", id="service"),
    pytest.param(lambda h: h.update({"authorization": h["authorization"].replace(
        "SignedHeaders=x-amz-date;x-amz-security-token", "SignedHeaders=x-amz-date")}), 403,
                 "SignatureDoesNotMatch", id="token-not-signed"),
    pytest.param(lambda h: h.update({"x-amz-date": _flip(h["x-amz-date"][:-1]) + "Z"}), 403, "SignatureDoesNotMatch",
                 id="date-one-char"),
]


@pytest.mark.parametrize(("tamper", "status", "code"), APPLY_TAMPERS)
def test_apply_signature_checks(sim: Harness, tamper: Tamper, status: int, code: str) -> None:
    creds, service = credentials(sim)
    response = sim.caller.imagex("GET", apply_params(service, 10), creds, tamper=tamper)
    assert response.status_code == status
    assert response.json()["ResponseMetadata"]["Error"]["Code"] == code
    assert sim.server.stats()["errors"] == {f"imagex_{code}": 1}


def test_query_changed_after_signing_is_rejected(sim: Harness) -> None:
    creds, service = credentials(sim)
    signed = aws4.sign(method="GET", path="/", params=apply_params(service, 10), headers={}, body=b"",
                       credentials=creds, region="cn-north-1", service="imagex",
                       timestamp=aws4.amz_date(sim.clock()))
    query = "&".join(f"{k}={v}" for k, v in apply_params(service, 11))
    response = sim.client.get("/?" + query, headers=signed)
    assert response.status_code == 403


def test_expired_credentials_and_skewed_dates(sim: Harness) -> None:
    creds, service = credentials(sim)
    sim.clock.advance(601)
    response = sim.caller.imagex("GET", apply_params(service, 10), creds)
    assert response.json()["ResponseMetadata"]["Error"]["Code"] == "ExpiredToken"
    creds, service = credentials(sim)
    signed = aws4.sign(method="GET", path="/", params=apply_params(service, 10), headers={}, body=b"",
                       credentials=creds, region="cn-north-1", service="imagex",
                       timestamp=aws4.amz_date(sim.clock() - 3600))
    query = "&".join(f"{k}={v}" for k, v in apply_params(service, 10))
    assert sim.client.get("/?" + query, headers=signed).json()["ResponseMetadata"]["Error"]["Code"] == \
        "RequestTimeTooSkewed"


def _applied(sim: Harness, data: bytes) -> tuple[aws4.Credentials, str, dict[str, Any]]:
    creds, service = credentials(sim)
    apply = sim.caller.imagex("GET", apply_params(service, len(data)), creds)
    return creds, service, apply.json()["Result"]["UploadAddress"]


def _put(sim: Harness, address: dict[str, Any], data: bytes, **headers: str) -> Any:
    store = address["StoreInfos"][0]
    sent = {"Authorization": store["Auth"], "Content-CRC32": format(zlib.crc32(data), "08x"), **headers}
    return sim.client.post(f"http://{address['UploadHosts'][0]}/upload/v1/{store['StoreUri']}", content=data,
                           headers=sent)


@pytest.mark.parametrize(
    ("headers", "body_change", "status", "code"),
    [
        pytest.param({"Content-CRC32": "deadbeef"}, None, 400, "CRC32Mismatch", id="crc-mismatch"),
        pytest.param({"Content-CRC32": "zz"}, None, 400, "InvalidCRC32", id="crc-garbage"),
        pytest.param({"Authorization": "SpaceKey/nope"}, None, 401, "InvalidAuth", id="wrong-auth"),
        pytest.param({}, b"extra", 400, "FileSizeMismatch", id="size-mismatch"),
    ],
)
def test_byte_upload_checks(sim: Harness, headers: dict[str, str], body_change: bytes | None, status: int,
                            code: str) -> None:
    data = png_bytes()
    _, _, address = _applied(sim, data)
    sent = data + body_change if body_change else data
    crc_headers = {"Content-CRC32": format(zlib.crc32(sent), "x")} if body_change else {}
    response = _put(sim, address, sent, **{**crc_headers, **headers})
    assert response.status_code == status and response.json()["error_code"] == code


def test_crc_without_leading_zeros_is_accepted(sim: Harness) -> None:
    data = png_bytes()
    _, _, address = _applied(sim, data)
    assert _put(sim, address, data, **{"Content-CRC32": format(zlib.crc32(data), "x")}).json()["code"] == 2000


def test_upload_to_unknown_store_uri(sim: Harness) -> None:
    response = sim.client.post("/upload/v1/tos-cn-i-x/nothing", content=b"abc")
    assert response.status_code == 404


def _commit(sim: Harness, creds: aws4.Credentials, service: str, body: bytes, tamper: Tamper | None = None) -> Any:
    return sim.caller.imagex("POST", commit_params(service), creds, body, tamper=tamper)


def test_commit_checks(sim: Harness) -> None:
    data = png_bytes()
    creds, service, address = _applied(sim, data)
    body = json.dumps({"SessionKey": address["SessionKey"]}).encode()
    before_upload = _commit(sim, creds, service, body)
    assert before_upload.json()["ResponseMetadata"]["Error"]["Code"] == "NoUploadedData"
    assert _put(sim, address, data).status_code == 200
    unsigned_hash = _commit(sim, creds, service, body, tamper=lambda h: h.update(
        authorization=h["authorization"].replace("x-amz-content-sha256;", "")))
    assert unsigned_hash.status_code == 403
    wrong_hash = _commit(sim, creds, service, body, tamper=lambda h: h.update({"x-amz-content-sha256": "0" * 64}))
    assert wrong_hash.json()["ResponseMetadata"]["Error"]["Code"] == "XAmzContentSHA256Mismatch"
    other_creds, _ = credentials(sim, sim.as_account(OTHER_TOKEN))
    assert _commit(sim, other_creds, service, body).json()["ResponseMetadata"]["Error"]["Code"] == "SessionNotFound"
    assert _commit(sim, creds, service, b"{nope").status_code == 400
    assert _commit(sim, creds, service, body).status_code == 200


def test_commit_of_a_non_image(sim: Harness) -> None:
    data = b"this is not an image at all"
    creds, service, address = _applied(sim, data)
    assert _put(sim, address, data).status_code == 200
    response = _commit(sim, creds, service, json.dumps({"SessionKey": address["SessionKey"]}).encode())
    assert response.status_code == 400
    assert response.json()["ResponseMetadata"]["Error"]["Code"] == "InvalidImage"


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        pytest.param("GET", [("Action", "DeleteEverything"), ("Version", "2018-08-01")], "InvalidAction",
                     id="unknown-action"),
        pytest.param("POST", [("Action", "ApplyImageUpload"), ("Version", "2018-08-01")], "MethodNotAllowed",
                     id="wrong-method"),
        pytest.param("GET", [("Action", "ApplyImageUpload"), ("Version", "2020-01-01"), ("ServiceId", "x"),
                             ("FileSize", "3")], "InvalidVersion", id="version"),
        pytest.param("GET", [("Action", "ApplyImageUpload"), ("Version", "2018-08-01"), ("ServiceId", "x"),
                             ("FileSize", "0")], "InvalidParameter", id="file-size"),
        pytest.param("GET", [("Action", "ApplyImageUpload"), ("Version", "2018-08-01"), ("FileSize", "3")],
                     "InvalidParameter", id="service-id"),
    ],
)
def test_imagex_parameter_errors(sim: Harness, method: str, params: list[tuple[str, str]], code: str) -> None:
    creds, _ = credentials(sim)
    response = sim.caller.imagex(method, params, creds, b"{}" if method == "POST" else b"")
    assert response.json()["ResponseMetadata"]["Error"]["Code"] == code
