"""The MLS Delivery Service through a real server process, with real MLS groups:
KeyPackage directory, group mailboxes, epoch conflicts, removal, push, the server's view."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import time
from typing import Any

import aiohttp
import pytest

from tests.integration.server.harness import Device, ServerProcess, recv_json, register
from tests.unit.server.mls_fixtures import (
    Staged,
    b64,
    bad_signature,
    join,
    key_package,
    new_group,
    read_cap,
    rollback,
    sha,
    stage_commit,
    write_cap,
)
from veil.core.mls import Group

SECRET_TEXTS = (b"the quarterly numbers are", b"meet at the old harbour")


def now() -> int:
    return int(time.time())


def kp(name: bytes = b"bob", **kw: Any) -> bytes:
    return key_package(name, now(), **kw).key_package.encoded()


def read_h(cap: bytes) -> dict[str, str]:
    return {"Veil-Group-Read": b64(cap)}


def write_h(cap: bytes) -> dict[str, str]:
    return {"Veil-Group-Write": b64(cap)}


async def request(http: aiohttp.ClientSession, method: str, url: str, **kw: Any
                  ) -> tuple[int, Any]:
    async with http.request(method, url, **kw) as r:
        return r.status, await r.json()


class Api:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url

    async def create(self, group: Group) -> tuple[int, Any]:
        return await request(self.http, "POST", self.url + "/v1/groups", json={
            "group_id": b64(group.group_id), "read_verifier": b64(sha(read_cap(group))),
            "write_verifier": b64(sha(write_cap(group)))})

    async def commit(self, group_id: bytes, staged: Staged, write: bytes) -> tuple[int, Any]:
        return await request(self.http, "POST", f"{self.url}/v1/groups/{group_id.hex()}/commits",
                             json=staged.body(), headers=write_h(write))

    async def post(self, group: Group, text: bytes, epoch: int | None = None
                   ) -> tuple[int, Any]:
        return await request(
            self.http, "POST", f"{self.url}/v1/groups/{group.group_id.hex()}/messages",
            json={"epoch": group.epoch if epoch is None else epoch,
                  "message": b64(group.encrypt(text))},
            headers=write_h(write_cap(group)))

    async def fetch(self, group_id: bytes, epoch: int, read: bytes, after: int = 0
                    ) -> tuple[int, Any]:
        return await request(
            self.http, "GET",
            f"{self.url}/v1/groups/{group_id.hex()}/messages?epoch={epoch}&after={after}",
            headers=read_h(read))


async def two_members(api: Api, names: tuple[bytes, bytes] = (b"alice", b"bob")
                      ) -> tuple[Group, Group]:
    alice = new_group(names[0], now())
    assert (await api.create(alice))[0] == 201
    bob_kp = key_package(names[1], now())
    staged = stage_commit(alice, now(), add=[bob_kp.key_package.encoded()])
    status, body = await api.commit(alice.group_id, staged, write_cap(rollback(staged)))
    assert status == 200, body
    assert body["epoch"] == 1
    assert staged.welcome is not None  # delivered as a sealed 1:1 envelope by clients
    return alice, join(staged.welcome, bob_kp, now())


# ---- KeyPackage directory ----------------------------------------------------------------
async def test_key_packages_upload_and_claim(server: ServerProcess, http: aiohttp.ClientSession):
    bob = await register(http, server.url)
    alice = await register(http, server.url)
    url = server.url + "/v1/keys/mls"
    one, two, last = kp(), kp(), kp()
    status, body = await request(http, "PUT", url, headers=bob.auth(), json={
        "key_packages": [b64(one), b64(two)], "last_resort": b64(last)})
    assert status == 200, body
    assert body == {"one_time": 2, "last_resort": 1, "low": True}
    claim = f"{url}/{bob.account_id}"
    handed = []
    for _ in range(2):
        status, body = await request(http, "GET", claim, headers=alice.auth())
        assert status == 200, body
        (entry,) = body["devices"]
        assert entry["device_id"] == bob.device_id and not entry["last_resort"]
        handed.append(entry["key_package"])
    assert sorted(handed) == sorted([b64(one), b64(two)])  # each at most once
    assert bob.access_key is not None
    status, body = await request(http, "GET", claim,
                                 headers={"Veil-Access-Key": b64(bob.access_key)})
    assert status == 200 and body["devices"][0]["last_resort"]
    assert body["devices"][0]["key_package"] == b64(last)
    status, body = await request(http, "GET", claim,
                                 headers={"Veil-Access-Key": b64(os.urandom(16))})
    assert status == 401 and body["error"]["code"] == "invalid_access_key"
    status, body = await request(http, "GET", url, headers=bob.auth())
    assert body == {"one_time": 0, "last_resort": 1, "low": True}


@pytest.mark.parametrize(("make", "message"), [
    (lambda: bad_signature(kp()), "key_packages[1]: signature does not verify"),
    (lambda: key_package(b"bob", now() - 100 * 86400).key_package.encoded(),
     "key_packages[1]: expired"),
])
async def test_a_bad_key_package_is_a_422_naming_it(  # type: ignore[no-untyped-def]
    server: ServerProcess, http: aiohttp.ClientSession, make, message
):
    bob = await register(http, server.url)
    status, body = await request(http, "PUT", server.url + "/v1/keys/mls", headers=bob.auth(),
                                 json={"key_packages": [b64(kp()), b64(make())]})
    assert status == 422 and body["error"]["message"] == message, body
    status, body = await request(http, "GET", server.url + "/v1/keys/mls", headers=bob.auth())
    assert body["one_time"] == 0  # nothing of the refused upload was stored


# ---- group mailboxes ---------------------------------------------------------------------
async def test_group_messages_capabilities_and_stale_epochs(
    server: ServerProcess, http: aiohttp.ClientSession
):
    api = Api(http, server.url)
    alice, bob = await two_members(api)
    status, body = await api.create(alice)
    assert status == 409 and body["error"]["code"] == "group_exists"
    status, body = await api.post(bob, SECRET_TEXTS[0])
    assert status == 200 and body["epoch"] == 1
    status, page = await api.fetch(alice.group_id, 1, read_cap(alice))
    assert status == 200 and not page["epoch_ended"] and page["current_epoch"] == 1
    (message,) = page["messages"]
    got = alice.process(base64.b64decode(message["message"]), now=now())
    assert got.data == SECRET_TEXTS[0]  # type: ignore[union-attr]
    # The body's epoch must be the MLS header's.
    status, body = await api.post(alice, b"mislabelled", epoch=0)
    assert status == 422 and "is of epoch 1, not 0" in body["error"]["message"]
    # Wrong, missing or misplaced capabilities.
    status, body = await api.fetch(alice.group_id, 1, os.urandom(32))
    assert status == 401 and body["error"]["code"] == "invalid_capability"
    status, body = await request(
        http, "GET", f"{server.url}/v1/groups/{alice.group_id.hex()}/messages?epoch=1")
    assert status == 401
    status, body = await request(
        http, "GET", f"{server.url}/v1/groups/{alice.group_id.hex()}/messages?epoch=1",
        headers={**read_h(read_cap(alice)), "Authorization": "Basic eDp5"})
    assert status == 400  # group requests never carry credentials
    status, body = await request(
        http, "GET", f"{server.url}/v1/groups/{alice.group_id.hex()}?epoch=1",
        headers=read_h(read_cap(bob)))
    assert status == 200 and body["epoch"] == 1 and body["last_seq"] == 2


async def test_a_message_of_a_stale_epoch_is_a_409_with_the_current_epoch(
    server: ServerProcess, http: aiohttp.ClientSession
):
    api = Api(http, server.url)
    alice = new_group(b"alice", now())
    assert (await api.create(alice))[0] == 201
    w0, stale = write_cap(alice), alice.encrypt(b"written before the commit")
    staged = stage_commit(alice, now(), add=[kp()])
    assert (await api.commit(alice.group_id, staged, w0))[0] == 200
    status, body = await request(
        http, "POST", f"{server.url}/v1/groups/{alice.group_id.hex()}/messages",
        json={"epoch": 0, "message": b64(stale)}, headers=write_h(w0))
    assert status == 409 and body["error"]["code"] == "epoch_conflict"
    assert body["error"]["details"] == {"current_epoch": 1}
    status, body = await api.commit(alice.group_id, staged, w0)  # a replayed commit
    assert status == 409 and body["error"]["details"] == {"current_epoch": 1}


async def test_two_commits_for_one_epoch_one_wins_even_concurrently(
    server: ServerProcess, http: aiohttp.ClientSession
):
    api = Api(http, server.url)
    alice, bob = await two_members(api)
    w1 = write_cap(alice)
    by_alice = stage_commit(alice, now(), update=True)
    by_bob = stage_commit(bob, now(), update=True)
    results = await asyncio.gather(api.commit(alice.group_id, by_alice, w1),
                                   api.commit(alice.group_id, by_bob, w1))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 409], results
    loser = next(body for status, body in results if status == 409)
    assert loser["error"]["code"] == "epoch_conflict"
    assert loser["error"]["details"] == {"current_epoch": 2}
    # Epoch 1 ends with exactly one commit: the winner's.
    _, page = await api.fetch(alice.group_id, 1, read_cap(rollback(by_alice)))
    assert page["epoch_ended"] and [m["commit"] for m in page["messages"]] == [True]


async def test_a_removed_member_cannot_read_or_write_after_the_removing_commit(
    server: ServerProcess, http: aiohttp.ClientSession
):
    api = Api(http, server.url)
    alice, bob = await two_members(api)
    remove = stage_commit(alice, now(), remove=[bob.my_leaf])
    assert (await api.commit(alice.group_id, remove, write_cap(bob)))[0] == 200
    assert (await api.post(alice, SECRET_TEXTS[1]))[0] == 200
    # Bob's best guesses at epoch 2: his own epoch-1 capabilities, or random ones.
    for cap in (read_cap(bob), write_cap(bob), os.urandom(32)):
        status, _ = await api.fetch(alice.group_id, 2, cap)
        assert status == 401
        status, _ = await request(
            http, "POST", f"{server.url}/v1/groups/{alice.group_id.hex()}/messages",
            json={"epoch": 2, "message": b64(alice.encrypt(b"x"))}, headers=write_h(cap))
        assert status == 401
    status, page = await api.fetch(alice.group_id, 2, read_cap(alice))
    assert status == 200 and len(page["messages"]) == 1


async def test_push_over_the_device_and_the_sealed_socket(
    server: ServerProcess, http: aiohttp.ClientSession
):
    api = Api(http, server.url)
    alice, bob = await two_members(api)
    device: Device = await register(http, server.url)
    ws_url = server.url.replace("http", "ws") + "/v1/websocket"
    async with http.ws_connect(ws_url, headers=device.auth()) as bob_ws, \
            http.ws_connect(ws_url + "/sealed") as alice_ws:
        for ws, member, req in ((bob_ws, bob, 1), (alice_ws, alice, 2)):
            await ws.send_str(json.dumps({
                "type": "group_subscribe", "req": req, "group_id": b64(member.group_id),
                "epoch": 1, "read": b64(read_cap(member))}))
            reply = await recv_group(ws)
            assert reply["type"] == "group_subscribed" and reply["req"] == req, reply
            assert reply["current_epoch"] == 1 and reply["last_seq"] == 1
        status, body = await api.post(alice, b"pushed")
        assert status == 200
        for ws in (bob_ws, alice_ws):
            frame = await recv_group(ws)
            assert frame["type"] == "group_message" and frame["seq"] == body["seq"]
        staged = stage_commit(bob, now(), update=True)
        assert (await api.commit(bob.group_id, staged, write_cap(rollback(staged))))[0] == 200
        for ws in (bob_ws, alice_ws):
            frame = await recv_group(ws)
            assert frame["type"] == "group_message" and frame["commit"]
            assert (await recv_group(ws)) == {"type": "group_epoch",
                                              "group_id": b64(bob.group_id), "epoch": 2}
        # A wrong capability is an error frame, and the socket stays open.
        await bob_ws.send_str(json.dumps({
            "type": "group_subscribe", "req": 3, "group_id": b64(bob.group_id), "epoch": 2,
            "read": b64(os.urandom(32))}))
        error = await recv_group(bob_ws)
        assert error["type"] == "error" and error["error"]["code"] == "invalid_capability"
        await bob_ws.send_str(json.dumps({
            "type": "group_subscribe", "req": 4, "group_id": b64(bob.group_id), "epoch": 2,
            "read": b64(read_cap(bob)), "after": 3}))
        assert (await recv_group(bob_ws))["type"] == "group_subscribed"


async def recv_group(ws: aiohttp.ClientWebSocketResponse) -> Any:
    """The next frame that is not a key notice."""
    while True:
        frame = await recv_json(ws)
        if frame["type"] not in ("keys_low", "mls_keys_low"):
            return frame


async def test_the_server_holds_no_plaintext_and_no_account_in_group_tables(
    server: ServerProcess, http: aiohttp.ClientSession
):
    api = Api(http, server.url)
    names = (b"member-alice-5f1c9e", b"member-bob-a73d02")  # in MLS credentials only
    _, bob = await two_members(api, names)
    for text in SECRET_TEXTS:
        assert (await api.post(bob, text))[0] == 200
    accounts = [bytes.fromhex((await register(http, server.url)).account_id)]
    database = server.data_dir / "veil.sqlite3"
    blob = b"".join(p.read_bytes() for p in server.data_dir.glob("veil.sqlite3*"))
    for text in (*SECRET_TEXTS, *names):
        assert text not in blob
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        columns = {table: [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
                   for table in ("mls_groups", "group_epochs", "group_messages")}
        account_ids = [bytes(r[0]) for r in conn.execute("SELECT id FROM accounts")]
        group_bytes = b"".join(
            bytes(v) for table in columns for row in conn.execute(f"SELECT * FROM {table}")
            for v in row if isinstance(v, bytes))
    finally:
        conn.close()
    for names in columns.values():
        assert not {"account_id", "device_id", "sender", "name"} & set(names)
    assert accounts[0] in account_ids
    assert all(account not in group_bytes for account in account_ids)
