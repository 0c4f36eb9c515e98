"""Durability: ``kill -9`` while clients send loses no acknowledged envelope, duplicates
none; clients reconnect after a restart."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.server.harness import (
    ServerProcess,
    b64,
    recv_envelope,
    register,
)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data").start()
    yield proc
    proc.stop()


async def test_reconnect_after_restart(fresh: ServerProcess, http: aiohttp.ClientSession):
    bob = await register(http, fresh.url)
    alice = await register(http, fresh.url)
    ws = await http.ws_connect(fresh.url + "/v1/websocket", headers=bob.auth())
    fresh.kill9()
    msg = await ws.receive(timeout=5)
    while msg.type == aiohttp.WSMsgType.TEXT:  # a keys_low notice sent on connect
        msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR)
    fresh.start()
    # Queued while bob is away, delivered when he is back.
    async with http.put(f"{fresh.url}/v1/messages/{bob.account_id}", headers=alice.auth(),
                        json={"messages": [{"device_id": 1, "envelope": b64(b"queued")}]}) as r:
        assert r.status == 200
    async with http.ws_connect(fresh.url + "/v1/websocket", headers=bob.auth()) as ws2:
        event = await recv_envelope(ws2)
        assert event["envelope"] == b64(b"queued")
        async with http.put(f"{fresh.url}/v1/messages/{bob.account_id}", headers=alice.auth(),
                            json={"messages": [{"device_id": 1, "envelope": b64(b"live")}]}) \
                as r:
            assert r.status == 200
        assert (await recv_envelope(ws2))["envelope"] == b64(b"live")


async def _ws_sender(url: str, to: str, key: bytes, tag: int, acked: set[bytes],
                     attempted: set[bytes]) -> None:
    with contextlib.suppress(aiohttp.ClientError, ConnectionError, asyncio.TimeoutError):
        async with aiohttp.ClientSession() as s, s.ws_connect(url + "/v1/websocket/sealed") as ws:
            pending: dict[int, bytes] = {}
            seq = 0
            while True:
                while len(pending) < 8:
                    seq += 1
                    payload = f"{tag}:{seq}:".encode() + os.urandom(16)
                    pending[seq] = payload
                    attempted.add(payload)
                    await ws.send_str(json.dumps({
                        "type": "send", "req": seq, "to": to, "access_key": b64(key),
                        "messages": [{"device_id": 1, "envelope": b64(payload)}],
                    }))
                msg = await ws.receive(timeout=5)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                reply = json.loads(msg.data)
                if reply["type"] == "sent":
                    acked.add(pending.pop(reply["req"]))


async def _http_sender(url: str, to: str, key: bytes, tag: int, acked: set[bytes],
                       attempted: set[bytes]) -> None:
    with contextlib.suppress(aiohttp.ClientError, ConnectionError, asyncio.TimeoutError):
        async with aiohttp.ClientSession() as s:
            seq = 0
            while True:
                seq += 1
                payload = f"{tag}:{seq}:".encode() + os.urandom(16)
                attempted.add(payload)
                async with s.put(f"{url}/v1/messages/{to}",
                                 headers={"Veil-Access-Key": b64(key)},
                                 json={"messages": [{"device_id": 1, "envelope": b64(payload)}]},
                                 ) as r:
                    if r.status == 200:
                        acked.add(payload)


@pytest.mark.slow
async def test_kill9_while_sending_loses_nothing_acknowledged(
    fresh: ServerProcess, http: aiohttp.ClientSession
):
    bob = await register(http, fresh.url)
    assert bob.access_key is not None
    acked: set[bytes] = set()
    attempted: set[bytes] = set()
    senders = [
        asyncio.create_task(_ws_sender(fresh.url, bob.account_id, bob.access_key, i, acked,
                                       attempted))
        for i in range(3)
    ] + [
        asyncio.create_task(_http_sender(fresh.url, bob.account_id, bob.access_key, 10 + i,
                                         acked, attempted))
        for i in range(2)
    ]
    while len(acked) < 300:
        await asyncio.sleep(0.05)
    fresh.kill9()  # while every sender still has requests in flight
    await asyncio.wait_for(asyncio.gather(*senders), 15)
    snapshot = set(acked)
    fresh.start()
    received: list[tuple[int, bytes]] = []
    async with http.ws_connect(fresh.url + "/v1/websocket", headers=bob.auth()) as ws:
        while True:
            try:
                event = await recv_envelope(ws, timeout=1.5)
            except TimeoutError:
                break
            received.append((event["id"], base64.b64decode(event["envelope"])))
            await ws.send_json({"type": "ack", "ids": [event["id"]]})
    payloads = [p for _, p in received]
    assert len(snapshot) >= 300
    assert snapshot <= set(payloads), f"lost {len(snapshot - set(payloads))} acknowledged"
    assert len(payloads) == len(set(payloads)), "an envelope was delivered twice"
    assert len({i for i, _ in received}) == len(received)
    assert set(payloads) <= attempted
