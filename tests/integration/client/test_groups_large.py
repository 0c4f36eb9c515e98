"""A group beyond what a Welcome with its tree can carry (issue 11): Welcomes travel
without the ratchet tree, the committer posts the tree to the new epoch's mailbox
(encrypted under the epoch's exporter, in chunks), and the invitee joins with it
(docs/groups.md, "Large groups"). Real server process, real clients for the people who
talk; most of the 150+ member devices are KeyPackages only (members who never read)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.integration.client.conftest import new_client
from tests.integration.server.harness import ServerProcess
from veil.client import Client, group_tree
from veil.client import group_store as gs
from veil.client.api import b64
from veil.client.group_core import _Intent
from veil.client.groups import read_cap
from veil.core import keys
from veil.core.mls import Group
from veil.core.mls.crypto import get_suite
from veil.protocol.responses import GroupMessagePage

SILENT_MEMBERS = 148
WELCOME_LIMIT = 64 * 1024            # what a 1:1 content may hold


def silent_key_package(now_s: int) -> tuple[str, bytes]:
    """A member device that never comes online: a Veil credential of a fresh account."""
    identity = keys.IdentityKeyPair.generate()
    account = os.urandom(16).hex()
    priv, public = get_suite(gs.SUITE).generate_signature_key_pair()
    credential = gs.make_credential(identity, account, 1, public)
    bundle = Group.key_package(gs.SUITE, credential, now=now_s, signature_priv=priv,
                               lifetime_seconds=3600, capabilities=gs.CAPABILITIES)
    return account, bundle.key_package.encoded()


async def test_a_new_member_joins_a_group_of_150_devices(
        tmp_path: Path, clients: list[Client], server: ServerProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_tree, "CHUNK_BYTES", 24 * 1024)   # several chunks
    tag = os.urandom(3).hex()
    alice = await new_client(clients, tmp_path, server, "alice", f"alice{tag}")
    bob = await new_client(clients, tmp_path, server, "bob", f"bob{tag}")
    carol = await new_client(clients, tmp_path, server, "carol", f"carol{tag}")
    info = await alice.create_group("big room", members=[f"@bob{tag}"])
    await bob.receive_pending()
    now_s = alice._groups._now_s()
    silent = [silent_key_package(now_s) for _ in range(SILENT_MEMBERS)]
    await alice._groups._change(info.id, _Intent("add", key_packages=silent))
    group = alice._groups._group(info.id)
    assert len(gs.members(group)) == SILENT_MEMBERS + 2
    tree = group.ratchet_tree()
    # A Welcome with the tree (base64 in the 1:1 content) could not travel.
    assert len(b64(tree)) > WELCOME_LIMIT

    await alice.invite(info.id, f"@carol{tag}")
    assert alice.outbox() == []              # the tree was posted, the Welcome delivered
    epoch = alice.group(info.id).epoch
    await carol.receive_pending()            # the Welcome, then the tree from the mailbox
    joined = carol.group(info.id)
    assert joined.active and joined.name == "big room" and joined.epoch == epoch
    assert len(gs.members(carol._groups._group(info.id))) == SILENT_MEMBERS + 3
    assert gs.get_joining(carol._ctx.store, info.id) is None

    # The tree chunks are application messages of the epoch to the server, one each.
    page = await carol._ctx.api.group_call(
        "GET", f"/v1/groups/{info.id}/messages?epoch={epoch}&after=0", GroupMessagePage,
        read=read_cap(carol._groups._group(info.id)))
    key = group_tree.tree_key(carol._groups._group(info.id))
    chunks = [m for m in page.messages if group_tree.open_chunk(
        key, bytes.fromhex(info.id), epoch, m.message) is not None]
    size = len(carol._groups._group(info.id).ratchet_tree())
    assert len(chunks) == -(-size // group_tree.CHUNK_BYTES) >= 3
    assert not any(m.commit for m in chunks)

    await alice.send_group(info.id, "welcome to the big room")
    assert [m.text for m in await carol.receive_pending()] == ["welcome to the big room"]
    assert [m.text for m in await bob.receive_pending()] == ["welcome to the big room"]
    await carol.send_group(info.id, "glad to be here")
    assert [m.text for m in await alice.receive_pending()] == ["glad to be here"]
    assert [m.text for m in await bob.receive_pending()] == ["glad to be here"]


async def test_a_tree_that_does_not_match_is_refused(
        tmp_path: Path, clients: list[Client], server: ServerProcess,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A tree posted under the right key but not the group's (a member lying to a
    joiner) fails the tree-hash check: the Welcome is dropped, nothing is joined."""
    tag = os.urandom(3).hex()
    alice = await new_client(clients, tmp_path, server, "alice", f"alice{tag}")
    bob = await new_client(clients, tmp_path, server, "bob", f"bob{tag}")

    original = group_tree.seal_tree

    def lying(group: Group) -> list[bytes]:
        other = Group.create(gs.SUITE, gs.signer(alice._ctx)[1], now=alice._groups._now_s(),
                             signature_priv=gs.signer(alice._ctx)[0])
        real_tree = other.ratchet_tree
        group.ratchet_tree = real_tree       # type: ignore[method-assign]
        try:
            return original(group)
        finally:
            del group.ratchet_tree

    monkeypatch.setattr(group_tree, "seal_tree", lying)
    info = await alice.create_group("g", members=[f"@bob{tag}"])
    with caplog.at_level(logging.WARNING, logger="veil.client"):
        await bob.receive_pending()
    assert "tree does not verify" in caplog.text
    assert [g.id for g in bob.groups()] == []
    assert gs.get_joining(bob._ctx.store, info.id) is None
