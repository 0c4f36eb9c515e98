from __future__ import annotations

import pytest

from veil.core import keys, prekeys, session


@pytest.fixture(scope="module")
def bob() -> keys.IdentityKeyPair:
    return keys.IdentityKeyPair.generate()


@pytest.fixture(scope="module")
def alice() -> keys.IdentityKeyPair:
    return keys.IdentityKeyPair.generate()


def make_pair(alice: keys.IdentityKeyPair, bob: keys.IdentityKeyPair,
              header_encryption: bool = False) -> tuple[session.Session, session.Session]:
    """A fresh session pair after the initial message was accepted."""
    pre = prekeys.PreKeys.generate(bob, one_time=1, now_ms=0)
    a, first = session.initiate(alice, pre.bundle(), b"hello",
                                header_encryption=header_encryption)
    b, text = session.respond(bob, pre, first)
    assert text == b"hello"
    return a, b
