"""Tree arithmetic beyond the published vectors: direct paths, copaths, ancestors."""

from __future__ import annotations

from veil.core.mls import treemath as tm


def test_direct_path_and_copath_of_leaf_0_in_8_leaves() -> None:
    assert tm.direct_path(0, 8) == [1, 3, 7]
    assert tm.copath(0, 8) == [2, 5, 11]


def test_common_ancestor_matches_the_naive_definition() -> None:
    n = 16
    for a in range(0, 2 * n - 1):
        for b in range(0, 2 * n - 1):
            pa = [a, *tm.direct_path(a, n)]
            pb = set([b, *tm.direct_path(b, n)])
            naive = next(x for x in pa if x in pb)
            assert tm.common_ancestor(a, b) == naive


def test_leaves_under_and_subtree() -> None:
    assert list(tm.leaves_under(3)) == [0, 1, 2, 3]
    assert list(tm.leaves_under(11)) == [4, 5, 6, 7]
    assert tm.is_in_subtree(8, 11)
    assert not tm.is_in_subtree(6, 11)
