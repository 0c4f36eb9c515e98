"""Attacks by misbehaving members (and one outsider) against honest members.

Each test plays the attack: a misbehaving party builds its message through the public
``Group`` API, by editing its own structures, or with the sender-side checks of its own
copy of the library switched off (``helpers.misbehaving``). Honest members run the
library unmodified and must all refuse, each keeping its state; an honest committer must
not be stopped by junk proposals others cached for it. Findings 10-15 of the outside
review; RFC 9420 sections are cited per test.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace

import pytest

from tests.unit.core.mls.helpers import (
    DAY,
    NOW,
    bundle,
    committed,
    deliver,
    make_group,
    misbehaving,
    same_epoch,
    state,
)
from veil.core.mls import treekem
from veil.core.mls.codec import decode_all
from veil.core.mls.crypto import CipherSuite
from veil.core.mls.errors import (
    CredentialRejected,
    InvalidCommit,
    InvalidKeyPackage,
    InvalidLeafNode,
    InvalidProposal,
    InvalidState,
    InvalidWelcome,
    MlsError,
)
from veil.core.mls.group import CommitApplied, Group
from veil.core.mls.leaf import SOURCE_UPDATE, Credential, LeafNode
from veil.core.mls.messages import MLSMessage, PublicMessage
from veil.core.mls.proposals import (
    PSK_EXTERNAL,
    Add,
    PreSharedKey,
    PreSharedKeyID,
    ReInit,
    Remove,
    Update,
)
from veil.core.mls.state import GroupState

# A KeyPackage minted 200 days before NOW with the default 90-day lifetime: expired.
STALE = NOW - 200 * DAY


Errors = type[MlsError] | tuple[type[MlsError], ...]


def _refused_by_all(message: bytes, honest: list[Group], error: Errors = MlsError) -> None:
    """Every honest member refuses ``message`` and keeps its state byte for byte."""
    for m in honest:
        before = m.serialize()
        with pytest.raises(error):
            m.process(message, now=NOW)
        assert m.active and m.serialize() == before


def _update_leaf(member: Group, **changes: object) -> LeafNode:
    """An Update leaf for ``member``'s own leaf with ``changes`` applied, signed by it."""
    s = state(member)
    old = s.tree.leaf(s.my_leaf)
    assert old is not None
    fresh = s.suite.generate_hpke_key_pair()
    s.pending_leaf_keys[fresh.public] = fresh.private
    fields: dict[str, object] = {"encryption_key": fresh.public, **changes}
    return replace(old, leaf_node_source=SOURCE_UPDATE, lifetime=None, parent_hash=b"",
                   **fields).signed(s.suite, s.sig_priv, s.group_id, s.my_leaf)  # type: ignore[arg-type]


def _tree(group: Group) -> bytes:
    return GroupState.decode(group.serialize()).tree.encode()


# -- 10. KeyPackage lifetimes: time is required, never "skip the check" -----------------


def test_clock_is_a_required_argument_everywhere_lifetimes_are_judged() -> None:
    # RFC 9420 §7.3: a client MUST check the lifetime of leaves it sends and SHOULD of
    # those it receives. A missing clock must not silently mean "skip the check".
    for fn in (Group.commit, Group.process, Group.process_and_merge, Group.join,
               Group.join_external, Group.propose_add, Group.create, Group.key_package):
        param = inspect.signature(fn).parameters["now"]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY
        assert param.default is inspect.Parameter.empty, fn.__qualname__


def test_expired_key_package_add_is_refused_by_committer_and_every_receiver() -> None:
    g = make_group(3)
    stale = bundle("carol", now=STALE).key_package.encoded()
    # An honest committer refuses with its real clock, and cannot forget the clock.
    with pytest.raises(InvalidKeyPackage, match="lifetime"):
        g[1].commit(add=[stale], now=NOW)
    with pytest.raises(TypeError):
        g[1].commit(add=[stale])  # type: ignore[call-arg]
    with pytest.raises(InvalidState):
        g[1].commit(add=[stale], now=None)  # type: ignore[arg-type]
    # A misbehaving committer lies about the time; receivers judge by their own clock.
    out = g[0].commit(add=[stale], now=STALE + DAY)
    _refused_by_all(out.commit, g[1:], InvalidKeyPackage)
    for m in g[1:]:
        with pytest.raises(TypeError):
            m.process(out.commit)  # type: ignore[call-arg]
        with pytest.raises(InvalidState):
            m.process(out.commit, now=None)  # type: ignore[arg-type]
        assert m.epoch == 1


