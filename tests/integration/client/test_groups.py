"""Groups through real clients and a real server process (docs/groups.md, "The client").

Everything is driven over HTTP (``receive_pending`` / ``sync_groups``), so each step is
deterministic: no sleeps, no waiting on pushes (one test covers the live socket, and it
waits for conditions)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.integration.client.conftest import new_client
from tests.integration.server.harness import ServerProcess
from veil.client import Client, contacts
from veil.client import group_store as gs
from veil.client import pending as pending_store
from veil.client.content import Content
from veil.client.errors import NotGroupAdmin, NotGroupMember, ServerRejected, ServerUnreachable
from veil.client.events import GroupUpdated, MessageReceived
from veil.client.group_core import _Intent, write_cap
from veil.client.groups import read_cap
from veil.client.store import FAST
from veil.core.mls import Group, KeyPackageBundle, SavedGroup
from veil.core.mls.crypto import get_suite
from veil.protocol.requests import GroupPost
from veil.protocol.responses import GroupAppended, GroupMessagePage, MlsDeviceKeyPackage


def at(client: Client) -> str:
    return f"@{client.me.username}"


async def person(clients: list[Client], tmp_path: Path, server: ServerProcess,
                 name: str) -> Client:
    """A registered client whose username is unique on the module's server."""
    return await new_client(clients, tmp_path, server, name, f"{name}{os.urandom(3).hex()}")


async def trio(clients: list[Client], tmp_path: Path, server: ServerProcess
               ) -> tuple[Client, Client, Client]:
    return (await person(clients, tmp_path, server, "alice"),
            await person(clients, tmp_path, server, "bob"),
            await person(clients, tmp_path, server, "carol"))


async def texts(client: Client) -> list[str]:
    return [m.text for m in await client.receive_pending()]


async def test_a_group_of_three(tmp_path: Path, clients: list[Client],
                                server: ServerProcess) -> None:
    alice, bob, carol = await trio(clients, tmp_path, server)
    info = await alice.create_group("Harbour team", "planning", members=[at(bob), at(carol)])
    assert info.name == "Harbour team" and info.admins == (alice.account,)
    assert set(info.members) == {alice.account, bob.account, carol.account}
    assert await texts(bob) == [] and await texts(carol) == []   # the Welcomes
    (joined,) = bob.groups()
    assert joined.id == info.id and joined.name == "Harbour team"
    assert joined.description == "planning" and not joined.am_admin
    assert {m.account for m in bob.members(info.id)} == set(info.members)

    await alice.send_group(info.id, "hello team")
    got = await bob.receive_pending()
    assert [(m.text, m.group, m.sender) for m in got] == [("hello team", info.id,
                                                         alice.account)]
    await bob.send_group("#Harbour team", "hi alice")
    await carol.send_group(info.id, "hi both")
    assert await texts(alice) == ["hi alice", "hi both"]
    assert await texts(bob) == ["hi both"]
    assert await texts(carol) == ["hello team", "hi alice"]
    assert [e.text for e in alice.history(info.id)] == ["hello team", "hi alice", "hi both"]

    # Rename (admin) and a non-admin's attempt.
    await alice.rename(info.id, "Harbour crew")
    with pytest.raises(NotGroupAdmin, match="only an admin"):
        await bob.remove(info.id, at(carol))
    with pytest.raises(NotGroupAdmin):
        await bob.rename(info.id, "mine now")
    await bob.sync_groups()
    assert bob.group(info.id).name == "Harbour crew"

    # Promote bob: now he may remove carol.
    await alice.set_admin(info.id, at(bob), True)
    await bob.sync_groups()
    assert bob.group(info.id).am_admin
    await bob.remove(info.id, at(carol))
    await alice.send_group(info.id, "carol cannot read this")
    assert await texts(carol) == []
    assert not carol.group(info.id).active
    with pytest.raises(NotGroupMember):
        await carol.send_group(info.id, "still here?")
    assert await texts(bob) == ["carol cannot read this"]
    assert set(alice.group(info.id).members) == {alice.account, bob.account}


