"""Groups against a hostile server (issue 11 §4): a real server process whose database
the test edits under it — messages dropped, reordered, replayed, replaced by forged
commits or by junk, devices added to an account without its approval — and real
clients, which must detect each attack and accept none (docs/groups.md, "Known limits").

Everything is driven over HTTP (``receive_pending`` / ``sync_groups``): no sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.client.test_groups import at, drain, person, texts, trio
from tests.integration.server.harness import ServerProcess
from veil.client import Client
from veil.client import group_store as gs
from veil.client import pending as outbox_store
from veil.client.api import b64
from veil.client.content import Content
from veil.client.errors import GroupBusy, GroupStuck, UnapprovedDevice
from veil.client.events import (
    EventHub,
    GroupMessagesMissing,
    GroupStalled,
    GroupUpdated,
    StallReason,
)
from veil.client.group_core import WELCOME_KIND, _Intent, write_cap
from veil.client.store import FAST
from veil.core.keys import IdentityKeyPair
from veil.core.mls import Credential, Group
from veil.core.mls.codec import decode_all
from veil.core.mls.crypto import get_suite
from veil.core.mls.messages import MLSMessage
from veil.server.storage import DATABASE_FILE

# --- the hostile server: its own database, edited under the running process ---------------


@contextlib.contextmanager
def database(server: ServerProcess) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(server.data_dir / DATABASE_FILE, timeout=10)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def stored(server: ServerProcess, gid: str) -> list[tuple[int, int, bool, bytes]]:
    """(seq, epoch, is_commit, body) of every message the server holds for ``gid``."""
    with database(server) as db:
        return [(int(s), int(e), bool(c), bytes(b)) for s, e, c, b in db.execute(
            "SELECT seq, epoch, is_commit, body FROM group_messages WHERE group_id = ? "
            "ORDER BY seq", (bytes.fromhex(gid),))]


def commits(server: ServerProcess, gid: str) -> list[tuple[int, int, bool, bytes]]:
    return [row for row in stored(server, gid) if row[2]]


def swap(server: ServerProcess, gid: str, a: int, b: int) -> None:
    """Serve message ``a``'s bytes (and commit flag) at seq ``b`` and the other way."""
    rows = {s: (c, body) for s, _, c, body in stored(server, gid)}
    with database(server) as db:
        for seq, other in ((a, b), (b, a)):
            db.execute("UPDATE group_messages SET is_commit = ?, body = ? WHERE group_id = ? "
                       "AND seq = ?", (int(rows[other][0]), rows[other][1],
                                       bytes.fromhex(gid), seq))


def replace(server: ServerProcess, gid: str, seq: int, body: bytes, commit: bool) -> None:
    with database(server) as db:
        db.execute("UPDATE group_messages SET is_commit = ?, body = ?, size = ? WHERE "
                   "group_id = ? AND seq = ?", (int(commit), body, len(body),
                                                bytes.fromhex(gid), seq))


def delete(server: ServerProcess, gid: str, seq: int) -> None:
    with database(server) as db:
        db.execute("DELETE FROM group_messages WHERE group_id = ? AND seq = ?",
                   (bytes.fromhex(gid), seq))


