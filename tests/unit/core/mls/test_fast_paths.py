"""The performance shortcuts agree with the definitions they replace.

Resolution of a subtree without keyed parents, treemath's inlined direct path, the
bytes a decoded LeafNode/KeyPackage keeps for its signature and encoding, the uint16
vector reader and the once-per-context HPKE info.
"""

from __future__ import annotations

import random

import pytest

from tests.unit.core.mls.helpers import NOW, bundle, make_group
from veil.core.mls import treemath as tm
from veil.core.mls.codec import Reader, Writer, decode_all, write_u16
from veil.core.mls.crypto import get_suite
from veil.core.mls.errors import MlsDecodeError
from veil.core.mls.leaf import SOURCE_UPDATE, Capabilities, Credential, KeyPackage, LeafNode
from veil.core.mls.tree import Node, ParentNode, RatchetTree


def _reference_resolution(nodes: list[Node | None], x: int) -> tuple[int, ...]:
    """RFC 9420 §4.1.1, literally."""
    node = nodes[x] if x < len(nodes) else None
    if isinstance(node, ParentNode):
        return (x, *(2 * i for i in node.unmerged_leaves))
    if node is not None:
        return (x,)
    if x % 2 == 0:
        return ()
    return _reference_resolution(nodes, tm.left(x)) + _reference_resolution(nodes, tm.right(x))


def _leaf(i: int) -> LeafNode:
    return LeafNode(bytes([i % 256]) * 32, bytes([i % 256]) * 31 + b"s", Credential.basic(b"x"),
                    Capabilities(), SOURCE_UPDATE)


@pytest.mark.parametrize("seed", range(40))
def test_resolution_matches_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    n_leaves = 1 << rng.randrange(0, 7)
    p_leaf, p_parent = rng.random(), rng.choice([0.0, 0.0, 0.2, 0.6])
    nodes: list[Node | None] = [
        _leaf(x // 2) if x % 2 == 0 and rng.random() < p_leaf else None
        for x in range(2 * n_leaves - 1)
    ]
    for x in range(1, 2 * n_leaves - 1, 2):
        if rng.random() < p_parent:
            under = [i for i in tm.leaves_under(x)
                     if nodes[2 * i] is not None and rng.random() < 0.3]
            nodes[x] = ParentNode(bytes([x % 256]) * 32, b"", tuple(under))
    tree = RatchetTree(get_suite(1), nodes)
    for x in range(len(nodes)):
        assert tree.resolution(x) == _reference_resolution(nodes, x)


def test_direct_path_matches_repeated_parent() -> None:
    for n in range(1, 80):
        r = tm.root(n)
        for x in range(2 * n - 1):
            expected, y = [], x
            while y != r:
                y = tm.parent(y, n)
                expected.append(y)
            assert tm.direct_path(x, n) == expected


def _re_encoded_leaf(leaf: LeafNode) -> bytes:
    w = Writer()
    leaf._write_body(w)
    w.opaque(leaf.signature)
    return w.bytes()


def test_decoded_key_package_keeps_canonical_bytes() -> None:
    kp = bundle("alice").key_package
    data = kp.encoded()
    decoded = decode_all(data, KeyPackage.read)
    assert decoded.encoded() == data
    w = Writer()
    decoded._write_body(w)
    assert decoded.tbs() == w.bytes() == kp.tbs()
    assert decoded.leaf_node.encoded() == _re_encoded_leaf(decoded.leaf_node)
    assert decoded.leaf_node.tbs(b"", 0) == kp.leaf_node.tbs(b"", 0)
    suite = get_suite(1)
    assert suite.verify_with_label(decoded.leaf_node.signature_key, b"KeyPackageTBS",
                                   decoded.tbs(), decoded.signature)


def test_commit_leaf_tbs_binds_group_and_index() -> None:
    alice, bob = make_group(2)
    out = bob.commit(update=True, now=NOW)
    bob.merge_pending_commit()
    alice.process_and_merge(out.commit, now=NOW)
    leaf = alice._live().tree.leaf(bob.my_leaf)
    assert leaf is not None
    assert leaf.encoded() == _re_encoded_leaf(leaf)
    gid = alice._live().group_id
    assert leaf.verify_signature(get_suite(1), gid, bob.my_leaf)
    assert not leaf.verify_signature(get_suite(1), gid, bob.my_leaf + 1)
    assert not leaf.verify_signature(get_suite(1), gid + b"x", bob.my_leaf)


def test_u16_vector() -> None:
    w = Writer()
    w.vector([1, 2, 0xFFFF], write_u16)
    assert decode_all(w.bytes(), Reader.u16_vector) == (1, 2, 0xFFFF)
    assert decode_all(b"\x00", Reader.u16_vector) == ()
    with pytest.raises(MlsDecodeError):
        decode_all(b"\x03\x00\x01\x02", Reader.u16_vector)
    with pytest.raises(MlsDecodeError):
        decode_all(b"\x04\x00\x01", Reader.u16_vector)


def test_seal_with_info_opens_with_decrypt_with_label() -> None:
    suite = get_suite(1)
    kp = suite.generate_hpke_key_pair()
    info = suite.hpke_info(b"UpdatePathNode", b"context")
    kem_output, ct = suite.seal_with_info(kp.public, info, b"secret")
    assert suite.decrypt_with_label(kp.private, b"UpdatePathNode", b"context", kem_output,
                                    ct) == b"secret"
