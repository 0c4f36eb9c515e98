"""Per-hop secrets of a Sphinx packet: key schedule, blinding and header stream.

Sphinx paper, section 3.2: from the shared secret s_i a hop derives the header stream
key (rho), the MAC key (mu), the payload key (pi), the blinding factor (b) and the
replay tag (h_tau). Veil derives all of them with a single HKDF-SHA-256 call (RFC 5869)
salted with the hop's group element alpha_i, so each hop pays for one key derivation.

Group operations use X25519 (RFC 7748) through ``cryptography``: the exchange function
computes clamp(k) * P, and multiplication of scalars commutes, so blinding alpha by b is
``exchange(b, alpha)`` at the hop and the sender reaches the same secret by applying the
same clamped scalars to the hop's public key in any order.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.core.sphinx.lioness import KEYS_SIZE, Lioness
from veil.core.sphinx.params import BETA_SIZE, MAC_SIZE, SLOT_SIZE

_INFO = b"veil sphinx v1 hop keys"
_SHA256 = hashes.SHA256()
_ZERO_IV = bytes(16)
STREAM_SIZE = BETA_SIZE + SLOT_SIZE
_ZERO_STREAM = bytes(STREAM_SIZE)
_HEADER_KEY = slice(0, 16)
_MAC_KEY = slice(16, 48)
_BLINDING = slice(48, 80)
_TAG = slice(80, 96)
_PAYLOAD = slice(96, 96 + KEYS_SIZE)
_KDF_LENGTH = 96 + KEYS_SIZE


class HopKeys:
    """Every key one hop derives from its shared secret."""

    __slots__ = ("blinding", "header_key", "mac_key", "payload", "tag")

    def __init__(self, shared_secret: bytes, alpha: bytes) -> None:
        okm = HKDF(_SHA256, _KDF_LENGTH, alpha, _INFO).derive(shared_secret)
        self.header_key = okm[_HEADER_KEY]
        self.mac_key = okm[_MAC_KEY]
        self.blinding = okm[_BLINDING]
        self.tag = okm[_TAG]
        self.payload = Lioness(okm[_PAYLOAD])

    def mac(self, beta: bytes) -> bytes:
        h = hmac.HMAC(self.mac_key, _SHA256)
        h.update(beta)
        return h.finalize()[:MAC_SIZE]

    def stream_xor(self, data: bytes) -> bytes:
        """XOR ``data`` (at most STREAM_SIZE bytes) with the hop's header stream (AES-CTR)."""
        cipher = Cipher(algorithms.AES(self.header_key), modes.CTR(_ZERO_IV))
        return cipher.encryptor().update(data)

    def stream(self) -> bytes:
        return self.stream_xor(_ZERO_STREAM)


def blind(blinding: bytes, element: X25519PublicKey) -> bytes:
    """clamp(b) * element, as raw bytes. Raises ValueError on a small-order element."""
    return X25519PrivateKey.from_private_bytes(blinding).exchange(element)

__all__ = [
    "STREAM_SIZE",
    "HopKeys",
]
