"""Received commits are staged (RFC 9420 §12.4.2): merged or discarded by the caller.

The delivery service orders one commit per epoch; a client stages what it receives and
merges the commit the delivery service confirmed. Rule for several commits of one epoch:
staging changes nothing, so any number can be staged side by side; merging one (or our
own pending commit) makes every other stale, and merging a stale one is refused.
"""

from __future__ import annotations

import pytest

from tests.unit.core.mls.helpers import NOW, bundle, deliver, make_group, same_epoch
from veil.core.mls.errors import InvalidState, KeyReused
from veil.core.mls.group import ApplicationMessage, CommitApplied, Group, StagedCommit
from veil.core.mls.leaf import Credential


def _stage(group: Group, commit: bytes) -> StagedCommit:
    staged = group.process(commit, now=NOW)
    assert isinstance(staged, StagedCommit)
    return staged


@pytest.mark.parametrize("private", [False, True])
def test_process_then_discard_leaves_the_state_byte_identical(private: bool) -> None:
    g = make_group(3, private_handshakes=private)
    b = bundle("late")
    out = g[0].commit(add=[b.key_package.encoded()], remove=[2], now=NOW)
    before = g[1].serialize()
    staged = _stage(g[1], out.commit)
    assert (staged.committer, staged.epoch, staged.added, staged.removed,
            staged.removed_me) == (0, 2, [2], [2], False)
    assert g[1].epoch == 1 and g[1].dirty == frozenset()
    g[1].discard_staged(staged)
    assert g[1].serialize() == before
    with pytest.raises(InvalidState, match="discarded"):
        g[1].merge_staged(staged)
    # Nothing was consumed: the same commit stages again (a private one included).
    again = _stage(g[1], out.commit)
    g[0].merge_pending_commit()
    assert g[1].merge_staged(again) == CommitApplied(0, 2, [2], [2])
    assert same_epoch(g[:2])


@pytest.mark.parametrize("private", [False, True])
def test_process_then_merge_equals_process_and_merge(private: bool) -> None:
    g = make_group(3, private_handshakes=private)
    twin = Group.restore(g[1].serialize())
    out = g[2].commit(update=True, now=NOW)
    g[2].merge_pending_commit()
    applied = g[1].process_and_merge(out.commit, now=NOW)
    staged = _stage(twin, out.commit)
    assert twin.merge_staged(staged) == applied
    assert twin.save() == g[1].save()
    with pytest.raises(InvalidState, match="merged"):
        twin.merge_staged(staged)
    with pytest.raises(InvalidState, match="merged"):
        twin.discard_staged(staged)


def test_competing_commits_of_one_epoch_follow_the_delivery_service() -> None:
    g = make_group(4)
    first = g[0].commit(update=True, now=NOW)   # both pending for epoch 1 ...
    second = g[2].commit(update=True, now=NOW)
    # ... the delivery service accepts the second one.
    a, b = _stage(g[1], first.commit), _stage(g[1], second.commit)
    assert g[1].merge_staged(b).committer == 2
    with pytest.raises(InvalidState, match="stale"):
        g[1].merge_staged(a)
    g[1].discard_staged(a)  # dropping a stale one is fine
    # The losing committer merges the winner: its own pending commit is dropped.
    g[0].merge_staged(_stage(g[0], second.commit))
    with pytest.raises(InvalidState, match="no commit is pending"):
        g[0].merge_pending_commit()
    g[2].merge_pending_commit()
    deliver(second.commit, [g[3]])
    assert same_epoch(g)
    g[0].encrypt(b"free to send again")


def test_own_pending_commit_merged_makes_a_staged_one_stale() -> None:
    g = make_group(3)
    mine = g[0].commit(update=True, now=NOW)
    theirs = g[1].commit(update=True, now=NOW)
    staged = _stage(g[0], theirs.commit)
    g[0].merge_pending_commit()  # the delivery service accepted ours
    with pytest.raises(InvalidState, match="stale"):
        g[0].merge_staged(staged)
    g[1].discard_pending_commit()
    g[1].merge_staged(_stage(g[1], mine.commit))
    deliver(mine.commit, [g[2]])
    assert same_epoch(g)


def test_the_current_epoch_goes_on_while_a_commit_is_staged() -> None:
    g = make_group(3)
    out = g[2].commit(update=True, now=NOW)
    g[2].merge_pending_commit()
    staged = _stage(g[1], out.commit)
    ct = g[0].encrypt(b"same epoch")
    assert g[1].process(ct, now=NOW) == ApplicationMessage(0, b"same epoch", b"")
    g[1].encrypt(b"and we may send in it")
    p = g[0].propose_remove(2)
    g[1].process(p, now=NOW)
    g[1].merge_staged(staged)
    with pytest.raises(KeyReused):
        g[1].process(ct, now=NOW)  # the previous epoch kept its consumed key
    g[0].process_and_merge(out.commit, now=NOW)
    assert same_epoch(g)


def test_a_staged_commit_merges_only_into_the_group_that_staged_it() -> None:
    g = make_group(3)
    twin = Group.restore(g[1].serialize())
    out = g[0].commit(update=True, now=NOW)
    staged = _stage(g[1], out.commit)
    with pytest.raises(InvalidState, match="stale"):
        twin.merge_staged(staged)
    g[1].merge_staged(staged)


def test_staged_removal_and_external_commit() -> None:
    g = make_group(3)
    out = g[0].commit(remove=[2], now=NOW)
    g[0].merge_pending_commit()
    staged = _stage(g[2], out.commit)
    assert staged.removed_me and g[2].active
    assert g[2].merge_staged(staged) == CommitApplied(0, 2, [], [2], removed_me=True)
    assert not g[2].active
    g[1].process_and_merge(out.commit, now=NOW)
    joiner, commit = Group.join_external(g[0].group_info(), Credential.basic(b"ext"), now=NOW)
    before = g[1].serialize()
    staged = _stage(g[1], commit)
    assert (staged.committer, staged.added, staged.epoch) == (joiner.my_leaf,
                                                              [joiner.my_leaf], 3)
    g[1].discard_staged(staged)
    assert g[1].serialize() == before
    for m in g[:2]:
        assert m.merge_staged(_stage(m, commit)).added == [joiner.my_leaf]
    assert same_epoch([g[0], g[1], joiner])
