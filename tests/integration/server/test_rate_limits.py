"""Rate limits and registration proof of work on a real server (issue 13 §2).

The normal client talks from 127.0.0.1 (exempt by default); attackers and the victim's
friends come from 127.0.0.2 and 127.0.0.3, each through its own aiohttp connector bound
to that address, so every limit below is the one of the address it is shown for.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterator
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
    recv_json,
    register,
    send_sealed,
    signed_prekey,
)
from veil.client import Client
from veil.client.store import FAST

ATTACKER = "127.0.0.2"
FRIEND = "127.0.0.3"


def _toml(flat: dict[str, Any], rates: dict[str, str]) -> str:
    lines = [f"{k} = {json.dumps(v)}" for k, v in flat.items()]
    lines.append("[limits]")
    lines.append("rates = {" + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}"
                                         for k, v in rates.items()) + "}")
    return "\n".join(lines) + "\n"


def _server(tmp_path: Path, rates: dict[str, str], **flat: Any) -> ServerProcess:
    cfg = tmp_path / "limits.toml"
    cfg.write_text(_toml(flat, rates))
    return ServerProcess(tmp_path / "data", args=["--config", str(cfg)])


@pytest.fixture
def rates() -> dict[str, str]:
    return {}


@pytest.fixture
def flat() -> dict[str, Any]:
    return {}


@pytest.fixture
def limited(tmp_path: Path, rates: dict[str, str], flat: dict[str, Any]
            ) -> Iterator[ServerProcess]:
    proc = _server(tmp_path, rates, **flat).start()
    yield proc
    proc.stop()


def _session(address: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


@pytest.fixture
async def attacker() -> AsyncIterator[aiohttp.ClientSession]:
    async with _session(ATTACKER) as session:
        yield session


@pytest.fixture
async def friend() -> AsyncIterator[aiohttp.ClientSession]:
    async with _session(FRIEND) as session:
        yield session


def _full_registration() -> dict[str, Any]:
    return {"signed_prekey": b64(signed_prekey()),
            "last_resort_kem_prekey": b64(last_resort_kem_prekey())}


@pytest.mark.parametrize("rates", [{"register.address": "1/3600s burst 2"}])
async def test_registration_is_limited_per_address_across_a_restart(
        tmp_path: Path, limited: ServerProcess, attacker: aiohttp.ClientSession,
        friend: aiohttp.ClientSession, http: aiohttp.ClientSession) -> None:
    url = limited.url
    await register(attacker, url)
    await register(attacker, url)

    async def refused(session: aiohttp.ClientSession) -> None:
        body = {"identity_key": b64(os.urandom(32)), "registration_id": 7}
        async with session.post(limited.url + "/v1/accounts", json=body) as r:
            assert r.status == 429
            retry = int(r.headers["Retry-After"])
            assert 1 <= retry <= 3600
            error = (await r.json())["error"]
            assert error["code"] == "rate_limited"
            assert error["details"]["retry_after"] == retry

    await refused(attacker)
    await register(friend, url)          # another address: its own bucket
    await register(http, url)            # loopback: exempt
    limited.stop()
    limited.start()
    # New sessions: the old ones hold keep-alive connections to the stopped process.
    async with _session(ATTACKER) as again, _session(FRIEND) as friend_again:
        await refused(again)             # the bucket came back from disk
        await register(friend_again, limited.url)


@pytest.mark.parametrize("rates", [{"keys_claim.target": "4/3600s burst 4",
                                    "keys_claim.pair": "2/3600s burst 2"}])
async def test_prekey_draining_is_stopped_per_target(
        limited: ServerProcess, attacker: aiohttp.ClientSession,
        friend: aiohttp.ClientSession, http: aiohttp.ClientSession) -> None:
    url = limited.url
    victim = await register(http, url, **_full_registration(),
                            one_time_prekeys=one_time(20))
    other = await register(http, url, **_full_registration(),
                           one_time_prekeys=one_time(5))
    mallory = await register(attacker, url)
    accomplice = await register(friend, url)

    async def claim(session: aiohttp.ClientSession, who: Device, target: Device) -> int:
        async with session.get(f"{url}/v1/keys/{target.account_id}/*",
                               headers=who.auth()) as r:
            return r.status

    # Per (source, target): two from one address, then refused.
    assert [await claim(attacker, mallory, victim) for _ in range(3)] == [200, 200, 429]
    # Per target: a second address gets the two left of the target's four.
    assert [await claim(friend, accomplice, victim) for _ in range(3)] == [200, 200, 429]
    # Others are not affected: another target, and the victim's own address.
    assert await claim(attacker, mallory, other) == 200
    async with http.get(f"{url}/v1/keys/status",
                        headers=victim.auth()) as r:
        assert (await r.json())["one_time_prekeys"] == 16   # 4 of 20 handed out


@pytest.mark.parametrize("flat", [{"max_queue_per_device": 40}])
async def test_a_flood_from_one_address_leaves_room_for_the_victims_friends(
        limited: ServerProcess, attacker: aiohttp.ClientSession,
        friend: aiohttp.ClientSession, http: aiohttp.ClientSession) -> None:
    """The share of one source in one recipient's queue is a quarter of it (10 of 40)."""
    url = limited.url
    victim = await register(http, url)
    statuses = []
    codes = set()
    for _ in range(40):
        status, body = await send_sealed(attacker, url, victim, {1: os.urandom(64)})
        statuses.append(status)
        if status != 200:
            codes.add(body["error"]["code"])
    assert statuses.count(200) == 10
    assert codes == {"rate_limited"}
    for _ in range(5):
        assert (await send_sealed(friend, url, victim, {1: os.urandom(64)}))[0] == 200
        assert (await send_sealed(http, url, victim, {1: os.urandom(64)}))[0] == 200