def inject(server: ServerProcess, gid: str, epoch: int, body: bytes, commit: bool,
           seq: int | None = None) -> int:
    """Store ``body`` as a message of ``epoch`` (a new seq unless given)."""
    raw = bytes.fromhex(gid)
    with database(server) as db:
        next_seq, ts = db.execute(
            "SELECT g.next_seq, (SELECT MAX(ts) FROM group_messages m WHERE m.group_id = "
            "g.id) FROM mls_groups g WHERE g.id = ?", (raw,)).fetchone()
        if seq is None:
            seq = int(next_seq)
            db.execute("UPDATE mls_groups SET next_seq = ? WHERE id = ?", (seq + 1, raw))
        db.execute("INSERT INTO group_messages (group_id, seq, epoch, ts, is_commit, size, "
                   "body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (raw, seq, epoch, int(ts), int(commit), len(body), body))
    return seq


# --- what a client holds ------------------------------------------------------------------


def state(client: Client, gid: str) -> tuple[int, bytes, list[tuple[str, int]]]:
    """The epoch, its authenticator (equal only on members of one and the same epoch:
    no fork) and the members (account, device), as the store holds them."""
    saved = client._groups._group(gid).save()
    group = Group.restore(saved, credential_check=gs.check_credential)
    return (group.epoch, group.epoch_authenticator,
            sorted((m.account, m.device) for _, m in gs.members(group)))


def one_group(*members: Client, gid: str) -> None:
    """Every member in the same epoch with the same authenticator: no fork."""
    seen = {state(c, gid)[:2] for c in members}
    assert len(seen) == 1, seen


async def seq_of(client: Client, gid: str, text: str) -> int:
    return (await client.send_group(gid, text)).seq


# --- 1. dropped and reordered messages ------------------------------------------------------


async def test_reordered_and_dropped_application_messages_keep_their_senders(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """The server swaps messages of two senders, and of one sender, and drops one:
    every message shown is attributed to who sent it (the sender is inside the
    PrivateMessage, authenticated), the dropped one is missing, nothing forks."""
    alice, bob, carol = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob), at(carol)])
    await bob.receive_pending()
    await carol.receive_pending()
    s1 = await seq_of(alice, info.id, "one from alice")
    s2 = await seq_of(carol, info.id, "two from carol")
    s3 = await seq_of(alice, info.id, "three from alice")
    s4 = await seq_of(alice, info.id, "four, dropped")
    s5 = await seq_of(alice, info.id, "five from alice")
    swap(server, info.id, s1, s2)            # two senders
    swap(server, info.id, s3, s5)            # one sender: generations out of order
    delete(server, info.id, s4)
    got = await bob.receive_pending()
    assert [(m.text, m.sender) for m in got] == [
        ("two from carol", carol.account), ("one from alice", alice.account),
        ("five from alice", alice.account), ("three from alice", alice.account)]
    assert not any(m.identity_changed for m in got)
    # not forked: everyone goes on talking in the same epoch
    one_group(alice, bob, carol, gid=info.id)
    await bob.send_group(info.id, "after the reordering")
    # a message moved to the seq of one's own post is still read (client fix)
    assert await texts(alice) == ["two from carol", "after the reordering"]
    assert await texts(carol) == ["one from alice", "five from alice", "three from alice",
                                  "after the reordering"]


async def test_a_message_moved_behind_the_commit_keeps_its_sender(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """The server serves an epoch's commit before one of the epoch's application
    messages: the message is read with the epoch it was sent in (the previous epoch's
    keys are kept), from its real sender; the commit is taken once."""
    alice, bob, _ = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob)])
    await bob.receive_pending()
    s1 = await seq_of(alice, info.id, "sent before the rename")
    await alice.rename(info.id, "renamed")
    ((c1, *_),) = [row for row in commits(server, info.id) if row[0] > s1]
    swap(server, info.id, s1, c1)
    got = await bob.receive_pending()
    assert [(m.text, m.sender) for m in got] == [("sent before the rename", alice.account)]
    assert bob.group(info.id).name == "renamed"
    one_group(alice, bob, gid=info.id)
    await alice.send_group(info.id, "in the new epoch")
    assert await texts(bob) == ["in the new epoch"]


async def test_a_withheld_commit_stops_the_member_without_forking_it(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """The server drops the commit that ends an epoch from what it serves one member:
    that member cannot read the next epoch and cannot post (its epoch's write
    capability is refused), so it never continues in a state of its own; once the
    commit is served it catches up into the group's epoch."""
    alice, bob, _ = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob)])
    await bob.receive_pending()
    before = state(bob, info.id)
    await alice.rename(info.id, "renamed")
    (*_, (seq, epoch, _, commit)) = commits(server, info.id)
    delete(server, info.id, seq)
    await alice.send_group(info.id, "in the next epoch")
    assert await texts(bob) == []
    assert state(bob, info.id) == before and bob.group(info.id).name == "g"
    with pytest.raises(GroupBusy):
        await bob.send_group(info.id, "bob, stuck in the old epoch")
    assert await texts(alice) == []
    assert state(bob, info.id) == before
    inject(server, info.id, epoch, commit, True, seq=seq)       # the server relents
    await bob.sync_groups()
    # (read now: returned here, or to the outbox's retry of bob's message, as an event)
    assert "in the next epoch" in [e.text for e in bob.history(info.id)]
    assert bob.group(info.id).name == "renamed"
    one_group(alice, bob, gid=info.id)


# --- 2. replays -----------------------------------------------------------------------------


