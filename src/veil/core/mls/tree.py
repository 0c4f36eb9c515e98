"""The ratchet tree: nodes, blanks, unmerged leaves, resolution, tree and parent hashes.

RFC 9420 §4.1, §7.1, §7.7–§7.9 and §12.4.3.3. Tree hashes and resolutions are cached per
node and invalidated only along the direct path of a node that changes, so a commit
costs O(log n) hash recomputations instead of O(n).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import compress

from veil.core.mls import treemath as tm
from veil.core.mls.codec import Reader, Writer, encode_varint, read_u32, write_u32
from veil.core.mls.crypto import CipherSuite
from veil.core.mls.errors import InvalidTree, MlsDecodeError
from veil.core.mls.leaf import SOURCE_COMMIT, Credential, LeafNode

NODE_LEAF = 1
NODE_PARENT = 2
_LEAF_TAG = bytes((NODE_LEAF,))
_PARENT_TAG = bytes((NODE_PARENT,))


@dataclass(frozen=True, slots=True)
class ParentNode:
    encryption_key: bytes
    parent_hash: bytes = b""
    unmerged_leaves: tuple[int, ...] = ()

    def write(self, w: Writer) -> None:
        w.opaque(self.encryption_key)
        w.opaque(self.parent_hash)
        w.vector(list(self.unmerged_leaves), write_u32)

    @staticmethod
    def read(r: Reader) -> ParentNode:
        key = r.opaque()
        ph = r.opaque()
        return ParentNode(key, ph, tuple(r.vector(read_u32)))


Node = LeafNode | ParentNode


def write_node(w: Writer, node: Node) -> None:
    if isinstance(node, LeafNode):
        w.u8(NODE_LEAF)
    else:
        w.u8(NODE_PARENT)
    node.write(w)


def read_node(r: Reader) -> Node:
    t = r.u8()
    if t == NODE_LEAF:
        return LeafNode.read(r)
    if t == NODE_PARENT:
        return ParentNode.read(r)
    raise MlsDecodeError("unknown node type")


def read_ratchet_tree_nodes(r: Reader) -> list[Node | None]:
    return r.vector(lambda rr: rr.optional(read_node))


def _write_optional_node(w: Writer, node: Node | None) -> None:
    if node is None:
        w.u8(0)
    else:
        w.u8(1)
        write_node(w, node)


def write_ratchet_tree_nodes(w: Writer, nodes: list[Node | None]) -> None:
    w.vector(nodes, _write_optional_node)


class RatchetTree:
    """A public ratchet tree with cached tree hashes and resolutions."""

    def __init__(self, suite: CipherSuite, nodes: list[Node | None]) -> None:
        self.suite = suite
        self.nodes = nodes
        self._hash: dict[int, bytes] = {}
        self._res: dict[int, tuple[int, ...]] = {}
        # node index -> encoded optional<Node>; nodes change rarely, trees are re-sent often
        self._enc: dict[int, bytes] = {}
        # Key and credential census, kept current on every change so that uniqueness
        # and capability checks cost O(1) per commit instead of a scan of the tree.
        self.enc_keys: Counter[bytes] = Counter()
        self.sig_keys: Counter[bytes] = Counter()
        self.cred_types: Counter[int] = Counter()
        self.cred_caps: Counter[frozenset[int]] = Counter()
        # Credentials of the members: one leaf per client (RFC 9420 §12.2).
        self.creds: Counter[Credential] = Counter()
        for node in nodes:
            self._count(node, 1)

    def _count(self, node: Node | None, delta: int) -> None:
        if node is None:
            return
        self.enc_keys[node.encryption_key] += delta
        if isinstance(node, LeafNode):
            self.sig_keys[node.signature_key] += delta
            self.cred_types[node.credential.credential_type] += delta
            self.cred_caps[frozenset(node.capabilities.credentials)] += delta
            self.creds[node.credential] += delta

    # -- construction and codec ---------------------------------------------------

    @staticmethod
    def from_nodes(suite: CipherSuite, nodes: list[Node | None]) -> RatchetTree:
        """Validate the shape of a decoded ratchet_tree and pad it to a full tree."""
        if not nodes or nodes[-1] is None:
            raise InvalidTree("ratchet tree is empty or ends with a blank node")
        for i, node in enumerate(nodes):
            if node is None:
                continue
            if (i % 2 == 0) != isinstance(node, LeafNode):
                raise InvalidTree("node type does not match its position in the tree")
        width = 1
        while width < len(nodes):
            width = 2 * width + 1
        padded = list(nodes) + [None] * (width - len(nodes))
        return RatchetTree(suite, padded)

    @staticmethod
    def decode(suite: CipherSuite, data: bytes) -> RatchetTree:
        from veil.core.mls.codec import decode_all

        return RatchetTree.from_nodes(suite, decode_all(data, read_ratchet_tree_nodes))

    def truncated_nodes(self) -> list[Node | None]:
        nodes = list(self.nodes)
        while nodes and nodes[-1] is None:
            nodes.pop()
        return nodes

    def _node_bytes(self, x: int) -> bytes:
        cached = self._enc.get(x)
        if cached is None:
            w = Writer()
            _write_optional_node(w, self.nodes[x])
            cached = w.bytes()
            self._enc[x] = cached
        return cached

    def encode(self) -> bytes:
        """The ratchet_tree extension encoding, trailing blanks truncated (§12.4.3.3)."""
        last = len(self.nodes)
        while last and self.nodes[last - 1] is None:
            last -= 1
        w = Writer()
        w.opaque(b"".join(self._node_bytes(x) for x in range(last)))
        return w.bytes()

    def encode_nodes(self) -> bytes:
        """Every node, blanks included (full width), as ``optional<Node> nodes<V>``: the
        saved-state form, built from the per-node encoding cache."""
        w = Writer()
        w.opaque(b"".join(self._node_bytes(x) for x in range(len(self.nodes))))
        return w.bytes()

    def copy(self) -> RatchetTree:
        t = RatchetTree(self.suite, [])
        t.nodes = list(self.nodes)
        t._copy_census(self)
        t._hash = dict(self._hash)
        t._res = dict(self._res)
        t._enc = dict(self._enc)
        return t

    def _copy_census(self, other: RatchetTree) -> None:
        self.enc_keys = other.enc_keys.copy()
        self.sig_keys = other.sig_keys.copy()
        self.cred_types = other.cred_types.copy()
        self.cred_caps = other.cred_caps.copy()
        self.creds = other.creds.copy()

    # -- accessors ------------------------------------------------------------------

    @property
    def n_leaves(self) -> int:
        return (len(self.nodes) + 1) // 2

    def leaf(self, leaf_index: int) -> LeafNode | None:
        if leaf_index < 0 or leaf_index >= self.n_leaves:
            return None
        node = self.nodes[2 * leaf_index]
        return node if isinstance(node, LeafNode) else None

    def parent_node(self, x: int) -> ParentNode | None:
        node = self.nodes[x]
        return node if isinstance(node, ParentNode) else None

    def members(self) -> Iterator[tuple[int, LeafNode]]:
        for i in range(self.n_leaves):
            node = self.nodes[2 * i]
            if isinstance(node, LeafNode):
                yield i, node

    def member_count(self) -> int:
        return sum(1 for _ in self.members())

    # -- mutation -------------------------------------------------------------------

    def _invalidate(self, x: int) -> None:
        hashes = self._hash
        res = self._res
        hashes.pop(x, None)
        res.pop(x, None)
        for p in tm.direct_path(x, self.n_leaves):
            hashes.pop(p, None)
            res.pop(p, None)

    def set_node(self, x: int, node: Node | None) -> None:
        self._count(self.nodes[x], -1)
        self._count(node, 1)
        self.nodes[x] = node
        self._enc.pop(x, None)
        self._invalidate(x)

    def set_leaf(self, leaf_index: int, leaf: LeafNode | None) -> None:
        self.set_node(2 * leaf_index, leaf)

    def blank_path(self, leaf_index: int) -> None:
        for x in tm.direct_path(2 * leaf_index, self.n_leaves):
            if self.nodes[x] is not None:
                self.set_node(x, None)

    def _extend(self) -> None:
        n = len(self.nodes)
        self.nodes.extend([None] * (n + 1))
        self._hash.clear()
        self._res.clear()

    def add_leaf(self, leaf: LeafNode, start: int = 0) -> int:
        """Place ``leaf`` in the leftmost blank leaf (extending if needed); RFC 9420 §7.7.

        ``start`` lets a caller adding several leaves skip the ones it just filled.
        """
        index = next(
            (i for i in range(start, self.n_leaves) if self.nodes[2 * i] is None), None
        )
        if index is None:
            index = self.n_leaves
            self._extend()
        self.set_leaf(index, leaf)
        for x in tm.direct_path(2 * index, self.n_leaves):
            node = self.nodes[x]
            if isinstance(node, ParentNode):
                self.set_node(x, ParentNode(
                    node.encryption_key, node.parent_hash,
                    tuple(sorted((*node.unmerged_leaves, index))),
                ))
        return index

    def remove_leaf(self, leaf_index: int) -> None:
        self.set_leaf(leaf_index, None)
        self.blank_path(leaf_index)

    def truncate(self) -> None:
        """Drop the right half of the tree while it holds only blank leaves."""
        changed = False
        while self.n_leaves > 1:
            half = self.n_leaves // 2
            if any(self.nodes[2 * i] is not None for i in range(half, self.n_leaves)):
                break
            del self.nodes[len(self.nodes) // 2:]
            changed = True
        if changed:
            self._hash.clear()
            self._res.clear()
            self._enc = {x: b for x, b in self._enc.items() if x < len(self.nodes)}

    # -- resolution -----------------------------------------------------------------

    def resolution(self, x: int) -> tuple[int, ...]:
        """RFC 9420 §4.1.1: the non-blank nodes covering the subtree of ``x``."""
        cached = self._res.get(x)
        if cached is not None:
            return cached
        node = self.nodes[x]
        res: tuple[int, ...]
        if isinstance(node, ParentNode):
            res = (x, *(2 * i for i in node.unmerged_leaves))
        elif node is not None:
            res = (x,)
        elif x % 2 == 0:
            res = ()
        else:
            k = tm.level(x)
            lo, hi = x - (1 << k) + 1, x + (1 << k)
            nodes = self.nodes
            # When no parent below x holds a key (a freshly created group, or blanked
            # paths), the resolution is just the non-blank leaves: found at C speed
            # (nodes are always truthy), instead of one recursive call per node.
            if next(filter(None, nodes[lo + 1:hi:2]), None) is None:
                res = tuple(compress(range(lo, hi, 2), nodes[lo:hi:2]))
            else:
                res = self.resolution(tm.left(x)) + self.resolution(tm.right(x))
        self._res[x] = res
        return res

    def filtered_direct_path(self, leaf_index: int) -> list[int]:
        n = self.n_leaves
        x = 2 * leaf_index
        return [
            p for p, s in zip(tm.direct_path(x, n), tm.copath(x, n), strict=True)
            if self.resolution(s)
        ]

    # -- tree hash ------------------------------------------------------------------

    # TreeHashInput (§7.8) is built by concatenation: a tree hash from scratch (joining,
    # a group created in one commit) hashes 2n nodes, and a Writer per node showed up.

    def _leaf_hash(self, leaf_index: int, leaf: LeafNode | None) -> bytes:
        head = _LEAF_TAG + leaf_index.to_bytes(4, "big")
        if leaf is None:
            return self.suite.hash(head + b"\x00")
        return self.suite.hash(head + b"\x01" + leaf.encoded())

    def _parent_hash_input(self, node: ParentNode | None, lh: bytes, rh: bytes) -> bytes:
        if node is None:
            body = b"\x00"
        else:
            w = Writer()
            w.u8(1)
            node.write(w)
            body = w.bytes()
        return self.suite.hash(b"".join((
            _PARENT_TAG, body, encode_varint(len(lh)), lh, encode_varint(len(rh)), rh)))

    def tree_hash(self, x: int | None = None) -> bytes:
        """Tree hash of the subtree at ``x`` (default: the root); RFC 9420 §7.8."""
        if x is None:
            x = tm.root(self.n_leaves)
        cached = self._hash.get(x)
        if cached is not None:
            return cached
        node = self.nodes[x]
        if x % 2 == 0:
            h = self._leaf_hash(x // 2, node if isinstance(node, LeafNode) else None)
        else:
            pnode = node if isinstance(node, ParentNode) else None
            h = self._parent_hash_input(pnode, self.tree_hash(tm.left(x)),
                                        self.tree_hash(tm.right(x)))
        self._hash[x] = h
        return h

    def tree_hash_excluding(self, x: int, excluded: frozenset[int]) -> bytes:
        """Tree hash of ``x`` as if the ``excluded`` leaves had never been added."""
        if not excluded or not any(i in excluded for i in tm.leaves_under(x)):
            return self.tree_hash(x)
        node = self.nodes[x]
        if x % 2 == 0:
            return self._leaf_hash(x // 2, None)
        pnode = node if isinstance(node, ParentNode) else None
        if pnode is not None:
            pnode = ParentNode(
                pnode.encryption_key, pnode.parent_hash,
                tuple(i for i in pnode.unmerged_leaves if i not in excluded),
            )
        return self._parent_hash_input(
            pnode,
            self.tree_hash_excluding(tm.left(x), excluded),
            self.tree_hash_excluding(tm.right(x), excluded),
        )

    # -- parent hash ----------------------------------------------------------------

    def parent_hash_of(self, p: int, copath_child: int) -> bytes:
        """ParentHash(P) seen from the child opposite ``copath_child`` (RFC 9420 §7.9)."""
        node = self.parent_node(p)
        if node is None:
            raise InvalidTree("parent hash of a blank node")
        sibling_hash = self.tree_hash_excluding(copath_child, frozenset(node.unmerged_leaves))
        w = Writer()
        w.opaque(node.encryption_key)
        w.opaque(node.parent_hash)
        w.opaque(sibling_hash)
        return self.suite.hash(w.bytes())

    def set_path_parent_hashes(self, leaf_index: int) -> bytes:
        """Fill parent_hash along the filtered direct path; returns the leaf's value."""
        n = self.n_leaves
        x = 2 * leaf_index
        fdp = self.filtered_direct_path(leaf_index)
        child_of: dict[int, int] = {}
        prev = x
        for p in tm.direct_path(x, n):
            child_of[p] = prev
            prev = p
        above = b""
        for i in range(len(fdp) - 1, -1, -1):
            p = fdp[i]
            node = self.parent_node(p)
            if node is None:
                raise InvalidTree("filtered direct path node is blank")
            if node.parent_hash != above:
                self.set_node(p, ParentNode(node.encryption_key, above, node.unmerged_leaves))
            above = self.parent_hash_of(p, tm.sibling(child_of[p], n))
        return above

    def _node_parent_hash(self, d: int) -> bytes | None:
        node = self.nodes[d]
        if isinstance(node, ParentNode):
            return node.parent_hash
        if isinstance(node, LeafNode) and node.leaf_node_source == SOURCE_COMMIT:
            return node.parent_hash
        return None

    def verify_parent_hashes(self) -> None:
        """Every non-blank parent must be parent-hash valid (RFC 9420 §7.9.2)."""
        for p in range(1, len(self.nodes), 2):
            node = self.parent_node(p)
            if node is None:
                continue
            unmerged = {2 * i for i in node.unmerged_leaves}
            ok = False
            for c, s in ((tm.left(p), tm.right(p)), (tm.right(p), tm.left(p))):
                ph = self.parent_hash_of(p, s)
                for d in self.resolution(c):
                    if d not in unmerged and self._node_parent_hash(d) == ph:
                        ok = True
                        break
                if ok:
                    break
            if not ok:
                raise InvalidTree(f"parent node {p} is not parent-hash valid")

    def verify_unmerged_leaves(self) -> None:
        n = self.n_leaves
        for p in range(1, len(self.nodes), 2):
            node = self.parent_node(p)
            if node is None:
                continue
            for leaf in node.unmerged_leaves:
                x = 2 * leaf
                if leaf >= n or self.nodes[x] is None or not tm.is_in_subtree(x, p):
                    raise InvalidTree("unmerged leaf is blank or outside its parent")
                for q in tm.direct_path(x, n):
                    if q == p:
                        break
                    qn = self.parent_node(q)
                    if qn is not None and leaf not in qn.unmerged_leaves:
                        raise InvalidTree("unmerged leaf missing below its parent")

__all__ = [
    "Node",
    "ParentNode",
    "RatchetTree",
    "read_ratchet_tree_nodes",
    "write_ratchet_tree_nodes",
]
