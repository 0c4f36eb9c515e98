"""Linked devices with a real server process and real clients (docs/devices.md)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path

import pytest

from tests.integration.client.conftest import new_client
from tests.integration.server.harness import ServerProcess
from veil.client import Client, pending
from veil.client.api import b64
from veil.client.errors import (
    LinkCodeMismatch,
    LinkFailed,
    ServerRejected,
    ServerUnreachable,
    UnapprovedDevice,
)
from veil.client.events import DeviceLinked, Event, SentSynced
from veil.client.store import FAST, Store
from veil.core import devices, keys, primitives, provisioning
from veil.core.provisioning import LinkCode
from veil.server.storage import DATABASE_FILE


def _events(client: Client) -> asyncio.Queue[object]:
    """What the client emits from now on, without a live connection (test-only)."""
    return client._hub.add()


def _drain(queue: asyncio.Queue[object]) -> list[object]:
    return [queue.get_nowait() for _ in range(queue.qsize())]


async def _link(first: Client, home: Path, server: ServerProcess, name: str = "laptop",
                **approve: object) -> tuple[Client, int]:
    pending = await Client.begin_link(home, server.url, passphrase="pw", kdf=FAST)
    finishing = asyncio.create_task(pending.finish(timeout=30))
    device_id = await first.approve_device(pending.code, name=name, **approve)  # type: ignore[arg-type]
    return await finishing, device_id


def _db(server: ServerProcess) -> sqlite3.Connection:
    return sqlite3.connect(server.data_dir / DATABASE_FILE, timeout=10)


async def test_link_brings_identity_contacts_history_and_keeps_the_safety_number(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    alice = await new_client(clients, tmp_path, server, "alice", "alice_ld")
    bob = await new_client(clients, tmp_path, server, "bob", "bob_ld")
    await alice.send("@bob_ld", "before linking")
    assert [m.text for m in await bob.receive_pending()] == ["before linking"]
    await bob.send(alice.account, "hi alice")
    assert [m.text for m in await alice.receive_pending()] == ["hi alice"]
    await alice.verify(bob.account)
    number = (await bob.safety_number(alice.account)).digits
    bob_events = _events(bob)

    laptop, device_id = await _link(alice, tmp_path / "laptop", server)
    clients.append(laptop)
    assert device_id == 2
    assert (laptop.account, laptop.me.device_id) == (alice.account, 2)
    assert laptop.identity == alice.identity
    assert [(e.direction, e.text) for e in laptop.history(bob.account)] == \
        [("out", "before linking"), ("in", "hi alice")]
    [contact] = laptop.contacts()
    assert (contact.account, contact.username, contact.verified) == \
        (bob.account, "bob_ld", True)
    listed = {d.device_id: d for d in await alice.devices()}
    assert set(listed) == {1, 2} and listed[2].name == "laptop" and listed[1].current
    assert all(d.approved for d in listed.values())

    # A message to the two-device account reaches both; Bob hears of the new device.
    sent = await bob.send(alice.account, "to both of you")
    assert sent.devices == 2
    assert [m.text for m in await alice.receive_pending()] == ["to both of you"]
    assert [m.text for m in await laptop.receive_pending()] == ["to both of you"]
    assert DeviceLinked(alice.account, 2) in _drain(bob_events)
    assert (await bob.safety_number(alice.account)).digits == number
    assert (await laptop.safety_number(bob.account)).digits == number

    # What the laptop sends reaches Bob and is synced to Alice's first device.
    phone_events = _events(alice)
    await laptop.send(bob.account, "from the laptop")
    assert [(m.text, m.device) for m in await bob.receive_pending()] == \
        [("from the laptop", 2)]
    assert await alice.receive_pending() == []          # not shown as incoming
    assert [(e.direction, e.text) for e in alice.history(bob.account)][-1] == \
        ("out", "from the laptop")
    synced = [e for e in _drain(phone_events) if isinstance(e, SentSynced)]
    assert [(e.conversation, e.text, e.device) for e in synced] == \
        [(bob.account, "from the laptop", 2)]
    assert alice.account not in [c.account for c in alice.contacts()]
    assert [c.peer for c in alice.conversations()] == [bob.account]
    # And the other way round: the first device's message is synced to the laptop.
    await alice.send(bob.account, "from the phone")
    assert await laptop.receive_pending() == []
    assert [e.text for e in laptop.history(bob.account)][-1] == "from the phone"
    assert [m.text for m in await bob.receive_pending()] == ["from the phone"]


async def test_no_history_when_asked_and_a_wrong_code_fails(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    alice = await new_client(clients, tmp_path, server, "alice2")
    bob = await new_client(clients, tmp_path, server, "bob2")
    await alice.send(bob.account, "old news")
    with pytest.raises(LinkFailed, match="no new device is waiting"):
        await alice.approve_device(LinkCode(os.urandom(10), os.urandom(16), os.urandom(4)).text())
    with pytest.raises(LinkFailed, match="link code"):
        await alice.approve_device("ABCD-EFGH")
    pending = await Client.begin_link(tmp_path / "tablet", server.url, passphrase="pw",
                                      kdf=FAST)
    typo = LinkCode.parse(pending.code)
    wrong = LinkCode(typo.channel_id, bytes(16), typo.check_value).text()   # secret typo
    with pytest.raises(LinkCodeMismatch):
        await alice.approve_device(wrong)
    finishing = asyncio.create_task(pending.finish(timeout=30))
    await alice.approve_device(pending.code, history_days=0)
    tablet = await finishing
    clients.append(tablet)
    assert tablet.history(bob.account) == []
    assert [c.account for c in tablet.contacts()] == [bob.account]


async def test_a_key_substituted_by_the_server_is_refused(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    alice = await new_client(clients, tmp_path, server, "alice3")
    pending = await Client.begin_link(tmp_path / "victim", server.url, passphrase="pw",
                                      kdf=FAST)
    channel = LinkCode.parse(pending.code).channel_id
    with _db(server) as db:                   # the server swaps in a key of its own
        db.execute("UPDATE provisioning_channels SET public_key = ? WHERE id = ?",
                   (os.urandom(32), channel))
    with pytest.raises(LinkCodeMismatch, match="substituted"):
        await alice.approve_device(pending.code)
    with _db(server) as db:                   # nothing was posted to the channel
        (message,) = db.execute("SELECT message FROM provisioning_channels WHERE id = ?",
                                (channel,)).fetchone()
    assert message is None
    assert [d.device_id for d in await alice.devices()] == [1]
    await pending.close()


async def test_a_payload_the_server_seals_to_the_new_device_is_refused(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    """The server stores E and knows the channel id, so it can seal a whole account of
    its own to E (its identity, a self-signed approval, its trust root); without the
    code's secret the new device refuses it and writes nothing."""
    alice = await new_client(clients, tmp_path, server, "alice6")
    home = tmp_path / "mitm"
    pending = await Client.begin_link(home, server.url, passphrase="pw", kdf=FAST)
    channel = LinkCode.parse(pending.code).channel_id
    with _db(server) as db:
        (public,) = db.execute("SELECT public_key FROM provisioning_channels WHERE id = ?",
                               (channel,)).fetchone()
    evil = keys.IdentityKeyPair.generate()
    account = bytes.fromhex(alice.account)
    approval = devices.DeviceApproval.sign(evil, account, 2, 1234, 1).to_bytes()
    body = {"v": 1, "identity": b64(evil.to_bytes()), "account": alice.account,
            "device_id": 2, "registration_id": 1234, "approval": b64(approval),
            "profile_key": b64(os.urandom(32)), "username": "alice6",
            "trust_root": b64(os.urandom(32)), "min_server_key_id": 0, "name": None,
            "devices": [], "contacts": [], "history": []}
    guessed = LinkCode.create(channel, os.urandom(16), bytes(public))   # no secret
    forged = provisioning.seal(json.dumps(body).encode(), guessed, bytes(public),
                               primitives.x25519_generate())
    with _db(server) as db:
        db.execute("UPDATE provisioning_channels SET message = ? WHERE id = ?",
                   (forged, channel))
    with pytest.raises(LinkFailed, match="nothing was written"):
        await pending.finish(timeout=30)
    assert not Store.exists(home)
    assert not home.exists() or not any(home.iterdir())
    assert [d.device_id for d in await alice.devices()] == [1]


