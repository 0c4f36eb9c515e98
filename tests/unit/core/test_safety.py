from __future__ import annotations

import pytest

from veil.core import keys, safety
from veil.core.errors import MalformedMessage, UnsupportedVersion

A_ID, B_ID = b"a" * 16, b"b" * 16


def test_both_sides_see_the_same_sixty_digits(alice: keys.IdentityKeyPair,
                                              bob: keys.IdentityKeyPair) -> None:
    ours = safety.safety_number(alice.public, A_ID, bob.public, B_ID)
    theirs = safety.safety_number(bob.public, B_ID, alice.public, A_ID)
    assert ours.digits == theirs.digits
    assert len(ours.digits) == 60 and ours.digits.isdigit()
    assert len(ours.groups()) == 12
    assert ours.matches(theirs.qr_payload) and theirs.matches(ours.qr_payload)
    assert not ours.matches(ours.qr_payload)     # scanning our own screen is not a match


def test_a_different_key_changes_the_number(alice: keys.IdentityKeyPair,
                                            bob: keys.IdentityKeyPair) -> None:
    ours = safety.safety_number(alice.public, A_ID, bob.public, B_ID)
    mitm = keys.IdentityKeyPair.generate()
    theirs = safety.safety_number(bob.public, B_ID, mitm.public, A_ID)
    assert ours.digits != theirs.digits
    assert not ours.matches(theirs.qr_payload)


def test_malformed_payloads(alice: keys.IdentityKeyPair, bob: keys.IdentityKeyPair) -> None:
    ours = safety.safety_number(alice.public, A_ID, bob.public, B_ID)
    with pytest.raises(MalformedMessage):
        ours.matches(b"\x01" + bytes(10))
    with pytest.raises(UnsupportedVersion):
        ours.matches(b"\x07" + bytes(64))
