"""Property tests: random interleavings with loss, reordering, duplicates and tampering.

Invariants, for sessions with and without header encryption:
- every delivered message decrypts exactly once, to what was sent;
- a redelivered message raises ``DuplicateMessage``;
- tampered bytes raise a ``CoreError`` of the documented kinds and change nothing;
- after any rejection the session keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.core.conftest import make_pair
from veil.core import keys, session
from veil.core.errors import (
    DecryptionFailed,
    DuplicateMessage,
    InvalidSignature,
    MalformedMessage,
    TooManySkippedMessages,
)

ALICE = keys.IdentityKeyPair.generate()
BOB = keys.IdentityKeyPair.generate()
REJECTED = (DecryptionFailed, MalformedMessage, DuplicateMessage, TooManySkippedMessages,
            InvalidSignature)


@dataclass
class Side:
    session: session.Session
    in_flight: list[tuple[bytes, bytes]] = field(default_factory=list)   # to the other side
    delivered: list[bytes] = field(default_factory=list)                 # received by us
    received: list[bytes] = field(default_factory=list)


actions = st.lists(
    st.tuples(
        st.sampled_from(["send", "deliver", "drop", "duplicate", "tamper"]),
        st.booleans(),                       # which side acts
        st.integers(min_value=0, max_value=1 << 16),
    ),
    min_size=1, max_size=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=actions, he=st.booleans())
def test_random_interleavings(steps: list[tuple[str, bool, int]], he: bool) -> None:
    a_session, b_session = make_pair(ALICE, BOB, he)
    sides = [Side(a_session), Side(b_session)]
    counter = 0
    for action, which, pick in steps:
        me, peer = (sides[0], sides[1]) if which else (sides[1], sides[0])
        if action == "send":
            counter += 1
            plaintext = f"message {counter}".encode()
            me.in_flight.append((plaintext, me.session.encrypt(plaintext)))
        elif action in ("deliver", "drop", "tamper") and me.in_flight:
            plaintext, wire = me.in_flight.pop(pick % len(me.in_flight))
            if action == "drop":
                continue
            if action == "tamper":
                before = peer.session.to_bytes()
                damaged = bytearray(wire)
                damaged[2 + pick % (len(wire) - 2)] ^= 1 << (pick % 8)
                try:
                    peer.session.decrypt(bytes(damaged))
                except REJECTED:
                    assert peer.session.to_bytes() == before
                else:
                    raise AssertionError("tampered message was accepted")
                me.in_flight.append((plaintext, wire))   # the real one may still come
                continue
            assert peer.session.decrypt(wire) == plaintext
            peer.delivered.append(wire)
            peer.received.append(plaintext)
        elif action == "duplicate" and me.delivered:
            wire = me.delivered[pick % len(me.delivered)]
            before = me.session.to_bytes()
            try:
                me.session.decrypt(wire)
            except DuplicateMessage:
                assert me.session.to_bytes() == before
            else:
                raise AssertionError("a duplicate was decrypted twice")
    # everything still in flight is delivered: nothing was lost by the rejections
    for me, peer in ((sides[0], sides[1]), (sides[1], sides[0])):
        for plaintext, wire in me.in_flight:
            assert peer.session.decrypt(wire) == plaintext
            peer.received.append(plaintext)
    all_received = sides[0].received + sides[1].received
    assert len(all_received) == len(set(all_received))        # exactly once
    # and the sessions still talk both ways
    assert sides[1].session.decrypt(sides[0].session.encrypt(b"end")) == b"end"
    assert sides[0].session.decrypt(sides[1].session.encrypt(b"end2")) == b"end2"