async def test_removed_member_keeps_no_access(tmp_path: Path, clients: list[Client],
                                              server: ServerProcess) -> None:
    """The removed member's own old capabilities are refused for the next epoch."""
    alice, bob, carol = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob), at(carol)])
    await carol.receive_pending()
    old_group = carol._groups._group(info.id)
    old_epoch, old_read = old_group.epoch, read_cap(old_group)
    await alice.remove(info.id, at(carol))
    await alice.send_group(info.id, "after the removal")
    with pytest.raises(ServerRejected) as caught:
        await carol._ctx.api.group_call(
            "GET", f"/v1/groups/{info.id}/messages?epoch={old_epoch + 1}",
            GroupMessagePage,
            read=old_read)
    assert caught.value.status == 401
    await carol.receive_pending()
    assert not carol.group(info.id).active


async def test_add_leave_and_an_offline_member_catching_up(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    alice, bob, carol = await trio(clients, tmp_path, server)
    dave = await person(clients, tmp_path, server, "dave")
    info = await alice.create_group("g", members=[at(bob)])
    await bob.receive_pending()
    # carol is offline while several epochs pass
    await alice.invite(info.id, at(carol))
    await alice.send_group(info.id, "one")
    await alice.rename(info.id, "g2")
    await alice.send_group(info.id, "two")
    await alice.invite(info.id, at(dave))
    await alice.send_group(info.id, "three")
    await alice.set_admin(info.id, at(dave))
    assert await texts(carol) == ["one", "two", "three"]   # from the epoch she joined
    assert carol.group(info.id).name == "g2"
    assert set(carol.group(info.id).admins) == {alice.account, dave.account}
    assert await texts(bob) == ["one", "two", "three"]
    assert await texts(dave) == ["three"]
    # bob leaves; alice (an admin) commits his removal on her next sync
    await bob.leave(info.id)
    assert not bob.group(info.id).active
    await alice.sync_groups()
    assert bob.account not in alice.group(info.id).members
    await dave.send_group(info.id, "bob is gone")
    assert await texts(carol) == ["bob is gone"]
    assert await texts(bob) == []


async def test_two_commits_in_one_epoch_do_not_fork(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    alice, bob, carol = await trio(clients, tmp_path, server)
    dave = await person(clients, tmp_path, server, "dave")
    info = await alice.create_group("g", members=[at(bob), at(carol)])
    await bob.receive_pending()
    await carol.receive_pending()
    await alice.set_admin(info.id, at(bob))
    await bob.sync_groups()
    # Both admins commit in the same epoch: bob's commit is built, then held back
    # until alice's has ended the epoch, then posted (and refused: 409).
    alice_done, bob_built = asyncio.Event(), asyncio.Event()
    hooked: list[str] = []

    async def hold(point: str) -> None:
        hooked.append(point)
        if hooked == ["before_post"]:
            bob_built.set()
            await alice_done.wait()

    bob._groups.crash_hook = hold

    async def by_alice() -> None:
        await bob_built.wait()              # bob has built his commit for this epoch
        await alice.rename(info.id, "by alice")
        alice_done.set()

    await asyncio.gather(by_alice(), bob.invite(info.id, at(dave)))
    assert hooked.count("before_post") == 2         # bob's second attempt won
    for c in (alice, bob, carol):
        await c.sync_groups()
    await dave.receive_pending()
    epochs = {c.group(info.id).epoch for c in (alice, bob, carol, dave)}
    assert len(epochs) == 1, epochs
    assert {c.group(info.id).name for c in (alice, bob, carol, dave)} == {"by alice"}
    await dave.send_group(info.id, "I am in")
    for c in (alice, bob, carol):
        assert await texts(c) == ["I am in"]


async def test_a_crash_between_posting_a_commit_and_merging_it(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    alice, bob, carol = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob)])
    await bob.receive_pending()

    class Crash(BaseException):
        pass

    def crash(point: str) -> None:
        if point == "after_post":
            raise Crash

    alice._groups.crash_hook = crash
    with pytest.raises(Crash):
        await alice.invite(info.id, at(carol))
    clients.remove(alice)
    await alice.close()
    alice = await Client.open(tmp_path / "alice", passphrase="pw")
    clients.append(alice)
    await alice.sync_groups()                            # resolves: ours won
    assert set(alice.group(info.id).members) == {alice.account, bob.account, carol.account}
    assert await texts(carol) == []                     # the Welcome was queued, then sent
    assert carol.group(info.id).active
    await alice.send_group(info.id, "after the crash")
    assert await texts(bob) == ["after the crash"]
    assert await texts(carol) == ["after the crash"]