async def test_a_device_the_server_added_alone_is_refused(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    bob = await new_client(clients, tmp_path, server, "bob4")
    carol = await new_client(clients, tmp_path, server, "carol4")
    account = bytes.fromhex(bob.account)
    with _db(server) as db:                   # a slot with Bob's keys but no approval
        db.execute(
            "INSERT INTO devices (account_id, device_id, registration_id, token_hash, "
            "identity_key, signed_prekey, last_resort_kem_prekey, created_at) "
            "SELECT account_id, 2, 77, token_hash, identity_key, signed_prekey, "
            "last_resort_kem_prekey, created_at FROM devices WHERE account_id = ? "
            "AND device_id = 1", (account,))
    with pytest.raises(UnapprovedDevice, match="not approved"):
        await carol.send(bob.account, "for bob")
    with _db(server) as db:
        queued = db.execute("SELECT COUNT(*) FROM envelopes WHERE account_id = ?",
                            (account,)).fetchone()[0]
    assert queued == 0
    assert [d.device_id for d in await bob.devices()] == [1]     # Bob ignores it too
    with _db(server) as db:
        db.execute("DELETE FROM devices WHERE account_id = ? AND device_id = 2", (account,))


async def test_remove_device_revokes_it_at_once(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    alice = await new_client(clients, tmp_path, server, "alice5")
    bob = await new_client(clients, tmp_path, server, "bob5")
    await bob.send(alice.account, "hello")
    laptop, device_id = await _link(alice, tmp_path / "laptop5", server)
    clients.append(laptop)
    live = laptop.events()
    seen: list[Event] = []

    async def until_connected() -> None:
        async for event in live:
            seen.append(event)
            if getattr(event, "state", None) == "connected":
                return
    await asyncio.wait_for(until_connected(), 15)
    await alice.remove_device(device_id)

    async def until_refused() -> None:
        async for event in live:
            seen.append(event)
    with pytest.raises(ServerRejected) as refused:     # its socket closed, then refused
        await asyncio.wait_for(until_refused(), 15)
    assert refused.value.status == 401
    await live.aclose()
    with pytest.raises(ServerRejected) as info:
        await laptop.receive_pending()
    assert info.value.status == 401
    assert [d.device_id for d in await alice.devices()] == [1]
    # Contacts drop it through the device-list reconciliation.
    assert (await bob.send(alice.account, "just you now")).devices == 1
    assert [m.text for m in await alice.receive_pending()][-1] == "just you now"


async def test_linked_devices_are_in_the_accounts_groups(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    """Issue 11: a group created by an account with a linked laptop has the laptop in
    it; a phone linked later joins the account's groups by Welcome from the approving
    device (an account may always add its own devices)."""
    alice = await new_client(clients, tmp_path, server, "alice7")
    bob = await new_client(clients, tmp_path, server, "bob7", "bob_ld7")
    await alice.send("@bob_ld7", "hello")                 # a contact
    await bob.receive_pending()
    laptop, _ = await _link(alice, tmp_path / "laptop7", server)
    clients.append(laptop)
    info = await alice.create_group("family", members=["@bob_ld7"])
    assert [m.devices for m in alice.members(info.id) if m.account == alice.account] == \
        [(1, 2)]
    await laptop.receive_pending()                          # the Welcome
    assert laptop.group(info.id).active
    await bob.receive_pending()
    await bob.send_group(info.id, "hi alice's devices")
    assert [m.text for m in await laptop.receive_pending()] == ["hi alice's devices"]
    assert [m.text for m in await alice.receive_pending()] == ["hi alice's devices"]

    phone, phone_id = await _link(alice, tmp_path / "phone7", server, name="phone")
    clients.append(phone)
    await alice.sync_groups()            # the phone's KeyPackages are published: it joins
    assert phone_id in next(m.devices for m in alice.members(info.id)
                            if m.account == alice.account)
    await phone.receive_pending()
    assert phone.group(info.id).active and phone.group(info.id).name == "family"
    await bob.sync_groups()
    await laptop.sync_groups()
    assert {m.account: m.devices for m in bob.members(info.id)}[alice.account] == \
        (1, 2, phone_id)
    await bob.send_group(info.id, "welcome, phone")
    assert [m.text for m in await phone.receive_pending()] == ["welcome, phone"]
    assert [m.text for m in await laptop.receive_pending()] == ["welcome, phone"]
    # Bob is no admin, yet his newly linked tablet joins: a member may add a device of
    # its own account (its Welcome is accepted, the commit is no violation anywhere).
    events = _events(alice)
    tablet, tablet_id = await _link(bob, tmp_path / "tablet7", server, name="tablet")
    clients.append(tablet)
    await bob.sync_groups()
    await tablet.receive_pending()
    assert tablet.group(info.id).active
    await alice.sync_groups()
    assert {m.account: m.devices for m in alice.members(info.id)}[bob.account] == \
        (1, tablet_id)
    assert not [e for e in _drain(events) if getattr(e, "change", "") == "policy_violation"]
    await laptop.send_group(info.id, "from the laptop")
    assert [m.text for m in await tablet.receive_pending()] == ["from the laptop"]
    assert [m.text for m in await bob.receive_pending()] == ["from the laptop"]


async def test_a_sync_that_cannot_go_at_once_waits_in_the_outbox_and_goes_once(
        server: ServerProcess, clients: list[Client], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sent message is delivered even when its sync to the account's other devices
    cannot go (the server unreachable just then); the sync waits in the outbox, hidden
    from the person's list, survives a restart and reaches the other device once."""
    alice = await new_client(clients, tmp_path, server, "alice8")
    bob = await new_client(clients, tmp_path, server, "bob8")
    await bob.send(alice.account, "hello")
    await alice.receive_pending()
    laptop, _ = await _link(alice, tmp_path / "laptop8", server)
    clients.append(laptop)
    api = laptop._ctx.api
    real_call = api.call
    own_path = f"/v1/messages/{alice.account}"

    async def unreachable_for_syncs(method: str, path: str, *args: object,
                                    **kwargs: object) -> object:
        if path == own_path:
            raise ServerUnreachable("the server cannot be reached (test)")
        return await real_call(method, path, *args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(api, "call", unreachable_for_syncs)
    sent = await laptop.send(bob.account, "from the laptop, synced later")
    assert sent.devices == 1
    assert [m.text for m in await bob.receive_pending()] == ["from the laptop, synced later"]
    assert laptop.outbox() == []                     # not one of the person's messages
    waiting = pending.all_pending(laptop._ctx.store)
    assert [(m.kind, m.sync_to, m.stage) for m in waiting] == \
        [(pending.SYNC_KIND, bob.account, "sealed")]
    assert await laptop.flush_outbox() == []         # still unreachable: kept
    assert len(pending.all_pending(laptop._ctx.store)) == 1
    await alice.receive_pending()
    assert "from the laptop, synced later" not in [e.text for e in alice.history(bob.account)]

    monkeypatch.setattr(api, "call", real_call)
    phone_events = _events(alice)
    assert await laptop.flush_outbox() == []         # a sync is no OutboxSent
    assert pending.all_pending(laptop._ctx.store) == []
    await alice.receive_pending()
    assert [e.text for e in alice.history(bob.account)].count(
        "from the laptop, synced later") == 1
    synced = [e for e in _drain(phone_events) if isinstance(e, SentSynced)]
    assert [(e.conversation, e.text, e.device) for e in synced] == \
        [(bob.account, "from the laptop, synced later", 2)]
