"""Sealed-sender envelopes and sender certificates."""

from __future__ import annotations

from veil.core import keys, sealed
from veil.core.errors import CoreError

ALLOWED = (CoreError,)   # MalformedMessage, DecryptionFailed, InvalidSignature, Expired…
_ROOT = sealed.TrustRoot.generate()
_SERVER = sealed.ServerKey.generate(_ROOT, 1, 2**62)
_ALICE, _BOB = keys.IdentityKeyPair.generate(), keys.IdentityKeyPair.generate()
_CERT = _SERVER.issue(bytes(16), 1, _ALICE.public, 2**62)
SEEDS = [sealed.seal(_ALICE, _CERT, _BOB.public, b"content"), _CERT.to_bytes()]


def target(data: bytes) -> None:
    try:
        sealed.SenderCertificate.from_bytes(data).validate(_ROOT.public, 0)
    except ALLOWED:
        pass
    sealed.open_envelope(_BOB, data, _ROOT.public, 0)
