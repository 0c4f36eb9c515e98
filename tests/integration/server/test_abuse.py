"""What one client can make the server do to others: floods, idle sockets, oracles.

Each test checks a fix from the server security review end to end, on a real process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.server.harness import (
    Device,
    ServerProcess,
    b64,
    last_resort_kem_prekey,
    one_time,
    recv_envelope,
    recv_json,
    register,
    send_sealed,
    signed_prekey,
)
from veil.core.submission import Submission


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def settings() -> dict[str, Any]:
    """Config of ``own_server``; a test overrides it with ``parametrize``."""
    return {}


@pytest.fixture
def own_server(tmp_path: Path, settings: dict[str, Any]) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", settings).start()
    yield proc
    proc.stop()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
async def test_ack_flood_of_ids_never_pushed_is_ignored(
    own_server: ServerProcess, http: aiohttp.ClientSession
):
    """A socket acknowledges what it pushed: 2 000 000 ids it never pushed cost no
    database work, and another user's send is not held up behind them."""
    url = own_server.url
    flooder = await register(http, url)
    other = await register(http, url)
    assert own_server.proc is not None
    cpu_before = _cpu_seconds(own_server.proc.pid)
    frame = json.dumps({"type": "ack", "ids": list(range(1, 1001))})
    async with http.ws_connect(url + "/v1/websocket", headers=flooder.auth()) as ws:
        for _ in range(2000):
            await ws.send_str(frame)
        started = time.perf_counter()
        status, _ = await send_sealed(http, url, other, {1: b"not delayed"})
        delay = time.perf_counter() - started
        assert status == 200
        # Frames are handled in order: the reply to this send comes after every ack.
        await ws.send_json({"type": "send", "req": 1, "to": other.account_id,
                            "messages": [{"device_id": 1, "envelope": b64(b"after")}]})
        while (reply := await recv_json(ws, timeout=60))["type"] == "keys_low":
            pass
        assert reply["type"] == "sent" and reply["req"] == 1
    cpu = _cpu_seconds(own_server.proc.pid) - cpu_before
    # Before the fix: 2 000 000 DELETEs, about 3 s of database thread and a 2.7 s wait.
    assert delay < 1.0, delay
    assert cpu < 1.5, cpu


@pytest.mark.parametrize("settings", [{"max_sealed_connections": 2, "max_connections": 10}])
async def test_sealed_sockets_cannot_take_the_device_slots(
    own_server: ServerProcess, http: aiohttp.ClientSession
):
    url = own_server.url
    bob = await register(http, url)
    first = await http.ws_connect(url + "/v1/websocket/sealed")
    second = await http.ws_connect(url + "/v1/websocket/sealed")
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(url + "/v1/websocket/sealed")
    assert info.value.status == 503
    async with http.ws_connect(url + "/v1/websocket", headers=bob.auth()) as device:
        status, _ = await send_sealed(http, url, bob, {1: b"devices still connect"})
        assert status == 200
        event = await recv_envelope(device)
        assert event["envelope"] == b64(b"devices still connect")
    await first.close()
    for _ in range(50):  # the server notices the close and frees the sealed slot
        try:
            third = await http.ws_connect(url + "/v1/websocket/sealed")
            break
        except aiohttp.WSServerHandshakeError:
            await asyncio.sleep(0.02)
    else:
        raise AssertionError("a freed sealed slot was not reusable")
    await second.close()
    await third.close()


@pytest.mark.parametrize("settings", [{"sealed_idle_timeout_s": 0.5}])
async def test_idle_sealed_socket_is_closed(
    own_server: ServerProcess, http: aiohttp.ClientSession
):
    url = own_server.url
    bob = await register(http, url)
    async with http.ws_connect(url + "/v1/websocket", headers=bob.auth()) as device, \
            http.ws_connect(url + "/v1/websocket/sealed") as sealed:
        # A sealed send resets nothing it should not: it is answered as usual.
        assert bob.access_key is not None
        await sealed.send_json({"type": "send", "req": 5, "to": bob.account_id,
                                "access_key": b64(bob.access_key),
                                "messages": [{"device_id": 1, "envelope": b64(b"hi")}]})
        assert (await recv_json(sealed))["type"] == "sent"
        started = time.monotonic()
        msg = await sealed.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert sealed.close_code == 1000 and msg.extra == "idle timeout"
        assert time.monotonic() - started < 3  # the configured 0.5 s, not the default 30
        # Device sockets have no idle timeout (they wait for mail by design).
        assert (await recv_envelope(device))["envelope"] == b64(b"hi")
        with pytest.raises(TimeoutError):
            await device.receive(timeout=1.0)
        assert not device.closed