def test_joiner_refuses_a_welcome_for_its_own_expired_key_package() -> None:
    # The committer lied about the time; the joiner checks its own KeyPackage when it
    # joins (RFC 9420 §7.3 lifetime, §12.4.3.1 "validate the LeafNode").
    g = make_group(1)
    carol = bundle("carol", now=STALE)
    out = g[0].commit(add=[carol.key_package.encoded()], now=STALE + DAY)
    assert out.welcome is not None
    with pytest.raises(InvalidWelcome, match="lifetime"):
        Group.join(out.welcome, carol, now=NOW)
    with pytest.raises(TypeError):
        Group.join(out.welcome, carol)  # type: ignore[call-arg]
    # Judged at a time her KeyPackage covered, the same Welcome is fine (m0's own leaf
    # was minted at NOW, so the tree's other lifetimes are not judged here).
    Group.join(out.welcome, carol, now=STALE + DAY, check_tree_lifetimes=False)


def test_joiner_checks_the_lifetimes_of_key_package_leaves_in_the_tree() -> None:
    # Carol was added long ago and never updated: her leaf still carries her KeyPackage's
    # lifetime. RFC 9420 §7.3 recommends a joiner check it; that is the default, and an
    # application that tolerates idle members opts out explicitly.
    g = make_group(1)
    carol = bundle("carol", now=STALE)
    out = g[0].commit(add=[carol.key_package.encoded()], now=STALE + DAY)
    g[0].merge_pending_commit()
    dave = bundle("dave")
    out = g[0].commit(add=[dave.key_package.encoded()], now=NOW)
    g[0].merge_pending_commit()
    assert out.welcome is not None
    with pytest.raises(InvalidWelcome, match="lifetime"):
        Group.join(out.welcome, dave, now=NOW)
    joined = Group.join(out.welcome, dave, now=NOW, check_tree_lifetimes=False)
    assert joined.epoch_authenticator == g[0].epoch_authenticator
    # The same rule for a joiner by external commit.
    with pytest.raises(InvalidWelcome, match="lifetime"):
        Group.join_external(g[0].group_info(), Credential.basic(b"erin"), now=NOW)


# -- 11. An Update must bring a fresh encryption key -------------------------------------


@pytest.mark.parametrize("reused", ["own", "member", "parent"])
def test_update_reusing_an_encryption_key_is_refused(reused: str) -> None:
    # RFC 9420 §7.3 (leaf_node_source update): the Update's encryption_key differs from
    # the leaf it replaces; and every encryption key is unique in the tree.
    g = make_group(4)
    alice, bob, carol, dave = g
    out = dave.commit(update=True, now=NOW)  # gives dave's parent nodes keys
    dave.merge_pending_commit()
    deliver(out.commit, [alice, bob, carol])
    tree = state(alice).tree
    key = {
        "own": state(bob).tree.leaf(bob.my_leaf).encryption_key,  # type: ignore[union-attr]
        "member": tree.leaf(carol.my_leaf).encryption_key,  # type: ignore[union-attr]
        "parent": tree.nodes[5].encryption_key,  # type: ignore[union-attr]
    }[reused]
    proposal = bob.propose(Update(_update_leaf(bob, encryption_key=key)))
    deliver(proposal, [alice, carol, dave])
    with misbehaving():
        bad = carol.commit(now=NOW)
    _refused_by_all(bad.commit, [alice, dave], (InvalidProposal, InvalidLeafNode))
    carol.discard_pending_commit()
    # An honest committer leaves the bad Update out instead of failing (RFC 9420 §12.2).
    out = alice.commit(now=NOW)
    assert not any(isinstance(p, Update) for p in committed(out.commit, carol))
    alice.merge_pending_commit()
    deliver(out.commit, [bob, carol, dave])
    assert same_epoch(g)


# -- 12. Identity: valid successors and one leaf per client ------------------------------


def test_update_that_renames_the_member_is_refused() -> None:
    # Bob renames himself "m0" (alice); the roster would read m0, m0, m2. RFC 9420
    # §5.3.1: a replacing credential must be a valid successor of the old one.
    g = make_group(3)
    alice, bob, carol = g
    proposal = bob.propose(Update(_update_leaf(bob, credential=Credential.basic(b"m0"))))
    deliver(proposal, [alice, carol])
    with misbehaving():
        bad = carol.commit(now=NOW)
    _refused_by_all(bad.commit, [alice], CredentialRejected)
    carol.discard_pending_commit()
    out = alice.commit(now=NOW)
    assert committed(out.commit, carol) == []
    alice.merge_pending_commit()
    deliver(out.commit, [bob, carol])
    assert [c.identity for _, c in carol.members()] == [b"m0", b"m1", b"m2"]


