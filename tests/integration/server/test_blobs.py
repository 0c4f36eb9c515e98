"""Attachments' blob storage against real server processes (issue 12 §1, §4-§6): tus 1.0
uploads that survive a dropped connection and a restarted server, ranged downloads with
the blob's token, every refusal with its status and code, quota, expiry that deletes the
file; and the standard tools: tuspy's client and curl.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.server.blob_client import (
    TUS,
    blob_files,
    download,
    new_token,
    raw_patch,
    uploads_for,
    wait_until,
)
from tests.integration.server.harness import ServerProcess, register

MIB = 1 << 20
SETTINGS = {"max_blob_bytes": 24 * MIB, "blob_quota_bytes": 40 * MIB,
            "max_blobs_per_account": 50}


@pytest.fixture(scope="module")
def blob_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(Path(tmp_path_factory.mktemp("veil-blobs")) / "data",
                         SETTINGS).start()
    yield proc
    proc.stop()


# ---- protocol ------------------------------------------------------------------------------
async def test_discovery_upload_and_download(
    http: aiohttp.ClientSession, blob_server: ServerProcess
) -> None:
    async with http.options(blob_server.url + "/v1/uploads") as r:
        assert r.status == 204
        assert r.headers["Tus-Version"] == "1.0.0"
        assert set(r.headers["Tus-Extension"].split(",")) == {
            "creation", "expiration", "termination"}
        assert int(r.headers["Tus-Max-Size"]) == SETTINGS["max_blob_bytes"]
    up = await uploads_for(http, blob_server)
    data, token = os.urandom(3 * MIB + 17), new_token()
    location = await up.location(len(data), token)
    assert await up.offset(location) == 0
    status, answer = await up.patch(location, 0, data)
    assert status == 204 and int(answer["Upload-Offset"]) == len(data)
    got = await download(http, location, token)
    assert got[0] == 200 and got[1] == data
    assert got[2]["Accept-Ranges"] == "bytes" and got[2]["Cache-Control"] == "no-store"
    async with http.head(location.replace("uploads", "blobs"),
                         headers={"Veil-Blob-Token": token}) as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) == len(data)
    async with http.delete(location, headers=up.h()) as r:  # termination
        assert r.status == 204
    assert (await download(http, location, token))[0] == 404


async def test_resume_after_connections_dropped_mid_patch(
    http: aiohttp.ClientSession, blob_server: ServerProcess
) -> None:
    up = await uploads_for(http, blob_server)
    data, token = os.urandom(12 * MIB), new_token()
    location = await up.location(len(data), token)
    offset = 0
    for cut in (3 * MIB, 7 * MIB, 10 * MIB):  # three drops, each mid-body
        writer = await raw_patch(blob_server, location, up.device, offset,
                                 len(data) - offset, data[offset:cut])
        writer.transport.abort()  # the connection is gone; the PATCH never ends
        resumed = await up.offset(location)  # takes over from the dead PATCH
        assert offset <= resumed <= cut
        offset = resumed
    await up.finish(location, data)
    got = await download(http, location, token)
    assert got[0] == 200 and got[1] == data


async def test_a_restarted_server_resumes_uploads(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    proc = ServerProcess(tmp_path / "data", SETTINGS).start()
    try:
        up = await uploads_for(http, proc)
        data, token = os.urandom(10 * MIB), new_token()
        location = await up.location(len(data), token)
        status, _ = await up.patch(location, 0, data[:2 * MIB])
        assert status == 204
        proc.kill9()  # between two PATCHes
        proc.start()
        assert await up.offset(location) == 2 * MIB
        writer = await raw_patch(proc, location, up.device, 2 * MIB, len(data) - 2 * MIB,
                                 data[2 * MIB:6 * MIB])
        proc.kill9()  # in the middle of one
        writer.transport.abort()
        proc.start()
        offset = await up.offset(location)
        assert 2 * MIB <= offset <= 6 * MIB
        assert (await download(http, location, token))[0] == 404  # not visible in part
        await up.finish(location, data)
        got = await download(http, location, token)
        assert got[0] == 200 and got[1] == data
        proc.stop()
        proc.start()  # a complete blob outlives a restart too
        assert (await download(http, location, token))[1] == data
    finally:
        proc.stop()


async def test_50_mib_through_three_drops_and_a_restart(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The server's half of issue 12 §6: 50 MiB, three connections dropped mid-body (a
    reset, a close, a reset), the server killed mid-PATCH once, bit-identical after."""
    proc = ServerProcess(tmp_path / "data", {**SETTINGS, "max_blob_bytes": 64 * MIB,
                                             "blob_quota_bytes": 64 * MIB}).start()
    try:
        up = await uploads_for(http, proc)
        data, token = os.urandom(50 * MIB), new_token()
        location = await up.location(len(data), token)
        offset = 0
        for cut, how in ((9 * MIB, "reset"), (20 * MIB, "close"), (31 * MIB, "kill"),
                         (42 * MIB, "reset")):
            writer = await raw_patch(proc, location, up.device, offset, len(data) - offset,
                                     data[offset:cut])
            if how == "kill":
                proc.kill9()
                writer.transport.abort()
                proc.start()
            elif how == "close":
                writer.close()
            else:
                writer.transport.abort()
            resumed = await up.offset(location)
            assert offset <= resumed <= cut, how
            offset = resumed
        await up.finish(location, data)
        got = await download(http, location, token)
        assert got[0] == 200 and got[1] == data
    finally:
        proc.stop()