async def test_replayed_commits_and_messages_are_refused(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """The server serves an already processed commit again as a new seq of the next
    epoch, a commit of an earlier epoch, the same commit twice in its own epoch, and an
    application message twice: each replay is refused, the state is unchanged."""
    alice, bob, _ = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob)])
    await bob.receive_pending()
    await alice.rename(info.id, "first")
    await bob.sync_groups()
    (invite, rename) = commits(server, info.id)
    before = state(bob, info.id)
    s = await seq_of(alice, info.id, "said once")
    (_, epoch, _, said) = next(r for r in stored(server, info.id) if r[0] == s)
    for body in (rename[3], invite[3]):          # processed / older commits, as new ones
        inject(server, info.id, epoch, body, True)
    inject(server, info.id, epoch, said, False)  # the application message again
    queue = bob._hub.add()
    assert await texts(bob) == ["said once"]
    assert state(bob, info.id) == before
    assert bob.group(info.id).name == "first"
    assert not [e for e in drain(queue) if isinstance(e, GroupUpdated)]
    # a commit served twice within its own epoch: the second is stale once merged
    await alice.rename(info.id, "second")
    (*_, last) = commits(server, info.id)
    inject(server, info.id, last[1], last[3], True)
    await bob.sync_groups()
    assert bob.group(info.id).name == "second"
    one_group(alice, bob, gid=info.id)
    await alice.send_group(info.id, "after the replays")
    assert await texts(bob) == ["after the replays"]


# --- 3. forged Welcomes ----------------------------------------------------------------------


def welcome_for(mallory: Client, key_package: bytes, *, creator: str, admins: tuple[str, ...],
                wrong_signer: bool = False) -> bytes:
    """A Welcome of a group mallory makes on the side: its only other leaf claims
    ``creator``'s account (under mallory's identity: a credential is only self-signed),
    its metadata names ``admins``. ``wrong_signer``: signed with a key that is not the
    committer leaf's (a GroupInfo that does not verify)."""
    suite = get_suite(gs.SUITE)
    priv, pub = suite.generate_signature_key_pair()
    credential = gs.make_credential(mallory._ctx.identity, creator, 1, pub)
    now = mallory._groups._now_s()
    group = Group.create(gs.SUITE, credential, now=now, signature_priv=priv,
                         group_id=os.urandom(32),
                         extensions=[gs.Metadata("forged", None, admins).extension()],
                         credential_check=gs.check_credential, private_handshakes=True,
                         capabilities=gs.CAPABILITIES)
    if wrong_signer:
        group._live().sig_priv = suite.generate_signature_key_pair()[0]
    welcome = group.commit(now=now, add=[key_package]).welcome
    assert welcome is not None
    return welcome


async def send_welcome(sender: Client, to: str, welcome: bytes) -> None:
    """As the committer does: a 1:1 message of kind ``group_welcome``."""
    message = outbox_store.PendingMessage(
        id=os.urandom(16).hex(), to=to, timestamp=sender._ctx.clock(), kind=WELCOME_KIND,
        text=json.dumps({"v": 1, "welcome": b64(welcome)}))
    with sender._ctx.store.transaction():
        outbox_store.save(sender._ctx.store, message)
    await sender._outbox.deliver(message)


def tampered(welcome: bytes) -> bytes:
    """The last byte of the encrypted GroupInfo flipped."""
    return welcome[:-1] + bytes([welcome[-1] ^ 1])