def test_update_path_that_renames_the_committer_is_refused() -> None:
    # The same rename through the committer's own UpdatePath leaf (RFC 9420 §12.4.2).
    g = make_group(3)
    alice, bob, carol = g
    s = state(bob)
    mine = s.tree.leaf(s.my_leaf)
    assert mine is not None
    s.tree.set_leaf(s.my_leaf, replace(mine, credential=Credential.basic(b"m0")))
    out = bob.commit(update=True, now=NOW)
    _refused_by_all(out.commit, [alice, carol], CredentialRejected)


def test_add_of_a_second_leaf_for_a_member_is_refused() -> None:
    # RFC 9420 §12.2: an Add of a client already in the group; §7.3: signature keys are
    # unique among members (a MUST).
    g = make_group(3)
    alice, bob, carol = g
    twin = bundle("m1").key_package.encoded()
    stolen_key = bundle("zed", signature_priv=state(bob).sig_priv).key_package.encoded()
    for kp in (twin, stolen_key):
        with pytest.raises(InvalidKeyPackage):
            alice.commit(add=[kp], now=NOW)
        with misbehaving():
            out = alice.commit(add=[kp], now=NOW)
        _refused_by_all(out.commit, [bob, carol], InvalidKeyPackage)
        alice.discard_pending_commit()
    # Removing the old leaf in the same commit makes room for the new one.
    out = alice.commit(remove=[bob.my_leaf], add=[twin], now=NOW)
    alice.merge_pending_commit()
    deliver(out.commit, [carol])
    assert [c.identity for _, c in carol.members()] == [b"m0", b"m1", b"m2"]


def test_an_application_may_let_one_credential_hold_several_leaves() -> None:
    # "the same client according to the application" (RFC 9420 §12.2): an application
    # whose devices share one credential says so; keys stay unique regardless.
    alice = Group.create(1, Credential.basic(b"alice"), now=NOW, unique_credentials=False)
    phone, laptop = bundle("bob"), bundle("bob")
    out = alice.commit(add=[phone.key_package.encoded(), laptop.key_package.encoded()],
                       now=NOW)
    alice.merge_pending_commit()
    assert out.welcome is not None
    bob = Group.join(out.welcome, phone, now=NOW, unique_credentials=False)
    assert [c.identity for _, c in bob.members()] == [b"alice", b"bob", b"bob"]
    strict = Group.create(1, Credential.basic(b"alice"), now=NOW)
    with pytest.raises(InvalidKeyPackage, match="credential"):
        strict.commit(add=[phone.key_package.encoded(), laptop.key_package.encoded()],
                      now=NOW)


def test_credential_policy_sees_the_old_credential_and_may_approve_a_successor() -> None:
    seen: list[tuple[bytes, bytes | None]] = []

    def renames_to_robert(cred: Credential, key: bytes, previous: Credential | None) -> bool:
        # The application's policy: anyone may rename themselves "robert".
        seen.append((cred.identity, previous.identity if previous else None))
        if previous is not None and previous != cred:
            return cred.identity == b"robert"
        return bool(cred.identity)

    g = make_group(3, credential_check=renames_to_robert)
    alice, bob, carol = g
    deliver(bob.propose(Update(_update_leaf(bob, credential=Credential.basic(b"robert")))),
            [alice, carol])
    out = alice.commit(now=NOW)
    alice.merge_pending_commit()
    deliver(out.commit, [bob, carol])
    assert (b"robert", b"m1") in seen
    assert [c.identity for _, c in carol.members()] == [b"m0", b"robert", b"m2"]
    # Even a policy that approves the rename cannot put two leaves on one identity.
    s = state(carol)
    mine = s.tree.leaf(s.my_leaf)
    assert mine is not None
    s.tree.set_leaf(s.my_leaf, replace(mine, credential=Credential.basic(b"robert")))
    out = carol.commit(update=True, now=NOW)
    _refused_by_all(out.commit, [alice, bob], InvalidLeafNode)


# -- 13. UpdatePath keys must be new to the tree -----------------------------------------


