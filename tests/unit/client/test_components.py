"""Real ``Client`` logic against an in-memory server (tests/unit/client/memory_server.py,
behind the injectable transport): no lock across network I/O, typed errors for
malformed answers, device-list reconciliation, prekey top-up, the event stream, the
bounded seen set, the username index. Waits are on events and conditions, never sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.unit.client.memory_server import MemoryServer
from veil.client import Client, contacts, sessions
from veil.client.errors import ClientError, ServerRejected, UnapprovedDevice
from veil.client.events import (
    ConnectionState,
    DeviceLinked,
    Event,
    IdentityChanged,
    KeysLow,
    MessageReceived,
)
from veil.client.store import FAST
from veil.core.devices import DeviceApproval

T = TypeVar("T")
URL = "memory://veil"


async def _client(made: list[Client], server: MemoryServer, tmp_path: Path, name: str,
                  username: str | None = None) -> Client:
    client = await Client.register(tmp_path / name, URL, username=username, passphrase="pw",
                                   kdf=FAST, clock=server.clock, transport=server)
    made.append(client)
    return client


async def _next(it: AsyncIterator[T], timeout: float = 10.0) -> T:
    return await asyncio.wait_for(it.__anext__(), timeout)


async def _until(events: AsyncIterator[Event], kind: type[T]) -> T:
    while True:
        event = await _next(events)
        if isinstance(event, kind):
            return event


# --- item 1: no lock across network I/O ------------------------------------------------

async def test_a_stalled_send_does_not_stall_decryption(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    carol = await _client(made, server, tmp_path, "carol")
    live = alice.messages()
    reached, release = server.hold("PUT", f"/v1/messages/{bob.account}")
    sending = asyncio.create_task(alice.send(bob.account, "held by the server"))
    await asyncio.wait_for(reached.wait(), 10)
    # Alice's send is on the network: Carol's message still reaches her, decrypted and
    # stored, over the live connection.
    await carol.send(alice.account, "while you wait")
    message = await _next(live)
    assert message.text == "while you wait" and not sending.done()
    assert [e.text for e in alice.history(carol.account)] == ["while you wait"]
    # And over HTTP too.
    await carol.send(alice.account, "and once more")
    assert [m.text for m in await alice.receive_pending()] == ["and once more"]
    assert not sending.done()
    release.set()
    sent = await asyncio.wait_for(sending, 10)
    assert sent.devices == 1
    assert [m.text for m in await bob.receive_pending()] == ["held by the server"]
    await live.aclose()


async def test_a_stalled_prekey_upload_does_not_stall_decryption(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    carol = await _client(made, server, tmp_path, "carol")
    server.accounts[alice.account].devices[1].one_time.clear()      # drained
    reached, release = server.hold("PUT", "/v1/keys")
    upkeep = asyncio.create_task(alice.prekeys.run())
    await asyncio.wait_for(reached.wait(), 10)
    await carol.send(alice.account, "during the upload")
    assert [m.text for m in await alice.receive_pending()] == ["during the upload"]
    release.set()
    await asyncio.wait_for(upkeep, 10)


# --- item 2: typed errors for malformed answers ----------------------------------------

async def _reply(value: Any) -> Any:
    async def reply(_: Any) -> Any:
        return value
    return reply


@pytest.mark.parametrize(("method", "prefix", "reply", "call"), [
    ("GET", "/v1/usernames/", (200, {"account_id": 5, "username": "bob"}), "resolve"),
    ("GET", "/v1/usernames/", (200, [1, 2]), "resolve"),
    ("GET", "/v1/messages", (200, {"messages": [{"id": "x"}]}), "receive"),
    ("GET", "/v1/messages", (200, None), "receive"),
    ("GET", "/v1/keys/", (200, {"devices": "none"}), "send"),
    ("GET", "/v1/keys/", (200, {"devices": [{"device_id": 1, "identity_key": "!",
                                           "signed_prekey": "!",
                                           "last_resort_kem_prekey": "!"}]}), "send"),
])
async def test_a_malformed_server_answer_is_a_typed_error(
        server: MemoryServer, made: list[Client], tmp_path: Path, method: str, prefix: str,
        reply: Any, call: str) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob", "bob")
    server.answer(method, prefix, await _reply(reply))
    with pytest.raises(ServerRejected) as info:
        if call == "resolve":
            await alice.resolve("@bob")
        elif call == "receive":
            await alice.receive_pending()
        else:
            await alice.send(bob.account, "x")
    assert info.value.server_code == "bad_response" and info.value.status == 502


async def test_an_error_answer_keeps_the_servers_code(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    server.answer("GET", "/v1/usernames/", await _reply(
        (429, {"error": {"code": "rate_limited", "message": "slow down"}})))
    with pytest.raises(ServerRejected) as info:
        await alice.resolve("@someone")
    assert (info.value.status, info.value.server_code) == (429, "rate_limited")
    server.answer("GET", "/v1/messages", await _reply((500, "<html>oops</html>")))
    with pytest.raises(ServerRejected) as info:
        await alice.receive_pending()
    assert (info.value.status, info.value.server_code) == (500, "http_error")


# --- device lists ----------------------------------------------------------------------

async def test_mismatched_devices_are_reconciled(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    assert (await alice.send(bob.account, "one device")).devices == 1
    server.add_device(bob.account, 2, registration_id=7, approval=DeviceApproval.sign(
        bob._identity, bytes.fromhex(bob.account), 2, 7, 0).to_bytes())   # Bob linked one
    sent = await alice.send(bob.account, "two devices")
    assert sent.devices == 2
    assert len(server.accounts[bob.account].devices[2].queue) == 1
    contact = contacts.get(alice._store, bob.account)
    assert contact is not None and contact.devices == [1, 2]
    assert sessions.load(alice._store, bob.account, 2)
    del server.accounts[bob.account].devices[2]      # and removed it again
    assert (await alice.send(bob.account, "one again")).devices == 1
    contact = contacts.get(alice._store, bob.account)
    assert contact is not None and contact.devices == [1]
    assert sessions.load(alice._store, bob.account, 2) == []


async def test_a_device_the_identity_did_not_approve_is_refused(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    await alice.send(bob.account, "one device")
    before = (await alice.safety_number(bob.account)).digits
    server.add_device(bob.account, 2)                # added by the server alone
    with pytest.raises(UnapprovedDevice, match="not approved"):
        await alice.send(bob.account, "refused")
    assert len(server.accounts[bob.account].devices[2].queue) == 0
    assert len(server.accounts[bob.account].devices[1].queue) == 1    # the first one only
    contact = contacts.get(alice._store, bob.account)
    assert contact is not None and 2 not in contact.linked_devices
    assert sessions.load(alice._store, bob.account, 2) == []
    # An approval by another identity is no better; one by Bob's is taken, with a notice.
    server.add_device(bob.account, 2, registration_id=7, approval=DeviceApproval.sign(
        alice._identity, bytes.fromhex(bob.account), 2, 7, 0).to_bytes())
    with pytest.raises(UnapprovedDevice):
        await alice.send(bob.account, "refused again")
    server.add_device(bob.account, 2, registration_id=7, approval=DeviceApproval.sign(
        bob._identity, bytes.fromhex(bob.account), 2, 7, 0).to_bytes())
    queue = alice._hub.add()
    assert (await alice.send(bob.account, "now both")).devices == 2
    events = [queue.get_nowait() for _ in range(queue.qsize())]
    assert DeviceLinked(bob.account, 2) in events
    assert (await alice.safety_number(bob.account)).digits == before


async def test_a_server_that_keeps_mismatching_is_refused_after_three_tries(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    server.answer("PUT", f"/v1/messages/{bob.account}", await _reply(
        (409, {"error": {"code": "mismatched_devices", "message": "m",
                         "details": {"missing_devices": [], "extra_devices": []}}})))
    with pytest.raises(ServerRejected, match="mismatched_devices"):
        await alice.send(bob.account, "never")
    assert server.requests.count(("PUT", f"/v1/messages/{bob.account}")) == 3


# --- prekeys ---------------------------------------------------------------------------

async def test_replenishment_uploads_only_one_time_keys_and_reports_keys_low(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    bob = await _client(made, server, tmp_path, "bob")
    uploads: list[Any] = []

    async def record(body: Any) -> None:
        uploads.append(body)
    server.answer("PUT", "/v1/keys", record)
    device = server.accounts[bob.account].devices[1]
    device.one_time.clear()
    device.one_time_kem = device.one_time_kem[:5]
    events = bob.events()
    low = await _until(events, KeysLow)
    assert (low.one_time_prekeys, low.one_time_kem_prekeys) == (0, 5)
    await server.wait_for(lambda: len(device.one_time) == 100)
    assert len(device.one_time_kem) == 105
    # Nothing was due for rotation: no placeholder signed or last-resort records.
    assert [sorted(body) for body in uploads] == [["one_time_kem_prekeys",
                                                   "one_time_prekeys"]]
    await events.aclose()


# --- item 4: events ----------------------------------------------------------------------

async def test_events_tell_messages_identity_changes_and_the_connection(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    server.reachable = False
    events = alice.events()
    assert await _next(events) == ConnectionState("connecting")
    assert await _next(events) == ConnectionState("disconnected", "server_unreachable")
    server.reachable = True                          # the backoff retries on its own
    assert await _until(events, ConnectionState) == ConnectionState("connecting")
    assert await _until(events, ConnectionState) == ConnectionState("connected")
    await bob.send(alice.account, "hello")
    received = await _until(events, MessageReceived)
    assert received.conversation == bob.account and received.message.text == "hello"
    # Bob's key changes after Alice verified it: the event, then the refusal to send.
    await alice.verify(bob.account)
    impostor = await _client(made, server, tmp_path, "impostor")
    server.accounts[bob.account].identity = server.accounts[impostor.account].identity
    server.accounts[bob.account].devices[1] = server.accounts[impostor.account].devices[1]
    sessions.delete(alice._store, bob.account, 1)    # so the next send claims a bundle
    with pytest.raises(ClientError):
        await alice.send(bob.account, "to whom?")
    changed = await _until(events, IdentityChanged)
    assert changed == IdentityChanged(bob.account, True)
    await events.aclose()


async def test_a_refused_connection_is_raised_to_the_reader(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    server.accounts[alice.account].devices[1].token = b"revoked"
    with pytest.raises(ServerRejected):
        await _next(alice.messages())


# --- items 5 and 6 -----------------------------------------------------------------------

async def test_the_seen_set_is_bounded(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    alice._inbox.seen_limit = 3
    for i in range(6):
        await bob.send(alice.account, f"m{i}")
    assert len(await alice.receive_pending()) == 6
    assert alice._store.count("seen") == 3


async def test_usernames_are_found_through_the_index(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob", "bob")
    assert (await alice.resolve("@Bob")).account == bob.account
    lookups = [r for r in server.requests if r[1].startswith("/v1/usernames/")]
    assert (await alice.resolve("@bob")).account == bob.account
    assert [r for r in server.requests if r[1].startswith("/v1/usernames/")] == lookups


async def test_private_state_is_not_public(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    assert not hasattr(alice.me, "token") and not hasattr(alice.me, "profile_key")
    assert alice.me.account == alice.account and alice.me.device_id == 1
    with pytest.raises(ClientError):
        alice.set_relay(object())                    # type: ignore[arg-type]
    assert alice.relay is None


async def test_the_username_index_is_built_for_older_homes(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob", "bob")
    await alice.resolve("@bob")
    alice._store.delete_kind("username")             # as a home from before the index
    alice._store.delete("self", "username_index")
    before = len(server.requests)
    assert (await alice.resolve("@bob")).account == bob.account
    assert len(server.requests) == before            # found locally, indexed once
    assert alice._store.count("username") == 1


def test_deleting_the_oldest_records_keeps_the_store_verifiable(tmp_path: Path) -> None:
    from veil.client.store import Store
    store = Store.create(tmp_path, None)
    for i in range(5):
        store.put("seen", f"id{i}", b"")
    assert store.delete_oldest("seen", 2) == 2
    assert store.count("seen") == 3
    assert store.get("seen", "id1") is None and store.get("seen", "id2") is not None
    store.close()
    reopened = Store.open(tmp_path, None)            # verifies counts and set hashes
    assert reopened.count("seen") == 3
    reopened.close()


async def test_readers_come_and_go_and_end_when_the_client_closes(
        server: MemoryServer, tmp_path: Path) -> None:
    alice = await Client.register(tmp_path / "alice", URL, passphrase="pw", kdf=FAST,
                                  clock=server.clock, transport=server)
    bob = await Client.register(tmp_path / "bob", URL, passphrase="pw", kdf=FAST,
                                clock=server.clock, transport=server)
    try:
        first = alice.messages()
        await bob.send(alice.account, "one")
        assert (await _next(first)).text == "one"
        await first.aclose()                         # the connection goes with it
        second = alice.messages()                    # and a new one comes at once
        await bob.send(alice.account, "two")
        assert (await _next(second)).text == "two"
        waiting = asyncio.create_task(anext(second, None))
        await alice.close()
        assert await asyncio.wait_for(waiting, 10) is None
    finally:
        await bob.close()


async def test_a_dropped_connection_is_reported_and_made_again(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    events = alice.events()
    assert await _until(events, ConnectionState) == ConnectionState("connecting")
    assert await _until(events, ConnectionState) == ConnectionState("connected")
    server.sockets[-1].frames.put_nowait(None)       # the server hangs up
    assert await _until(events, ConnectionState) == ConnectionState("disconnected", "closed")
    assert await _until(events, ConnectionState) == ConnectionState("connecting")
    assert await _until(events, ConnectionState) == ConnectionState("connected")
    await bob.send(alice.account, "after the reconnect")
    assert (await _until(events, MessageReceived)).message.text == "after the reconnect"
    server.sockets[-1].frames.put_nowait("{not json")
    assert await _until(events, ConnectionState) == ConnectionState("disconnected",
                                                                    "malformed_frame")
    await events.aclose()