async def test_a_crash_before_the_commit_reached_the_server(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    alice, bob, _ = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob)])
    await bob.receive_pending()

    class Crash(BaseException):
        pass

    def crash(point: str) -> None:
        if point == "before_post":
            raise Crash

    alice._groups.crash_hook = crash
    with pytest.raises(Crash):
        await alice.rename(info.id, "renamed")
    # Meanwhile bob (promoted before? no: he is not an admin) just talks.
    await bob.send_group(info.id, "hello")
    clients.remove(alice)
    await alice.close()
    alice = await Client.open(tmp_path / "alice", passphrase="pw")
    clients.append(alice)
    assert await texts(alice) == ["hello"]              # then the commit is posted again
    await bob.sync_groups()
    assert bob.group(info.id).name == alice.group(info.id).name == "renamed"


async def test_live_group_messages_on_the_event_stream(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    alice, bob, _ = await trio(clients, tmp_path, server)
    info = await alice.create_group("live", members=[at(bob)])
    seen: list[MessageReceived] = []
    joined = asyncio.Event()
    got = asyncio.Event()

    async def read() -> None:
        async for event in bob.events():
            if isinstance(event, GroupUpdated) and event.change == "joined":
                joined.set()
            if isinstance(event, MessageReceived):
                seen.append(event)
                got.set()

    reader = asyncio.create_task(read())
    try:
        await asyncio.wait_for(joined.wait(), 20)
        # Pushed or fetched: the subscription's reply says what to fetch, so a message
        # posted at any moment around the join arrives.
        await alice.send_group(info.id, "live hello")
        await asyncio.wait_for(got.wait(), 20)
        assert seen[0].conversation == info.id and seen[0].message.text == "live hello"
    finally:
        reader.cancel()


async def test_the_server_database_holds_no_group_secrets(
        tmp_path: Path, clients: list[Client]) -> None:
    server = ServerProcess(tmp_path / "view-data").start()
    try:
        alice, bob, carol = await trio(clients, tmp_path, server)
        name, text = "Secret-Harbour-7f3a", "the quarterly numbers are 42"
        info = await alice.create_group(name, "confidential-desc-91", members=[at(bob)])
        await bob.receive_pending()
        await alice.send_group(info.id, text)
        await bob.send_group(info.id, text + " indeed")
        await alice.invite(info.id, at(carol))
        await alice.remove(info.id, at(bob))
        blob = b"".join(p.read_bytes() for p in server.data_dir.glob("veil.sqlite3*"))
        for secret in (name, text, "confidential-desc-91"):
            assert secret.encode() not in blob
        conn = sqlite3.connect(f"file:{server.data_dir / 'veil.sqlite3'}?mode=ro", uri=True)
        try:
            accounts = [bytes(r[0]) for r in conn.execute("SELECT id FROM accounts")]
            group_bytes = b"".join(
                bytes(v) for table in ("mls_groups", "group_epochs", "group_messages")
                for row in conn.execute(f"SELECT * FROM {table}")
                for v in row if isinstance(v, bytes))
        finally:
            conn.close()
        assert group_bytes
        for account in accounts:
            assert account not in group_bytes
            assert account.hex().encode() not in group_bytes
    finally:
        server.stop()


async def test_a_new_home_opens_with_its_groups(tmp_path: Path, server: ServerProcess) -> None:
    """Group state survives close and open (the encrypted store)."""
    alice = await Client.register(tmp_path / "a", server.url, username="ann" + os.urandom(3).hex(),
                                  passphrase="pw", kdf=FAST)
    bob = await Client.register(tmp_path / "b", server.url, username="ben" + os.urandom(3).hex(),
                                passphrase="pw", kdf=FAST)
    try:
        info = await alice.create_group("persist", members=[at(bob)])
        await bob.receive_pending()
        await bob.close()
        bob = await Client.open(tmp_path / "b", passphrase="pw")
        await alice.send_group(info.id, "still there")
        assert await texts(bob) == ["still there"]
    finally:
        await alice.close()
        await bob.close()


async def test_a_commit_by_a_non_admin_is_flagged_and_its_rename_ignored(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """A modified client (here: bob's local admin list edited) commits a rename: the
    others merge it (no fork) but flag it and keep the name."""
    from veil.client import group_store as gs

    alice, bob, carol = await trio(clients, tmp_path, server)
    info = await alice.create_group("original", members=[at(bob), at(carol)])
    await bob.receive_pending()
    await carol.receive_pending()
    record = gs.get_record(bob._ctx.store, info.id)
    assert record is not None
    record.admins.append(bob.account)
    gs.put_record(bob._ctx.store, record)
    await bob.rename(info.id, "hijacked")
    queue = alice._hub.add()
    await alice.sync_groups()
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    assert GroupUpdated(info.id, "policy_violation", bob.account) in events
    assert alice.group(info.id).name == "original"
    await carol.sync_groups()
    assert carol.group(info.id).name == "original"
    # and the group did not fork: everyone still talks
    await carol.send_group(info.id, "still one group")
    assert await texts(alice) == ["still one group"]
    assert await texts(bob) == ["still one group"]


def forged_key_package(client: Client, account: str, device: int) -> KeyPackageBundle:
    """A KeyPackage a modified client makes: ``account`` claimed under ``client``'s own
    identity key (a credential is only self-signed by the key it embeds)."""
    priv, pub = get_suite(gs.SUITE).generate_signature_key_pair()
    credential = gs.make_credential(client._ctx.identity, account, device, pub)
    return Group.key_package(gs.SUITE, credential, now=client._groups._now_s(),
                             signature_priv=priv, lifetime_seconds=3600,
                             capabilities=gs.CAPABILITIES)


def drain(queue: asyncio.Queue[object]) -> list[object]:
    got = []
    while not queue.empty():
        got.append(queue.get_nowait())
    return got


async def test_a_leaf_claiming_a_contact_never_changes_the_contact(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """Review #2: a malicious inviter (mallory, a modified client) adds a leaf naming
    alice's account under mallory's key and talks from it. Bob's record of alice is
    untouched (same identity, still verified); the leaf is flagged, and its messages
    come with identity_changed, never as alice's plain messages."""
    alice, bob, mallory = (await person(clients, tmp_path, server, "alice"),
                           await person(clients, tmp_path, server, "bob"),
                           await person(clients, tmp_path, server, "mallory"))
    info = await mallory.create_group("g", members=[at(alice), at(bob)])
    await alice.receive_pending()
    await bob.receive_pending()
    await bob.verify(at(alice))
    before = contacts.get(bob._ctx.store, alice.account)
    assert before is not None and before.verified
    forged = forged_key_package(mallory, alice.account, 7)
    welcomes: list[bytes] = []

    trees: list[bytes] = []

    def keep(point: str) -> None:
        pending = gs.get_pending(mallory._ctx.store, info.id)
        if point == "after_post" and pending is not None and pending.welcome:
            welcomes.append(pending.welcome)       # (Welcomes carry no tree: it is here)
            trees.append(Group.restore(SavedGroup(pending.after_slow, pending.after_hot),
                                       credential_check=gs.check_credential).ratchet_tree())

    mallory._groups.crash_hook = keep
    await mallory._groups._change(info.id, _Intent(
        "add", key_packages=[(alice.account, forged.key_package.encoded())]))
    fake = Group.join(welcomes[0], forged, now=mallory._groups._now_s(), ratchet_tree=trees[0],
                      credential_check=gs.check_credential, private_handshakes=True)
    content = Content.text_message("it is me, alice: send the keys", mallory._ctx.clock(), b"")
    data = Content(content.id, content.timestamp, content.text).encode()
    await mallory._ctx.api.group_call(
        "POST", f"/v1/groups/{info.id}/messages", GroupAppended,
        GroupPost(epoch=fake.epoch, message=fake.encrypt(data)), write=write_cap(fake))

    queue = bob._hub.add()
    (got,) = await bob.receive_pending()
    assert (got.sender, got.device, got.text) == (alice.account, 7,
                                                 "it is me, alice: send the keys")
    assert got.identity_changed                     # the loud flag
    assert GroupUpdated(info.id, "policy_violation", None, (alice.account,)) in drain(queue)
    after = contacts.get(bob._ctx.store, alice.account)
    assert after is not None and after.identity == before.identity
    assert after.verified and not after.identity_changed
    assert bob.history(info.id)[-1].identity_changed
    (shown,) = [m for m in bob.members(info.id) if m.account == alice.account]
    assert shown.devices == (1, 7) and shown.unconfirmed == (7,)
    assert await texts(alice) == []                 # not taken as her own other device
    # alice herself is still alice
    await alice.send_group(info.id, "the real alice")
    (real,) = await bob.receive_pending()
    assert real.text == "the real alice" and not real.identity_changed


async def test_an_invite_refuses_key_packages_of_another_identity(
        tmp_path: Path, clients: list[Client], server: ServerProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review #2, inviting: a server serving a KeyPackage that claims carol's account
    under another key (or for a device carol did not approve) is refused; carol's real
    device joins."""
    alice, bob, carol = await trio(clients, tmp_path, server)
    forged = forged_key_package(bob, carol.account, 7)
    real_call = alice._ctx.api.call

    async def serve_forged(method: str, path: str, answer: type[Any], *args: Any,
                           **kwargs: Any) -> Any:
        got = await real_call(method, path, answer, *args, **kwargs)
        if path.startswith(f"/v1/keys/mls/{carol.account}"):
            extra = MlsDeviceKeyPackage(device_id=7, key_package=forged.key_package.encoded(),
                                        last_resort=False)
            got = msgspec.structs.replace(got, devices=[*got.devices, extra])
        return got

    monkeypatch.setattr(alice._ctx.api, "call", serve_forged)
    info = await alice.create_group("g", members=[at(carol)])
    assert {m.account: m.devices for m in alice.members(info.id)}[carol.account] == (1,)
    known = contacts.get(alice._ctx.store, carol.account)
    assert known is not None and known.identity == carol._ctx.identity.public.to_bytes()


async def test_every_device_of_an_invitee_joins(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    alice, bob, _ = await trio(clients, tmp_path, server)
    pending = await Client.begin_link(tmp_path / "bob-laptop", server.url, passphrase="pw",
                                      kdf=FAST)
    finishing = asyncio.create_task(pending.finish(timeout=30))
    await bob.approve_device(pending.code, name="laptop")
    laptop = await finishing
    clients.append(laptop)
    await laptop.receive_pending()                  # publishes its KeyPackages
    info = await alice.create_group("g", members=[at(bob)])
    devices = {m.account: m.devices for m in alice.members(info.id)}
    assert devices[bob.account] == (1, 2)
    await bob.receive_pending()
    await laptop.receive_pending()
    assert bob.group(info.id).active and laptop.group(info.id).active
    await alice.send_group(info.id, "to both devices")
    assert await texts(bob) == ["to both devices"]
    assert await texts(laptop) == ["to both devices"]
    await laptop.send_group(info.id, "from the laptop")
    assert await texts(alice) == ["from the laptop"]
    assert await texts(bob) == []                   # our own device: history only
    assert [e.text for e in bob.history(info.id)][-1] == "from the laptop"
    await alice.remove(info.id, at(bob))
    await bob.receive_pending()
    await laptop.receive_pending()
    assert not bob.group(info.id).active and not laptop.group(info.id).active


_KILLED_COMMITTER = """
import asyncio, os, signal, sys
from pathlib import Path
from veil.client import Client

async def main() -> None:
    alice = await Client.open(Path(sys.argv[1]), passphrase="pw")
    def die(point: str) -> None:
        if point == sys.argv[4]:
            os.kill(os.getpid(), signal.SIGKILL)
    alice._groups.crash_hook = die
    await alice.invite(sys.argv[2], sys.argv[3])

asyncio.run(main())
"""


@pytest.mark.parametrize("point", ["before_post", "after_post"])
async def test_kill9_in_the_middle_of_a_commit(
        tmp_path: Path, clients: list[Client], server: ServerProcess, point: str) -> None:
    """A real ``kill -9`` of the committing process, before its commit reached the server
    and after: on restart the commit is settled, never forked."""
    import subprocess
    import sys

    alice, bob, carol = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob)])
    await bob.receive_pending()
    clients.remove(alice)
    await alice.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLED_COMMITTER, str(tmp_path / "alice"), info.id, at(carol),
        point, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == -9, err.decode()[-2000:]
    alice = await Client.open(tmp_path / "alice", passphrase="pw")
    clients.append(alice)
    await alice.sync_groups()
    assert set(alice.group(info.id).members) == {alice.account, bob.account, carol.account}
    await carol.receive_pending()
    await bob.sync_groups()
    assert alice.group(info.id).epoch == bob.group(info.id).epoch == carol.group(info.id).epoch
    await carol.send_group(info.id, "joined after the kill")
    assert await texts(alice) == ["joined after the kill"]
    assert await texts(bob) == ["joined after the kill"]


@pytest.mark.parametrize("lost", [(502, "bad_response"), (503, "unavailable"), "unreachable"])
async def test_a_lost_answer_to_a_stored_commit_does_not_fork(
        tmp_path: Path, clients: list[Client], server: ServerProcess,
        monkeypatch: pytest.MonkeyPatch, lost: tuple[int, str] | str) -> None:
    """Review #5: the server stores the commit but its answer is lost (a 5xx or a
    garbled body from something in between). The pending commit is kept and settled
    against the mailbox: the committer ends at the server's epoch and can still send.
    ("unreachable": the mailbox cannot be read at once either; the next sync settles.)"""
    alice, bob, carol = await trio(clients, tmp_path, server)
    info = await alice.create_group("g", members=[at(bob)])
    await bob.receive_pending()
    real = alice._ctx.api.group_call
    seen: list[str] = []

    async def lose(method: str, path: str, answer: type[Any], body: Any = None,
                   **kwargs: Any) -> Any:
        if seen == ["commit"] and lost == "unreachable":
            seen.append("fetch")
            raise ServerUnreachable("the mailbox cannot be reached")
        got = await real(method, path, answer, body, **kwargs)
        if path.endswith("/commits") and not seen:
            seen.append("commit")              # stored by the server, answer lost
            if isinstance(lost, tuple):
                raise ServerRejected(lost[0], lost[1], "the answer was lost")
            raise ServerRejected(502, "bad_response", "the server's answer is not JSON")
        return got

    monkeypatch.setattr(alice._ctx.api, "group_call", lose)
    if lost == "unreachable":
        with pytest.raises(ServerUnreachable):
            await alice.invite(info.id, at(carol))
        assert gs.get_pending(alice._ctx.store, info.id) is not None
        await alice.sync_groups()                  # the receive path adopts it
    else:
        await alice.invite(info.id, at(carol))
    assert seen[0] == "commit"
    assert gs.get_pending(alice._ctx.store, info.id) is None
    assert set(alice.group(info.id).members) == {alice.account, bob.account, carol.account}
    await bob.sync_groups()
    await carol.receive_pending()
    assert alice.group(info.id).epoch == bob.group(info.id).epoch == carol.group(info.id).epoch
    await alice.send_group(info.id, "still one group")
    assert await texts(bob) == ["still one group"]
    assert await texts(carol) == ["still one group"]


@pytest.mark.parametrize("admin", [False, True])
async def test_an_unlinked_device_leaves_its_groups(
        tmp_path: Path, clients: list[Client], server: ServerProcess, admin: bool) -> None:
    """Review #7: removing a linked device takes its leaves out of the account's groups
    (a commit where the account is an admin, else a proposal the admin carries out):
    the device cannot read the next epoch's messages."""
    alice, bob, _ = await trio(clients, tmp_path, server)
    pending = await Client.begin_link(tmp_path / "bob-laptop", server.url, passphrase="pw",
                                      kdf=FAST)
    finishing = asyncio.create_task(pending.finish(timeout=30))
    await bob.approve_device(pending.code, name="laptop")
    laptop = await finishing
    clients.append(laptop)
    await laptop.receive_pending()                  # publishes its KeyPackages
    info = await alice.create_group("g", members=[at(bob)])
    await bob.receive_pending()
    await laptop.receive_pending()
    assert laptop.group(info.id).active
    if admin:
        await alice.set_admin(info.id, at(bob))
        await bob.sync_groups()
        await laptop._groups.sync(info.id)
    old = laptop._groups._group(info.id)
    old_epoch, old_read = old.epoch, read_cap(old)
    await bob.remove_device(laptop._ctx.device.record.device_id)
    await alice.sync_groups()             # an admin: commits the proposed removal
    assert {m.account: m.devices for m in alice.members(info.id)}[bob.account] == (1,)
    await alice.send_group(info.id, "not for the laptop")
    assert await texts(bob) == ["not for the laptop"]
    with pytest.raises(ServerRejected) as caught:
        await laptop._ctx.api.group_call(
            "GET", f"/v1/groups/{info.id}/messages?epoch={old_epoch + 1}",
            GroupMessagePage, read=old_read)
    assert caught.value.status == 401
    assert await laptop._groups.sync(info.id) == []
    assert not laptop.group(info.id).active


async def test_a_group_message_typed_while_the_server_is_down_goes_once(
        tmp_path: Path, clients: list[Client]) -> None:
    """Issue 11: a group send goes through the persistent outbox. With the server
    stopped the text is kept, encrypted once; after the restart a flush posts it and
    every member shows it once — also when the same bytes are posted twice (a retry
    after an answer that was lost): the second copy is a reused key, dropped."""
    server = ServerProcess(tmp_path / "outbox-data").start()
    try:
        alice, bob, carol = await trio(clients, tmp_path, server)
        info = await alice.create_group("offline", members=[at(bob), at(carol)])
        await bob.receive_pending()
        await carol.receive_pending()
        server.stop()
        with pytest.raises(ServerUnreachable):
            await alice.send_group(info.id, "typed offline")
        (waiting,) = alice.outbox()
        assert (waiting.kind, waiting.to, waiting.stage, waiting.attempts) == \
            ("group", info.id, "sealed", 1)
        posted = waiting.group_message
        assert posted is not None
        assert [e.text for e in alice.history(info.id)] == []
        server.start()
        sent = await alice.flush_outbox()
        assert [(s.id, s.recipient) for s in sent] == [(waiting.id, info.id)]
        assert alice.outbox() == []
        assert [e.text for e in alice.history(info.id)] == ["typed offline"]
        # The same bytes once more, as a retry after a lost answer would post them.
        group = alice._groups._group(info.id)
        await alice._ctx.api.group_call(
            "POST", f"/v1/groups/{info.id}/messages", GroupAppended,
            GroupPost(epoch=waiting.group_epoch or 0, message=posted),
            write=write_cap(group))
        assert await texts(bob) == ["typed offline"]
        assert await texts(carol) == ["typed offline"]
        assert [e.text for e in bob.history(info.id)] == ["typed offline"]
        await alice.sync_groups()
        assert [e.text for e in alice.history(info.id)] == ["typed offline"]
        # A message whose outcome was unknown, found in the mailbox by a sync, is sent.
        await carol.send_group(info.id, "and the next")
        assert await texts(bob) == ["and the next"]
    finally:
        server.stop()


async def test_an_unsent_group_message_found_in_the_mailbox_is_not_sent_again(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """The answer to a post was lost (the server stored it) and the epoch moved on:
    the sync meets the outbox message's bytes in the old epoch and settles it as sent,
    instead of encrypting it again in the new epoch."""
    alice, bob, carol = await trio(clients, tmp_path, server)
    info = await alice.create_group("lost answer", members=[at(bob)])
    await bob.receive_pending()
    group = alice._groups._group(info.id)
    data = Content("6d" * 16, 1, "posted, answer lost").encode()
    encrypted = group.encrypt(data)
    with alice._store.transaction():
        alice._groups._save_state(info.id, group)
        pending_store.save(alice._store, pending_store.PendingMessage(
            id="6d" * 16, to=info.id, text="posted, answer lost", timestamp=1, kind="group",
            group_message=encrypted, group_epoch=group.epoch))
    await alice._ctx.api.group_call(                     # stored; the answer "lost"
        "POST", f"/v1/groups/{info.id}/messages", GroupAppended,
        GroupPost(epoch=group.epoch, message=encrypted), write=write_cap(group))
    await alice.invite(info.id, at(carol))               # the epoch moves on (a sync first)
    assert alice.outbox() == []
    assert [e.text for e in alice.history(info.id)] == ["posted, answer lost"]
    assert await alice.flush_outbox() == []
    assert await texts(bob) == ["posted, answer lost"]
    await carol.receive_pending()
    assert [e.text for e in carol.history(info.id)] == []


_KILLED_INVITER = """
import asyncio, os, signal, sys
from pathlib import Path
from veil.client import Client
import veil.client.groups as groups

groups.ADD_BATCH = 1                   # one device per commit: three batches

async def main() -> None:
    alice = await Client.open(Path(sys.argv[1]), passphrase="pw")
    point, nth = sys.argv[3].split(":")
    seen = []
    def die(at: str) -> None:
        seen.append(at)
        if seen.count(point) == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)
    alice._groups.crash_hook = die
    await alice.invite(sys.argv[2], *sys.argv[4:])

asyncio.run(main())
"""


@pytest.mark.parametrize("point", ["after_post:1", "batch_done:1", "before_post:2"])
async def test_kill9_between_the_batches_of_an_invitation(
        tmp_path: Path, clients: list[Client], server: ServerProcess,
        monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """An invitation of three devices goes in three commits (a batch of one here); a
    real ``kill -9`` cuts it off after the first batch's commit was stored, after the
    first batch was adopted, or with the second batch posted but not settled. The
    remaining batches are in the encrypted store (``group.adding``): the next sync
    settles the cut batch and commits the rest, every invitee joins once, no fork."""
    import subprocess
    import sys

    from veil.client import groups as groups_module

    monkeypatch.setattr(groups_module, "ADD_BATCH", 1)
    alice, bob, carol = await trio(clients, tmp_path, server)
    dave = await person(clients, tmp_path, server, "dave")
    for invitee in (bob, carol, dave):
        await invitee.receive_pending()              # KeyPackages published
    info = await alice.create_group("g")
    clients.remove(alice)
    await alice.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLED_INVITER, str(tmp_path / "alice"), info.id, point,
        at(bob), at(carol), at(dave), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == -9, err.decode()[-2000:]
    alice = await Client.open(tmp_path / "alice", passphrase="pw")
    clients.append(alice)
    adding = gs.get_adding(alice._ctx.store, info.id)
    assert adding is not None and adding.op == "add"
    assert len(adding.key_packages) == (3 if point == "after_post:1" else 2)
    await alice.sync_groups()                        # settles, then the next batches
    await alice.flush_outbox()                       # Welcomes queued before the kill
    assert gs.get_adding(alice._ctx.store, info.id) is None
    assert gs.get_pending(alice._ctx.store, info.id) is None
    assert {m.account: m.devices for m in alice.members(info.id)} == {
        c.account: (1,) for c in (alice, bob, carol, dave)}
    for invitee in (bob, carol, dave):
        assert await texts(invitee) == []
        assert invitee.group(info.id).active
    await alice.sync_groups()
    for c in (bob, carol, dave):
        await c.sync_groups()
    assert len({c.group(info.id).epoch for c in (alice, bob, carol, dave)}) == 1
    await dave.send_group(info.id, "all three of us are in")
    for c in (alice, bob, carol):
        assert await texts(c) == ["all three of us are in"]


async def test_an_invitation_stopped_between_batches_resumes_on_the_next_start(
        tmp_path: Path, clients: list[Client], server: ServerProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same with the client stopped in process (the crash hook raises) once the
    first batch is done: reopened, ``receive_pending`` finishes the invitation."""
    from veil.client import groups as groups_module

    monkeypatch.setattr(groups_module, "ADD_BATCH", 1)
    alice, bob, carol = await trio(clients, tmp_path, server)
    for invitee in (bob, carol):
        await invitee.receive_pending()
    info = await alice.create_group("g")

    class Crash(BaseException):
        pass

    def crash(point: str) -> None:
        if point == "batch_done":
            raise Crash

    alice._groups.crash_hook = crash
    with pytest.raises(Crash):
        await alice.invite(info.id, at(bob), at(carol))
    assert len(alice.group(info.id).members) == 2    # the first batch only
    clients.remove(alice)
    await alice.close()
    alice = await Client.open(tmp_path / "alice", passphrase="pw")
    clients.append(alice)
    await alice.flush_outbox()
    await alice.receive_pending()
    assert set(alice.group(info.id).members) == {alice.account, bob.account, carol.account}
    assert gs.get_adding(alice._ctx.store, info.id) is None
    await bob.receive_pending()
    await carol.receive_pending()
    await alice.send_group(info.id, "both of you")
    assert await texts(bob) == ["both of you"]
    assert await texts(carol) == ["both of you"]