def test_update_path_with_a_duplicated_parent_key_is_refused_by_everyone() -> None:
    # RFC 9420 §12.4.2: "Verify that none of the public keys in the UpdatePath appear in
    # any node of the new ratchet tree." Bob (leaf 1) sets the key of his lowest path
    # node (1) to carol's leaf key. Alice (below node 1) would derive node 1 and notice;
    # carol and dave (below the root) would not: the group would fork.
    g = make_group(4)
    alice, bob, carol, dave = g
    duplicate = state(bob).tree.leaf(carol.my_leaf).encryption_key  # type: ignore[union-attr]
    real = treekem.node_key_pair
    calls = 0

    def first_node_duplicates(suite: CipherSuite, secret: bytes) -> tuple[bytes, bytes]:
        nonlocal calls
        calls += 1
        priv, pub = real(suite, secret)
        return (priv, duplicate) if calls == 1 else (priv, pub)

    with misbehaving() as mp:
        mp.setattr(treekem, "node_key_pair", first_node_duplicates)
        out = bob.commit(update=True, now=NOW)
    _refused_by_all(out.commit, [alice, carol, dave], InvalidCommit)
    # The group stays whole: an honest commit after it reaches everyone.
    bob.discard_pending_commit()
    out = carol.commit(update=True, now=NOW)
    carol.merge_pending_commit()
    deliver(out.commit, [alice, bob, dave])
    erin = bundle("erin")
    out = dave.commit(add=[erin.key_package.encoded()], now=NOW)
    dave.merge_pending_commit()
    deliver(out.commit, [alice, bob, carol])
    assert out.welcome is not None
    assert same_epoch([*g, Group.join(out.welcome, erin, now=NOW)])


# -- 14. External "resync" commits ------------------------------------------------------


def test_outsider_resync_as_a_member_is_refused_and_the_victim_keeps_its_state() -> None:
    # An outsider holding a GroupInfo claims to be m1 and removes m1's leaf. RFC 9420
    # §12.2: the new leaf must meet the criteria of an Update for the removed leaf; the
    # commit is signed only by the new leaf's key, so nothing but m1's own signature key
    # proves it comes from m1.
    g = make_group(3)
    alice, bob, carol = g
    info = alice.group_info()
    with misbehaving():
        _, commit = Group.join_external(info, Credential.basic(b"m1"), now=NOW,
                                        resync_leaf=bob.my_leaf)
    _refused_by_all(commit, [alice, carol, bob], InvalidProposal)
    # With its confirmation tag broken, alice would refuse it on that ground alone; the
    # victim, who cannot check that tag, must refuse it too and keep its state.
    msg = decode_all(commit, MLSMessage.read)
    assert isinstance(msg.body, PublicMessage)
    tag = msg.body.auth.confirmation_tag
    assert tag is not None
    broken = MLSMessage(replace(msg.body, auth=replace(
        msg.body.auth, confirmation_tag=bytes(b ^ 1 for b in tag)))).encoded()
    _refused_by_all(broken, [alice, carol, bob])
    # The honest library does not build such a commit in the first place.
    with pytest.raises(InvalidProposal):
        Group.join_external(info, Credential.basic(b"m1"), now=NOW, resync_leaf=bob.my_leaf)


def test_outsider_resync_under_another_name_is_refused() -> None:
    g = make_group(3)
    alice, bob, carol = g
    with misbehaving():
        _, commit = Group.join_external(alice.group_info(), Credential.basic(b"eve"),
                                        now=NOW, resync_leaf=bob.my_leaf)
    _refused_by_all(commit, [alice, carol, bob], (InvalidProposal, CredentialRejected))


def test_member_resync_with_its_own_key_is_accepted_by_everyone() -> None:
    g = make_group(3)
    alice, bob, carol = g
    again, commit = Group.join_external(
        alice.group_info(include_tree=False), Credential.basic(b"m1"), now=NOW,
        ratchet_tree=_tree(alice), resync_leaf=bob.my_leaf,
        signature_priv=state(bob).sig_priv)
    deliver(commit, [alice, carol])
    result = bob.process_and_merge(commit, now=NOW)
    assert isinstance(result, CommitApplied) and result.removed_me
    assert same_epoch([alice, carol, again])
    assert [c.identity for _, c in again.members()] == [b"m0", b"m1", b"m2"]


# -- 15. Junk proposals must not stop an honest committer --------------------------------


def _committed_types(out: bytes, receiver: Group) -> list[str]:
    return sorted(type(p).__name__ for p in committed(out, receiver))


