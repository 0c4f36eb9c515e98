"""ratchet_tree extension bytes as a joiner receives them: decode, shape checks, tree hash,
resolutions and parent-hash validation. Only MLS errors may escape."""

from __future__ import annotations

from veil.core.mls.crypto import get_suite
from veil.core.mls.errors import MlsError
from veil.core.mls.tree import RatchetTree

ALLOWED = (MlsError,)
_SUITE = get_suite(1)


def _seeds() -> list[bytes]:
    from tests.unit.core.mls.helpers import NOW, make_group
    from veil.core.mls.state import GroupState

    g = make_group(3)
    out = g[1].commit(update=True, now=NOW)
    g[1].merge_pending_commit()
    g[0].process_and_merge(out.commit, now=NOW)
    return [GroupState.decode(g[0].serialize()).tree.encode()]


SEEDS = _seeds()


def target(data: bytes) -> None:
    tree = RatchetTree.decode(_SUITE, data)
    tree.tree_hash()
    for x in range(len(tree.nodes)):
        tree.resolution(x)
    tree.verify_unmerged_leaves()
    tree.verify_parent_hashes()
