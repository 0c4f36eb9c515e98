"""Linked-device endpoints of a real server process: typed 4xx for what a client or a
stranger can get wrong (docs/devices.md)."""

from __future__ import annotations

import base64
import os
import time

import aiohttp

from tests.integration.server.harness import (
    IDENTITY,
    ServerProcess,
    b64,
    last_resort_kem_prekey,
    register,
    signed_prekey,
)
from veil.core.devices import DeviceApproval


async def _error(r: aiohttp.ClientResponse) -> tuple[int, str]:
    return r.status, (await r.json())["error"]["code"]


def _link_body(account: str, device_id: int, approval: bytes, **extra: object) -> dict:
    return {"device_id": device_id, "registration_id": 9, "identity_key":
            b64(IDENTITY.public.to_bytes()), "token": b64(os.urandom(32)),
            "approval": b64(approval), "signed_prekey": b64(signed_prekey()),
            "last_resort_kem_prekey": b64(last_resort_kem_prekey()), **extra}


async def test_provisioning_channel_errors(server: ServerProcess,
                                           http: aiohttp.ClientSession) -> None:
    me = await register(http, server.url)
    async with http.post(f"{server.url}/v1/provisioning",
                         json={"public_key": b64(b"x" * 31)}) as r:
        assert await _error(r) == (422, "validation_failed")
    async with http.post(f"{server.url}/v1/provisioning",
                         json={"public_key": b64(os.urandom(32))}) as r:
        assert r.status == 201
        channel = (await r.json())["channel_id"]
    cid = base64.b64decode(channel).hex()
    unknown = os.urandom(10).hex()
    async with http.get(f"{server.url}/v1/provisioning/{unknown}/message") as r:
        assert await _error(r) == (404, "provisioning_channel_not_found")
    async with http.get(f"{server.url}/v1/provisioning/{cid}") as r:       # no credentials
        assert await _error(r) == (401, "unauthorized")
    async with http.get(f"{server.url}/v1/provisioning/{cid}/message") as r:
        assert r.status == 200 and (await r.json()) == {"message": None}
    put = f"{server.url}/v1/provisioning/{cid}"
    async with http.put(put, json={"message": b64(b"sealed")}, headers=me.auth()) as r:
        assert r.status == 204
    async with http.put(put, json={"message": b64(b"again")}, headers=me.auth()) as r:
        assert await _error(r) == (409, "provisioning_message_exists")
    async with http.get(f"{server.url}/v1/provisioning/{cid}/message?wait=1") as r:
        assert (await r.json())["message"] == b64(b"sealed")
    async with http.get(f"{server.url}/v1/provisioning/{cid}/message") as r:   # read once
        assert await _error(r) == (404, "provisioning_channel_not_found")
    async with http.get(f"{server.url}/v1/provisioning/zz") as r:
        assert r.status in (400, 401)


async def test_link_needs_a_fresh_approval_by_the_account_identity(
        server: ServerProcess, http: aiohttp.ClientSession) -> None:
    me = await register(http, server.url, signed_prekey=b64(signed_prekey()),
                        last_resort_kem_prekey=b64(last_resort_kem_prekey()))
    account = bytes.fromhex(me.account_id)
    url = f"{server.url}/v1/accounts/{me.account_id}/linked_devices"
    now = int(time.time() * 1000)
    forged = DeviceApproval.sign(IDENTITY, os.urandom(16), 2, 9, now).to_bytes()
    async with http.post(url, json=_link_body(me.account_id, 2, forged)) as r:
        assert await _error(r) == (403, "invalid_approval")
    stale = DeviceApproval.sign(IDENTITY, account, 2, 9, now - 3600_000).to_bytes()
    async with http.post(url, json=_link_body(me.account_id, 2, stale)) as r:
        assert await _error(r) == (403, "invalid_approval")
    taken = DeviceApproval.sign(IDENTITY, account, 1, 9, now).to_bytes()
    async with http.post(url, json=_link_body(me.account_id, 1, taken)) as r:
        assert await _error(r) == (409, "device_id_taken")
    good = DeviceApproval.sign(IDENTITY, account, 2, 9, now).to_bytes()
    async with http.post(f"{server.url}/v1/accounts/{os.urandom(16).hex()}/linked_devices",
                         json=_link_body(me.account_id, 2, good)) as r:
        assert await _error(r) == (404, "account_not_found")
    async with http.post(url, json=_link_body(me.account_id, 2, good)) as r:
        assert r.status == 201 and (await r.json()) == {"device_id": 2}
    async with http.get(f"{server.url}/v1/accounts/me/devices", headers=me.auth()) as r:
        listed = (await r.json())["devices"]
    assert [(d["device_id"], d.get("approval")) for d in listed] == [(1, None),
                                                                     (2, b64(good))]
    async with http.get(f"{server.url}/v1/keys/{me.account_id}/2", headers=me.auth()) as r:
        assert (await r.json())["devices"][0]["approval"] == b64(good)
    mine = DeviceApproval.sign(IDENTITY, account, 1, 99, now).to_bytes()   # wrong reg id
    async with http.put(f"{server.url}/v1/accounts/me/approval", json={"approval": b64(mine)},
                        headers=me.auth()) as r:
        assert await _error(r) == (403, "invalid_approval")
    async with http.delete(f"{server.url}/v1/accounts/me/devices/5", headers=me.auth()) as r:
        assert await _error(r) == (404, "device_not_found")
    async with http.delete(f"{server.url}/v1/accounts/me/devices/2", headers=me.auth()) as r:
        assert r.status == 204
    async with http.delete(f"{server.url}/v1/accounts/me/devices/1", headers=me.auth()) as r:
        assert await _error(r) == (409, "last_device")
