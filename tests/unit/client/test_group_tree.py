"""``veil.client.group_tree``: the ratchet tree as mailbox messages of an epoch."""

from __future__ import annotations

import pytest

from tests.unit.core.mls.helpers import NOW, bundle, make_group
from veil.client import group_tree
from veil.core.mls import Group
from veil.core.mls.codec import decode_all
from veil.core.mls.messages import CONTENT_APPLICATION, MLSMessage, PrivateMessage


def _open_all(group: Group, messages: list[bytes]) -> dict[int, tuple[int, int, bytes]]:
    key = group_tree.tree_key(group)
    out = {}
    for m in messages:
        got = group_tree.open_chunk(key, group.group_id, group.epoch, m)
        assert got is not None
        index, count, length, data = got
        out[index] = (count, length, data)
    return out


def test_a_tree_in_chunks_opens_and_assembles(monkeypatch: pytest.MonkeyPatch) -> None:
    g = make_group(6)
    tree = g[0].ratchet_tree()
    monkeypatch.setattr(group_tree, "CHUNK_BYTES", 300)
    sealed = group_tree.seal_tree(g[0])
    assert len(sealed) == -(-len(tree) // 300) > 1
    for m in sealed:                 # to the server: an application message of the epoch
        body = decode_all(m, MLSMessage.read).body
        assert isinstance(body, PrivateMessage)
        assert (body.group_id, body.epoch, body.content_type, body.authenticated_data) == \
            (g[0].group_id, g[0].epoch, CONTENT_APPLICATION, b"")
        like = decode_all(g[0].encrypt(b"x" * 400, padding=112), MLSMessage.read).body
        assert isinstance(like, PrivateMessage)
        assert len(body.encrypted_sender_data) == len(like.encrypted_sender_data) == 28
        assert len(body.ciphertext) % 256 == len(like.ciphertext) % 256
    chunks = _open_all(g[1], sealed)          # any member of the epoch holds the key
    assert group_tree.assemble(chunks) == tree
    del chunks[1]
    assert group_tree.assemble(chunks) is None


def test_chunks_open_only_with_their_key_group_and_epoch() -> None:
    g = make_group(2)
    (chunk,) = group_tree.seal_tree(g[0])
    key = group_tree.tree_key(g[0])
    other = make_group(2)[0]
    assert group_tree.open_chunk(group_tree.tree_key(other), g[0].group_id, g[0].epoch,
                                 chunk) is None
    assert group_tree.open_chunk(key, other.group_id, g[0].epoch, chunk) is None
    assert group_tree.open_chunk(key, g[0].group_id, g[0].epoch + 1, chunk) is None
    assert group_tree.open_chunk(key, g[0].group_id, g[0].epoch, g[0].encrypt(b"hi")) is None
    assert group_tree.open_chunk(key, g[0].group_id, g[0].epoch, b"\x00garbage") is None
    # A new epoch has a new key: last epoch's chunks do not open under it.
    g[0].commit(add=[bundle("x").key_package.encoded()], now=NOW)
    g[0].merge_pending_commit()
    assert group_tree.tree_key(g[0]) != key
