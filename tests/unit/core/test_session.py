"""Double Ratchet sessions: forward secrecy, post-compromise security, transactions."""

from __future__ import annotations

import pytest

from tests.unit.core.conftest import make_pair
from veil.core import keys, prekeys, ratchet, session
from veil.core.errors import (
    DecryptionFailed,
    DuplicateMessage,
    InvalidSignature,
    MalformedMessage,
    TooManySkippedMessages,
    UnsupportedVersion,
)

HE = [False, True]


def _copy(s: session.Session) -> session.Session:
    return session.Session.from_bytes(s.to_bytes())


@pytest.mark.parametrize("he", HE)
def test_conversation_and_persistence(alice: keys.IdentityKeyPair, bob: keys.IdentityKeyPair,
                                      he: bool) -> None:
    a, b = make_pair(alice, bob, he)
    assert b.header_encryption == he
    for i in range(5):
        a, b = _copy(a), _copy(b)
        assert b.decrypt(a.encrypt(f"a{i}".encode())) == f"a{i}".encode()
        assert a.decrypt(b.encrypt(f"b{i}".encode())) == f"b{i}".encode()
    assert a.acknowledged and b.acknowledged
    assert b.remote_identity == alice.public and a.remote_identity == bob.public


@pytest.mark.parametrize("he", HE)
def test_forward_secrecy_used_keys_are_gone(alice: keys.IdentityKeyPair,
                                            bob: keys.IdentityKeyPair, he: bool) -> None:
    a, b = make_pair(alice, bob, he)
    sent = [a.encrypt(f"m{i}".encode()) for i in range(6)]
    for m in sent[:4]:
        b.decrypt(m)
    stolen = _copy(b)                        # a copy of Bob's state after message n = 4
    for m in sent[:4]:
        with pytest.raises(DuplicateMessage):
            stolen.decrypt(m)
    # the undelivered ones are still readable (their keys were never used)
    assert stolen.decrypt(sent[5]) == b"m5"
    assert stolen.decrypt(sent[4]) == b"m4"
    # after a ratchet round trip the old chains are gone too
    b.decrypt(sent[4])
    b.decrypt(sent[5])
    a.decrypt(b.encrypt(b"r"))
    b.decrypt(a.encrypt(b"x"))
    stolen = _copy(b)
    for m in sent:
        with pytest.raises(DuplicateMessage):
            stolen.decrypt(m)


@pytest.mark.parametrize("he", HE)
def test_post_compromise_security(alice: keys.IdentityKeyPair, bob: keys.IdentityKeyPair,
                                  he: bool) -> None:
    a, b = make_pair(alice, bob, he)
    a.decrypt(b.encrypt(b"warm up"))
    stolen_alice, stolen_bob = _copy(a), _copy(b)
    # both sides send once more: a fresh DH ratchet step on each side
    b.decrypt(a.encrypt(b"a1"))
    a.decrypt(b.encrypt(b"b1"))
    to_alice = b.encrypt(b"secret for alice")
    to_bob = a.encrypt(b"secret for bob")
    with pytest.raises((DecryptionFailed, DuplicateMessage)):
        stolen_alice.decrypt(to_alice)
    with pytest.raises((DecryptionFailed, DuplicateMessage)):
        stolen_bob.decrypt(to_bob)
    assert a.decrypt(to_alice) == b"secret for alice"
    assert b.decrypt(to_bob) == b"secret for bob"


@pytest.mark.parametrize("he", HE)
def test_tampering_leaves_session_unchanged(alice: keys.IdentityKeyPair,
                                            bob: keys.IdentityKeyPair, he: bool) -> None:
    a, b = make_pair(alice, bob, he)
    a.decrypt(b.encrypt(b"ack"))
    message = a.encrypt(b"payload")
    before = b.to_bytes()
    for index in range(2, len(message)):
        tampered = bytearray(message)
        tampered[index] ^= 0x80
        with pytest.raises((DecryptionFailed, MalformedMessage, DuplicateMessage,
                            TooManySkippedMessages, InvalidSignature)):
            b.decrypt(bytes(tampered))
        assert b.to_bytes() == before
    with pytest.raises(DecryptionFailed):
        b.decrypt(message[:-1] + bytes([message[-1] ^ 1]))   # body only: exactly this error
    assert b.decrypt(message) == b"payload"


def test_skip_bound(alice: keys.IdentityKeyPair, bob: keys.IdentityKeyPair) -> None:
    a, b = make_pair(alice, bob)
    for _ in range(ratchet.MAX_SKIP + 1):
        a.encrypt(b"lost")
    before = b.to_bytes()
    with pytest.raises(TooManySkippedMessages):
        b.decrypt(a.encrypt(b"too far"))
    assert b.to_bytes() == before
    assert a.decrypt(b.encrypt(b"still usable")) == b"still usable"


