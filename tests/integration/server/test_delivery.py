"""Online and offline delivery, acknowledgement, sealed-sender authorisation."""

from __future__ import annotations

import asyncio
import os

import aiohttp

from tests.integration.server.harness import (
    ServerProcess,
    b64,
    recv_envelope,
    recv_json,
    register,
    send_sealed,
)


async def test_online_delivery_push_and_ack(server: ServerProcess, http: aiohttp.ClientSession):
    bob = await register(http, server.url)
    async with http.ws_connect(server.url + "/v1/websocket", headers=bob.auth()) as ws:
        payload = os.urandom(200)
        status, body = await send_sealed(http, server.url, bob, {1: payload})
        assert status == 200, body
        [accepted] = body["messages"]
        event = await recv_envelope(ws)
        assert event["id"] == accepted["id"] and event["ts"] == accepted["ts"]
        assert event["envelope"] == b64(payload)
        await ws.send_json({"type": "ack", "ids": [event["id"]]})
        for _ in range(50):
            async with http.get(server.url + "/v1/messages", headers=bob.auth()) as r:
                if (await r.json())["messages"] == []:
                    break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("acknowledged envelope was not deleted")


async def test_offline_delivery_in_order_and_exactly_once(
    server: ServerProcess, http: aiohttp.ClientSession
):
    bob = await register(http, server.url)
    payloads = [os.urandom(64) for _ in range(30)]
    for p in payloads:
        status, _ = await send_sealed(http, server.url, bob, {1: p})
        assert status == 200
    async with http.ws_connect(server.url + "/v1/websocket", headers=bob.auth()) as ws:
        got = []
        while len(got) < len(payloads):
            got.append(await recv_envelope(ws))
        assert [e["envelope"] for e in got] == [b64(p) for p in payloads]
        assert [e["id"] for e in got] == sorted(e["id"] for e in got)
        await ws.send_json({"type": "ack", "ids": [e["id"] for e in got]})
        await asyncio.sleep(0.2)
    async with http.ws_connect(server.url + "/v1/websocket", headers=bob.auth()) as ws:
        try:
            extra = await recv_envelope(ws, timeout=0.5)
        except TimeoutError:
            extra = None
        assert extra is None, extra


async def test_offline_backlog_larger_than_the_push_window(
    server: ServerProcess, http: aiohttp.ClientSession
):
    """More envelopes than the server pushes unacknowledged (256): refills from storage
    while acknowledgements arrive one by one; all arrive, in order, none twice."""
    bob = await register(http, server.url)
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with sem:
            status, _ = await send_sealed(http, server.url, bob, {1: i.to_bytes(4, "big")})
            assert status == 200

    await asyncio.gather(*(one(i) for i in range(700)))
    got = []
    async with http.ws_connect(server.url + "/v1/websocket", headers=bob.auth()) as ws:
        while len(got) < 700:
            event = await recv_envelope(ws)
            got.append(event)
            await ws.send_json({"type": "ack", "ids": [event["id"]]})
        try:
            extra = await recv_envelope(ws, timeout=0.5)
        except TimeoutError:
            extra = None
    assert extra is None
    ids = [e["id"] for e in got]
    assert ids == sorted(ids) and len(set(ids)) == 700


async def test_slow_reader_of_large_envelopes(
    server: ServerProcess, http: aiohttp.ClientSession
):
    """Large envelopes to a reader that waits: the server stops pushing when the socket
    is congested and resumes on acknowledgements; nothing is lost or repeated."""
    bob = await register(http, server.url)
    bodies = [bytes([i]) * 200_000 for i in range(40)]
    for body in bodies:
        status, _ = await send_sealed(http, server.url, bob, {1: body})
        assert status == 200
    async with http.ws_connect(server.url + "/v1/websocket", headers=bob.auth(),
                               max_msg_size=1 << 20) as ws:
        await asyncio.sleep(0.5)  # let the server hit its congestion limit
        got = []
        while len(got) < len(bodies):
            event = await recv_envelope(ws)
            got.append(event)
            await ws.send_json({"type": "ack", "ids": [event["id"]]})
    assert [e["envelope"] for e in got] == [b64(b) for b in bodies]