async def test_forged_welcomes_are_refused(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """Welcomes that do not verify (a tampered GroupInfo, one signed by another key) and
    well-formed Welcomes sent by someone who is not an admin member of the group they
    open: no group is joined, the KeyPackage is not used up, 1:1 messages go on."""
    alice, bob, mallory = (await person(clients, tmp_path, server, "alice"),
                           await person(clients, tmp_path, server, "bob"),
                           await person(clients, tmp_path, server, "mallory"))
    await mallory.send(bob.account, "hello bob")
    assert await texts(bob) == ["hello bob"]
    forged = []
    for _ in range(4):
        (kp,) = await mallory._groups._claim(bob.account)
        forged.append(kp)
    welcomes = [
        tampered(welcome_for(mallory, forged[0], creator=mallory.account,
                             admins=(mallory.account,))),
        welcome_for(mallory, forged[1], creator=mallory.account, admins=(mallory.account,),
                    wrong_signer=True),
        # alice's account claimed under mallory's key, alice the admin, sent by mallory
        welcome_for(mallory, forged[2], creator=alice.account, admins=(alice.account,)),
        # mallory the admin, but no leaf of hers in the group
        welcome_for(mallory, forged[3], creator=alice.account, admins=(mallory.account,)),
    ]
    queue = bob._hub.add()
    for welcome in welcomes:
        await send_welcome(mallory, bob.account, welcome)
    assert await texts(bob) == []
    assert bob.groups() == []
    assert not [e for e in drain(queue) if isinstance(e, GroupUpdated)]
    for welcome in welcomes:                    # the private halves are still there
        msg = decode_all(welcome, MLSMessage.read)
        assert gs.find_bundle(bob._ctx.store, [s.new_member for s in msg.body.secrets])
    await mallory.send(bob.account, "still talking")
    assert await texts(bob) == ["still talking"]
    await alice.create_group("real", members=[at(bob)])
    await bob.receive_pending()
    assert [g.name for g in bob.groups()] == ["real"]


# --- 4. members the server adds -------------------------------------------------------------


def fresh_credential(account: str, device: int) -> tuple[bytes, Credential]:
    """A signature key and a Veil credential under a fresh identity (the server's own)."""
    priv, pub = get_suite(gs.SUITE).generate_signature_key_pair()
    return priv, gs.make_credential(IdentityKeyPair.generate(), account, device, pub)


def fake_group(gid: str, epoch: int, private: bool, now: int) -> Group:
    """A group of the attacker's own with the victim group's id, at its epoch."""
    priv, credential = fresh_credential(os.urandom(16).hex(), 1)
    group = Group.create(gs.SUITE, credential, now=now, signature_priv=priv,
                         group_id=bytes.fromhex(gid), private_handshakes=private,
                         credential_check=gs.check_credential, capabilities=gs.CAPABILITIES)
    while group.epoch < epoch:
        group.commit(now=now, update=True)
        group.merge_pending_commit()
    return group


def intruder_key_package(account: str, now: int) -> bytes:
    priv, credential = fresh_credential(account, 9)
    return Group.key_package(gs.SUITE, credential, now=now, signature_priv=priv,
                             capabilities=gs.CAPABILITIES).key_package.encoded()


async def test_commits_not_from_a_member_are_refused(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """The server cannot make a commit of the group: it serves, as the epoch's commit,
    junk, a PublicMessage commit and a PrivateMessage commit from a group of its own
    with the same id and epoch (adding an intruder claiming alice's account), and an
    external commit made from that group's GroupInfo with a fresh key. Each is refused
    (the membership tag, the sender data, the external init secret do not verify), the
    state is unchanged, and the group goes on, real commits included."""
    alice, bob, carol = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob)])
    await bob.receive_pending()
    now = bob._groups._now_s()
    epoch = bob._groups._group(info.id).epoch
    before = state(bob, info.id)
    intruder = intruder_key_package(alice.account, now)
    forged = [os.urandom(300)]
    for private in (False, True):
        fake = fake_group(info.id, epoch, private, now)
        forged.append(fake.commit(now=now, add=[intruder]).commit)
    fake = fake_group(info.id, epoch, False, now)
    priv, credential = fresh_credential(alice.account, 9)
    _, external = Group.join_external(fake.group_info(), credential, now=now,
                                      signature_priv=priv, credential_check=gs.check_credential)
    forged.append(external)
    for body in forged:
        assert decode_all(body, MLSMessage.read) if body is not forged[0] else True
        seq = await seq_of(alice, info.id, "replaced by the server")
        replace(server, info.id, seq, body, True)
    queue = bob._hub.add()
    assert await texts(bob) == []
    assert state(bob, info.id) == before
    assert [m.devices for m in bob.members(info.id)] == [(1,), (1,)]
    assert not [e for e in drain(queue) if isinstance(e, GroupUpdated)]
    await alice.send_group(info.id, "the real alice")
    assert [(m.text, m.sender, m.identity_changed) for m in await bob.receive_pending()] \
        == [("the real alice", alice.account, False)]
    await alice.invite(info.id, at(carol))            # a real commit still merges
    await bob.sync_groups()
    await carol.receive_pending()
    one_group(alice, bob, carol, gid=info.id)
    await bob.send_group(info.id, "three of us")
    assert await texts(carol) == ["three of us"]


# --- 5. devices the server adds -------------------------------------------------------------


def add_device(server: ServerProcess, account: str, device: int, *, approval: str,
               key_package: bytes | None) -> None:
    """A device slot on ``account`` made by the server alone: prekeys copied from
    device 1, no approval or device 1's approval copied, and optionally an MLS
    KeyPackage."""
    raw = bytes.fromhex(account)
    copied = "approval" if approval == "copied" else "NULL"
    with database(server) as db:
        db.execute(
            "INSERT INTO devices (account_id, device_id, registration_id, token_hash, "
            "identity_key, signed_prekey, last_resort_kem_prekey, created_at, approval) "
            f"SELECT account_id, ?, 77, token_hash, identity_key, signed_prekey, "
            f"last_resort_kem_prekey, created_at, {copied} FROM devices WHERE "
            "account_id = ? AND device_id = 1", (device, raw))
        if key_package is not None:
            db.execute("INSERT INTO mls_key_packages (account_id, device_id, ref, "
                       "cipher_suite, last_resort, not_after, key_package) VALUES "
                       "(?, ?, ?, ?, 1, ?, ?)", (raw, device, os.urandom(16), gs.SUITE,
                                                 2**40, key_package))


