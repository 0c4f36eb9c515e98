"""Real clients against a real server process: delivery, lookups, keys, restarts."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from tests.integration.client.conftest import new_client
from tests.integration.server.harness import ServerProcess
from veil.client import Client, IncomingMessage
from veil.client.errors import IdentityChanged, ServerUnreachable, UnknownUser
from veil.server.storage import DATABASE_FILE


async def _next(it: object, timeout: float = 10.0) -> IncomingMessage:
    return await asyncio.wait_for(it.__anext__(), timeout)  # type: ignore[attr-defined]


async def test_offline_then_online_delivery_and_sealed_reply(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    alice = await new_client(clients, tmp_path, server, "alice", "alice_o")
    bob = await new_client(clients, tmp_path, server, "bob", "bob_o")
    first = await alice.send("@bob_o", "hello while you were away")
    assert not first.sealed                      # no profile key of Bob's yet
    got = await bob.receive_pending()
    assert [(m.text, m.sender) for m in got] == [("hello while you were away", alice.account)]
    live = bob.messages()
    await asyncio.sleep(0.3)
    await alice.send(bob.account, "and now live")
    message = await _next(live)
    assert message.text == "and now live" and message.sender == alice.account
    reply = await bob.send(alice.account, "hi alice")
    assert reply.sealed                          # Bob learned Alice's profile key
    assert [m.text for m in await alice.receive_pending()] == ["hi alice"]
    again = await alice.send("@bob_o", "sealed now too")
    assert again.sealed
    assert (await _next(live)).text == "sealed now too"
    await live.aclose()
    history = [(e.direction, e.text) for e in bob.history(alice.account)]
    assert history == [("in", "hello while you were away"), ("in", "and now live"),
                       ("out", "hi alice"), ("in", "sealed now too")]
    assert [c.peer for c in bob.conversations()] == [alice.account]


async def test_unknown_user_and_unreachable_server(server: ServerProcess, clients: list[Client],
                                                   tmp_path: Path) -> None:
    alice = await new_client(clients, tmp_path, server, "alice2")
    with pytest.raises(UnknownUser):
        await alice.send("@nobody_here", "x")
    with pytest.raises(UnknownUser):
        await alice.send("not-an-account", "x")
    with pytest.raises(ServerUnreachable):
        await Client.register(tmp_path / "x", "http://127.0.0.1:9", passphrase="pw")


async def test_prekey_exhaustion_falls_back_to_last_resort(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    bob = await new_client(clients, tmp_path, server, "bob3")
    carol = await new_client(clients, tmp_path, server, "carol3")
    # Someone drains Bob's one-time keys (each fetch hands one out, at most once).
    async with aiohttp.ClientSession() as http:
        for _ in range(110):
            async with http.get(f"{server.url}/v1/keys/{bob.account}/*",
                                headers={"Authorization": carol._api._auth or ""}) as r:
                assert r.status == 200
                last = await r.json()
    assert last["devices"][0]["one_time_prekey"] is None
    assert last["devices"][0]["one_time_kem_prekey"] is None
    await carol.send(bob.account, "via the last-resort key")
    assert [m.text for m in await bob.receive_pending()] == ["via the last-resort key"]
    status = await bob._api.request("GET", "/v1/keys/status")   # replenished after receiving
    assert status["one_time_prekeys"] >= 100 and status["one_time_kem_prekeys"] >= 100


async def test_reconnect_after_server_restart(tmp_path: Path, clients: list[Client]) -> None:
    server = ServerProcess(tmp_path / "restart-data").start()
    try:
        alice = await new_client(clients, tmp_path, server, "alice4")
        bob = await new_client(clients, tmp_path, server, "bob4")
        live = bob.messages()
        await alice.send(bob.account, "before")
        assert (await _next(live)).text == "before"
        server.stop()
        server.start()
        await alice.send(bob.account, "after the restart")
        assert (await _next(live, 40)).text == "after the restart"
        await live.aclose()
    finally:
        server.stop()


async def test_server_replay_is_delivered_once(server: ServerProcess, clients: list[Client],
                                               tmp_path: Path) -> None:
    alice = await new_client(clients, tmp_path, server, "alice5")
    bob = await new_client(clients, tmp_path, server, "bob5")
    await alice.send(bob.account, "only once")
    raw = await bob._api.request("GET", "/v1/messages")
    envelope = raw["messages"][0]["envelope"]
    assert [m.text for m in await bob.receive_pending()] == ["only once"]
    # The server (or anyone with the access key) delivers the same envelope again.
    for _ in range(2):
        await alice._api.request("PUT", f"/v1/messages/{bob.account}",
                                 {"messages": [{"device_id": 1, "envelope": envelope}]})
    assert await bob.receive_pending() == []
    assert len(bob.history(alice.account)) == 1
    await alice.send(bob.account, "still fine")
    assert [m.text for m in await bob.receive_pending()] == ["still fine"]


async def test_verified_identity_change_is_refused_loudly(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    alice = await new_client(clients, tmp_path, server, "alice6")
    bob = await new_client(clients, tmp_path, server, "bob6")
    mallory = await new_client(clients, tmp_path, server, "mallory6")
    number = await alice.safety_number(bob.account)
    assert number.digits == (await bob.safety_number(alice.account)).digits
    await alice.verify(bob.account)                  # compared in person
    # The server turns adversary: it answers for Bob's device with Mallory's keys.
    db = sqlite3.connect(server.data_dir / DATABASE_FILE)
    with db:
        keys = db.execute("SELECT identity_key, signed_prekey, last_resort_kem_prekey "
                          "FROM devices WHERE account_id = ?",
                          (bytes.fromhex(mallory.account),)).fetchone()
        db.execute("UPDATE devices SET identity_key = ?, signed_prekey = ?, "
                   "last_resort_kem_prekey = ? WHERE account_id = ?",
                   (*keys, bytes.fromhex(bob.account)))
        db.execute("DELETE FROM one_time_prekeys WHERE account_id = ?",
                   (bytes.fromhex(bob.account),))
    db.close()
    warned: list[str] = []
    alice.on_identity_change = warned.append
    with pytest.raises(IdentityChanged):
        await alice.send(bob.account, "must not reach mallory")
    assert warned == [bob.account]
    assert await mallory.receive_pending() == []
    contact = await alice.resolve(bob.account)
    assert contact.identity_changed and not contact.verified
    with pytest.raises(IdentityChanged):           # and it stays refused until re-verified
        await alice.send(bob.account, "still not")
    assert alice.history(bob.account) == []


def test_nothing_secret_in_the_client_home(tmp_path: Path) -> None:
    # The SDK's store is encrypted at rest (tests/unit/client/test_store.py shows the
    # store itself); here: a whole registered home holds no key material in clear.
    async def go() -> tuple[bytes, Path]:
        server = ServerProcess(tmp_path / "d").start()
        try:
            client = await Client.register(tmp_path / "home", server.url, passphrase="pw")
            private = client._identity.to_bytes()
            await client.close()
            return private, tmp_path / "home"
        finally:
            server.stop()
    private, home = asyncio.run(go())
    for f in home.iterdir():
        data = f.read_bytes()
        assert private[1:33] not in data and private[33:] not in data
    assert os.listdir(home)
