"""Key directory (prekey exhaustion, last-resort fallback, keys_low) and usernames."""

from __future__ import annotations

import asyncio
import base64
import os

import aiohttp

from tests.integration.server.harness import (
    ServerProcess,
    b64,
    identity_key,
    last_resort_kem_prekey,
    one_time,
    recv_json,
    register,
    signed_prekey,
)


async def test_prekey_exhaustion_falls_back_to_last_resort(
    server: ServerProcess, http: aiohttp.ClientSession
):
    last_resort = last_resort_kem_prekey()
    bob = await register(
        http, server.url, signed_prekey=b64(signed_prekey()),
        last_resort_kem_prekey=b64(last_resort),
        one_time_prekeys=one_time(2), one_time_kem_prekeys=one_time(1, kem=True),
    )
    alice = await register(http, server.url)
    seen_ec, seen_kem = [], []
    for _ in range(4):
        async with http.get(f"{server.url}/v1/keys/{bob.account_id}/1",
                            headers=alice.auth()) as r:
            assert r.status == 200
            [dev] = (await r.json())["devices"]
        assert dev["device_id"] == 1 and dev["registration_id"] == 7
        assert dev["last_resort_kem_prekey"] == b64(last_resort)
        seen_ec.append(dev["one_time_prekey"] and dev["one_time_prekey"]["key_id"])
        seen_kem.append(dev["one_time_kem_prekey"] and dev["one_time_kem_prekey"]["key_id"])
    assert seen_ec == [1, 2, None, None]
    assert seen_kem == [1, None, None, None]
    async with http.get(server.url + "/v1/keys/status", headers=bob.auth()) as r:
        status = await r.json()
    assert status == {"one_time_prekeys": 0, "one_time_kem_prekeys": 0,
                      "has_signed_prekey": True, "has_last_resort_kem_prekey": True,
                      "low": True}


async def test_replenish_and_keys_low_notice(server: ServerProcess, http: aiohttp.ClientSession):
    bob = await register(http, server.url, signed_prekey=b64(signed_prekey()),
                         last_resort_kem_prekey=b64(last_resort_kem_prekey()))
    async with http.put(server.url + "/v1/keys", headers=bob.auth(), json={
        "one_time_prekeys": one_time(11), "one_time_kem_prekeys": one_time(11, kem=True),
    }) as r:
        counts = await r.json()
    assert counts["one_time_prekeys"] == 11 and counts["low"] is False
    async with http.put(server.url + "/v1/keys", headers=bob.auth(),
                        json={"one_time_prekeys": one_time(1, start=5)}) as r:
        assert r.status == 409 and (await r.json())["error"]["code"] == "duplicate_prekey"
    alice = await register(http, server.url)
    async with http.ws_connect(server.url + "/v1/websocket", headers=bob.auth()) as ws:
        for _ in range(2):
            async with http.get(f"{server.url}/v1/keys/{bob.account_id}/*",
                                headers=alice.auth()) as r:
                assert r.status == 200
        notice = await recv_json(ws)
    assert notice == {"type": "keys_low", "one_time_prekeys": 9, "one_time_kem_prekeys": 9}


async def test_badly_signed_upload_is_rejected_and_stores_nothing(
    server: ServerProcess, http: aiohttp.ClientSession
):
    bob = await register(http, server.url, signed_prekey=b64(signed_prekey()),
                         last_resort_kem_prekey=b64(last_resort_kem_prekey()),
                         one_time_prekeys=one_time(2), one_time_kem_prekeys=one_time(2, kem=True))
    async with http.get(server.url + "/v1/keys/status", headers=bob.auth()) as r:
        before = await r.json()
    kem = one_time(3, start=10, kem=True)
    raw = bytearray(base64.b64decode(kem[2]["key"]))
    raw[-1] ^= 1  # the signature is the last 64 bytes of the record
    kem[2]["key"] = b64(bytes(raw))
    async with http.put(server.url + "/v1/keys", headers=bob.auth(), json={
        "signed_prekey": b64(signed_prekey(2)), "one_time_prekeys": one_time(3, start=10),
        "one_time_kem_prekeys": kem,
    }) as r:
        body = await r.json()
    assert r.status == 422 and body["error"]["code"] == "validation_failed"
    assert body["error"]["message"] == "one_time_kem_prekeys[2]: signature does not verify"
    async with http.get(server.url + "/v1/keys/status", headers=bob.auth()) as r:
        assert await r.json() == before
    assert before["one_time_prekeys"] == 2 and before["one_time_kem_prekeys"] == 2


