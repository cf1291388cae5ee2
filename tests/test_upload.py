"""Local reference images: uploaded once per account and region, remembered by the ledger, never twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from conftest import png
from run_helpers import TOKEN, TOKEN_B, drive, fast_options, simulator, write_manifest

from jimeng_batch.errors import RequestFailedError
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.client import JimengClient
from jimeng_batch.protocol.imagex import Uploader, crc32_hex, imagex_base, upload_url
from jimeng_batch.protocol.tokens import Token

EDITS = """
    jobs:
      - name: edits
        type: image_to_image
        resolution: 1k
        prompt: [make it winter, make it spring, make it night]
        references:
          - {image: photo.png, strength: 0.7}
      - name: clip
        type: video
        prompt: a slow pan
        first_frame: photo.png
        end_frame: uri:image_uri_2
"""


def test_one_file_is_uploaded_once_for_many_requests(tmp_path: Path) -> None:
    png(tmp_path / "photo.png", (640, 480))
    manifest = write_manifest(tmp_path, EDITS)
    with simulator() as server:
        run = drive(manifest, server, out=tmp_path / "out")
        stats = server.stats()
    assert run.result.counts == {"downloaded": 4}, run.result
    assert stats["uploads"] == 1
    ((uri, width, height, fmt),) = run.ledger.db.execute(
        "SELECT image_uri, width, height, format FROM uploads").fetchall()
    assert (width, height, fmt) == (640, 480, "png") and uri.startswith("tos-")
    uploads = run.ledger.db.execute("SELECT COUNT(*) FROM attempts WHERE kind = 'upload'").fetchone()[0]
    assert uploads == 1


def test_a_resumed_run_does_not_upload_again(tmp_path: Path) -> None:
    png(tmp_path / "photo.png")
    manifest = write_manifest(tmp_path, EDITS)
    with simulator() as server:
        first = drive(manifest, server, out=tmp_path / "out", options=fast_options(budget=1))
        first.ledger.close()
        second = drive(manifest, server, out=tmp_path / "out")
        stats = server.stats()
    assert first.result.counts == {"downloaded": 1, "skipped": 3}
    assert second.result.counts == {"downloaded": 4}
    assert stats["uploads"] == 1
    assert set(stats["charges_by_submit_id"].values()) == {1}


def test_each_account_gets_its_own_upload(tmp_path: Path) -> None:
    png(tmp_path / "photo.png")
    manifest = write_manifest(tmp_path, EDITS)
    with simulator(latency={"generation": 0.05}) as server:
        run = drive(manifest, server, out=tmp_path / "out", tokens=[TOKEN, TOKEN_B],
                    options=fast_options(concurrency=1, poll_interval=0.01))
        stats = server.stats()
    assert run.result.counts == {"downloaded": 4}
    accounts = {row[0] for row in run.ledger.db.execute("SELECT account FROM uploads")}
    assert len(accounts) == stats["uploads"] == 2  # an image_uri belongs to the account that uploaded it
    for account in accounts:
        assert TOKEN not in account and TOKEN_B not in account


def test_a_file_changed_since_it_was_planned_is_not_uploaded(tmp_path: Path) -> None:
    """A request planned for one content is never sent with another. Changed before a run, the file is a new
    request and the old one, never sent, is set aside; changed during a run, the upload fails with reason `upload`."""
    png(tmp_path / "photo.png", color="#123456")
    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image_to_image, resolution: 1k, prompt: a, "
                                        "references: [photo.png]}\n")

    def change_the_file(executor: object, counts: object) -> None:
        png(tmp_path / "photo.png", color="#abcdef")  # after planning, before the upload

    with simulator() as server:
        first = drive(manifest, server, out=tmp_path / "out", options=fast_options(budget=0))
        first.ledger.close()
        png(tmp_path / "photo.png", color="#654321")  # the file changes before the next run
        second = drive(manifest, server, out=tmp_path / "out")
        second.ledger.close()
        other = write_manifest(tmp_path, "jobs:\n  - {type: image_to_image, resolution: 1k, prompt: b, "
                                         "references: [photo.png]}\n", "b.yaml")
        drive(other, server, out=tmp_path / "third", options=fast_options(budget=0)).ledger.close()
        third = drive(other, server, out=tmp_path / "third", on_change=change_the_file)
        stats = server.stats()
    assert first.result.counts == {"skipped": 1}
    assert second.result.counts == {"downloaded": 1, "removed": 1}  # the new content is a new request
    assert third.result.counts == {"failed": 1}
    assert list(third.column("reason").values()) == ["upload"]
    assert stats["uploads"] == 1


def test_an_unknown_uri_in_a_draft_is_refused_like_the_service_would(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, "jobs:\n  - {type: image_to_image, resolution: 1k, prompt: a, "
                                        "references: [tos-cn-i-tb4s082cfz/never-uploaded]}\n")
    with simulator() as server:
        run = drive(manifest, server, out=tmp_path / "out")
    assert run.result.counts == {"invalid": 1}


def test_imagex_hosts() -> None:
    cn = catalog.REGIONS["cn"]
    assert imagex_base(cn, None) == "https://imagex.bytedanceapi.com"
    assert imagex_base(cn, "http://127.0.0.1:9000") == "http://127.0.0.1:9000"
    assert imagex_base(cn, "http://127.0.0.1:9000", "http://127.0.0.1:9001/") == (
        "http://127.0.0.1:9001")
    assert upload_url("127.0.0.1:9000", "tos/abc", "http://127.0.0.1:9000") == "http://127.0.0.1:9000/upload/v1/tos/abc"
    assert upload_url("tos-up.example", "x", "https://imagex.example") == "https://tos-up.example/upload/v1/x"
    assert crc32_hex(b"hello") == "3610a686"


def test_the_upload_flow_is_signed_and_carries_the_crc() -> None:
    """Against a mock service: the calls, their order, the AWS4 headers and the CRC32 of the bytes."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/mweb/v1/get_upload_token":
            return httpx.Response(200, json={"ret": "0", "data": {
                "access_key_id": "AK", "secret_access_key": "SK", "session_token": "ST", "service_id": "svc"}})
        action = request.url.params.get("Action")
        if action == "ApplyImageUpload":
            return httpx.Response(200, json={"Result": {"UploadAddress": {
                "StoreInfos": [{"StoreUri": "tos-x/1", "Auth": "auth-1"}], "UploadHosts": ["up.example"],
                "SessionKey": "sk-1"}}})
        if request.url.path.startswith("/upload/v1/"):
            return httpx.Response(200, json={"code": 2000})
        if action == "CommitImageUpload":
            assert json.loads(request.content) == {"SessionKey": "sk-1"}
            return httpx.Response(200, json={"Result": {"Results": [{"Uri": "tos-x/1", "UriStatus": 2000}],
                                                        "PluginResult": [{"ImageWidth": 4, "ImageHeight": 3,
                                                                          "ImageFormat": "png"}]}})
        return httpx.Response(404)

    async def main() -> object:
        region = catalog.REGIONS["cn"]
        async with JimengClient(region=region, versions=catalog.PROTOCOL_PROFILES["live"], web_id="1",
                                transport=httpx.MockTransport(handler), clock=lambda: 1_700_000_000.0) as client:
            uploader = Uploader(client, region, "https://imagex.example", clock=lambda: 1_700_000_000.0)
            return await uploader.upload(Token("secret-session-token"), b"the bytes")

    image = asyncio.run(main())
    assert image.uri == "tos-x/1" and (image.width, image.height) == (4, 3)  # type: ignore[attr-defined]
    _token_call, apply, put, commit = seen
    assert apply.url.host == "imagex.example" and apply.method == "GET"
    assert apply.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AK/20231114/cn-north-1/imagex/")
    assert "SignedHeaders=x-amz-date;x-amz-security-token," in apply.headers["authorization"]
    assert apply.headers["x-amz-security-token"] == "ST" and apply.headers["x-amz-date"] == "20231114T221320Z"
    assert str(put.url) == "https://up.example/upload/v1/tos-x/1"
    assert put.headers["authorization"] == "auth-1" and put.headers["content-crc32"] == crc32_hex(b"the bytes")
    assert "x-amz-content-sha256" in commit.headers["authorization"]


def test_imagex_errors_are_classified() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/mweb/v1/get_upload_token":
            return httpx.Response(200, json={"ret": "0", "data": {"access_key_id": "AK", "secret_access_key": "SK",
                                                                  "session_token": "ST"}})
        return httpx.Response(403, json={"ResponseMetadata": {"Error": {"Code": "SignatureDoesNotMatch",
                                                                        "Message": "bad"}}})

    async def main() -> None:
        region = catalog.REGIONS["cn"]
        async with JimengClient(region=region, versions=catalog.PROTOCOL_PROFILES["live"], web_id="1",
                                transport=httpx.MockTransport(handler)) as client:
            await Uploader(client, region, "https://imagex.example").upload(Token("t"), b"x")

    with pytest.raises(Exception) as raised:
        asyncio.run(main())
    assert "SignatureDoesNotMatch" in str(raised.value)
    assert not isinstance(raised.value, RequestFailedError) or raised.value.http_status == 403
