"""Initial (prekey) messages handed to ``session.respond`` by anyone on the network."""

from __future__ import annotations

from veil.core import keys, prekeys, session
from veil.core.errors import CoreError

ALLOWED = (CoreError,)   # Malformed, InvalidSignature, UnknownPreKey, Duplicate, Decryption…
_ALICE, _BOB = keys.IdentityKeyPair.generate(), keys.IdentityKeyPair.generate()
_PRE = prekeys.PreKeys.generate(_BOB, one_time=2, now_ms=0)
SEEDS = [session.initiate(_ALICE, _PRE.bundle(), b"hi")[1]]


def target(data: bytes) -> None:
    before = _PRE.one_time_count
    try:
        session.respond(_BOB, _PRE, data)
    finally:
        assert _PRE.one_time_count >= before - 1
