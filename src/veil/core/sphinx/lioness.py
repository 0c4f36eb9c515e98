"""LIONESS, the wide-block cipher that protects Sphinx payloads from tagging.

Anderson & Biham, "Two Practical and Provably Secure Block Ciphers: BEAR and LION"
(FSE 1996), section 4: a four-round unbalanced Feistel network over a left part the size
of the hash output and a right part holding the rest of the block:

    R ^= S(L ^ K1);  L ^= H_K2(R);  R ^= S(L ^ K3);  L ^= H_K4(R)

Veil instantiates S with ChaCha20 (the round key is the 32-byte left part XOR K, the
nonce fixed at zero because every round key is used for exactly one block) and H with
HMAC-SHA-256, both from ``cryptography``. Flipping any bit of a LIONESS ciphertext turns
the whole decryption into unrelated bytes, which is what makes a tagging attack on the
payload detectable at the exit (Sphinx paper, section 3.4) rather than a traceable mark.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

KEY_SIZE = 32
LEFT_SIZE = 32
KEYS_SIZE = 4 * KEY_SIZE
MIN_BLOCK_SIZE = LEFT_SIZE + 1
_ZERO_NONCE = bytes(16)
_SHA256 = hashes.SHA256()


def _xor32(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(32, "little")


def _stream(key: bytes, data: bytes) -> bytes:
    return Cipher(algorithms.ChaCha20(key, _ZERO_NONCE), mode=None).encryptor().update(data)


def _hash(key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, _SHA256)
    mac.update(data)
    return mac.finalize()


class Lioness:
    """LIONESS under one 128-byte key (K1 || K2 || K3 || K4)."""

    __slots__ = ("_k1", "_k2", "_k3", "_k4")

    def __init__(self, keys: bytes) -> None:
        if len(keys) != KEYS_SIZE:
            raise ValueError("LIONESS needs 128 bytes of key")
        self._k1 = keys[0:32]
        self._k2 = keys[32:64]
        self._k3 = keys[64:96]
        self._k4 = keys[96:128]

    def encrypt(self, block: bytes) -> bytes:
        if len(block) < MIN_BLOCK_SIZE:
            raise ValueError("block too short for LIONESS")
        left, right = block[:LEFT_SIZE], block[LEFT_SIZE:]
        right = _stream(_xor32(left, self._k1), right)
        left = _xor32(left, _hash(self._k2, right))
        right = _stream(_xor32(left, self._k3), right)
        left = _xor32(left, _hash(self._k4, right))
        return left + right

    def decrypt(self, block: bytes) -> bytes:
        if len(block) < MIN_BLOCK_SIZE:
            raise ValueError("block too short for LIONESS")
        left, right = block[:LEFT_SIZE], block[LEFT_SIZE:]
        left = _xor32(left, _hash(self._k4, right))
        right = _stream(_xor32(left, self._k3), right)
        left = _xor32(left, _hash(self._k2, right))
        right = _stream(_xor32(left, self._k1), right)
        return left + right

__all__ = [
    "KEYS_SIZE",
    "Lioness",
]