def test_cached_reinit_does_not_stop_an_honest_commit() -> None:
    g = make_group(3)
    alice, bob, carol = g
    deliver(carol.propose(ReInit(alice.group_id, 1, 1, [])), [alice, bob])
    deliver(bob.propose_remove(carol.my_leaf), [alice, carol])
    out = alice.commit(now=NOW)
    assert _committed_types(out.commit, bob) == ["Remove"]
    alice.merge_pending_commit()
    deliver(out.commit, [bob])
    assert carol.process_and_merge(out.commit, now=NOW).removed_me  # type: ignore[union-attr]
    assert same_epoch([alice, bob])


def test_update_answering_a_remove_does_not_stop_an_honest_commit() -> None:
    # RFC 9420 §12.2: with a Remove and an Update for one leaf, prefer the Remove.
    g = make_group(3)
    alice, bob, carol = g
    deliver(carol.propose_remove(bob.my_leaf), [alice, bob])
    deliver(bob.propose_update(), [alice, carol])
    out = alice.commit(now=NOW)
    assert committed(out.commit, carol) == [Remove(bob.my_leaf)]
    alice.merge_pending_commit()
    deliver(out.commit, [carol])
    assert bob.process_and_merge(out.commit, now=NOW).removed_me  # type: ignore[union-attr]
    assert same_epoch([alice, carol])


def test_honest_committer_keeps_the_valid_proposals_and_drops_the_rest() -> None:
    g = make_group(4)
    alice, bob, carol, dave = g
    psk = PreSharedKeyID(PSK_EXTERNAL, psk_id=b"psk", psk_nonce=b"n" * 32)
    unknown_psk = PreSharedKeyID(PSK_EXTERNAL, psk_id=b"nobody has it", psk_nonce=b"m" * 32)
    for m in g:
        m.add_external_psk(b"psk", b"secret")
    zoe = bundle("zoe")
    sends: list[tuple[Group, Callable[[], bytes]]] = [
        # junk
        (carol, lambda: carol.propose(Add(bundle("old", now=STALE).key_package))),  # expired
        (carol, lambda: carol.propose(Add(bundle("m1").key_package))),   # a twin of bob
        (carol, lambda: carol.propose(Remove(alice.my_leaf))),           # the committer
        (bob, lambda: bob.propose(Update(_update_leaf(bob, credential=Credential.basic(
            b"m3"))))),                                                  # a rename
        (carol, lambda: carol.propose(PreSharedKey(unknown_psk))),       # not held
        (carol, lambda: carol.propose(ReInit(alice.group_id, 1, 1, []))),
        # valid, some twice
        (bob, lambda: bob.propose(PreSharedKey(psk))),
        (carol, lambda: carol.propose(PreSharedKey(psk))),
        (carol, lambda: carol.propose(Add(zoe.key_package))),
        (bob, lambda: bob.propose(Add(zoe.key_package))),
        (bob, lambda: bob.propose_remove(dave.my_leaf)),
        (carol, lambda: carol.propose_update()),
        (carol, lambda: carol.propose_update()),                         # the newer wins
    ]
    for sender, send in sends:
        deliver(send(), [m for m in g if m is not sender])
    newest = [c.proposal for c in state(carol).proposals.values()
              if isinstance(c.proposal, Update) and c.sender == carol.my_leaf][-1]
    out = alice.commit(now=NOW)
    kept = committed(out.commit, bob)
    assert _committed_types(out.commit, bob) == ["Add", "PreSharedKey", "Remove", "Update"]
    assert newest in kept
    alice.merge_pending_commit()
    deliver(out.commit, [bob, carol])
    assert dave.process_and_merge(out.commit, now=NOW).removed_me  # type: ignore[union-attr]
    assert out.welcome is not None
    joined = Group.join(out.welcome, zoe, now=NOW, external_psks={b"psk": b"secret"})
    assert same_epoch([alice, bob, carol, joined])


def test_receivers_still_refuse_invalid_proposal_combinations() -> None:
    # The honest committer filters; a misbehaving one that does not is refused.
    g = make_group(3)
    alice, bob, carol = g
    deliver(carol.propose(ReInit(alice.group_id, 1, 1, [])), [alice, bob])
    deliver(bob.propose_add(bundle("zoe").key_package.encoded(), now=NOW), [alice, carol])
    with misbehaving():
        out = alice.commit(now=NOW)
    _refused_by_all(out.commit, [bob, carol], InvalidProposal)
    alice.discard_pending_commit()

    g = make_group(3)
    alice, bob, carol = g
    deliver(carol.propose_remove(bob.my_leaf), [alice, bob])
    deliver(bob.propose_update(), [alice, carol])
    with misbehaving():
        out = alice.commit(now=NOW)
    _refused_by_all(out.commit, [carol], InvalidProposal)
