"""Property tests: random add/remove/update sequences across simulated members.

Handshakes travel as PublicMessage or PrivateMessage; new members join by Welcome or
by external commit. Invariants after every step: all current members share the epoch
authenticator; every application message is decrypted exactly once by every current
member, whatever the delivery order within the epoch; removed members cannot read
later epochs.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.core.mls.helpers import NOW, bundle, make_group, same_epoch
from veil.core.mls.errors import KeyReused, MlsError, NotAMember, WrongEpoch
from veil.core.mls.group import ApplicationMessage, Group
from veil.core.mls.leaf import Credential

OPS = st.sampled_from(
    ["add", "remove", "update", "proposed_update", "messages", "external_join"])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_membership_changes_keep_members_in_sync(data: st.DataObject) -> None:
    private = data.draw(st.booleans(), label="handshakes as PrivateMessage")
    members: list[Group] = make_group(data.draw(st.integers(2, 4), label="initial size"),
                                      private_handshakes=private)
    removed: list[tuple[Group, bytes]] = []
    counter = 0
    for _ in range(data.draw(st.integers(3, 8), label="steps")):
        op = data.draw(OPS)
        committer = data.draw(st.integers(0, len(members) - 1), label="committer")
        c = members[committer]
        others = [m for i, m in enumerate(members) if i != committer]
        if op == "add" or len(members) < 2:
            new = [bundle(f"n{counter + i}") for i in range(data.draw(st.integers(1, 2)))]
            counter += len(new)
            out = c.commit(add=[b.key_package.encoded() for b in new], now=NOW)
            c.merge_pending_commit()
            for m in others:
                m.process_and_merge(out.commit, now=NOW)
            assert out.welcome is not None
            members += [Group.join(out.welcome, b, now=NOW, private_handshakes=private)
                        for b in new]
        elif op == "external_join":
            joiner, commit = Group.join_external(
                c.group_info(), Credential.basic(f"x{counter}".encode()), now=NOW,
                private_handshakes=private)
            counter += 1
            for m in members:
                m.process_and_merge(commit, now=NOW)
            members.append(joiner)
        elif op == "remove":
            victim = data.draw(st.sampled_from(others))
            snapshot = victim.serialize()
            out = c.commit(remove=[victim.my_leaf], now=NOW)
            c.merge_pending_commit()
            for m in others:
                result = m.process_and_merge(out.commit, now=NOW)
                assert result.removed_me == (m is victim)  # type: ignore[union-attr]
            members = [m for m in members if m is not victim]
            removed.append((victim, snapshot))
        elif op == "update":
            out = c.commit(update=True, now=NOW)
            c.merge_pending_commit()
            for m in others:
                m.process_and_merge(out.commit, now=NOW)
        elif op == "proposed_update":
            proposer = data.draw(st.sampled_from(others))
            p = proposer.propose_update()
            for m in members:
                if m is not proposer:
                    m.process(p, now=NOW)
            out = c.commit(now=NOW)
            c.merge_pending_commit()
            for m in others:
                m.process_and_merge(out.commit, now=NOW)
        else:
            senders = data.draw(st.lists(st.integers(0, len(members) - 1), min_size=1,
                                         max_size=5), label="senders")
            sent = [(s, members[s].encrypt(f"msg{k}".encode())) for k, s in enumerate(senders)]
            for r, receiver in enumerate(members):
                inbox = [(k, s, ct) for k, (s, ct) in enumerate(sent) if s != r]
                order = data.draw(st.permutations(inbox), label="delivery order")
                for k, s, ct in order:
                    got = receiver.process(ct, now=NOW)
                    assert got == ApplicationMessage(members[s].my_leaf,
                                                     f"msg{k}".encode(), b"")
                for _, _, ct in order[:1]:
                    try:
                        receiver.process(ct, now=NOW)
                    except KeyReused:
                        pass
                    else:
                        raise AssertionError("a message decrypted twice")
        assert same_epoch(members)
        if removed:
            probe = members[0].encrypt(b"after removal")
            for victim, snapshot in removed:
                try:
                    victim.process(probe, now=NOW)
                except NotAMember:
                    pass
                else:
                    raise AssertionError("removed member processed a later message")
                try:
                    Group.restore(snapshot).process(probe, now=NOW)
                except (WrongEpoch, MlsError):
                    pass
                else:
                    raise AssertionError("a removed member's old state read a later epoch")
            for m in members[1:]:
                m.process(probe, now=NOW)
