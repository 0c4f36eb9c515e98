"""The 1:1 core's findings of the outside review (issue 8), each written as the attack.

Every test here succeeded as an attack against the core before the hardening: the
flipped-bit replay, the loose flag bytes, the rolled-back session's ciphertext pair,
the signed prekey's private key left in session state, skipped keys kept forever, and
the overflowing counter.
"""

from __future__ import annotations

import pytest

from tests.unit.core.conftest import make_pair
from veil.core import keys, padding, prekeys, ratchet, session
from veil.core import primitives as p
from veil.core.encoding import Writer
from veil.core.errors import (
    DecryptionFailed,
    DuplicateMessage,
    MalformedMessage,
    UnknownPreKey,
)

# Offsets in an initial message: version, type, flags, var(identity), then EK_A.
_IDENTITY_END = 3 + 4 + keys.IdentityPublicKey.SIZE
_BASE_KEY = _IDENTITY_END
_OPK_FLAG = _BASE_KEY + 32 + 4
T0 = 1_760_000_000_000


def _flip_top_bit_of_base_key(message: bytes) -> bytes:
    out = bytearray(message)
    out[_BASE_KEY + 31] ^= 0x80          # bit 255: X25519 ignores it (RFC 7748 §5)
    return bytes(out)


def _keyless_first_message(alice: keys.IdentityKeyPair, bob: keys.IdentityKeyPair
                           ) -> tuple[prekeys.PreKeys, bytes]:
    """A directory withheld Bob's one-time keys: only the replay memory protects him."""
    pre = prekeys.PreKeys.generate(bob, one_time=0, now_ms=T0)
    _, first = session.initiate(alice, pre.bundle(), b"transfer $100")
    return pre, first


# --- 1. replay through a non-canonical base key; loose flags ------------------------

def test_flipped_bit_replay_of_a_keyless_initial_message_is_refused(
        alice: keys.IdentityKeyPair, bob: keys.IdentityKeyPair) -> None:
    pre, first = _keyless_first_message(alice, bob)
    session.respond(bob, pre, first)
    with pytest.raises(DuplicateMessage):
        session.respond(bob, pre, first)
    with pytest.raises(MalformedMessage, match="canonical"):
        session.respond(bob, pre, _flip_top_bit_of_base_key(first))