async def test_concurrent_fetches_hand_out_each_key_once(
    server: ServerProcess, http: aiohttp.ClientSession
):
    bob = await register(http, server.url, one_time_prekeys=one_time(10))
    alice = await register(http, server.url)

    async def fetch() -> int | None:
        async with http.get(f"{server.url}/v1/keys/{bob.account_id}/1",
                            headers=alice.auth()) as r:
            key = (await r.json())["devices"][0]["one_time_prekey"]
            return None if key is None else int(key["key_id"])

    got = await asyncio.gather(*(fetch() for _ in range(25)))
    handed = [k for k in got if k is not None]
    assert sorted(handed) == list(range(1, 11))


async def test_bundle_fetch_needs_credentials_or_access_key(
    server: ServerProcess, http: aiohttp.ClientSession
):
    bob = await register(http, server.url, one_time_prekeys=one_time(3))
    async with http.get(f"{server.url}/v1/keys/{bob.account_id}/1") as r:
        assert r.status == 401
    assert bob.access_key is not None
    async with http.get(f"{server.url}/v1/keys/{bob.account_id}/1",
                        headers={"Veil-Access-Key": b64(bob.access_key)}) as r:
        assert r.status == 200
    async with http.get(f"{server.url}/v1/keys/{bob.account_id}/9",
                        headers=bob.auth()) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "device_not_found"


async def test_username_lookup(server: ServerProcess, http: aiohttp.ClientSession):
    name = "Bob_" + os.urandom(4).hex()
    bob = await register(http, server.url, username=name)
    alice = await register(http, server.url)
    async with http.get(f"{server.url}/v1/usernames/{name.upper()}",
                        headers=alice.auth()) as r:
        assert r.status == 200
        assert await r.json() == {"account_id": bob.account_id, "username": name.lower()}
    async with http.get(f"{server.url}/v1/usernames/{name}") as r:
        assert r.status == 401
    async with http.get(f"{server.url}/v1/usernames/nobody_{os.urandom(4).hex()}",
                        headers=alice.auth()) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "username_not_found"
    # Unique, case-insensitively.
    async with http.put(server.url + "/v1/accounts/me/username", headers=alice.auth(),
                        json={"username": name.lower()}) as r:
        assert r.status == 409 and (await r.json())["error"]["code"] == "username_taken"
    async with http.post(server.url + "/v1/accounts", json={
        "identity_key": b64(identity_key()), "registration_id": 1, "username": name,
    }) as r:
        assert r.status == 409
    # Released names can be taken.
    async with http.delete(server.url + "/v1/accounts/me/username", headers=bob.auth()) as r:
        assert r.status == 204
    async with http.put(server.url + "/v1/accounts/me/username", headers=alice.auth(),
                        json={"username": name}) as r:
        assert r.status == 200
    async with http.get(server.url + "/v1/accounts/me", headers=alice.auth()) as r:
        me = await r.json()
    assert me["username"] == name.lower() and me["devices"] == [1]


async def test_client_supplied_token_is_not_echoed(
    server: ServerProcess, http: aiohttp.ClientSession
):
    token = os.urandom(32)
    async with http.post(server.url + "/v1/accounts", json={
        "identity_key": b64(identity_key()), "registration_id": 1, "token": b64(token),
    }) as r:
        body = await r.json()
    assert r.status == 201 and "token" not in body
    user = f"{body['account_id']}.1:{b64(token)}"
    async with http.get(server.url + "/v1/accounts/me",
                        headers={"Authorization": "Basic " + b64(user.encode())}) as r:
        assert r.status == 200
