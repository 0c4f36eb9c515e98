from __future__ import annotations

import pytest

from veil.core import keys, prekeys
from veil.core.errors import InvalidSignature, MalformedMessage, UnknownPreKey


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def test_identity_round_trip_and_binding_checked(bob: keys.IdentityKeyPair) -> None:
    raw = bob.public.to_bytes()
    assert keys.IdentityPublicKey.from_bytes(raw) == bob.public
    restored = keys.IdentityKeyPair.from_bytes(bob.to_bytes())
    assert restored.public == bob.public
    with pytest.raises(InvalidSignature):
        keys.IdentityPublicKey.from_bytes(_flip(raw, 40))      # X25519 key altered
    with pytest.raises(InvalidSignature):
        keys.IdentityPublicKey.from_bytes(_flip(raw, 100))     # binding signature altered


def test_bundle_round_trip(bob: keys.IdentityKeyPair) -> None:
    pre = prekeys.PreKeys.generate(bob, one_time=3, now_ms=0)
    bundle = pre.bundle()
    again = keys.PreKeyBundle.from_bytes(bundle.to_bytes())
    assert again == bundle
    assert again.one_time_prekey is not None and again.one_time_kem_prekey is not None


def test_bundle_signatures_checked_on_load(bob: keys.IdentityKeyPair) -> None:
    pre = prekeys.PreKeys.generate(bob, one_time=1, now_ms=0)
    up = pre.upload()
    kem_raw = up.one_time_kem_prekeys[0][1]
    # bad ML-KEM prekey signature (last byte of the record is in the signature)
    with pytest.raises(InvalidSignature):
        keys.PreKeyBundle.from_parts(up.identity, up.signed_prekey, up.last_resort_kem,
                                     up.one_time_prekeys[0][1], _flip(kem_raw, len(kem_raw) - 1))
    # bad last-resort ML-KEM signature; altered ML-KEM public key
    with pytest.raises(InvalidSignature):
        keys.PreKeyBundle.from_parts(up.identity, up.signed_prekey,
                                     _flip(up.last_resort_kem, len(up.last_resort_kem) - 1))
    with pytest.raises(InvalidSignature):
        keys.PreKeyBundle.from_parts(up.identity, up.signed_prekey, _flip(up.last_resort_kem, 20))
    with pytest.raises(InvalidSignature):
        keys.PreKeyBundle.from_parts(up.identity, _flip(up.signed_prekey, 10), up.last_resort_kem)


def test_bundle_signed_by_another_identity_is_refused(bob: keys.IdentityKeyPair,
                                                      alice: keys.IdentityKeyPair) -> None:
    up = prekeys.PreKeys.generate(bob, one_time=0, now_ms=0).upload()
    with pytest.raises(InvalidSignature):
        keys.PreKeyBundle.from_parts(alice.public.to_bytes(), up.signed_prekey,
                                     up.last_resort_kem)


