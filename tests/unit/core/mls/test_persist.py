"""Saved state in a slow and a hot part: what changes when, sizes, binding, configuration."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.core.mls.helpers import NOW, bundle, deliver, make_group, same_epoch, state
from veil.core.mls.codec import decode_all
from veil.core.mls.errors import (
    ConfigMismatch,
    InvalidState,
    MlsError,
    StateMismatch,
    UnsupportedStateVersion,
)
from veil.core.mls.group import ApplicationMessage, Group, SavedGroup, StagedCommit
from veil.core.mls.leaf import Credential
from veil.core.mls.messages import MLSMessage, PrivateMessage, PublicMessage
from veil.core.mls.persist import OPTION_BITS, GroupConfig


def _saved_all(groups: list[Group]) -> list[SavedGroup]:
    return [g.save() for g in groups]


def test_application_messages_change_only_the_hot_part() -> None:
    g = make_group(3)
    before = _saved_all(g)
    assert all(m.dirty == frozenset() for m in g)
    ct = g[0].encrypt(b"hello")
    assert g[0].dirty == {"hot"}
    for m in g[1:]:
        assert m.process(ct, now=NOW) == ApplicationMessage(0, b"hello", b"")
        assert m.dirty == {"hot"}
    after = _saved_all(g)
    for old, new in zip(before, after, strict=True):
        assert new.slow == old.slow and new.hot != old.hot
    # Saving the hot part alone is what one message costs; it restores with the old slow.
    g[2].process(g[1].encrypt(b"again"), now=NOW)
    assert g[2].dirty == {"hot"}
    restored = Group.restore(SavedGroup(after[2].slow, g[2].save_hot()))
    assert restored.save() == g[2].save()


def test_a_failed_or_replayed_message_changes_nothing() -> None:
    g = make_group(2)
    ct = g[0].encrypt(b"once")
    g[1].process(ct, now=NOW)
    saved = g[1].save()
    with pytest.raises(MlsError):
        g[1].process(ct, now=NOW)
    bad = bytearray(g[0].encrypt(b"first from this epoch's next key"))
    bad[-2] ^= 1
    with pytest.raises(MlsError):
        g[1].process(bytes(bad), now=NOW)
    assert g[1].dirty == frozenset() and g[1].save() == saved


def test_hot_part_grows_with_senders_not_with_members() -> None:
    sizes = {}
    for n in (4, 32):
        g = make_group(n)
        g[1].save()
        empty = len(g[1].save_hot())
        g[1].process(g[0].encrypt(b"x"), now=NOW)
        one = len(g[1].save_hot())
        slow = len(g[1].save_slow())
        sizes[n] = (empty, one, slow)
    (e4, one4, slow4), (e32, one32, slow32) = sizes[4], sizes[32]
    assert e4 == e32 < 100  # header and the root secret: nothing per member
    # One sender: its two ratchets plus one node secret per tree level it crossed.
    assert one32 - one4 <= 3 * (4 + 1 + 32)
    assert slow32 > 4 * slow4 and one32 < slow32 // 10


def test_slow_part_holds_no_secret_that_unlocks_the_epochs_messages() -> None:
    g = make_group(3)
    secrets = state(g[1]).secrets
    saved = g[1].save()
    for name in ("encryption_secret", "joiner_secret", "welcome_secret", "epoch_secret"):
        assert getattr(secrets, name) not in saved.slow, name
    # The root of the secret tree is in the hot part until a first leaf is derived from
    # it (RFC 9420 §9.2: then only its descendants remain).
    assert secrets.encryption_secret in saved.hot
    restored = Group.restore(saved)
    assert restored.process(g[0].encrypt(b"still readable"), now=NOW) == ApplicationMessage(
        0, b"still readable", b"")
    assert secrets.encryption_secret not in restored.save().hot


def test_dirty_flags_follow_each_operation() -> None:
    g = make_group(3)
    fresh = Group.create(1, Credential.basic(b"new"), now=NOW)
    assert fresh.dirty == {"slow", "hot"}
    _saved_all(g)
    p = g[1].propose_update()
    assert g[1].dirty == {"slow"}
    for m in (g[0], g[2]):
        m.process(p, now=NOW)
        assert m.dirty == {"slow"}
    _saved_all(g)
    out = g[2].commit(now=NOW)  # a sent commit is pending: nothing saved changes yet
    assert g[2].dirty == frozenset()
    staged = g[0].process(out.commit, now=NOW)  # a received one is staged: neither
    assert isinstance(staged, StagedCommit) and g[0].dirty == frozenset()
    g[0].discard_staged(staged)
    assert g[0].dirty == frozenset()
    g[2].merge_pending_commit()
    g[0].merge_staged(g[0].process(out.commit, now=NOW))  # type: ignore[arg-type]
    assert g[2].dirty == g[0].dirty == {"slow", "hot"}
    assert g[1].process_and_merge(out.commit, now=NOW)
    # A late application message of the previous epoch touches no saved part.
    _saved_all(g)
    late = make_group(2)
    late_ct = late[0].encrypt(b"before")
    upd = late[0].commit(update=True, now=NOW)
    late[0].merge_pending_commit()
    late[1].process_and_merge(upd.commit, now=NOW)
    late[1].save()
    assert late[1].process(late_ct, now=NOW) == ApplicationMessage(0, b"before", b"")
    assert late[1].dirty == frozenset()
    # Removed: nothing left to save.
    out = g[0].commit(remove=[1], now=NOW)
    g[0].merge_pending_commit()
    g[1].process_and_merge(out.commit, now=NOW)
    assert g[1].dirty == frozenset() and not g[1].active


def test_private_handshakes_touch_both_parts() -> None:
    g = make_group(3, private_handshakes=True)
    _saved_all(g)
    p = g[0].propose_remove(2)
    assert g[0].dirty == {"slow", "hot"}  # cached, and a handshake key used
    g[1].process(p, now=NOW)
    assert g[1].dirty == {"slow", "hot"}
    _saved_all(g)
    g[1].commit(now=NOW)
    assert g[1].dirty == {"hot"}  # the commit's handshake key is used even if discarded
    g[1].discard_pending_commit()


def test_save_hot_needs_the_slow_part_of_the_epoch() -> None:
    g = make_group(2)
    with pytest.raises(InvalidState, match="save"):
        g[1].save_hot()
    g[1].save_slow()
    g[1].save_hot()
    out = g[0].commit(update=True, now=NOW)
    g[0].merge_pending_commit()
    g[1].process_and_merge(out.commit, now=NOW)
    with pytest.raises(InvalidState):
        g[1].save_hot()
    saved = g[1].save()
    assert Group.restore(saved).epoch == 2


def test_hot_part_of_another_epoch_group_member_or_commit_is_refused() -> None:
    g = make_group(3)
    old = g[1].save()
    # Two competing commits for epoch 1; each fork of member 1 merges one of them.
    rival = g[2].commit(update=True, now=NOW)
    g[2].discard_pending_commit()
    fork = Group.restore(old)
    fork.process_and_merge(rival.commit, now=NOW)
    out = g[0].commit(update=True, now=NOW)
    g[0].merge_pending_commit()
    deliver(out.commit, g[1:])
    new = [m.save() for m in g]
    with pytest.raises(StateMismatch, match="epoch 1"):
        Group.restore(SavedGroup(new[1].slow, old.hot))
    with pytest.raises(StateMismatch, match="another"):
        Group.restore(SavedGroup(new[1].slow, new[2].hot))  # same group and epoch
    assert fork.epoch == g[1].epoch == 2
    with pytest.raises(StateMismatch, match="another"):
        Group.restore(SavedGroup(new[1].slow, fork.save().hot))  # same epoch, other commit
    other = make_group(3)
    other[1].process_and_merge(other[0].commit(update=True, now=NOW).commit, now=NOW)
    with pytest.raises(StateMismatch):
        Group.restore(SavedGroup(new[1].slow, other[1].save().hot))
    with pytest.raises(StateMismatch, match="slow part"):
        Group.restore(SavedGroup(new[1].hot, new[1].slow))
    with pytest.raises(StateMismatch):
        Group.restore(new[1].slow)  # a part where the single blob belongs
    assert Group.restore(new[1]).save() == new[1]


def test_corrupt_or_unknown_versions_are_typed_errors() -> None:
    g = make_group(2)
    saved = g[1].save()
    for slow, hot in ((saved.slow[:-1], saved.hot), (saved.slow, saved.hot + b"\x00"),
                      (b"", saved.hot), (saved.slow, b"")):
        with pytest.raises(InvalidState):
            Group.restore(SavedGroup(slow, hot))
    with pytest.raises(UnsupportedStateVersion, match="version 3"):
        Group.restore(SavedGroup(b"\x03" + saved.slow[1:], saved.hot))
    unknown_option = saved.slow[:4] + (1 << 20).to_bytes(4, "big") + saved.slow[8:]
    with pytest.raises(UnsupportedStateVersion, match="options"):
        Group.restore(SavedGroup(unknown_option, saved.hot))


def _wire_format(message: bytes) -> type:
    return type(decode_all(message, MLSMessage.read).body)


@pytest.mark.parametrize("how", ["split", "single"])
def test_restore_keeps_the_configuration(how: str) -> None:
    def saved(group: Group) -> SavedGroup | bytes:
        return group.save() if how == "split" else group.serialize()

    g = make_group(3, private_handshakes=True)
    back = Group.restore(saved(g[1]))  # nothing passed: private handshakes stay on
    assert back.config == GroupConfig(private_handshakes=True)
    assert _wire_format(back.commit(update=True, now=NOW).commit) is PrivateMessage
    assert _wire_format(Group.restore(saved(g[1]), private_handshakes=True)
                        .propose_remove(0)) is PrivateMessage
    with pytest.raises(ConfigMismatch, match="private_handshakes"):
        Group.restore(saved(g[1]), private_handshakes=False)
    public = make_group(2)
    assert _wire_format(Group.restore(saved(public[1])).propose_remove(0)) is PublicMessage
    with pytest.raises(ConfigMismatch):
        Group.restore(saved(public[1]), private_handshakes=True)
    shared = Group.create(1, Credential.basic(b"one"), now=NOW, unique_credentials=False)
    config = Group.restore(saved(shared)).config
    assert config.unique_credentials is False and config.keep_previous_epoch is True
    with pytest.raises(ConfigMismatch, match="unique_credentials"):
        Group.restore(saved(shared), unique_credentials=True)
    # A second leaf for the same credential is accepted after restore, as before it.
    again = Group.restore(saved(shared))
    again.commit(add=[bundle("one").key_package.encoded()], now=NOW)


def test_keep_previous_epoch_is_saved_too() -> None:
    g = make_group(2)
    strict = Group(state(g[1]), keep_previous_epoch=False)
    back = Group.restore(strict.save())
    assert back.config.keep_previous_epoch is False
    assert set(OPTION_BITS) == set(GroupConfig.__slots__)
    with pytest.raises(ConfigMismatch, match="keep_previous_epoch"):
        Group.restore(strict.save(), keep_previous_epoch=True)


OPS = st.sampled_from(["message", "proposal", "commit", "staged_discarded", "read_only"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_parts_dirty_names_are_all_a_caller_needs_to_write(data: st.DataObject) -> None:
    """A caller who writes only what ``dirty`` names restores exactly the live member."""
    g = make_group(3, private_handshakes=data.draw(st.booleans(), label="private"))
    stores: list[dict[str, bytes]] = [{} for _ in g]
    for _ in range(data.draw(st.integers(3, 10), label="steps")):
        op = data.draw(OPS)
        actor = data.draw(st.integers(0, 2), label="actor")
        others = [m for i, m in enumerate(g) if i != actor]
        if op == "message":
            ct = g[actor].encrypt(b"m")
            for m in data.draw(st.lists(st.sampled_from(others), unique_by=id), label="to"):
                m.process(ct, now=NOW)
        elif op == "proposal":
            p = g[actor].propose_update()
            for m in others:
                m.process(p, now=NOW)
        elif op in ("commit", "staged_discarded"):
            out = g[actor].commit(update=True, now=NOW)
            if op == "commit":
                g[actor].merge_pending_commit()
                deliver(out.commit, others)
            else:
                g[actor].discard_pending_commit()
                for m in others:
                    staged = m.process(out.commit, now=NOW)
                    assert isinstance(staged, StagedCommit)
                    m.discard_staged(staged)
        else:
            g[actor].export_secret(b"label", b"", 16)
        for m, store in zip(g, stores, strict=True):
            dirty = m.dirty
            if "slow" in dirty:
                store["slow"] = m.save_slow()
            if "hot" in dirty:
                store["hot"] = m.save_hot()
            restored = Group.restore(SavedGroup(store["slow"], store["hot"]))
            assert restored.save() == m.save()
    assert same_epoch(g)