def remove_device(server: ServerProcess, account: str, device: int) -> None:
    with database(server) as db:
        for table in ("mls_key_packages", "devices"):
            db.execute(f"DELETE FROM {table} WHERE account_id = ? AND device_id = ?",
                       (bytes.fromhex(account), device))


@pytest.mark.parametrize("approval,kp", [("none", "bob's own"), ("copied", "forged")])
async def test_a_device_the_server_adds_is_neither_written_to_nor_invited(
        tmp_path: Path, clients: list[Client], server: ServerProcess, approval: str,
        kp: str) -> None:
    """The server adds device 2 to bob's account (his prekeys; no approval, or device
    1's approval copied) with an MLS KeyPackage (a copy of one of device 1's, or one
    claiming device 2 under a key of its own). Contacts refuse to encrypt to it, and an
    inviter refuses to add it (nor anything of bob's while the slot is there, as 1:1
    sends nothing to him then); bob's own device goes on."""
    alice, bob, carol = await trio(clients, tmp_path, server)
    if kp == "forged":
        key_package = intruder_key_package(bob.account, bob._groups._now_s())
    else:
        (key_package,) = await carol._groups._claim(bob.account)
    add_device(server, bob.account, 2, approval=approval, key_package=key_package)
    try:
        with pytest.raises(UnapprovedDevice, match="not approved"):
            await carol.send(bob.account, "for bob")
        with pytest.raises(UnapprovedDevice):
            await alice.create_group("g", members=[at(bob)])
        (made,) = alice.groups()
        assert [m.account for m in alice.members(made.id)] == [alice.account]
        assert await texts(bob) == []
    finally:
        remove_device(server, bob.account, 2)
    # bob's real device is unaffected: the groups he makes reach alice
    mine = await bob.create_group("bob's", members=[at(alice)])
    await alice.receive_pending()
    assert {m.account: m.devices for m in alice.members(mine.id)} == {
        alice.account: (1,), bob.account: (1,)}


async def test_a_device_the_account_did_not_approve_is_flagged_by_every_member(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """Issue 11 §3: a leaf for a device of bob's account that bob's account never
    approved (here added by a modified client holding bob's identity key, as an unlinked
    device that kept it could) gets the same loud warning as in 1:1: flagged to the
    other members, shown as unconfirmed, never taken as bob."""
    alice, bob, carol = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob), at(carol)])
    await bob.receive_pending()
    await carol.receive_pending()
    suite = get_suite(gs.SUITE)
    priv, public = suite.generate_signature_key_pair()
    stranger = Group.key_package(
        gs.SUITE, gs.make_credential(bob._ctx.identity, bob.account, 7, public),
        now=bob._groups._now_s(), signature_priv=priv,
        lifetime_seconds=gs.KEY_PACKAGE_LIFETIME_S, capabilities=gs.CAPABILITIES)
    await bob._groups._change(info.id, _Intent(
        "own", key_packages=[(bob.account, stranger.key_package.encoded())]))
    for member in (alice, carol):
        queue = member._hub.add()
        await member.sync_groups()
        flagged = [e for e in drain(queue) if isinstance(e, GroupUpdated)
                   and e.change == "policy_violation"]
        assert flagged and all(e.accounts == (bob.account,) for e in flagged)
        [shown] = [m for m in member.members(info.id) if m.account == bob.account]
        assert shown.devices == (1, 7) and shown.unconfirmed == (7,)
    # Bob's approved device is still bob: his messages are not flagged.
    await bob.send_group(info.id, "still me")
    [got] = [m for m in await alice.receive_pending() if m.group == info.id]
    assert (got.text, got.identity_changed) == ("still me", False)


# --- 6. malformed input ---------------------------------------------------------------------


