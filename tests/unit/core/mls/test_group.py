"""The Group API end to end: create, add, update, remove, messages, state, errors."""

from __future__ import annotations

import pytest

from tests.unit.core.mls.helpers import NOW, bundle, deliver, make_group, same_epoch
from veil.core.errors import DuplicateMessage
from veil.core.mls.errors import (
    CredentialRejected,
    InvalidCommit,
    InvalidKeyPackage,
    InvalidProposal,
    InvalidState,
    KeyReused,
    MissingPsk,
    MlsDecodeError,
    MlsDecryptionError,
    MlsSignatureError,
    NoMatchingKeyPackage,
    NotAMember,
    UnknownProposal,
    WrongEpoch,
    WrongGroup,
)
from veil.core.mls.group import (
    ApplicationMessage,
    CommitApplied,
    Group,
    ProposalReceived,
)
from veil.core.mls.leaf import Credential
from veil.core.mls.proposals import PSK_EXTERNAL, PreSharedKeyID


@pytest.mark.parametrize("suite", [1, 2, 3])
def test_lifecycle_per_suite(suite: int) -> None:
    g = make_group(4, suite)
    assert same_epoch(g)
    assert [c.identity for _, c in g[2].members()] == [b"m0", b"m1", b"m2", b"m3"]
    ct = g[0].encrypt(b"hello", authenticated_data=b"meta")
    for m in g[1:]:
        got = m.process(ct, now=NOW)
        assert got == ApplicationMessage(0, b"hello", b"meta")
    out = g[2].commit(update=True, now=NOW)
    g[2].merge_pending_commit()
    deliver(out.commit, [g[0], g[1], g[3]])
    assert same_epoch(g)
    out = g[1].commit(remove=[3], now=NOW)
    g[1].merge_pending_commit()
    deliver(out.commit, [g[0], g[2]])
    res = g[3].process_and_merge(out.commit, now=NOW)
    assert isinstance(res, CommitApplied) and res.removed_me
    assert not g[3].active
    assert same_epoch(g[:3])
    assert g[0].export_secret(b"label", b"ctx", 42) == g[2].export_secret(b"label", b"ctx", 42)


def test_private_handshakes() -> None:
    g = make_group(3, private_handshakes=True)
    out = g[1].commit(update=True, now=NOW)
    g[1].merge_pending_commit()
    deliver(out.commit, [g[0], g[2]])
    assert same_epoch(g)


def test_proposals_by_reference_and_update_from_another_member() -> None:
    g = make_group(3)
    p = g[1].propose_update()
    assert isinstance(g[0].process(p, now=NOW), ProposalReceived)
    g[2].process(p, now=NOW)
    out = g[0].commit(now=NOW)
    g[0].merge_pending_commit()
    deliver(out.commit, [g[1], g[2]])
    assert same_epoch(g)
    # g[1]'s new leaf key must be usable: g[2] commits a path that g[1] decrypts.
    out = g[2].commit(update=True, now=NOW)
    g[2].merge_pending_commit()
    deliver(out.commit, [g[0], g[1]])
    assert same_epoch(g)


def test_proposed_add_and_remove_by_reference() -> None:
    g = make_group(3)
    b = bundle("late")
    deliver(g[1].propose_add(b.key_package.encoded(), now=NOW), [g[0], g[2]])
    deliver(g[2].propose_remove(0), [g[0], g[1]])
    out = g[1].commit(now=NOW)
    g[1].merge_pending_commit()
    deliver(out.commit, [g[2]])
    assert g[0].process_and_merge(out.commit, now=NOW).removed_me  # type: ignore[union-attr]
    assert out.welcome is not None
    late = Group.join(out.welcome, b, now=NOW)
    assert same_epoch([g[1], g[2], late])


def test_welcome_without_tree_needs_it_out_of_band() -> None:
    g = make_group(2)
    b = bundle("x")
    out = g[0].commit(add=[b.key_package.encoded()], include_tree_in_welcome=False, now=NOW)
    g[0].merge_pending_commit()
    assert out.welcome is not None
    with pytest.raises(Exception, match="ratchet tree"):
        Group.join(out.welcome, b, now=NOW)
    from veil.core.mls.state import GroupState

    tree = GroupState.decode(g[0].serialize()).tree.encode()
    joined = Group.join(out.welcome, b, ratchet_tree=tree, now=NOW)
    assert joined.epoch_authenticator == g[0].epoch_authenticator