@pytest.mark.parametrize("rates", [{"submit.socket": "1/3600s burst 3"}])
async def test_a_limited_websocket_gets_an_error_frame_and_stays_open(
        limited: ServerProcess, attacker: aiohttp.ClientSession,
        http: aiohttp.ClientSession) -> None:
    url = limited.url
    victim = await register(http, url)
    mallory = await register(attacker, url)
    for path, headers, extra in (("/v1/websocket", mallory.auth(), {}),
                                 ("/v1/websocket/sealed", {},
                                  {"access_key": b64(victim.access_key or b"")})):
        async with attacker.ws_connect(url.replace("http", "ws") + path,
                                       headers=headers) as ws:
            replies = []
            for req in range(1, 6):
                await ws.send_json({"type": "send", "req": req, "to": victim.account_id,
                                    "messages": [{"device_id": 1,
                                                  "envelope": b64(os.urandom(32))}],
                                    **extra})
                while True:
                    frame = await recv_json(ws)
                    if frame["type"] in ("sent", "error"):
                        replies.append(frame)
                        break
            assert [f["type"] for f in replies] == ["sent"] * 3 + ["error"] * 2
            error = replies[3]["error"]
            assert error["code"] == "rate_limited"
            assert error["details"]["retry_after"] >= 1
            assert not ws.closed
            await ws.send_json({"type": "send", "req": 99, "to": victim.account_id,
                                "messages": [{"device_id": 1,
                                              "envelope": b64(os.urandom(32))}], **extra})
            assert (await recv_json(ws))["req"] == 99


@pytest.mark.parametrize("flat", [{"registration": "pow"}])
async def test_proof_of_work_registration_through_the_client(
        tmp_path: Path, limited: ServerProcess, attacker: aiohttp.ClientSession) -> None:
    body = {"identity_key": b64(os.urandom(32)), "registration_id": 7}
    async with attacker.post(limited.url + "/v1/accounts", json=body) as r:
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "proof_of_work_required"
    async with attacker.get(limited.url + "/v1/accounts/challenge") as r:
        challenge = await r.json()
        assert challenge["required"] is True and challenge["bits"] >= 1
    started = time.perf_counter()
    client = await Client.register(tmp_path / "home", limited.url, passphrase="pw",
                                   kdf=FAST)
    try:
        assert client.me.account
    finally:
        await client.close()
    # Registration with all its keys, the challenge fetched and solved: a few seconds
    # at most on a loaded machine; the solve itself is milliseconds (unit tests).
    assert time.perf_counter() - started < 30
    # A solution registers one account only.
    body["proof_of_work"] = {"challenge": challenge["challenge"], "nonce": "0"}
    async with attacker.post(limited.url + "/v1/accounts", json=body) as r:
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "invalid_proof_of_work"