async def test_sealed_send_to_a_missing_account_looks_like_a_wrong_key(
    own_server: ServerProcess, http: aiohttp.ClientSession
):
    url = own_server.url
    bob = await register(http, url)
    wrong = await send_sealed(http, url, bob, {1: b"x"}, access_key=os.urandom(16))
    nobody = Device(os.urandom(16).hex(), 1, "", os.urandom(16))
    missing = await send_sealed(http, url, nobody, {1: b"x"})
    assert wrong == missing
    assert wrong[0] == 401 and wrong[1]["error"]["code"] == "invalid_access_key"
    # The relayed form of the same submission answers the same.
    for recipient, key in ((bytes.fromhex(bob.account_id), os.urandom(16)),
                           (bytes.fromhex(nobody.account_id), nobody.access_key)):
        sub = Submission(recipient, key, ((1, b"x"),)).encode()
        async with http.post(url + "/v1/mixnet/submissions",
                             json={"submission": b64(sub)}) as r:
            assert (r.status, await r.json()) == wrong


async def test_relayed_submission_refuses_an_empty_envelope(
    own_server: ServerProcess, http: aiohttp.ClientSession
):
    url = own_server.url
    bob = await register(http, url, unrestricted_sealed=True)
    sub = Submission(bytes.fromhex(bob.account_id), None, ((1, b""),)).encode()
    async with http.post(url + "/v1/mixnet/submissions",
                         json={"submission": b64(sub)}) as r:
        body = await r.json()
        assert r.status == 422 and body["error"]["code"] == "validation_failed", body
    async with http.get(url + "/v1/messages", headers=bob.auth()) as r:
        assert (await r.json())["messages"] == []


@pytest.mark.parametrize("settings", [{"fetch_max_bytes": 1000}])
async def test_fetch_is_cut_by_total_bytes(
    own_server: ServerProcess, http: aiohttp.ClientSession
):
    url = own_server.url
    bob = await register(http, url)
    sizes = [400, 400, 400, 1500, 400]
    for i, size in enumerate(sizes):
        status, _ = await send_sealed(http, url, bob, {1: bytes([i]) * size})
        assert status == 200
    pages, after = [], 0
    while True:
        async with http.get(f"{url}/v1/messages?after={after}", headers=bob.auth()) as r:
            assert r.status == 200
            page = await r.json()
        pages.append(([len(base64.b64decode(m["envelope"])) for m in page["messages"]],
                      page["more"]))
        if not page["more"]:
            break
        after = page["messages"][-1]["id"]
    # At most 1000 bytes a page, except that one envelope always fits.
    assert pages == [([400, 400], True), ([400], True), ([1500], True), ([400], False)]


async def test_keys_low_is_sent_once_when_the_stock_crosses_the_threshold(
    own_server: ServerProcess, http: aiohttp.ClientSession
):
    url = own_server.url
    bob = await register(http, url, signed_prekey=b64(signed_prekey()),
                         last_resort_kem_prekey=b64(last_resort_kem_prekey()),
                         one_time_prekeys=one_time(12),
                         one_time_kem_prekeys=one_time(12, kem=True))
    alice = await register(http, url)
    async with http.ws_connect(url + "/v1/websocket", headers=bob.auth()) as ws:
        for _ in range(6):  # 12 → 6 of each kind; the threshold is 10
            async with http.get(f"{url}/v1/keys/{bob.account_id}/1",
                                headers=alice.auth()) as r:
                assert r.status == 200
        notices = []
        while True:
            try:
                notices.append(await recv_json(ws, timeout=0.5))
            except TimeoutError:
                break
    assert notices == [{"type": "keys_low", "one_time_prekeys": 9, "one_time_kem_prekeys": 9}]