def test_welcome_for_someone_else() -> None:
    g = make_group(1)
    out = g[0].commit(add=[bundle("a").key_package.encoded()], now=NOW)
    assert out.welcome is not None
    with pytest.raises(NoMatchingKeyPackage):
        Group.join(out.welcome, bundle("b"), now=NOW)


def test_replay_and_tamper_and_wrong_epoch_and_group() -> None:
    g = make_group(3)
    ct = g[0].encrypt(b"once")
    assert g[1].process(ct, now=NOW) == ApplicationMessage(0, b"once", b"")
    with pytest.raises(KeyReused):
        g[1].process(ct, now=NOW)
    with pytest.raises(DuplicateMessage):
        g[1].process(ct, now=NOW)
    ct2 = bytearray(g[0].encrypt(b"two"))
    ct2[-3] ^= 1
    with pytest.raises(MlsDecryptionError):
        g[1].process(bytes(ct2), now=NOW)
    other = make_group(2)
    with pytest.raises(WrongGroup):
        g[1].process(other[0].encrypt(b"x"), now=NOW)
    older = g[0].encrypt(b"two epochs ago")
    out = g[0].commit(update=True, now=NOW)
    g[0].merge_pending_commit()
    deliver(out.commit, g[1:])
    old = g[0].encrypt(b"old epoch")
    out = g[0].commit(update=True, now=NOW)
    g[0].merge_pending_commit()
    deliver(out.commit, g[1:])
    # One epoch back is still readable (messages racing a commit), exactly once.
    assert g[1].process(old, now=NOW) == ApplicationMessage(0, b"old epoch", b"")
    with pytest.raises(KeyReused):
        g[1].process(old, now=NOW)
    with pytest.raises(WrongEpoch):
        g[1].process(older, now=NOW)
    strict = Group.restore(g[2].serialize())
    with pytest.raises(WrongEpoch):
        strict.process(old, now=NOW)
    with pytest.raises(MlsDecodeError):
        g[1].process(b"\x00\x01", now=NOW)