async def test_junk_in_a_mailbox_affects_nothing_else(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """Oversized messages, random bytes (as messages and as commits), a message of
    another group, a KeyPackage where a group message belongs: each is skipped; the
    group's real messages, another group and 1:1 messages go on."""
    alice, bob, _ = await trio(clients, tmp_path, server)
    first = await alice.create_group("first", members=[at(bob)])
    second = await alice.create_group("second", members=[at(bob)])
    await bob.receive_pending()
    before = state(bob, first.id)
    s_other = await seq_of(alice, second.id, "in the second group")
    other = next(r[3] for r in stored(server, second.id) if r[0] == s_other)
    junk = [(os.urandom(1 << 20), False), (os.urandom(1 << 20), True),
            (os.urandom(100), False), (os.urandom(100), True), (b"", False),
            (other, False), (intruder_key_package(alice.account, bob._groups._now_s()),
                             False)]
    for body, commit in junk:
        seq = await seq_of(alice, first.id, "replaced")
        replace(server, first.id, seq, body, commit)
    await alice.send_group(first.id, "real, after the junk")
    await alice.send(bob.account, "a 1:1 message")
    got = await bob.receive_pending()
    assert sorted(m.text for m in got) == ["a 1:1 message", "in the second group",
                                           "real, after the junk"]
    assert state(bob, first.id) == before
    one_group(alice, bob, gid=first.id)
    one_group(alice, bob, gid=second.id)


async def test_a_capability_the_server_no_longer_matches(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """The server answers a group's reads with 401 (it changed the verifier), or claims
    the group is epochs ahead with nothing to show: sync goes on with the other
    groups and 1:1 messages; the group's state is unchanged and it recovers when the
    server answers right again."""
    alice, bob, _ = await trio(clients, tmp_path, server)
    first = await alice.create_group("first", members=[at(bob)])
    second = await alice.create_group("second", members=[at(bob)])
    await bob.receive_pending()
    before = state(bob, first.id)
    raw = bytes.fromhex(first.id)
    with database(server) as db:
        (verifier,) = db.execute("SELECT read_verifier FROM group_epochs WHERE group_id = ? "
                                 "AND epoch = ?", (raw, before[0])).fetchone()
        db.execute("UPDATE group_epochs SET read_verifier = ? WHERE group_id = ? AND "
                   "epoch = ?", (os.urandom(32), raw, before[0]))
    await alice.send_group(second.id, "second group")
    await alice.send(bob.account, "1:1")
    assert sorted(await texts(bob)) == ["1:1", "second group"]
    assert state(bob, first.id) == before
    with database(server) as db:
        db.execute("UPDATE group_epochs SET read_verifier = ? WHERE group_id = ? AND "
                   "epoch = ?", (verifier, raw, before[0]))
        db.execute("UPDATE mls_groups SET epoch = epoch + 5 WHERE id = ?", (raw,))
    assert await texts(bob) == []
    assert state(bob, first.id) == before
    with database(server) as db:
        db.execute("UPDATE mls_groups SET epoch = epoch - 5 WHERE id = ?", (raw,))
    await alice.send_group(first.id, "back to normal")
    assert await texts(bob) == ["back to normal"]


# --- a member passing off another member's sender certificate ------------------------------


async def test_a_member_cannot_sign_with_another_members_certificate(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """Group messages carry the sender's server-signed certificate, so members who never
    talked 1:1 see its @username. Carol, who reads Alice's messages, copies Alice's
    certificate into her own: the receivers keep her own name and rename nobody."""
    alice, bob, carol = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob), at(carol)])
    await bob.receive_pending()
    await carol.receive_pending()
    await carol.send_group(info.id, "as myself")
    [mine] = await bob.receive_pending()
    assert (mine.sender, mine.sender_username) == (carol.account, carol.me.username)
    alices = await alice._outbox.certificate()
    carol._outbox.certificate = lambda: _ready(alices)        # type: ignore[method-assign]
    await carol.send_group(info.id, "signed as alice")
    [forged] = await bob.receive_pending()
    assert forged.text == "signed as alice" and forged.sender == carol.account
    assert forged.sender_username == carol.me.username         # not alice's name
    names = {c.account: c.username for c in bob.contacts()}
    assert names[carol.account] == carol.me.username
    assert names.get(alice.account) in (None, alice.me.username)


async def _ready(value: object) -> object:
    return value


# --- 7. what a member is told: dropped and reordered messages, a stalled epoch -----------


def missing_events(queue: asyncio.Queue[Any]) -> list[GroupMessagesMissing]:
    return [e for e in EventHub.drain(queue) if isinstance(e, GroupMessagesMissing)]


def stalls(queue: asyncio.Queue[Any]) -> list[GroupStalled]:
    return [e for e in EventHub.drain(queue) if isinstance(e, GroupStalled)]


