"""The whole server on the PostgreSQL backend: delivery, prekeys, and kill -9 durability.

Runs when VEIL_TEST_POSTGRES names a database (a schema of its own is created and
dropped), and is skipped by name otherwise.
"""

from __future__ import annotations

import base64

import aiohttp
import pytest

from tests.integration.server.harness import (
    ServerProcess,
    one_time,
    recv_envelope,
    register,
    send_sealed,
)

pytestmark = pytest.mark.postgres




async def test_delivery_prekeys_and_crash_on_postgres(pg_server: ServerProcess):
    async with aiohttp.ClientSession() as http:
        bob = await register(http, pg_server.url, one_time_prekeys=one_time(2))
        alice = await register(http, pg_server.url)
        got = set()
        for _ in range(3):
            async with http.get(f"{pg_server.url}/v1/keys/{bob.account_id}/1",
                                headers=alice.auth()) as r:
                key = (await r.json())["devices"][0]["one_time_prekey"]
                got.add(None if key is None else key["key_id"])
        assert got == {1, 2, None}
        async with http.ws_connect(pg_server.url + "/v1/websocket", headers=bob.auth()) as ws:
            status, body = await send_sealed(http, pg_server.url, bob, {1: b"online"})
            assert status == 200
            assert (await recv_envelope(ws))["id"] == body["messages"][0]["id"]
        acked = []
        for i in range(20):
            status, _ = await send_sealed(http, pg_server.url, bob, {1: bytes([i])})
            assert status == 200
            acked.append(bytes([i]))
        pg_server.kill9()
        pg_server.start()
        async with http.ws_connect(pg_server.url + "/v1/websocket", headers=bob.auth()) as ws:
            seen = []
            while True:
                try:
                    event = await recv_envelope(ws, timeout=1.0)
                except TimeoutError:
                    break
                seen.append(event["envelope"])
                await ws.send_json({"type": "ack", "ids": [event["id"]]})
        payloads = [base64.b64decode(e) for e in seen]
        assert b"online" in payloads  # never acknowledged: still queued
        assert all(a in payloads for a in acked)
        assert len(payloads) == len(set(payloads))
