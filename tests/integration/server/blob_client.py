"""A device's tus 1.0 requests and blob downloads for the blob tests (aiohttp, and a raw
socket for a PATCH that is dropped mid-body)."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.server.harness import Device, ServerProcess, register

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


def new_token() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def blob_files(proc: ServerProcess) -> list[Path]:
    return sorted(p for p in (proc.data_dir / "blobs").rglob("*") if p.is_file())


async def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


class Uploads:
    """A device's tus requests (aiohttp), each answer's status, headers and JSON error."""

    def __init__(self, http: aiohttp.ClientSession, url: str, device: Device) -> None:
        self.http, self.url, self.device = http, url, device

    def h(self, **extra: str) -> dict[str, str]:
        return {**self.device.auth(), **TUS, **extra}

    async def create(self, length: int, token: str, **extra: str) -> tuple[int, Any]:
        async with self.http.post(self.url + "/v1/uploads", headers=self.h(
                **{"Upload-Length": str(length), "Veil-Blob-Token": token}, **extra)) as r:
            return r.status, (r.headers if r.status == 201 else await r.json())

    async def location(self, length: int, token: str) -> str:
        status, headers = await self.create(length, token)
        assert status == 201, headers
        return str(self.url + headers["Location"])

    async def patch(self, location: str, offset: int, data: bytes,
                    **extra: str) -> tuple[int, Any]:
        headers = {**self.h(), **OCTETS, "Upload-Offset": str(offset), **extra}
        async with self.http.patch(location, data=data, headers=headers) as r:
            return r.status, (r.headers if r.status == 204 else await r.json())

    async def offset(self, location: str) -> int:
        async with self.http.head(location, headers=self.h()) as r:
            assert r.status == 200, r.status
            assert r.headers["Tus-Resumable"] == "1.0.0" and "Upload-Expires" in r.headers
            return int(r.headers["Upload-Offset"])

    async def finish(self, location: str, data: bytes) -> None:
        offset = await self.offset(location)
        status, answer = await self.patch(location, offset, data[offset:])
        assert status == 204, answer
        assert int(answer["Upload-Offset"]) == len(data)


async def uploads_for(http: aiohttp.ClientSession, proc: ServerProcess) -> Uploads:
    return Uploads(http, proc.url, await register(http, proc.url))


async def download(http: aiohttp.ClientSession, location: str, token: str,
                   **headers: str) -> tuple[int, bytes, Any]:
    url = location.replace("/v1/uploads/", "/v1/blobs/")
    async with http.get(url, headers={"Veil-Blob-Token": token, **headers}) as r:
        return r.status, await r.read(), r.headers


async def raw_patch(proc: ServerProcess, location: str, device: Device, offset: int,
                    declared: int, send: bytes) -> asyncio.StreamWriter:
    """A PATCH that declares ``declared`` bytes and sends ``send``: the caller drops it."""
    _, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    head = (f"PATCH {location.removeprefix(proc.url)} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {device.auth()['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
            f"Content-Type: application/offset+octet-stream\r\n"
            f"Upload-Offset: {offset}\r\nContent-Length: {declared}\r\n\r\n")
    writer.write(head.encode() + send)
    await writer.drain()
    return writer
