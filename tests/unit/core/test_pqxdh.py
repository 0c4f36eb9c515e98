"""PQXDH: agreement, one-time key consumption, replay, and post-quantum binding."""

from __future__ import annotations

import pytest

from veil.core import keys, pqxdh, prekeys, session
from veil.core.errors import (
    DecryptionFailed,
    DuplicateMessage,
    InvalidSignature,
    UnknownPreKey,
    UntrustedIdentity,
)


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def test_both_sides_derive_the_same_key(alice: keys.IdentityKeyPair,
                                        bob: keys.IdentityKeyPair) -> None:
    pre = prekeys.PreKeys.generate(bob, one_time=1, now_ms=0)
    mine = pqxdh.initiate(alice, pre.bundle())
    theirs = pqxdh.respond(bob, pre, mine.header)
    assert mine.shared_key == theirs.shared_key
    ad = pqxdh.associated_data(alice.public, bob.public, bytes(32))
    assert alice.public.signing in ad and bob.public.signing in ad


def test_session_key_depends_on_the_kem_secret() -> None:
    outputs = [bytes([i]) * 32 for i in range(4)]
    base = pqxdh.derive_shared_key(outputs, b"\x00" * 32)
    assert pqxdh.derive_shared_key(outputs, b"\x00" * 31 + b"\x01") != base
    assert pqxdh.derive_shared_key(outputs, b"\x00" * 32) == base


def test_altered_kem_ciphertext_makes_respond_fail(alice: keys.IdentityKeyPair,
                                                   bob: keys.IdentityKeyPair) -> None:
    pre = prekeys.PreKeys.generate(bob, one_time=1, now_ms=0)
    _, first = session.initiate(alice, pre.bundle(), b"hi")
    parsed = session.PreKeyMessage.parse(first)
    ct = parsed.header.kem_ciphertext
    tampered = first.replace(ct, _flip(ct, 500))
    assert tampered != first
    with pytest.raises(DecryptionFailed):
        session.respond(bob, pre, tampered)
    assert pre.one_time_count == 1            # nothing consumed by the failed attempt
    _, text = session.respond(bob, pre, first)
    assert text == b"hi"


def test_bundle_with_bad_kem_signature_is_refused(bob: keys.IdentityKeyPair) -> None:
    up = prekeys.PreKeys.generate(bob, one_time=1, now_ms=0).upload()
    kem = up.one_time_kem_prekeys[0][1]
    with pytest.raises(InvalidSignature):
        keys.PreKeyBundle.from_parts(up.identity, up.signed_prekey, up.last_resort_kem,
                                     up.one_time_prekeys[0][1], _flip(kem, len(kem) - 3))


def test_one_time_keys_consumed_and_replay_refused(alice: keys.IdentityKeyPair,
                                                   bob: keys.IdentityKeyPair) -> None:
    pre = prekeys.PreKeys.generate(bob, one_time=2, now_ms=0)
    bundle = pre.bundle()
    _, first = session.initiate(alice, bundle, b"one")
    session.respond(bob, pre, first)
    assert pre.one_time_count == 1
    with pytest.raises(UnknownPreKey):      # its one-time keys are gone: it cannot replay
        session.respond(bob, pre, first)
    # a second initiator who got the same (already used) one-time keys is refused
    _, other = session.initiate(alice, bundle, b"two")
    with pytest.raises(UnknownPreKey):
        session.respond(bob, pre, other)


def test_last_resort_fallback_and_its_replay(alice: keys.IdentityKeyPair,
                                             bob: keys.IdentityKeyPair) -> None:
    pre = prekeys.PreKeys.generate(bob, one_time=0, now_ms=0)
    bundle = pre.bundle()
    assert bundle.one_time_prekey is None and bundle.one_time_kem_prekey is None
    a, first = session.initiate(alice, bundle, b"fallback")
    b, text = session.respond(bob, pre, first)
    assert text == b"fallback"
    assert a.decrypt(b.encrypt(b"ok")) == b"ok"
    with pytest.raises(DuplicateMessage):
        session.respond(bob, pre, first)
    # the last-resort key still serves new initiators
    _, again = session.initiate(alice, bundle, b"again")
    assert session.respond(bob, pre, again)[1] == b"again"


def test_expected_identity_is_enforced(alice: keys.IdentityKeyPair,
                                       bob: keys.IdentityKeyPair) -> None:
    pre = prekeys.PreKeys.generate(bob, one_time=1, now_ms=0)
    _, first = session.initiate(alice, pre.bundle(), b"x")
    mallory = keys.IdentityKeyPair.generate()
    with pytest.raises(UntrustedIdentity):
        session.respond(bob, pre, first, expected_identity=mallory.public)
    assert pre.one_time_count == 1


def test_no_session_with_self(bob: keys.IdentityKeyPair) -> None:
    pre = prekeys.PreKeys.generate(bob, one_time=0, now_ms=0)
    with pytest.raises(UntrustedIdentity):
        session.initiate(bob, pre.bundle(), b"me")


def test_forged_identity_binding_is_refused(alice: keys.IdentityKeyPair,
                                            bob: keys.IdentityKeyPair) -> None:
    pre = prekeys.PreKeys.generate(bob, one_time=1, now_ms=0)
    _, first = session.initiate(alice, pre.bundle(), b"x")
    binding = alice.public.binding
    forged = first.replace(binding, binding[:-1] + bytes([binding[-1] ^ 1]))
    assert forged != first
    with pytest.raises(InvalidSignature):
        session.respond(bob, pre, forged)
    with pytest.raises(UntrustedIdentity):       # a verified identity must match exactly
        session.respond(bob, pre, forged, expected_identity=alice.public)
    assert pre.one_time_count == 1
    assert session.respond(bob, pre, first, expected_identity=alice.public)[1] == b"x"


def test_replay_memory_cannot_be_flushed(alice: keys.IdentityKeyPair,
                                         bob: keys.IdentityKeyPair) -> None:
    """Key-less initial messages are remembered as long as their signed prekey lives."""
    pre = prekeys.PreKeys.generate(bob, one_time=0, now_ms=0)
    _, first = session.initiate(alice, pre.bundle(), b"transfer $100")
    session.respond(bob, pre, first)
    spk_id = next(iter(pre.signed_prekeys))
    last = next(iter(pre.last_resort))
    for i in range(5000):                  # an attacker's flood of accepted sessions
        pre.consume(i.to_bytes(32, "big"), spk_id, None, last, kem_last_resort=True)
    with pytest.raises(DuplicateMessage):
        session.respond(bob, pre, first)
    pre.maintain(bob, now_ms=prekeys.ROTATE_AFTER_MS)
    pre.maintain(bob, now_ms=prekeys.ROTATE_AFTER_MS + prekeys.GRACE_MS)
    # the prekey it named is gone: still refused
    with pytest.raises(UnknownPreKey):
        session.respond(bob, pre, first)