def test_one_time_kem_key_cannot_pose_as_last_resort(bob: keys.IdentityKeyPair) -> None:
    up = prekeys.PreKeys.generate(bob, one_time=1, now_ms=0).upload()
    with pytest.raises(MalformedMessage):
        keys.PreKeyBundle.from_parts(up.identity, up.signed_prekey,
                                     up.one_time_kem_prekeys[0][1])


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x02" + bytes(200), bytes(5000)])
def test_malformed_bundles(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        keys.PreKeyBundle.from_bytes(data)


def test_prekeys_persist_and_consume(bob: keys.IdentityKeyPair) -> None:
    pre = prekeys.PreKeys.generate(bob, one_time=4, now_ms=0)
    restored = prekeys.PreKeys.from_bytes(pre.to_bytes())
    assert restored.to_bytes() == pre.to_bytes()
    assert restored.one_time_count == 4
    opk_id = next(iter(restored.one_time))
    kem_id = next(iter(restored.one_time_kem))
    spk_id = next(iter(restored.signed_prekeys))
    restored.consume(b"B" * 32, spk_id, opk_id, kem_id, kem_last_resort=False)
    assert restored.one_time_count == 3
    with pytest.raises(UnknownPreKey):
        restored.one_time_private(opk_id)
    with pytest.raises(UnknownPreKey):
        restored.kem_private(kem_id, last_resort=False)
    # one-time keys make a replay fail by themselves; only key-less ones are remembered
    assert not restored.base_key_seen(spk_id, b"B" * 32)
    last = next(iter(restored.last_resort))
    restored.consume(b"C" * 32, spk_id, None, last, kem_last_resort=True)
    again = prekeys.PreKeys.from_bytes(restored.to_bytes())
    assert again.base_key_seen(spk_id, b"C" * 32)


def test_refill_and_rotation(bob: keys.IdentityKeyPair) -> None:
    pre = prekeys.PreKeys.generate(bob, one_time=1, now_ms=0)
    old_spk = pre.bundle().signed_prekey.key_id
    ec, kem = pre.add_one_time(bob, 5)
    assert len(ec) == len(kem) == 5 and pre.one_time_count == 6
    assert not pre.maintain(bob, now_ms=prekeys.ROTATE_AFTER_MS - 1)
    rotated = pre.maintain(bob, now_ms=prekeys.ROTATE_AFTER_MS)
    assert rotated.signed_prekey is not None and rotated.last_resort_kem is not None
    assert rotated.signed_prekey.key_id != old_spk
    pre.signed_prekey_private(old_spk)           # kept for a grace period
    pre.maintain(bob, now_ms=prekeys.ROTATE_AFTER_MS + prekeys.GRACE_MS)
    with pytest.raises(UnknownPreKey):
        pre.signed_prekey_private(old_spk)
    ids = [rec.key_id for rec in ec] + [rec.key_id for rec in kem]
    assert len(set(ids)) == len(ids)


def test_one_time_keys_are_capped_oldest_first(bob: keys.IdentityKeyPair,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prekeys, "MAX_ONE_TIME", 5)
    pre = prekeys.PreKeys.generate(bob, one_time=4, now_ms=0)
    oldest = next(iter(pre.one_time))
    pre.add_one_time(bob, 3)               # 7 > 5: the two oldest of each kind go
    assert len(pre.one_time) == len(pre.one_time_kem) == 5
    assert oldest not in pre.one_time
    with pytest.raises(ValueError):
        pre.add_one_time(bob, 6)


@pytest.mark.parametrize("signing", [bytes(32), b"\x01" + bytes(31),
                                     b"\xec" + b"\xff" * 30 + b"\x7f",
                                     b"\xee" + b"\xff" * 30 + b"\x7f"])
def test_small_order_signing_keys_are_refused(signing: bytes) -> None:
    # With the identity point as signing key, R = identity and S = 0 "verifies" anything.
    forged = b"\x01" + signing + bytes(32) + b"\x01" + bytes(63)
    with pytest.raises(MalformedMessage):
        keys.IdentityPublicKey.from_bytes(forged)


def test_prekey_ids_and_kinds_are_signed(bob: keys.IdentityKeyPair) -> None:
    """A directory cannot relabel a key's id or pass a one-time key off as last-resort."""
    up = prekeys.PreKeys.generate(bob, one_time=1, now_ms=0).upload()
    spk = keys.SignedPreKeyPublic.from_bytes(up.signed_prekey, bob.public)
    relabeled = keys.SignedPreKeyPublic(spk.key_id + 1, spk.public, spk.signature)
    with pytest.raises(InvalidSignature):
        keys.SignedPreKeyPublic.from_bytes(relabeled.to_bytes(), bob.public)
    kem = keys.KemPreKeyPublic.from_bytes(up.one_time_kem_prekeys[0][1], bob.public)
    as_last_resort = keys.KemPreKeyPublic(kem.key_id, True, kem.public, kem.signature)
    with pytest.raises(InvalidSignature):
        keys.KemPreKeyPublic.from_bytes(as_last_resort.to_bytes(), bob.public)


def test_prekeys_move_into_caller_tables(bob: keys.IdentityKeyPair) -> None:
    """A device keeps one-time keys and replay memory per record (issue 8, item 9)."""
    pre = prekeys.PreKeys.generate(bob, one_time=3, now_ms=0)
    spk = pre.current_signed_prekey().key_id
    pre.consume(b"R" * 32, spk, None, pre.current_last_resort().key_id, kem_last_resort=True)
    tables = prekeys.PreKeyTables()
    ids = list(pre.one_time)
    pre.adopt(tables)
    assert not pre.inline_tables and list(tables.one_time) == ids
    assert tables.replay.seen(spk, b"R" * 32)
    small = pre.to_bytes()
    assert len(small) < 8192                      # the tables are not in it
    again = prekeys.PreKeys.from_bytes(small, tables=tables)
    assert again.one_time_count == 3 and again.base_key_seen(spk, b"R" * 32)
    with pytest.raises(MalformedMessage):
        prekeys.PreKeys.from_bytes(small)         # tables expected from the caller
    with pytest.raises(ValueError):
        pre.adopt(prekeys.PreKeyTables())