async def test_wrong_offset_is_refused_and_changes_nothing(
    http: aiohttp.ClientSession, blob_server: ServerProcess
) -> None:
    up = await uploads_for(http, blob_server)
    data, token = os.urandom(1000), new_token()
    location = await up.location(len(data), token)
    assert (await up.patch(location, 0, data[:400]))[0] == 204
    for wrong in (0, 399, 401, 1000):
        status, answer = await up.patch(location, wrong, data[400:])
        assert status == 409, answer
        assert answer["error"]["code"] == "upload_offset_mismatch"
        assert answer["error"]["details"] == {"offset": 400}
    status, answer = await up.patch(location, 400, data[400:] + b"x")  # one byte too many
    assert status == 413 and answer["error"]["code"] == "upload_exceeds_length"
    assert await up.offset(location) == 400
    await up.finish(location, data)
    assert (await download(http, location, token))[1] == data


async def test_tokens_ids_and_accounts(
    http: aiohttp.ClientSession, blob_server: ServerProcess
) -> None:
    up = await uploads_for(http, blob_server)
    other = await uploads_for(http, blob_server)
    data, token = os.urandom(5000), new_token()
    location = await up.location(len(data), token)
    assert (await download(http, location, token))[0] == 404  # unfinished: no blob yet
    async with http.head(location, headers=other.h()) as r:  # another account's upload
        assert r.status == 404
    status, answer = await other.patch(location, 0, data)
    assert status == 404 and answer["error"]["code"] == "blob_not_found"
    await up.finish(location, data)
    for headers, code in (({"Veil-Blob-Token": new_token()}, "invalid_blob_token"),
                          ({"Veil-Blob-Token": "bm90IDMyIGJ5dGVz"}, "invalid_blob_token"),
                          ({}, "invalid_blob_token")):
        url = location.replace("/v1/uploads/", "/v1/blobs/")
        async with http.get(url, headers=headers) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == code
    unknown = blob_server.url + "/v1/blobs/" + os.urandom(16).hex()
    async with http.get(unknown, headers={"Veil-Blob-Token": token}) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "blob_not_found"
    async with http.get(blob_server.url + "/v1/blobs/not-an-id",
                        headers={"Veil-Blob-Token": token}) as r:
        assert r.status == 404
    assert (await download(http, location, token))[1] == data  # untouched by all of it


