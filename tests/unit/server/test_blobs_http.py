"""The tus 1.0 and download routes on the real route table, in process (aiohttp's test
client): headers of every answer, refusals before the store is reached, the idle
timeout of a silent PATCH, and the OpenAPI declaration of the tus headers."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.unit.server.test_endpoint import ACCOUNT, Accounts, Untouchable, basic
from veil.protocol import Codec
from veil.server.blobs import BlobLimits, FileBlobStore
from veil.server.config import ServerConfig
from veil.server.http import openapi
from veil.server.http.app import create_app
from veil.server.http.routes import ROUTES

TUS = {"Tus-Resumable": "1.0.0"}
TOKEN = base64.b64encode(b"k" * 32).decode()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], FileBlobStore]]:
    config = ServerConfig(data_dir=tmp_path, max_blob_bytes=1 << 20, blob_idle_timeout_s=1)
    blobs = FileBlobStore(tmp_path / "blobs", BlobLimits.from_config(config),
                          lambda: 1_000_000)
    await blobs.open()
    context = SimpleNamespace(
        config=config, codec=Codec(config.wire_limits()), accounts=Accounts(), blobs=blobs,
        keys=Untouchable(), messages=Untouchable(), storage=Untouchable(), ca=Untouchable(),
        bus=Untouchable(), connections=0, sealed_connections=0)
    async with TestClient(TestServer(create_app(context))) as client:  # type: ignore[arg-type]
        yield client, blobs


def creds(**extra: str) -> dict[str, str]:
    return {"Authorization": basic(), **TUS, **extra}


async def create(client: TestClient[Any, Any], length: int) -> str:
    async with client.post("/v1/uploads", headers=creds(
            **{"Upload-Length": str(length), "Veil-Blob-Token": TOKEN})) as r:
        assert r.status == 201
        assert r.headers["Tus-Resumable"] == "1.0.0" and "Upload-Expires" in r.headers
        return r.headers["Location"]


async def test_every_upload_answer_carries_tus_resumable(
    app: tuple[TestClient[Any, Any], FileBlobStore],
) -> None:
    client, _ = app
    for method, path, headers in (("POST", "/v1/uploads", {}),  # 401
                                  ("POST", "/v1/uploads", {"Authorization": basic()}),  # 412
                                  ("HEAD", "/v1/uploads/" + "0" * 32, creds()),  # 404
                                  ("OPTIONS", "/v1/uploads", {})):
        async with client.request(method, path, headers=headers) as r:
            assert r.headers["Tus-Resumable"] == "1.0.0", (method, headers)
            assert r.headers["Cache-Control"] == "no-store"
            if r.status == 412:
                assert r.headers["Tus-Version"] == "1.0.0"


@pytest.mark.parametrize(("extra", "status", "code"), [
    ({}, 400, "bad_request"),  # no Upload-Length
    ({"Upload-Length": "-1"}, 400, "bad_request"),
    ({"Upload-Length": "1" * 25}, 400, "bad_request"),
    ({"Upload-Length": str((1 << 20) + 1)}, 413, "blob_too_large"),
    ({"Upload-Length": "5", "Upload-Metadata": "name bmFtZQ=="}, 400,
     "upload_metadata_refused"),
    ({"Upload-Length": "5", "Veil-Blob-Token": "short"}, 403, "invalid_blob_token"),
])
async def test_creation_refusals(
    app: tuple[TestClient[Any, Any], FileBlobStore], extra: dict[str, str], status: int,
    code: str,
) -> None:
    client, blobs = app
    headers = creds(**{"Veil-Blob-Token": TOKEN, **extra})
    async with client.post("/v1/uploads", headers=headers) as r:
        assert r.status == status
        assert (await r.json())["error"]["code"] == code
    assert blobs.usage(ACCOUNT).blobs == 0


async def test_a_creation_needs_a_token_and_no_body(
    app: tuple[TestClient[Any, Any], FileBlobStore],
) -> None:
    client, blobs = app
    async with client.post("/v1/uploads", headers=creds(**{"Upload-Length": "5"})) as r:
        assert r.status == 400
    async with client.post("/v1/uploads", data=b"hello", headers=creds(
            **{"Upload-Length": "5", "Veil-Blob-Token": TOKEN})) as r:
        assert r.status == 400  # creation-with-upload is not offered
    assert blobs.usage(ACCOUNT).blobs == 0


async def test_a_silent_patch_ends_and_keeps_what_arrived(
    app: tuple[TestClient[Any, Any], FileBlobStore],
) -> None:
    client, _ = app
    location = await create(client, 100)
    first_sent = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 30
        first_sent.set()
        await asyncio.Event().wait()  # then nothing, for longer than blob_idle_timeout_s
        yield b""

    async with client.patch(location, data=body(), headers=creds(
            **{"Content-Type": "application/offset+octet-stream",
               "Upload-Offset": "0"})) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert error["code"] == "upload_interrupted" and error["details"] == {"offset": 30}
    async with client.head(location, headers=creds()) as r:
        assert r.headers["Upload-Offset"] == "30" and r.headers["Upload-Length"] == "100"


async def test_downloads_read_no_credentials_and_need_the_token(
    app: tuple[TestClient[Any, Any], FileBlobStore],
) -> None:
    client, _ = app
    location = await create(client, 4)
    async with client.patch(location, data=b"abcd", headers=creds(
            **{"Content-Type": "application/offset+octet-stream",
               "Upload-Offset": "0"})) as r:
        assert r.status == 204 and r.headers["Upload-Offset"] == "4"
    url = location.replace("/v1/uploads/", "/v1/blobs/")
    async with client.get(url, headers={"Veil-Blob-Token": TOKEN}) as r:
        assert r.status == 200 and await r.read() == b"abcd"
        assert r.headers["Content-Type"] == "application/octet-stream"
    async with client.get(url, headers={"Authorization": basic()}) as r:
        assert r.status == 403  # credentials are no substitute for the token
    wrong = base64.b64encode(os.urandom(32)).decode()
    async with client.get(url, headers={"Veil-Blob-Token": wrong}) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "invalid_blob_token"


def test_the_openapi_document_states_the_tus_headers() -> None:
    config = ServerConfig()
    doc = openapi.document(ROUTES, Codec(config.wire_limits()), config)
    create_op = doc["paths"]["/v1/uploads"]["post"]
    headers = {p["name"]: p for p in create_op["parameters"] if p["in"] == "header"}
    assert set(headers) == {"Tus-Resumable", "Upload-Length", "Veil-Blob-Token"}
    assert all(p["required"] for p in headers.values())
    patch = doc["paths"]["/v1/uploads/{blob_id}"]["patch"]
    assert list(patch["requestBody"]["content"]) == ["application/offset+octet-stream"]
    download = doc["paths"]["/v1/blobs/{blob_id}"]["get"]
    assert download["security"] == [{"blobToken": []}]
    assert {"200", "206", "403", "404", "416"} <= set(download["responses"])