async def test_a_dropped_group_message_is_reported_with_its_sender(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """The server deletes one of alice's messages from the mailbox: bob reads the others
    and is told that one message of alice's device did not arrive (its sequence number,
    inside the encryption, skips one). Carol's messages, not touched, raise nothing; the
    report comes once, and alice's next message raises nothing more."""
    alice, bob, carol = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob), at(carol)])
    await bob.receive_pending()
    await carol.receive_pending()
    await alice.send_group(info.id, "one")
    await carol.send_group(info.id, "from carol")
    dropped = await seq_of(alice, info.id, "two, dropped by the server")
    await alice.send_group(info.id, "three")
    await carol.send_group(info.id, "carol again")
    delete(server, info.id, dropped)
    queue = bob._hub.add()
    assert await texts(bob) == ["one", "from carol", "three", "carol again"]
    assert missing_events(queue) == [GroupMessagesMissing(info.id, alice.account, 1, 1)]
    assert await texts(bob) == []
    await alice.send_group(info.id, "four")
    assert await texts(bob) == ["four"]
    assert missing_events(queue) == []
    # carol, who got every message, is told nothing
    carols = carol._hub.add()
    assert await texts(carol) == ["one", "three", "four"]
    assert missing_events(carols) == [GroupMessagesMissing(info.id, alice.account, 1, 1)]


async def test_a_reordered_group_message_is_reported_and_still_read(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """The server serves alice's third message before her second: bob reads both (in
    the order served), is told one is missing when the third comes, and that the second
    came out of order when it does; nothing is refused, nothing forks."""
    alice, bob, _ = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob)])
    await bob.receive_pending()
    await alice.send_group(info.id, "first")
    assert await texts(bob) == ["first"]
    s2 = await seq_of(alice, info.id, "second")
    s3 = await seq_of(alice, info.id, "third")
    swap(server, info.id, s2, s3)
    queue = bob._hub.add()
    assert await texts(bob) == ["third", "second"]
    assert missing_events(queue) == [
        GroupMessagesMissing(info.id, alice.account, 1, 1),
        GroupMessagesMissing(info.id, alice.account, 1, 0, reordered=True)]
    await alice.send_group(info.id, "fourth")
    assert await texts(bob) == ["fourth"]
    assert missing_events(queue) == []
    one_group(alice, bob, gid=info.id)


async def test_group_content_without_a_sequence_number_is_still_read(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """An older client's content has no sequence number: it is read as before and
    counts for nothing (no gap before the next numbered message)."""
    alice, bob, _ = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob)])
    await bob.receive_pending()
    await alice.send_group(info.id, "numbered")
    assert await texts(bob) == ["numbered"]
    groups = alice._groups
    group = groups._group(info.id)
    data = Content(os.urandom(16).hex(), alice._ctx.clock(), "from an older client").encode()
    assert b'"n"' not in data
    message = group.encrypt(data, padding=(-len(data)) % 256)
    with groups._txn(info.id):
        groups._save_state(info.id, group)
    await groups._post(info.id, group.epoch, message, write_cap(group))
    await alice.send_group(info.id, "numbered again")
    queue = bob._hub.add()
    got = await bob.receive_pending()
    assert [(m.text, m.sender) for m in got] == [("from an older client", alice.account),
                                                 ("numbered again", alice.account)]
    assert missing_events(queue) == []


@pytest.mark.parametrize("how", ["withheld", "forged"])
async def test_a_withheld_commit_tells_the_member_why_once(
        tmp_path: Path, clients: list[Client], server: ServerProcess, how: str) -> None:
    """The server withholds the commit that ends bob's epoch (deletes it), or serves
    junk in its place: bob stays in his epoch and is told why, once
    (``GroupStalled``); sending says so too (``GroupStuck``). When the withheld commit
    is served he catches up, and nothing more is said. (Junk served in the commit's
    place has moved his cursor past it: he must be invited again.)"""
    alice, bob, _ = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob)])
    await bob.receive_pending()
    epoch = bob.group(info.id).epoch
    await alice.rename(info.id, "renamed")
    (*_, (seq, commit_epoch, _, commit)) = commits(server, info.id)
    assert commit_epoch == epoch
    if how == "withheld":
        delete(server, info.id, seq)
    else:
        replace(server, info.id, seq, os.urandom(len(commit)), True)
    await alice.send_group(info.id, "in the next epoch")
    queue = bob._hub.add()
    assert await texts(bob) == []
    reason: StallReason = "commit_withheld" if how == "withheld" else "commit_refused"
    assert stalls(queue) == [
        GroupStalled(info.id, epoch, reason)]
    await bob.sync_groups()                       # told once, not on every sync
    with pytest.raises(GroupStuck, match="does not let this device past its epoch"):
        await bob.send_group(info.id, "bob, stuck")
    assert stalls(queue) == []
    assert bob.group(info.id).epoch == epoch and bob.group(info.id).name == "g"
    if how != "withheld":
        return
    inject(server, info.id, epoch, commit, True, seq=seq)       # the server relents
    await bob.sync_groups()
    assert "in the next epoch" in [e.text for e in bob.history(info.id)]
    assert bob.group(info.id).name == "renamed"
    assert stalls(queue) == []
    one_group(alice, bob, gid=info.id)