async def test_range_downloads(http: aiohttp.ClientSession, blob_server: ServerProcess) -> None:
    up = await uploads_for(http, blob_server)
    data, token = os.urandom(2 * MIB + 5), new_token()
    location = await up.location(len(data), token)
    await up.finish(location, data)
    size = len(data)
    for spec, start, end in (("bytes=0-9", 0, 10), ("bytes=1000-", 1000, size),
                             ("bytes=-5", size - 5, size), ("bytes=5-99999999", 5, size),
                             (f"bytes={size - 1}-{size - 1}", size - 1, size)):
        status, body, headers = await download(http, location, token, Range=spec)
        assert status == 206, spec
        assert body == data[start:end]
        assert headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
    for spec in (f"bytes={size}-", "bytes=5-2", "bytes=x-", "bytes=-0"):
        status, body, headers = await download(http, location, token, Range=spec)
        assert status == 416, spec
        assert headers["Content-Range"] == f"bytes */{size}"
    for spec, extra in (("bytes=0-1,5-6", {}), ("items=0-1", {}),
                        ("bytes=0-1", {"If-Range": '"another"'})):
        status, body, _ = await download(http, location, token, Range=spec, **extra)
        assert status == 200 and body == data, spec
    etag = f'"{location.rsplit("/", 1)[1]}"'
    status, body, _ = await download(http, location, token, Range="bytes=0-1",
                                     **{"If-Range": etag})
    assert status == 206 and body == data[:2]


async def test_size_and_quota(http: aiohttp.ClientSession, blob_server: ServerProcess) -> None:
    up = await uploads_for(http, blob_server)
    status, answer = await up.create(SETTINGS["max_blob_bytes"] + 1, new_token())
    assert status == 413 and answer["error"]["code"] == "blob_too_large"
    first = await up.location(20 * MIB, new_token())  # counted at its declared length
    await up.location(20 * MIB, new_token())
    status, answer = await up.create(1, new_token())
    assert status == 413 and answer["error"]["code"] == "blob_quota_exceeded"
    assert answer["error"]["details"]["used_bytes"] == 40 * MIB
    other = await uploads_for(http, blob_server)  # another account is not affected
    assert (await other.create(1, new_token()))[0] == 201
    async with http.delete(first, headers=up.h()) as r:
        assert r.status == 204
    assert (await up.create(1, new_token()))[0] == 201


async def test_tus_refusals(http: aiohttp.ClientSession, blob_server: ServerProcess) -> None:
    up = await uploads_for(http, blob_server)
    token = new_token()
    location = await up.location(10, token)
    async with http.post(blob_server.url + "/v1/uploads", headers={
            **up.device.auth(), "Upload-Length": "10", "Veil-Blob-Token": token}) as r:
        assert r.status == 412 and r.headers["Tus-Version"] == "1.0.0"
        assert (await r.json())["error"]["code"] == "tus_version_unsupported"
    async with http.post(blob_server.url + "/v1/uploads", headers={
            **TUS, "Upload-Length": "10", "Veil-Blob-Token": token}) as r:
        assert r.status == 401 and r.headers["Tus-Resumable"] == "1.0.0"
    status, answer = await up.create(10, token, **{"Upload-Metadata": "filename Y2F0LmpwZw=="})
    assert status == 400 and answer["error"]["code"] == "upload_metadata_refused"
    assert (await up.create(10, token, **{"Upload-Metadata": ""}))[0] == 201  # tuspy's
    async with http.post(blob_server.url + "/v1/uploads", headers=up.h(
            **{"Upload-Defer-Length": "1", "Veil-Blob-Token": token})) as r:
        assert r.status == 400
    status, answer = await up.patch(location, 0, b"x" * 10,
                                    **{"Content-Type": "application/octet-stream"})
    assert status == 415 and answer["error"]["code"] == "unsupported_media_type"
    status, answer = await up.patch(location, 0, b"x" * 10, **{"Tus-Resumable": "0.2.2"})
    assert status == 412
    assert await up.offset(location) == 0


