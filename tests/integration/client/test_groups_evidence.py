"""Issue 11 §5, the headline evidence: a group of three people with two devices each,
through real clients and a real server process (SQLite, and PostgreSQL when
VEIL_TEST_POSTGRES names a database), plus invitations larger than one Welcome
(docs/groups.md, "Welcomes").

Everything is driven over HTTP (``receive_pending`` / ``sync_groups``): deterministic,
no sleeps."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.integration.client.conftest import new_client
from tests.integration.client.test_groups_large import WELCOME_LIMIT, silent_key_package
from tests.integration.server.harness import ServerProcess
from veil.client import Client, groups
from veil.client import group_store as gs
from veil.client.api import b64
from veil.client.errors import NotGroupMember, ServerRejected
from veil.client.group_core import _Intent, _restore
from veil.client.groups import read_cap
from veil.client.store import FAST
from veil.protocol.responses import GroupMessagePage


def at(client: Client) -> str:
    return f"@{client.me.username}"


async def texts(client: Client) -> list[str]:
    return [m.text for m in await client.receive_pending()]


async def person(clients: list[Client], tmp_path: Path, server: ServerProcess,
                 name: str) -> Client:
    return await new_client(clients, tmp_path, server, name, f"{name}{os.urandom(3).hex()}")


async def link(clients: list[Client], first: Client, home: Path,
               server: ServerProcess) -> Client:
    """A second device of ``first``'s account, linked with the SDK, KeyPackages out."""
    pending = await Client.begin_link(home, server.url, passphrase="pw", kdf=FAST)
    finishing = asyncio.create_task(pending.finish(timeout=30))
    await first.approve_device(pending.code, name="second")
    second = await finishing
    clients.append(second)
    await second.receive_pending()              # publishes its KeyPackages
    return second