def test_tampered_commit_is_rejected_without_changing_state() -> None:
    g = make_group(3)
    out = g[0].commit(update=True, now=NOW)
    bad = bytearray(out.commit)
    bad[len(bad) // 2] ^= 0x40
    before = g[1].serialize()
    with pytest.raises((MlsSignatureError, MlsDecodeError, InvalidCommit, MlsDecryptionError)):
        g[1].process(bytes(bad), now=NOW)
    assert g[1].serialize() == before
    g[0].merge_pending_commit()
    g[1].process_and_merge(out.commit, now=NOW)
    assert same_epoch(g[:2])


def test_out_of_order_application_messages() -> None:
    g = make_group(2)
    cts = [g[0].encrypt(f"m{i}".encode()) for i in range(10)]
    order = [9, 0, 5, 1, 8, 2, 7, 3, 6, 4]
    got = [g[1].process(cts[i], now=NOW) for i in order]
    assert [m.data for m in got] == [f"m{i}".encode() for i in order]  # type: ignore[union-attr]


def test_serialize_restore_continues() -> None:
    g = make_group(3)
    ct = g[0].encrypt(b"a")
    restored = Group.restore(g[1].serialize())
    assert restored.process(ct, now=NOW) == ApplicationMessage(0, b"a", b"")
    out = restored.commit(update=True, now=NOW)
    restored.merge_pending_commit()
    deliver(out.commit, [g[0], g[2]])
    assert same_epoch([g[0], restored, g[2]])
    with pytest.raises(InvalidState):
        Group.restore(g[1].serialize() + b"\x00")


def test_removed_member_cannot_act() -> None:
    g = make_group(3)
    out = g[0].commit(remove=[2], now=NOW)
    g[0].merge_pending_commit()
    g[1].process_and_merge(out.commit, now=NOW)
    assert g[2].process_and_merge(out.commit, now=NOW).removed_me  # type: ignore[union-attr]
    with pytest.raises(NotAMember):
        g[2].encrypt(b"x")
    with pytest.raises(NotAMember):
        g[2].process(g[0].encrypt(b"later"), now=NOW)


def test_key_package_lifetime_is_checked_against_given_time() -> None:
    g = make_group(1)
    b = Group.key_package(1, Credential.basic(b"x"), now=NOW, lifetime_seconds=100)
    with pytest.raises(InvalidKeyPackage, match="lifetime"):
        g[0].commit(add=[b.key_package.encoded()], now=NOW + 1000)
    g[0].commit(add=[b.key_package.encoded()], now=NOW + 10)


def test_credential_check_plugs_in() -> None:
    def only_alice_and_bob(cred: Credential, key: bytes, previous: Credential | None) -> bool:
        return cred.identity in (b"alice", b"bob")

    a = Group.create(1, Credential.basic(b"alice"), now=NOW,
                     credential_check=only_alice_and_bob)
    with pytest.raises(CredentialRejected):
        a.commit(add=[bundle("mallory").key_package.encoded()], now=NOW)
    a.commit(add=[bundle("bob").key_package.encoded()], now=NOW)
    with pytest.raises(CredentialRejected):
        Group.create(1, Credential.basic(b"eve"), now=NOW, credential_check=only_alice_and_bob)


def test_invalid_proposal_lists() -> None:
    g = make_group(3)
    with pytest.raises(InvalidProposal):
        g[0].commit(remove=[0], now=NOW)
    with pytest.raises(InvalidProposal):
        g[0].commit(remove=[1, 1], now=NOW)
    with pytest.raises(InvalidProposal):
        g[0].commit(remove=[7], now=NOW)
    kp = bundle("dup").key_package.encoded()
    with pytest.raises(Exception, match="already used"):
        g[0].commit(add=[kp, kp], now=NOW)


def test_pending_commit_discipline() -> None:
    g = make_group(2)
    with pytest.raises(InvalidState):
        g[0].merge_pending_commit()
    g[0].commit(update=True, now=NOW)
    with pytest.raises(InvalidState):
        g[0].commit(update=True, now=NOW)
    with pytest.raises(InvalidState):
        g[0].encrypt(b"x")
    g[0].discard_pending_commit()
    g[0].encrypt(b"x")


def test_unknown_proposal_reference() -> None:
    g = make_group(3)
    p = g[1].propose_remove(2)
    g[0].process(p, now=NOW)
    out = g[0].commit(now=NOW)
    with pytest.raises(UnknownProposal):
        g[2].process(out.commit, now=NOW)  # g[2] never saw the proposal


def test_external_psk_in_commit_and_welcome() -> None:
    g = make_group(2)
    psk_id = b"shared psk"
    for m in g:
        m.add_external_psk(psk_id, b"secret value")
    pid = PreSharedKeyID(PSK_EXTERNAL, psk_id=psk_id, psk_nonce=b"n" * 32)
    b = bundle("joiner")
    out = g[0].commit(add=[b.key_package.encoded()], psk_ids=[pid], now=NOW)
    g[0].merge_pending_commit()
    g[1].process_and_merge(out.commit, now=NOW)
    assert out.welcome is not None
    with pytest.raises(MissingPsk):
        Group.join(out.welcome, b, now=NOW)
    joined = Group.join(out.welcome, b, external_psks={psk_id: b"secret value"}, now=NOW)
    assert same_epoch([g[0], g[1], joined])


def test_group_context_extensions_and_required_capabilities() -> None:
    from veil.core.mls.codec import Writer
    from veil.core.mls.errors import MissingCapability
    from veil.core.mls.leaf import EXT_REQUIRED_CAPABILITIES, Extension, RequiredCapabilities

    g = make_group(2)
    w = Writer()
    RequiredCapabilities(extension_types=(0xFF00,)).write(w)
    with pytest.raises(MissingCapability):
        g[0].commit(extensions=[Extension(EXT_REQUIRED_CAPABILITIES, w.bytes())], now=NOW)
    w = Writer()
    RequiredCapabilities(proposal_types=(3,)).write(w)
    out = g[0].commit(extensions=[Extension(EXT_REQUIRED_CAPABILITIES, w.bytes())], now=NOW)
    g[0].merge_pending_commit()
    g[1].process_and_merge(out.commit, now=NOW)
    assert same_epoch(g)
