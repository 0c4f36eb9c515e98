"""TreeKEM: creating and processing UpdatePaths (RFC 9420 §7.4–§7.6, §12.4.2).

The sender blanks its direct path, derives a chain of path secrets along its filtered
direct path, signs a fresh leaf bound to the new parent hashes and encrypts each path
secret to the resolution of the matching copath child. A receiver applies the public
part, decrypts the one path secret it can reach and re-derives the rest, checking that
every derived public key matches the path. Before that, every receiver checks that the
path's public keys are new to the tree (§12.4.2), so that all members decide alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from veil.core.mls import treemath as tm
from veil.core.mls.codec import Writer
from veil.core.mls.crypto import CipherSuite
from veil.core.mls.errors import InvalidCommit, MlsDecryptionError
from veil.core.mls.leaf import SOURCE_COMMIT, LeafNode
from veil.core.mls.proposals import HPKECiphertext, UpdatePath, UpdatePathNode
from veil.core.mls.tree import ParentNode, RatchetTree


def next_path_secret(suite: CipherSuite, path_secret: bytes) -> bytes:
    return suite.derive_secret(path_secret, b"path")


def node_key_pair(suite: CipherSuite, path_secret: bytes) -> tuple[bytes, bytes]:
    kp = suite.derive_key_pair(suite.derive_secret(path_secret, b"node"))
    return kp.private, kp.public


@dataclass(slots=True)
class PathResult:
    """Outcome of creating or processing an UpdatePath."""

    commit_secret: bytes
    # node index -> HPKE private key this member now holds on the sender's path
    private_keys: dict[int, bytes]
    # node index -> path secret (kept for Welcome path_secret computation)
    path_secrets: dict[int, bytes]


@dataclass(slots=True)
class PendingPath:
    """A sender's new path applied to its tree, before encryption to the copath."""

    leaf_index: int
    leaf_node: LeafNode
    fdp: list[int]
    path_secrets: list[bytes]
    result: PathResult


def apply_new_path(
    suite: CipherSuite,
    tree: RatchetTree,
    leaf_index: int,
    leaf_template: LeafNode,
    sig_priv: bytes,
    group_id: bytes,
    leaf_secret: bytes | None = None,
) -> PendingPath:
    """Blank the sender's direct path and install a fresh one (RFC 9420 §7.5)."""
    tree.blank_path(leaf_index)
    fdp = tree.filtered_direct_path(leaf_index)
    secret = leaf_secret if leaf_secret is not None else os.urandom(suite.nh)
    secrets: list[bytes] = []
    privs: dict[int, bytes] = {}
    for node in fdp:
        secrets.append(secret)
        priv, pub = node_key_pair(suite, secret)
        privs[node] = priv
        tree.set_node(node, ParentNode(pub))
        secret = next_path_secret(suite, secret)
    commit_secret = secret
    leaf_kp = suite.generate_hpke_key_pair()
    privs[2 * leaf_index] = leaf_kp.private
    # The leaf's parent_hash covers the path, so place an unsigned leaf first.
    provisional = replace(leaf_template, encryption_key=leaf_kp.public,
                          leaf_node_source=SOURCE_COMMIT, lifetime=None, signature=b"")
    tree.set_leaf(leaf_index, provisional)
    parent_hash = tree.set_path_parent_hashes(leaf_index)
    leaf = replace(provisional, parent_hash=parent_hash).signed(
        suite, sig_priv, group_id, leaf_index
    )
    tree.set_leaf(leaf_index, leaf)
    result = PathResult(commit_secret, privs, dict(zip(fdp, secrets, strict=True)))
    return PendingPath(leaf_index, leaf, fdp, secrets, result)


def encrypt_path(
    suite: CipherSuite,
    tree: RatchetTree,
    pending: PendingPath,
    group_context: bytes,
    excluded_leaves: Sequence[int] = (),
) -> UpdatePath:
    """Encrypt each path secret to the copath resolution, new members excluded."""
    n = tree.n_leaves
    x = 2 * pending.leaf_index
    excluded = {2 * i for i in excluded_leaves}
    copath_of = dict(zip(tm.direct_path(x, n), tm.copath(x, n), strict=True))
    # The info (label and GroupContext) is the same for every recipient: encode it once.
    info = suite.hpke_info(b"UpdatePathNode", group_context)
    seal = suite.seal_with_info
    nodes: list[UpdatePathNode] = []
    for node, secret in zip(pending.fdp, pending.path_secrets, strict=True):
        targets = [r for r in tree.resolution(copath_of[node]) if r not in excluded]
        cts = [HPKECiphertext(*seal(_node_public(tree, r), info, secret)) for r in targets]
        nodes.append(UpdatePathNode(_node_public(tree, node), cts))
    return UpdatePath(pending.leaf_node, nodes)


