"""Messages arriving on an established session (ratchet and prekey messages)."""

from __future__ import annotations

from veil.core import keys, prekeys, session
from veil.core.errors import (
    DecryptionFailed,
    DuplicateMessage,
    InvalidSignature,
    MalformedMessage,
    TooManySkippedMessages,
)

ALLOWED = (MalformedMessage, DecryptionFailed, DuplicateMessage, TooManySkippedMessages,
           InvalidSignature)
_ALICE, _BOB = keys.IdentityKeyPair.generate(), keys.IdentityKeyPair.generate()
_PRE = prekeys.PreKeys.generate(_BOB, one_time=1, now_ms=0)
_A, _FIRST = session.initiate(_ALICE, _PRE.bundle(), b"hello", header_encryption=False)
_B, _ = session.respond(_BOB, _PRE, _FIRST)
_A2, _FIRST_HE = session.initiate(_ALICE, _PRE.bundle(), b"hello", header_encryption=True)
_B2, _ = session.respond(_BOB, _PRE, _FIRST_HE)
SEEDS = [_A.encrypt(b"one"), _A.encrypt(b"two"), _A2.encrypt(b"three")]
_STATES = (_B.to_bytes(), _B2.to_bytes())


def target(data: bytes) -> None:
    for state in _STATES:
        receiver = session.Session.from_bytes(state)
        try:
            receiver.decrypt(data)
        except ALLOWED:
            assert receiver.to_bytes() == state, "a rejected message changed the session"
            continue
        assert data in SEEDS, "a forged message was accepted"