async def test_http_fetch_and_delete(server: ServerProcess, http: aiohttp.ClientSession):
    bob = await register(http, server.url)
    for i in range(3):
        await send_sealed(http, server.url, bob, {1: bytes([i]) * 10})
    async with http.get(server.url + "/v1/messages?limit=2", headers=bob.auth()) as r:
        page = await r.json()
    assert r.status == 200 and page["more"] is True and len(page["messages"]) == 2
    first = page["messages"][0]
    async with http.delete(f"{server.url}/v1/messages/{first['id']}", headers=bob.auth()) as r:
        assert r.status == 204
    async with http.delete(f"{server.url}/v1/messages/{first['id']}", headers=bob.auth()) as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "message_not_found"
    async with http.get(server.url + "/v1/messages?limit=1&after=" + str(first["id"]),
                        headers=bob.auth()) as r:
        page = await r.json()
    assert page["more"] is True and len(page["messages"]) == 1
    async with http.get(server.url + "/v1/messages", headers=bob.auth()) as r:
        page = await r.json()
    assert page["more"] is False
    assert [m["envelope"] for m in page["messages"]] == [b64(bytes([i]) * 10) for i in (1, 2)]
    for _ in range(99):
        await send_sealed(http, server.url, bob, {1: b"z"})
    async with http.get(server.url + "/v1/messages", headers=bob.auth()) as r:
        page = await r.json()
    assert page["more"] is True and len(page["messages"]) == 100


async def test_access_key_rules(server: ServerProcess, http: aiohttp.ClientSession):
    bob = await register(http, server.url)
    status, body = await send_sealed(http, server.url, bob, {1: b"x"}, access_key=os.urandom(16))
    assert status == 401 and body["error"]["code"] == "invalid_access_key"
    # No key at all.
    async with http.put(f"{server.url}/v1/messages/{bob.account_id}",
                        json={"messages": [{"device_id": 1, "envelope": b64(b"x")}]}) as r:
        assert r.status == 401
    # Switching to "accept from anyone" lets sealed mail in without a key.
    async with http.put(server.url + "/v1/accounts/me/sealed_access", headers=bob.auth(),
                        json={"unrestricted_sealed": True}) as r:
        assert r.status == 204
    async with http.put(f"{server.url}/v1/messages/{bob.account_id}",
                        json={"messages": [{"device_id": 1, "envelope": b64(b"x")}]}) as r:
        assert r.status == 200
    # A sender's own device credentials authorise too (not sealed).
    alice = await register(http, server.url)
    async with http.put(f"{server.url}/v1/messages/{alice.account_id}", headers=bob.auth(),
                        json={"messages": [{"device_id": 1, "envelope": b64(b"y")}]}) as r:
        assert r.status == 200
    # Both kinds at once is a client mistake.
    async with http.put(f"{server.url}/v1/messages/{alice.account_id}",
                        headers={**bob.auth(), "Veil-Access-Key": b64(os.urandom(16))},
                        json={"messages": [{"device_id": 1, "envelope": b64(b"y")}]}) as r:
        assert r.status == 400


async def test_mismatched_devices(server: ServerProcess, http: aiohttp.ClientSession):
    bob = await register(http, server.url)
    status, body = await send_sealed(http, server.url, bob, {1: b"a", 2: b"b"})
    assert status == 409
    assert body["error"]["code"] == "mismatched_devices"
    assert body["error"]["details"] == {"missing_devices": [], "extra_devices": [2]}
    status, body = await send_sealed(http, server.url, bob, {3: b"a"})
    assert status == 409
    assert body["error"]["details"] == {"missing_devices": [1], "extra_devices": [3]}
    async with http.get(server.url + "/v1/messages", headers=bob.auth()) as r:
        assert (await r.json())["messages"] == []


