"""Retention on a real server process (issue 12 §4), on SQLite and on PostgreSQL.

- queued envelopes of an offline device expire after ``envelope_ttl_s``: the retention
  job deletes them, says so in one operator line, and on SQLite no byte of the
  ciphertext is left in the database file or its WAL afterwards;
- an account's queued bytes are capped by ``max_queued_bytes_per_account``: the
  submission beyond is 429 ``queue_quota_exceeded``, sealed or not, stores nothing, and
  other recipients are not affected.

Waits are for conditions (a deadline, polling what the server says), never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import DSN
from tests.integration.server.harness import (
    Device,
    ServerProcess,
    b64,
    register,
    send_sealed,
)
from veil.server.storage import DATABASE_FILE

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres" and not DSN:
        pytest.skip("postgres: VEIL_TEST_POSTGRES is not set")
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    """"" for SQLite; for PostgreSQL, a schema of the test's own (conftest ``schema``)."""
    if backend == "sqlite":
        return ""
    schema = request.getfixturevalue("schema")
    sep = "&" if "?" in DSN else "?"
    return f"{DSN}{sep}search_path={schema}"


@pytest.fixture
def start(database_url: str, tmp_path: Path
          ) -> Iterator[Callable[[dict[str, Any]], ServerProcess]]:
    """Starts a server with the given settings on the test's backend."""
    started: list[ServerProcess] = []

    def make(settings: dict[str, Any]) -> ServerProcess:
        if database_url:
            settings = {**settings, "database_url": database_url}
        proc = ServerProcess(tmp_path / "data", settings).start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)  # a poll interval, not a synchronisation


async def queued(http: aiohttp.ClientSession, url: str, device: Device) -> list[bytes]:
    async with http.get(url + "/v1/messages", headers=device.auth()) as r:
        assert r.status == 200
        page = await r.json()
    return [base64.b64decode(m["envelope"]) for m in page["messages"]]


async def send_as(http: aiohttp.ClientSession, url: str, sender: Device, to: Device,
                  envelope: bytes) -> tuple[int, Any]:
    body = {"messages": [{"device_id": 1, "envelope": b64(envelope)}]}
    async with http.put(f"{url}/v1/messages/{to.account_id}", json=body,
                        headers=sender.auth()) as r:
        return r.status, await r.json()


async def test_queued_envelopes_expire_and_leave_no_ciphertext(
    start: Callable[[dict[str, Any]], ServerProcess], backend: str,
    http: aiohttp.ClientSession,
):
    server = start({"envelope_ttl_s": 1, "expiry_interval_s": 0.2})
    url = server.url
    bob = await register(http, url)  # offline: nobody fetches until it is gone
    ciphertexts = [os.urandom(5000) for _ in range(5)]
    for ciphertext in ciphertexts:
        status, body = await send_sealed(http, url, bob, {1: ciphertext})
        assert status == 200, body
    out = server.data_dir.parent / f"{server.data_dir.name}.out"

    async def gone() -> bool:
        return await queued(http, url, bob) == []

    await until(gone)

    async def announced() -> bool:
        return "retention: deleted" in out.read_text(errors="replace")

    await until(announced)
    # The operator's lines (standard output; the log has the same text after its prefix).
    said = [line for line in out.read_text().splitlines()
            if line.startswith("retention: deleted")]
    assert sum(int(line.split("deleted ")[1].split()[0]) for line in said) == 5
    assert bob.account_id not in out.read_text()  # counts only
    if backend == "sqlite":
        # While the server runs (what a copy of its disk would show), and after it stopped.
        pieces = [c[i:i + 16] for c in ciphertexts for i in range(0, len(c) - 15, 250)]
        assert [p for p in pieces if p in sqlite_files(server)] == []
        server.stop()
        assert [p for p in pieces if p in sqlite_files(server)] == []


def sqlite_files(server: ServerProcess) -> bytes:
    database = server.data_dir / DATABASE_FILE
    wal = database.with_name(database.name + "-wal")
    return database.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def test_the_byte_quota_refuses_the_submission_beyond_it(
    start: Callable[[dict[str, Any]], ServerProcess], http: aiohttp.ClientSession,
):
    server = start({"max_envelope_bytes": 4096, "max_ws_frame_bytes": 8192,
                    "max_queued_bytes_per_account": 10_000})
    url = server.url
    bob, carol, alice = [await register(http, url) for _ in range(3)]
    for _ in range(2):
        status, body = await send_sealed(http, url, bob, {1: os.urandom(4096)})
        assert status == 200, body
    # 8192 of 10 000 bytes: the next 4096 would exceed it, sealed or from a device.
    status, body = await send_sealed(http, url, bob, {1: os.urandom(4096)})
    assert status == 429, body
    assert body["error"]["code"] == "queue_quota_exceeded"
    assert body["error"]["details"] == {"quota_bytes": 10_000}
    status, body = await send_as(http, url, alice, bob, os.urandom(4096))
    assert (status, body["error"]["code"]) == (429, "queue_quota_exceeded")
    # Nothing of the refused submissions was stored; a smaller one still fits.
    assert [len(e) for e in await queued(http, url, bob)] == [4096, 4096]
    status, body = await send_as(http, url, alice, bob, os.urandom(1808))
    assert status == 200, body
    # Other recipients are not affected.
    status, body = await send_sealed(http, url, carol, {1: os.urandom(4096)})
    assert status == 200, body
    # A wrong access key is still a 401, before the quota is looked at.
    status, body = await send_sealed(http, url, bob, {1: b"x"}, access_key=os.urandom(16))
    assert (status, body["error"]["code"]) == (401, "invalid_access_key")