async def test_a_refused_capability_tells_the_member_why(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """The mailbox refuses bob's read capability (the server changed its verifier):
    ``GroupStalled`` with ``capability_refused``, once while it lasts; once the server
    answers right again the stall is over, and a new one is told again."""
    alice, bob, _ = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob)])
    await bob.receive_pending()
    epoch = bob.group(info.id).epoch
    where = (bytes.fromhex(info.id), epoch)
    with database(server) as db:
        (verifier,) = db.execute("SELECT read_verifier FROM group_epochs WHERE group_id = ? "
                                 "AND epoch = ?", where).fetchone()
        db.execute("UPDATE group_epochs SET read_verifier = ? WHERE group_id = ? AND "
                   "epoch = ?", (os.urandom(32), *where))
    queue = bob._hub.add()
    await bob.sync_groups()
    await bob.sync_groups()
    stalled = GroupStalled(info.id, epoch, "capability_refused")
    assert stalls(queue) == [stalled]
    with database(server) as db:
        db.execute("UPDATE group_epochs SET read_verifier = ? WHERE group_id = ? AND "
                   "epoch = ?", (verifier, *where))
    await alice.send_group(info.id, "readable again")
    assert await texts(bob) == ["readable again"]
    with database(server) as db:
        db.execute("UPDATE group_epochs SET read_verifier = ? WHERE group_id = ? AND "
                   "epoch = ?", (os.urandom(32), *where))
    await bob.sync_groups()
    assert stalls(queue) == [stalled]


# --- 8. a Welcome whose tree never comes ---------------------------------------------------


async def test_a_welcome_waiting_for_its_tree_expires(
        tmp_path: Path, clients: list[Client], server: ServerProcess,
        caplog: pytest.LogCaptureFixture) -> None:
    """The server deletes the ratchet tree alice posted for bob's Welcome: bob keeps the
    Welcome waiting (``group.joining``), still after six days on his clock, and drops
    it after seven (with the one-time KeyPackage's private half), logging no id."""
    alice = await person(clients, tmp_path, server, "alice")
    offset = [0]

    def clock() -> int:                        # bob's clock, moved by the test
        return int(time.time() * 1000) + offset[0]

    bob = await Client.register(tmp_path / "bob", server.url,
                                username="bob" + os.urandom(3).hex(), passphrase="pw",
                                kdf=FAST, clock=clock)
    clients.append(bob)
    await bob.receive_pending()                 # publishes KeyPackages
    info = await alice.create_group("g", members=[at(bob)])
    chunks = [row for row in stored(server, info.id) if not row[2]]
    assert chunks
    for seq, *_ in chunks:
        delete(server, info.id, seq)
    assert await texts(bob) == []
    joining = gs.get_joining(bob._ctx.store, info.id)
    assert joining is not None and bob.groups() == []
    assert gs.find_bundle(bob._ctx.store, [bytes.fromhex(joining.ref)]) is not None
    day = 24 * 3600 * 1000
    offset[0] = 6 * day
    await bob.sync_groups()
    assert gs.get_joining(bob._ctx.store, info.id) is not None
    offset[0] = 7 * day + 60_000
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="veil.client"):
        await bob.sync_groups()
    assert gs.get_joining(bob._ctx.store, info.id) is None
    assert gs.find_bundle(bob._ctx.store, [bytes.fromhex(joining.ref)]) is None
    assert bob.groups() == []
    said = [r.getMessage() for r in caplog.records]
    assert any("waited 7 days for its ratchet tree" in line for line in said), said
    assert not any(info.id[:16] in line or alice.account[:16] in line for line in said)
    await bob.sync_groups()                     # nothing left to do
    assert bob.groups() == []
