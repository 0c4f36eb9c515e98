"""Array-represented left-balanced binary tree arithmetic (RFC 9420 §4.2, Appendix C).

Leaves sit at even node indices, parents at odd ones; a tree of ``n`` leaves
(``n`` a power of two) has ``2n - 1`` nodes.
"""

from __future__ import annotations


def log2(x: int) -> int:
    return 0 if x == 0 else x.bit_length() - 1


def level(x: int) -> int:
    """Number of trailing one bits: 0 for leaves."""
    if x & 1 == 0:
        return 0
    k = 0
    while (x >> k) & 1 == 1:
        k += 1
    return k


def node_width(n_leaves: int) -> int:
    return 0 if n_leaves == 0 else 2 * (n_leaves - 1) + 1


def root(n_leaves: int) -> int:
    return (1 << log2(node_width(n_leaves))) - 1


def left(x: int) -> int:
    k = level(x)
    if k == 0:
        raise ValueError("leaf has no children")
    return x ^ (0x01 << (k - 1))


def right(x: int) -> int:
    k = level(x)
    if k == 0:
        raise ValueError("leaf has no children")
    return x ^ (0x03 << (k - 1))


def parent(x: int, n_leaves: int) -> int:
    if x == root(n_leaves):
        raise ValueError("root has no parent")
    k = level(x)
    b = (x >> (k + 1)) & 0x01
    return (x | (1 << k)) ^ (b << (k + 1))


def sibling(x: int, n_leaves: int) -> int:
    p = parent(x, n_leaves)
    return right(p) if x < p else left(p)


def leaf_to_node(leaf: int) -> int:
    return 2 * leaf


def node_to_leaf(node: int) -> int:
    return node // 2


def direct_path(x: int, n_leaves: int) -> list[int]:
    """Parents of ``x`` up to and including the root."""
    r = root(n_leaves)
    path: list[int] = []
    # parent() inlined: each step up raises the level by exactly one, so the level is
    # tracked instead of recounted (this runs for every changed node of every commit).
    k = level(x)
    while x != r:
        x = (x | (1 << k)) ^ (((x >> (k + 1)) & 1) << (k + 1))
        k += 1
        path.append(x)
    return path


def copath(x: int, n_leaves: int) -> list[int]:
    """Siblings of ``x`` and of each node on its direct path except the root."""
    r = root(n_leaves)
    if x == r:
        return []
    nodes = [x, *direct_path(x, n_leaves)]
    nodes.pop()
    return [sibling(y, n_leaves) for y in nodes]


def is_in_subtree(x: int, ancestor: int) -> bool:
    """Whether node ``x`` lies in the subtree rooted at ``ancestor``."""
    k = level(ancestor)
    return (x >> (k + 1)) == (ancestor >> (k + 1))


def common_ancestor(x: int, y: int) -> int:
    """Lowest common ancestor of two nodes (RFC 9420 Appendix C)."""
    lx, ly = level(x) + 1, level(y) + 1
    if lx <= ly and (x >> ly) == (y >> ly):
        return y
    if ly <= lx and (x >> lx) == (y >> lx):
        return x
    xn, yn = x, y
    k = 0
    while xn != yn:
        xn >>= 1
        yn >>= 1
        k += 1
    return (xn << k) + (1 << (k - 1)) - 1


def leaves_under(x: int) -> range:
    """Leaf indices in the subtree rooted at node ``x``."""
    k = level(x)
    first_node = x - ((1 << k) - 1)
    return range(first_node // 2, first_node // 2 + (1 << k))

__all__ = [
    "common_ancestor",
    "copath",
    "direct_path",
    "is_in_subtree",
    "leaves_under",
    "left",
    "level",
    "node_width",
    "parent",
    "right",
    "root",
    "sibling",
]