async def test_three_people_with_two_devices_each(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    alice = await person(clients, tmp_path, server, "alice")
    bob = await person(clients, tmp_path, server, "bob")
    carol = await person(clients, tmp_path, server, "carol")
    alice2 = await link(clients, alice, tmp_path / "alice2", server)
    bob2 = await link(clients, bob, tmp_path / "bob2", server)
    carol2 = await link(clients, carol, tmp_path / "carol2", server)
    everyone = [alice, alice2, bob, bob2, carol, carol2]

    info = await alice.create_group("Harbour team", "planning", members=[at(bob), at(carol)])
    for device in everyone[1:]:
        assert await texts(device) == []           # the Welcomes
        assert device.group(info.id).active and device.group(info.id).name == "Harbour team"
    assert {m.account: m.devices for m in alice.members(info.id)} == {
        alice.account: (1, 2), bob.account: (1, 2), carol.account: (1, 2)}

    # Bob's second device talks: the other five devices read it, bob's first has it in
    # its history (a message from another device of its own account).
    await bob2.send_group(info.id, "from bob's laptop")
    for device in (alice, alice2, carol, carol2):
        assert await texts(device) == ["from bob's laptop"]
    assert await texts(bob) == []
    assert [e.text for e in bob.history(info.id)] == ["from bob's laptop"]
    assert [e.text for e in bob2.history(info.id)] == ["from bob's laptop"]

    # And the other way: carol's second device; everyone else receives.
    await carol2.send_group(info.id, "from carol's laptop")
    for device in (alice, alice2, bob, bob2):
        assert await texts(device) == ["from carol's laptop"]
    assert await texts(carol) == []
    assert [e.text for e in carol.history(info.id)][-1] == "from carol's laptop"

    # Alice adds dave (one device); dave reads the next message.
    dave = await person(clients, tmp_path, server, "dave")
    await alice.invite(info.id, at(dave))
    assert await texts(dave) == []
    assert dave.group(info.id).active
    await alice2.send_group(info.id, "welcome, dave")
    assert await texts(dave) == ["welcome, dave"]
    for device in (bob, bob2, carol, carol2):
        assert await texts(device) == ["welcome, dave"]
    assert await texts(alice) == []

    # Dave goes offline (his client closed) while several epochs pass.
    clients.remove(dave)
    await dave.close()

    # Alice removes carol: neither of carol's devices reads anything afterwards.
    for device in (carol, carol2):
        await device.sync_groups()
    held = [(d, d._groups._group(info.id)) for d in (carol, carol2)]
    caps = [(d, g.epoch, read_cap(g)) for d, g in held]
    await alice.remove(info.id, at(carol))
    await bob.send_group(info.id, "carol is gone")
    for device, epoch, read in caps:
        with pytest.raises(ServerRejected) as caught:
            await device._ctx.api.group_call(
                "GET", f"/v1/groups/{info.id}/messages?epoch={epoch + 1}",
                GroupMessagePage, read=read)
        assert caught.value.status == 401
        assert await texts(device) == []
        assert not device.group(info.id).active
        with pytest.raises(NotGroupMember):
            await device.send_group(info.id, "still here?")
    for device in (alice, alice2):
        assert await texts(device) == ["carol is gone"]
    assert await texts(bob2) == []                 # bob's own message: history only
    assert [e.text for e in bob2.history(info.id)][-1] == "carol is gone"

    # Bob leaves (both his devices); alice, an admin, commits it on her next sync.
    await bob.leave(info.id)
    assert not bob.group(info.id).active
    await alice.sync_groups()
    assert set(alice.group(info.id).members) == {alice.account, dave.account}
    await bob2.sync_groups()
    assert not bob2.group(info.id).active

    # Alice renames; then a message in the new epoch.
    await alice.rename(info.id, "Harbour crew")
    await alice2.sync_groups()
    assert alice2.group(info.id).name == "Harbour crew"
    await alice.send_group(info.id, "just us now")
    assert await texts(alice2) == []               # alice's own message: history only
    assert [e.text for e in alice2.history(info.id)][-1] == "just us now"
    for device in (bob, bob2, carol, carol2):
        assert await texts(device) == []

    # Dave comes back: he catches up over the removal, the leave and the rename.
    dave = await Client.open(tmp_path / "dave", passphrase="pw")
    clients.append(dave)
    assert await texts(dave) == ["carol is gone", "just us now"]
    joined = dave.group(info.id)
    assert joined.active and joined.name == "Harbour crew"
    assert joined.epoch == alice.group(info.id).epoch == alice2.group(info.id).epoch
    assert set(joined.members) == {alice.account, dave.account}
    await dave.send_group(info.id, "back online")
    assert await texts(alice) == ["back online"]
    assert await texts(alice2) == ["back online"]


# --- the same core flow on PostgreSQL --------------------------------------------------



@pytest.mark.postgres
async def test_a_group_on_postgres(tmp_path: Path, clients: list[Client],
                                   pg_server: ServerProcess) -> None:
    alice = await person(clients, tmp_path, pg_server, "alice")
    bob = await person(clients, tmp_path, pg_server, "bob")
    carol = await person(clients, tmp_path, pg_server, "carol")
    info = await alice.create_group("on postgres", members=[at(bob), at(carol)])
    assert await texts(bob) == [] and await texts(carol) == []
    await alice.send_group(info.id, "hello")
    await bob.send_group(info.id, "hi")
    assert await texts(carol) == ["hello", "hi"]
    assert await texts(alice) == ["hi"]
    assert await texts(bob) == ["hello"]
    old = carol._groups._group(info.id)
    epoch, read = old.epoch, read_cap(old)
    await alice.remove(info.id, at(carol))
    await alice.send_group(info.id, "after the removal")
    with pytest.raises(ServerRejected) as caught:
        await carol._ctx.api.group_call(
            "GET", f"/v1/groups/{info.id}/messages?epoch={epoch + 1}", GroupMessagePage,
            read=read)
    assert caught.value.status == 401
    assert await texts(carol) == []
    assert not carol.group(info.id).active
    assert await texts(bob) == ["after the removal"]
    assert set(alice.group(info.id).members) == {alice.account, bob.account}


# --- an invitation larger than one Welcome ---------------------------------------------

async def test_an_invite_of_321_devices_goes_in_batches(
        tmp_path: Path, clients: list[Client], server: ServerProcess) -> None:
    """320 KeyPackage-only devices and one real client in one invite: a single Welcome
    would not fit a 1:1 content, so the adds go in commits of at most ADD_BATCH devices,
    each with its own Welcome (docs/groups.md, "Welcomes")."""
    alice = await person(clients, tmp_path, server, "alice")
    bob = await person(clients, tmp_path, server, "bob")
    carol = await person(clients, tmp_path, server, "carol")
    info = await alice.create_group("very big room", members=[at(bob)])
    await bob.receive_pending()
    now_s = alice._groups._now_s()
    silent = [silent_key_package(now_s) for _ in range(320)]
    await alice._directory.resolve(at(carol))
    real = [(carol.account, kp) for kp in await alice._groups._claim(carol.account)]
    welcomes: list[tuple[int, int]] = []         # (devices added, Welcome bytes)

    def keep(point: str) -> None:
        pending = gs.get_pending(alice._ctx.store, info.id)
        if point == "after_post" and pending is not None and pending.welcome:
            added = len(gs.members(_restore(pending.after_slow, pending.after_hot))) - \
                len(gs.members(_restore(pending.before_slow, pending.before_hot)))
            welcomes.append((added, len(pending.welcome)))

    alice._groups.crash_hook = keep
    await alice._groups._change(info.id, _Intent("add", key_packages=silent + real))
    alice._groups.crash_hook = None
    assert [n for n, _ in welcomes] == [groups.ADD_BATCH, groups.ADD_BATCH,
                                        321 - 2 * groups.ADD_BATCH]
    per_device = max(size / n for n, size in welcomes)     # 136 bytes measured
    assert 100 < per_device < 200
    assert all(len(b64(b"x" * size)) < WELCOME_LIMIT for _, size in welcomes)
    # ADD_BATCH leaves a margin of two; a Welcome for 500 devices would not fit.
    assert len(b64(b"x" * int(per_device * 2 * groups.ADD_BATCH))) < WELCOME_LIMIT
    assert len(b64(b"x" * int(per_device * 500))) > WELCOME_LIMIT
    assert len(gs.members(alice._groups._group(info.id))) == 323
    # carol's Welcome went out (those to the 320 made-up accounts cannot: no such account)
    assert [m for m in alice.outbox() if m.to == carol.account] == []

    await carol.receive_pending()                # the last batch's Welcome, then its tree
    joined = carol.group(info.id)
    assert joined.active and joined.epoch == alice.group(info.id).epoch
    await alice.send_group(info.id, "welcome, all 321")
    assert await texts(carol) == ["welcome, all 321"]
    assert await texts(bob) == ["welcome, all 321"]
    await carol.send_group(info.id, "thanks")
    assert await texts(alice) == ["thanks"]