def test_skipped_keys_within_bound_are_kept(alice: keys.IdentityKeyPair,
                                            bob: keys.IdentityKeyPair) -> None:
    a, b = make_pair(alice, bob)
    msgs = [a.encrypt(bytes([i & 0xFF])) for i in range(ratchet.MAX_SKIP)]
    assert b.decrypt(msgs[-1]) == bytes([ratchet.MAX_SKIP - 1 & 0xFF])
    assert b.decrypt(msgs[0]) == b"\x00"
    restored = _copy(b)
    assert restored.decrypt(msgs[500]) == bytes([500 & 0xFF])


def test_stored_skipped_keys_are_bounded(alice: keys.IdentityKeyPair,
                                         bob: keys.IdentityKeyPair) -> None:
    a, b = make_pair(alice, bob)
    first = None
    for _ in range(3):          # 3 chains x 999 skipped > MAX_STORED_SKIPPED
        batch = [a.encrypt(b"x") for _ in range(ratchet.MAX_SKIP)]
        first = first or batch[0]
        b.decrypt(batch[-1])
        a.decrypt(b.encrypt(b"turn"))
    assert len(b._ratchet.skipped) <= ratchet.MAX_STORED_SKIPPED
    with pytest.raises(DuplicateMessage):      # evicted: reported, never decrypted
        b.decrypt(first)


def test_malformed_inputs(alice: keys.IdentityKeyPair, bob: keys.IdentityKeyPair) -> None:
    _a, b = make_pair(alice, bob)
    for data in (b"", b"\x01", b"\x01\x01" + bytes(10), b"\x01\x07" + bytes(100)):
        with pytest.raises(MalformedMessage):
            b.decrypt(data)
    with pytest.raises(UnsupportedVersion):
        b.decrypt(b"\x09\x01" + bytes(100))
    with pytest.raises(MalformedMessage):
        session.Session.from_bytes(b"\x01" + bytes(20))
    with pytest.raises(MalformedMessage):
        b.decrypt("text")  # type: ignore[arg-type]


def test_prekey_message_of_another_session_is_refused(alice: keys.IdentityKeyPair,
                                                      bob: keys.IdentityKeyPair) -> None:
    _a, b = make_pair(alice, bob)
    a2, _ = make_pair(alice, bob)
    other = a2.encrypt(b"other")
    assert session.is_prekey_message(other)
    with pytest.raises(MalformedMessage):
        b.decrypt(other)


def test_initiator_repeats_prekey_header_until_reply(alice: keys.IdentityKeyPair,
                                                     bob: keys.IdentityKeyPair) -> None:
    pre = prekeys.PreKeys.generate(bob, one_time=1, now_ms=0)
    a, first = session.initiate(alice, pre.bundle(), b"1")
    second = a.encrypt(b"2")
    assert session.is_prekey_message(second)
    b, text = session.respond(bob, pre, second)          # the first was lost
    assert text == b"2"
    assert b.decrypt(first) == b"1"
    a.decrypt(b.encrypt(b"reply"))
    assert not session.is_prekey_message(a.encrypt(b"3"))


def test_inconsistent_stored_state_is_refused(alice: keys.IdentityKeyPair,
                                              bob: keys.IdentityKeyPair) -> None:
    from veil.core.encoding import Reader, Writer

    _, b = make_pair(alice, bob, header_encryption=False)
    good = b.to_bytes()
    # a header-encryption flag on a session without header keys
    r = Reader(good, "t")
    head = [r.u8(), r.var(200), r.var(200), r.var(600), r.raw(32), r.raw(32), r.optional(9000)]
    state = r.rest()
    flipped = bytes([state[0], 1]) + state[2:]
    w = Writer().u8(head[0]).var(head[1]).var(head[2]).var(head[3]).raw(head[4]).raw(head[5])
    w.optional(head[6]).raw(flipped)
    with pytest.raises(MalformedMessage):
        session.Session.from_bytes(w.finish())
    # associated data that does not belong to the two identities
    w = Writer().u8(head[0]).var(head[1]).var(head[2]).var(b"x" * len(head[3]))
    w.raw(head[4]).raw(head[5]).optional(head[6]).raw(state)
    with pytest.raises(MalformedMessage):
        session.Session.from_bytes(w.finish())
    assert session.Session.from_bytes(good).to_bytes() == good