async def test_sealed_socket_send(server: ServerProcess, http: aiohttp.ClientSession):
    bob = await register(http, server.url)
    async with http.ws_connect(server.url + "/v1/websocket", headers=bob.auth()) as rx, \
            http.ws_connect(server.url + "/v1/websocket/sealed") as tx:
        assert bob.access_key is not None
        await tx.send_json({"type": "send", "req": 1, "to": bob.account_id,
                            "access_key": b64(bob.access_key),
                            "messages": [{"device_id": 1, "envelope": b64(b"hello")}]})
        reply = await recv_json(tx)
        assert reply["type"] == "sent" and reply["req"] == 1
        event = await recv_envelope(rx)
        assert event["envelope"] == b64(b"hello") and event["id"] == reply["messages"][0]["id"]
        # A business error is an error reply, and the socket stays open.
        await tx.send_json({"type": "send", "req": 2, "to": bob.account_id,
                            "access_key": b64(os.urandom(16)),
                            "messages": [{"device_id": 1, "envelope": b64(b"hello")}]})
        reply = await recv_json(tx)
        assert reply == {"type": "error", "req": 2, "error": {
            "code": "invalid_access_key",
            "message": "the access key does not match the recipient's"}}
        await tx.send_json({"type": "send", "req": 3, "to": "0" * 32,
                            "messages": [{"device_id": 1, "envelope": b64(b"hello")}]})
        reply = await recv_json(tx)
        # A missing account answers as a wrong key would: no existence oracle.
        assert reply["error"]["code"] == "invalid_access_key"


async def test_device_socket_send(server: ServerProcess, http: aiohttp.ClientSession):
    """Authenticated sends over the device's own socket (no access key needed)."""
    alice = await register(http, server.url)
    bob = await register(http, server.url, access_key=None)
    async with http.ws_connect(server.url + "/v1/websocket", headers=alice.auth()) as a, \
            http.ws_connect(server.url + "/v1/websocket", headers=bob.auth()) as b:
        await a.send_json({"type": "send", "req": 9, "to": bob.account_id,
                           "messages": [{"device_id": 1, "envelope": b64(b"hey")}]})
        while (reply := await recv_json(a))["type"] != "sent":
            pass
        assert reply["req"] == 9
        assert (await recv_envelope(b))["envelope"] == b64(b"hey")
        # An access key belongs on the sealed socket: a policy close.
        await a.send_json({"type": "send", "req": 10, "to": bob.account_id,
                           "access_key": b64(os.urandom(16)),
                           "messages": [{"device_id": 1, "envelope": b64(b"hey")}]})
        msg = await a.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and a.close_code == 1008


async def test_messages_to_own_account_skip_the_sending_device(
    server: ServerProcess, http: aiohttp.ClientSession
):
    alice = await register(http, server.url)
    # Alice has only device 1, which is the sender: the expected device set is empty.
    async with http.put(f"{server.url}/v1/messages/{alice.account_id}", headers=alice.auth(),
                        json={"messages": [{"device_id": 1, "envelope": b64(b"x")}]}) as r:
        body = await r.json()
    assert r.status == 409
    assert body["error"]["details"] == {"missing_devices": [], "extra_devices": [1]}


async def test_new_connection_replaces_old(server: ServerProcess, http: aiohttp.ClientSession):
    bob = await register(http, server.url)
    first = await http.ws_connect(server.url + "/v1/websocket", headers=bob.auth())
    async with http.ws_connect(server.url + "/v1/websocket", headers=bob.auth()) as second:
        msg = await first.receive(timeout=5)
        while msg.type == aiohttp.WSMsgType.TEXT:  # the keys_low notice on connect
            msg = await first.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and first.close_code == 4000
        await send_sealed(http, server.url, bob, {1: b"to the new one"})
        event = await recv_envelope(second)
        assert event["envelope"] == b64(b"to the new one")
    await first.close()


async def test_websocket_needs_credentials(server: ServerProcess, http: aiohttp.ClientSession):
    bob = await register(http, server.url)
    bad = {**bob.auth()}
    bad["Authorization"] = "Basic " + b64(f"{bob.account_id}.1:{b64(os.urandom(32))}".encode())
    for headers in ({}, bad):
        try:
            await http.ws_connect(server.url + "/v1/websocket", headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 401
        else:
            raise AssertionError("connected without valid credentials")
