"""``Group.preview_welcome``: a Welcome's group, epoch and exporter before the ratchet
tree is known (RFC 9420 §12.4.3.3: the tree "can be provided by other means"), and the
join that then does every check with the tree supplied."""

from __future__ import annotations

import os

import pytest

from tests.unit.core.mls.helpers import NOW, bundle, make_group
from veil.core.mls import Group
from veil.core.mls.errors import MlsError


def test_preview_gives_the_new_epochs_exporter_and_the_join_checks_the_tree() -> None:
    g = make_group(3)
    b = bundle("joiner")
    out = g[0].commit(add=[b.key_package.encoded()], include_tree_in_welcome=False, now=NOW)
    g[0].merge_pending_commit()
    assert out.welcome is not None
    preview = Group.preview_welcome(out.welcome, b)
    assert (preview.group_id, preview.epoch) == (g[0].group_id, g[0].epoch)
    assert not preview.tree_included and preview.cipher_suite == 1
    for label in (b"veil ratchet tree", b"veil ds read"):
        assert preview.export_secret(label, b"", 32) == g[0].export_secret(label, b"", 32)
    tree = g[0].ratchet_tree()
    joined = Group.join(out.welcome, b, ratchet_tree=tree, now=NOW)
    assert joined.epoch_authenticator == g[0].epoch_authenticator
    # A tree that is not the group's (another group's, or altered) is refused.
    other = make_group(4)[0].ratchet_tree()
    with pytest.raises(MlsError):
        Group.join(out.welcome, b, ratchet_tree=other, now=NOW)
    with pytest.raises(MlsError):
        Group.join(out.welcome, b, ratchet_tree=tree[:-1] + bytes([tree[-1] ^ 1]), now=NOW)


def test_preview_refuses_what_is_not_for_it() -> None:
    g = make_group(2)
    b, stranger = bundle("joiner"), bundle("stranger")
    out = g[0].commit(add=[b.key_package.encoded()], now=NOW)
    assert out.welcome is not None
    assert Group.preview_welcome(out.welcome, b).tree_included
    with pytest.raises(MlsError):                     # no secrets for that KeyPackage
        Group.preview_welcome(out.welcome, stranger)
    with pytest.raises(MlsError):                     # not a Welcome at all
        Group.preview_welcome(os.urandom(64), b)
    # A flipped bit in the encrypted GroupInfo fails its AEAD or confirmation tag.
    tampered = bytearray(out.welcome)
    tampered[-20] ^= 1
    with pytest.raises(MlsError):
        Group.preview_welcome(bytes(tampered), b)