def _node_public(tree: RatchetTree, x: int) -> bytes:
    node = tree.nodes[x]
    if node is None:
        raise InvalidCommit("resolution contains a blank node")
    return node.encryption_key


def check_path_keys_fresh(tree: RatchetTree, path: UpdatePath) -> None:
    """RFC 9420 §12.4.2: no public key of ``path`` appears in any node of ``tree`` (the
    new tree before the path is merged), nor twice in the path itself.

    Every member can check this on public data alone, before decrypting anything; a
    duplicated key would otherwise be noticed only by the members who derive that node.
    """
    keys = [path.leaf_node.encryption_key, *(n.encryption_key for n in path.nodes)]
    if len(set(keys)) != len(keys):
        raise InvalidCommit("UpdatePath repeats a public key")
    census = tree.enc_keys
    if any(census[k] > 0 for k in keys):
        raise InvalidCommit("UpdatePath public key already appears in the tree")


def apply_received_path(
    suite: CipherSuite,
    tree: RatchetTree,
    sender: int,
    path: UpdatePath,
    group_id: bytes,
) -> list[int]:
    """Merge the public part of a received UpdatePath; returns the filtered direct path."""
    leaf = path.leaf_node
    if leaf.leaf_node_source != SOURCE_COMMIT:
        raise InvalidCommit("UpdatePath leaf node source is not commit")
    if not leaf.verify_signature(suite, group_id, sender):
        raise InvalidCommit("UpdatePath leaf node signature does not verify")
    fdp = tree.filtered_direct_path(sender)
    if len(fdp) != len(path.nodes):
        raise InvalidCommit("UpdatePath length does not match the filtered direct path")
    tree.blank_path(sender)
    for node, upn in zip(fdp, path.nodes, strict=True):
        tree.set_node(node, ParentNode(upn.encryption_key))
    tree.set_leaf(sender, leaf)
    expected = tree.set_path_parent_hashes(sender)
    if expected != leaf.parent_hash:
        raise InvalidCommit("UpdatePath parent hash does not match the leaf")
    return fdp


def decrypt_path(
    suite: CipherSuite,
    tree: RatchetTree,
    my_leaf: int,
    sender: int,
    path: UpdatePath,
    fdp: list[int],
    private_key_of: Callable[[int], bytes | None],
    group_context: bytes,
    excluded_leaves: Sequence[int] = (),
) -> PathResult:
    """Decrypt this member's path secret and derive the rest (RFC 9420 §12.4.2)."""
    n = tree.n_leaves
    me = 2 * my_leaf
    sx = 2 * sender
    copath_of = dict(zip(tm.direct_path(sx, n), tm.copath(sx, n), strict=True))
    pos = next((i for i, p in enumerate(fdp) if tm.is_in_subtree(me, p)), None)
    if pos is None:
        raise InvalidCommit("no common ancestor with the committer on its path")
    excluded = {2 * i for i in excluded_leaves}
    resolution = [r for r in tree.resolution(copath_of[fdp[pos]]) if r not in excluded]
    cts = path.nodes[pos].encrypted_path_secret
    if len(cts) != len(resolution):
        raise InvalidCommit("UpdatePath ciphertext count does not match the resolution")
    for r, ct in zip(resolution, cts, strict=True):
        priv = private_key_of(r)
        if priv is None:
            continue
        secret = suite.decrypt_with_label(
            priv, b"UpdatePathNode", group_context, ct.kem_output, ct.ciphertext
        )
        break
    else:
        raise MlsDecryptionError("no private key for any node in the copath resolution")
    return derive_path_from(suite, tree, fdp[pos:], secret, path.nodes[pos:])


def derive_path_from(
    suite: CipherSuite,
    tree: RatchetTree,
    nodes: list[int],
    secret: bytes,
    path_nodes: Sequence[UpdatePathNode] | None = None,
) -> PathResult:
    """Derive keys upward from ``secret`` at ``nodes[0]``, checking public keys."""
    privs: dict[int, bytes] = {}
    secrets: dict[int, bytes] = {}
    for i, node in enumerate(nodes):
        priv, pub = node_key_pair(suite, secret)
        expected = path_nodes[i].encryption_key if path_nodes is not None else (
            _node_public(tree, node)
        )
        if pub != expected:
            raise InvalidCommit("derived path key does not match the UpdatePath")
        privs[node] = priv
        secrets[node] = secret
        secret = next_path_secret(suite, secret)
    return PathResult(secret, privs, secrets)


def encode_update_path(path: UpdatePath) -> bytes:
    w = Writer()
    path.write(w)
    return w.bytes()

__all__ = [
    "PathResult",
    "apply_new_path",
    "apply_received_path",
    "check_path_keys_fresh",
    "decrypt_path",
    "derive_path_from",
    "encrypt_path",
    "node_key_pair",
]
