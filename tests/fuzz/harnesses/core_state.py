"""Stored state read back from disk (a corrupt store must fail cleanly, not crash)."""

from __future__ import annotations

from veil.core import keys, prekeys, safety, session
from veil.core.errors import CoreError

ALLOWED = (CoreError,)
_ALICE, _BOB = keys.IdentityKeyPair.generate(), keys.IdentityKeyPair.generate()
_PRE = prekeys.PreKeys.generate(_BOB, one_time=1, now_ms=0)
_A, _ = session.initiate(_ALICE, _PRE.bundle(), b"x")
_SN = safety.safety_number(_ALICE.public, b"a", _BOB.public, b"b")
SEEDS = [_A.to_bytes(), _PRE.to_bytes(), _ALICE.to_bytes(), _SN.qr_payload]
_PARSERS = (session.Session.from_bytes, prekeys.PreKeys.from_bytes,
            keys.IdentityKeyPair.from_bytes, _SN.matches)


def target(data: bytes) -> None:
    for parse in _PARSERS:
        try:
            parse(data)
        except ALLOWED:
            pass
