"""Safety numbers: verifying identity keys out of band.

The construction follows Signal's numeric fingerprint (version 0 of libsignal's
``NumericFingerprintGenerator``): for each party, ``h = SHA-512(version || key ||
stable id)`` then 5,200 iterations of ``h = SHA-512(h || key)``. The first 30 bytes of
``h`` give six 5-byte chunks, each read big-endian modulo 100,000 as five digits: a
30-digit half. The safety number is the two halves in sorted order, so both sides see
the same 60 digits. Here ``key`` is the Ed25519 key followed by the X25519 key.

The QR payload is ``version (1 byte) || own 32-byte hash || peer's 32-byte hash``;
scanning the peer's payload matches when its two halves are ours swapped.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes

from veil.core import primitives as p
from veil.core.errors import MalformedMessage, UnsupportedVersion
from veil.core.keys import IdentityPublicKey

ITERATIONS = 5200
VERSION = 0
QR_VERSION = 1
QR_PAYLOAD_LEN = 1 + 32 + 32


def _fingerprint_hash(identity: IdentityPublicKey, stable_id: bytes) -> bytes:
    key = identity.signing + identity.dh
    digest = hashes.Hash(hashes.SHA512())
    digest.update(VERSION.to_bytes(2, "big") + key + stable_id)
    h = digest.finalize()
    for _ in range(ITERATIONS):
        digest = hashes.Hash(hashes.SHA512())
        digest.update(h + key)
        h = digest.finalize()
    return h


def _digits(h: bytes) -> str:
    return "".join(f"{int.from_bytes(h[i:i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5))


@dataclass(frozen=True, slots=True)
class SafetyNumber:
    """The safety number between us and a peer; equal on both sides."""

    digits: str              # 60 digits
    qr_payload: bytes        # what our screen shows as a QR code

    def groups(self) -> list[str]:
        """Twelve groups of five digits, the way they are read aloud."""
        return [self.digits[i:i + 5] for i in range(0, 60, 5)]

    def matches(self, scanned: bytes) -> bool:
        """Compare the peer's QR payload with ours: ``True`` only for the same keys."""
        if len(scanned) != QR_PAYLOAD_LEN:
            raise MalformedMessage("safety number QR payload has the wrong length")
        if scanned[0] != QR_VERSION:
            raise UnsupportedVersion("safety number QR payload: unknown version")
        ours, theirs = self.qr_payload[1:33], self.qr_payload[33:]
        return p.constant_time_equal(scanned[1:33], theirs) and \
            p.constant_time_equal(scanned[33:], ours)


def safety_number(local: IdentityPublicKey, local_id: bytes, remote: IdentityPublicKey,
                  remote_id: bytes) -> SafetyNumber:
    """``local_id``/``remote_id`` are stable account identifiers (e.g. 16-byte ids)."""
    ours = _fingerprint_hash(local, local_id)[:32]
    theirs = _fingerprint_hash(remote, remote_id)[:32]
    a, b = _digits(ours), _digits(theirs)
    digits = a + b if a <= b else b + a
    return SafetyNumber(digits, bytes((QR_VERSION,)) + ours + theirs)

__all__ = [
    "SafetyNumber",
    "safety_number",
]