def test_transcript_binding_refuses_the_replay_even_without_the_canonical_check(
        alice: keys.IdentityKeyPair, bob: keys.IdentityKeyPair,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: with the encoding check switched off, the flipped bit still
    changes the transcript hash in the first message's associated data."""
    pre, first = _keyless_first_message(alice, bob)
    session.respond(bob, pre, first)
    monkeypatch.setattr(p, "check_x25519_canonical", lambda data: data)
    with pytest.raises(DecryptionFailed):
        session.respond(bob, pre, _flip_top_bit_of_base_key(first))


@pytest.mark.parametrize("public", [
    b"\x01" + bytes(30) + b"\x80",                       # bit 255 set
    (2**255 - 19).to_bytes(32, "little"),                # u = p
    (2**255 - 1).to_bytes(32, "little"),                 # u > p, bit 255 clear
])
def test_non_canonical_x25519_keys_are_refused_everywhere(public: bytes,
                                                          bob: keys.IdentityKeyPair) -> None:
    with pytest.raises(MalformedMessage, match="canonical"):
        p.x25519_public(public)
    with pytest.raises(MalformedMessage):
        keys.OneTimePreKeyPublic.from_bytes(keys.OneTimePreKeyPublic(7, public).to_bytes())
    spk = keys.SignedPreKeyPublic.create(bob, 7, public)
    with pytest.raises(MalformedMessage):
        keys.SignedPreKeyPublic.from_bytes(spk.to_bytes(), bob.public)


def test_one_time_flag_set_to_two_is_refused(alice: keys.IdentityKeyPair,
                                             bob: keys.IdentityKeyPair) -> None:
    """``if r.u8()`` took 2 for "present": accepted, and the two sides disagreed."""
    pre = prekeys.PreKeys.generate(bob, one_time=1, now_ms=T0)
    _, first = session.initiate(alice, pre.bundle(), b"x")
    assert first[_OPK_FLAG] == 1
    forged = bytearray(first)
    forged[_OPK_FLAG] = 2
    with pytest.raises(MalformedMessage, match="boolean"):
        session.respond(bob, pre, bytes(forged))
    assert session.respond(bob, pre, first)[1] == b"x"


def test_last_resort_flag_set_to_two_is_refused(alice: keys.IdentityKeyPair,
                                                bob: keys.IdentityKeyPair) -> None:
    pre, first = _keyless_first_message(alice, bob)
    index = _OPK_FLAG + 1 + 4            # no one-time key: the KEM key id, then the flag
    assert first[index] == 1
    forged = bytearray(first)
    forged[index] = 2
    with pytest.raises(MalformedMessage, match="boolean"):
        session.respond(bob, pre, bytes(forged))


def test_version_and_type_bytes_are_authenticated(alice: keys.IdentityKeyPair,
                                                  bob: keys.IdentityKeyPair) -> None:
    a, b = make_pair(alice, bob)
    a.decrypt(b.encrypt(b"ack"))                 # Alice no longer sends prekey messages
    message = a.encrypt(b"hi")
    header = message[2:2 + ratchet.HEADER_LEN]
    body = message[2 + ratchet.HEADER_LEN:]
    # The same ratchet header and body checked without the version/type prefix in AD:
    copy = session.Session.from_bytes(b.to_bytes())
    with pytest.raises(DecryptionFailed):
        copy._ratchet.decrypt(header, body, copy._ad, padding.unpad)
    assert b.decrypt(message) == b"hi"


# --- 2. a rolled-back session must not reuse a keystream ----------------------------

@pytest.mark.parametrize("he", [False, True])
def test_rolled_back_session_leaks_no_plaintext_xor(alice: keys.IdentityKeyPair,
                                                    bob: keys.IdentityKeyPair, he: bool) -> None:
    a, b = make_pair(alice, bob, he)
    a.decrypt(b.encrypt(b"ack"))
    b.decrypt(a.encrypt(b"first of a sending chain"))
    snapshot = a.to_bytes()                      # a backup, a VM snapshot, a copied home
    p1, p2 = b"attack at dawn!!", b"retreat at nine!"
    c1 = a.encrypt(p1)
    c2 = session.Session.from_bytes(snapshot).encrypt(p2)
    hlen = 2 + (ratchet.ENCRYPTED_HEADER_LEN if he else ratchet.HEADER_LEN)
    body1, body2 = c1[hlen:], c2[hlen:]
    pad1, pad2 = padding.pad(p1), padding.pad(p2)
    xor_c = bytes(x ^ y for x, y in zip(body1, body2, strict=False))
    xor_p = bytes(x ^ y for x, y in zip(pad1, pad2, strict=True))
    # AES-GCM under the repeated key and nonce gave c1 ⊕ c2 = p1 ⊕ p2 (and the MAC key).
    assert xor_c[:len(xor_p)] != xor_p
    assert all(xor_c[i:i + 8] != xor_p[i:i + 8] for i in range(0, len(xor_p), 8))
    # What still leaks, as GCM-SIV promises: only whether two plaintexts were equal
    # (with header encryption not even that: the header's random nonce is in the AD).
    again = session.Session.from_bytes(snapshot).encrypt(p1)
    assert (again[hlen:] == body1) == (not he)


def test_message_keys_carry_their_own_nonce() -> None:
    mk1, ck = ratchet.kdf_ck(bytes(32))
    mk2, _ = ratchet.kdf_ck(ck)
    assert len(mk1) == p.MESSAGE_KEY_LEN and mk1[32:] != mk2[32:]
    sealed_once = p.seal_message(mk1, b"x", b"ad")
    assert p.open_message(mk1, sealed_once, b"ad") == b"x"
    with pytest.raises(DecryptionFailed):
        p.open_message(mk2, sealed_once, b"ad")


# --- 3. forward secrecy of sessions set up without one-time keys ---------------------

def test_signed_prekey_private_key_leaves_the_responder_session_at_once(
        alice: keys.IdentityKeyPair, bob: keys.IdentityKeyPair) -> None:
    pre, first = _keyless_first_message(alice, bob)
    spk_id = pre.current_signed_prekey().key_id
    spk_private = pre.signed_prekey_private(spk_id).private_bytes_raw()
    b, _ = session.respond(bob, pre, first)
    assert spk_private not in b.to_bytes()       # Bob has not replied yet
    # The prekey rotates and its grace period ends: nothing of it is left anywhere.
    pre.maintain(bob, now_ms=T0 + prekeys.ROTATE_AFTER_MS)
    pre.maintain(bob, now_ms=T0 + prekeys.ROTATE_AFTER_MS + prekeys.GRACE_MS)
    with pytest.raises(UnknownPreKey):
        pre.signed_prekey_private(spk_id)
    assert spk_private not in pre.to_bytes() and spk_private not in b.to_bytes()
    a_reply = b.encrypt(b"ok")
    assert a_reply          # the session still works without it


def test_signed_and_last_resort_keys_rotate_on_a_timer(alice: keys.IdentityKeyPair,
                                                       bob: keys.IdentityKeyPair) -> None:
    pre = prekeys.PreKeys.generate(bob, one_time=0, now_ms=T0)
    old_bundle = pre.bundle()
    assert pre.next_rotation_ms() == T0 + prekeys.ROTATE_AFTER_MS
    assert not pre.maintain(bob, now_ms=T0 + prekeys.ROTATE_AFTER_MS - 1)
    assert not pre.maintain(bob, now_ms=T0 - prekeys.DAY_MS)      # clock went back
    rotation = pre.maintain(bob, now_ms=T0 + prekeys.ROTATE_AFTER_MS)
    assert rotation.signed_prekey is not None and rotation.last_resort_kem is not None
    new_bundle = pre.bundle()
    assert new_bundle.signed_prekey == rotation.signed_prekey
    assert new_bundle.last_resort_kem == rotation.last_resort_kem
    # In the grace period an initial message made from the old bundle still opens.
    _, in_flight = session.initiate(alice, old_bundle, b"sent last week")
    assert session.respond(bob, pre, in_flight)[1] == b"sent last week"
    _, late = session.initiate(alice, old_bundle, b"too late")
    pre.maintain(bob, now_ms=T0 + prekeys.ROTATE_AFTER_MS + prekeys.GRACE_MS)
    with pytest.raises(UnknownPreKey):
        session.respond(bob, pre, late)
    assert old_bundle.signed_prekey.key_id not in pre.signed_prekeys
    assert old_bundle.last_resort_kem.key_id not in pre.last_resort


def test_a_full_replay_memory_rotates_the_signed_prekey_early(
        bob: keys.IdentityKeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prekeys, "SEEN_BASE_KEYS_ROTATE", 3)
    pre = prekeys.PreKeys.generate(bob, one_time=0, now_ms=T0)
    spk, last = pre.current_signed_prekey().key_id, pre.current_last_resort().key_id
    for i in range(3):
        pre.consume(i.to_bytes(32, "big"), spk, None, last, kem_last_resort=True)
    rotation = pre.maintain(bob, now_ms=T0 + 1)
    assert rotation.signed_prekey is not None and rotation.last_resort_kem is None


def test_prekeys_round_trip_with_times_and_read_version_1(bob: keys.IdentityKeyPair) -> None:
    pre = prekeys.PreKeys.generate(bob, one_time=2, now_ms=T0)
    again = prekeys.PreKeys.from_bytes(pre.to_bytes())
    assert again.to_bytes() == pre.to_bytes()
    assert again.next_rotation_ms() == T0 + prekeys.ROTATE_AFTER_MS
    # Version 1 had no times: its keys count as made at 0 and rotate at the first chance.
    spk_id, (spk_secret, spk_record) = next(iter(
        (k, (h.secret, h.record)) for k, h in pre.signed_prekeys.items()))
    last_id, last = next(iter(pre.last_resort.items()))
    w = Writer().u8(1).var(bob.public.to_bytes()).u32(99)
    w.u32(1).raw(spk_secret).var(spk_record.to_bytes())
    w.u32(len(pre.one_time))
    for value in pre.one_time.values():
        w.raw(value[:32]).var(value[32:])
    w.u32(len(pre.one_time_kem))
    for value in pre.one_time_kem.values():
        w.raw(value[:64]).var(value[64:])
    w.u32(1).raw(last.secret).var(last.record.to_bytes())
    w.u32(1).u32(spk_id).u32(1).raw(b"S" * 32)
    old = prekeys.PreKeys.from_bytes(w.finish())
    assert old.one_time_count == 2 and old.base_key_seen(spk_id, b"S" * 32)
    assert old.current_last_resort().key_id == last_id
    assert old.maintain(bob, now_ms=T0)


# --- 5. skipped message keys expire by steps and by time ------------------------------

def _withhold_one(a: session.Session, b: session.Session) -> bytes:
    withheld = a.encrypt(b"withheld")
    assert b.decrypt(a.encrypt(b"next")) == b"next"
    return withheld


def test_skipped_keys_expire_after_enough_ratchet_steps(alice: keys.IdentityKeyPair,
                                                        bob: keys.IdentityKeyPair) -> None:
    a, b = make_pair(alice, bob)
    a.decrypt(b.encrypt(b"ack"))
    withheld = _withhold_one(a, b)
    kept = session.Session.from_bytes(b.to_bytes())
    for _ in range(ratchet.MAX_SKIPPED_STEPS):
        a.decrypt(b.encrypt(b"ping"))
        b.decrypt(a.encrypt(b"pong"))
    with pytest.raises(DuplicateMessage):          # the key expired with the steps
        b.decrypt(withheld)
    assert kept.decrypt(withheld) == b"withheld"   # before the steps it was there


def test_skipped_keys_expire_after_a_week(alice: keys.IdentityKeyPair,
                                          bob: keys.IdentityKeyPair) -> None:
    a, b = make_pair(alice, bob)
    a.decrypt(b.encrypt(b"ack"))
    withheld = a.encrypt(b"withheld")
    assert b.decrypt(a.encrypt(b"next"), now_ms=T0) == b"next"
    fresh = session.Session.from_bytes(b.to_bytes())
    assert fresh.decrypt(withheld, now_ms=T0 + ratchet.MAX_SKIPPED_AGE_MS) == b"withheld"
    with pytest.raises(DuplicateMessage):
        b.decrypt(withheld, now_ms=T0 + ratchet.MAX_SKIPPED_AGE_MS + 1)


# --- 8. counters that would overflow ---------------------------------------------------

def test_a_counter_at_the_32_bit_limit_is_a_typed_error_and_changes_nothing(
        alice: keys.IdentityKeyPair, bob: keys.IdentityKeyPair) -> None:
    a, b = make_pair(alice, bob)
    # A malicious Alice and a receiver that already counted up to just below 2**32.
    limit = ratchet.MAX_COUNTER
    a._ratchet.ns = b._ratchet.nr = limit
    assert a._ratchet.cks is not None
    mk, _ = ratchet.kdf_ck(a._ratchet.cks)
    header = ratchet._HEADER.pack(a._ratchet.dhs_pub, a._ratchet.pn, limit)
    ad = b._message_ad
    forged = bytes((session.VERSION, session.TYPE_MESSAGE)) + header + \
        p.seal_message(mk, padding.pad(b"boom"), ad + header)
    before = b.to_bytes()
    with pytest.raises(MalformedMessage, match="out of range"):
        b.decrypt(forged)
    assert b.to_bytes() == before                  # saving still works: nothing stuck


def test_writer_overflow_is_a_typed_error() -> None:
    with pytest.raises(MalformedMessage, match="32-bit"):
        Writer().u32(2**32)
    with pytest.raises(MalformedMessage):
        Writer().u8(-1)
