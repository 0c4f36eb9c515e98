"""External joins (RFC 9420 §12.4.3.2) and the HPKE export they rely on."""

from __future__ import annotations

import pytest

from tests.unit.core.mls.helpers import NOW, make_group, same_epoch
from veil.core.mls.crypto import get_suite
from veil.core.mls.errors import InvalidProposal, MlsError
from veil.core.mls.group import ApplicationMessage, Group
from veil.core.mls.leaf import Credential


@pytest.mark.parametrize("suite_id", [1, 2, 3, 5, 7])
def test_hpke_key_schedule_matches_cryptography(suite_id: int) -> None:
    # Our RFC 9180 key schedule (used for Export) must produce the key and nonce that
    # cryptography's own HPKE uses: a sealed message must open there.
    s = get_suite(suite_id)
    kp = s.generate_hpke_key_pair()
    sealed = s._hpke_seal_manual(kp.public, b"info", b"payload")
    assert s._hpke.decrypt(sealed, s._hpke_private(kp.private), info=b"info") == b"payload"
    enc, secret = s.hpke_export_encap(kp.public, b"", b"label", s.nh)
    assert s.hpke_export_decap(kp.private, enc, b"", b"label", s.nh) == secret
    other = s.generate_hpke_key_pair()
    assert s.hpke_export_decap(other.private, enc, b"", b"label", s.nh) != secret


@pytest.mark.parametrize("suite_id", [1, 2, 3])
def test_external_join_and_resync(suite_id: int) -> None:
    g = make_group(3, suite_id)
    joiner, commit = Group.join_external(g[0].group_info(), Credential.basic(b"ext"), now=NOW)
    for m in g:
        applied = m.process_and_merge(commit, now=NOW)
        assert applied.added == [joiner.my_leaf]  # type: ignore[union-attr]
    assert same_epoch([*g, joiner])
    got = g[1].process(joiner.encrypt(b"hi"), now=NOW)
    assert got == ApplicationMessage(joiner.my_leaf, b"hi", b"")

    # g[2] lost its state and rejoins, removing its old leaf in the same commit.
    # A resync must be signed with the removed leaf's key (its own: nothing else signs it).
    again, commit = Group.join_external(g[0].group_info(include_tree=False),
                                        Credential.basic(b"m2"), now=NOW, resync_leaf=2,
                                        ratchet_tree=_tree(g[0]),
                                        signature_priv=g[2]._live().sig_priv)
    for m in (g[0], g[1], joiner):
        m.process_and_merge(commit, now=NOW)
    assert g[2].process_and_merge(commit, now=NOW).removed_me  # type: ignore[union-attr]
    assert same_epoch([g[0], g[1], joiner, again])


def _tree(group: Group) -> bytes:
    from veil.core.mls.state import GroupState

    return GroupState.decode(group.serialize()).tree.encode()


def test_external_commit_may_not_remove_someone_else() -> None:
    g = make_group(3)
    with pytest.raises(InvalidProposal):
        Group.join_external(g[0].group_info(), Credential.basic(b"ext"), now=NOW,
                            resync_leaf=1)


def test_tampered_external_commit_is_rejected() -> None:
    g = make_group(2)
    _, commit = Group.join_external(g[0].group_info(), Credential.basic(b"ext"), now=NOW)
    bad = bytearray(commit)
    bad[-40] ^= 1
    before = g[1].serialize()
    with pytest.raises(MlsError):
        g[1].process(bytes(bad), now=NOW)
    assert g[1].serialize() == before