async def test_expiry_deletes_blobs_and_unfinished_uploads(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    proc = ServerProcess(tmp_path / "data", {
        # Seconds of margin for the two uploads below before anything is due.
        **SETTINGS, "blob_ttl_s": 3, "blob_upload_ttl_s": 3, "expiry_interval_s": 0.1,
    }).start()
    try:
        up = await uploads_for(http, proc)
        data, token = os.urandom(100_000), new_token()
        location = await up.location(len(data), token)
        await up.finish(location, data)
        await up.location(50, new_token())  # never finished
        assert len(blob_files(proc)) == 2
        assert (await download(http, location, token))[0] in (200, 404)
        await wait_until(lambda: blob_files(proc) == [])  # the job deleted both files
        assert (await download(http, location, token))[0] == 404
        for _ in range(2):  # the whole quota is free again
            assert (await up.create(20 * MIB, new_token()))[0] == 201
    finally:
        proc.stop()


# ---- standard tools ------------------------------------------------------------------------
async def test_tuspy_uploads_and_resumes(
    http: aiohttp.ClientSession, blob_server: ServerProcess, tmp_path: Path
) -> None:
    tusclient = pytest.importorskip("tusclient.client")
    device = await register(http, blob_server.url)
    data, token = os.urandom(5 * MIB + 3), new_token()
    path = tmp_path / "file.bin"
    path.write_bytes(data)

    def upload() -> str:
        client = tusclient.TusClient(blob_server.url + "/v1/uploads",
                                     headers={**device.auth(), "Veil-Blob-Token": token})
        first = client.uploader(str(path), chunk_size=MIB)
        first.upload(stop_at=2 * MIB)  # a client that stopped here
        again = client.uploader(str(path), chunk_size=MIB, url=first.url)
        assert again.get_offset() == 2 * MIB
        again.upload()
        return str(again.url)

    location = await asyncio.to_thread(upload)
    got = await download(http, location, token)
    assert got[0] == 200 and got[1] == data


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_uploads_and_downloads_ranges(
    http: aiohttp.ClientSession, blob_server: ServerProcess, tmp_path: Path
) -> None:
    device = await register(http, blob_server.url)
    data, token = os.urandom(2 * MIB + 99), new_token()
    (tmp_path / "a").write_bytes(data[:MIB])
    (tmp_path / "b").write_bytes(data[MIB:])
    auth = f"Authorization: {device.auth()['Authorization']}"

    def curl(*args: str) -> str:
        return subprocess.run(["curl", "-sS", "--fail", *args], check=True,
                              capture_output=True, text=True, timeout=60).stdout

    head = curl("-i", "-X", "POST", blob_server.url + "/v1/uploads", "-H", auth,
                "-H", "Tus-Resumable: 1.0.0", "-H", f"Upload-Length: {len(data)}",
                "-H", f"Veil-Blob-Token: {token}")
    path = next(line.split(":", 1)[1].strip() for line in head.splitlines()
                if line.lower().startswith("location:"))
    for offset, part in ((0, "a"), (MIB, "b")):
        curl("-X", "PATCH", blob_server.url + path, "-H", auth, "-H", "Tus-Resumable: 1.0.0",
             "-H", "Content-Type: application/offset+octet-stream",
             "-H", f"Upload-Offset: {offset}", "--data-binary", f"@{tmp_path / part}")
    url = blob_server.url + path.replace("/v1/uploads/", "/v1/blobs/")
    out = tmp_path / "out"
    curl("-o", str(out), "-H", f"Veil-Blob-Token: {token}", url)
    assert out.read_bytes() == data
    curl("-o", str(out), "-r", "100-199", "-H", f"Veil-Blob-Token: {token}", url)
    assert out.read_bytes() == data[100:200]
    # A download cut short and continued the way curl does (-C -): Range from the size.
    out.write_bytes(data[:12345])
    curl("-C", "-", "-o", str(out), "-H", f"Veil-Blob-Token: {token}", url)
    assert out.read_bytes() == data
