"""The registration puzzle (issue 13 §2), shared by the server that checks it and the
client that solves it: find a decimal nonce such that SHA-256(challenge ":" nonce)
starts with ``bits`` zero bits — about 2**bits hashes to find, one to check.

Pure: the challenge itself (what it binds, its MAC and expiry) is the server's
business (``veil.server.protection.pow``).
"""

from __future__ import annotations

import hashlib

MAX_BITS = 32  # the most a server may ask (its pow_max_bits is at most 32)


def work(challenge: str, nonce: str) -> bytes:
    """The digest a nonce is judged by."""
    return hashlib.sha256(f"{challenge}:{nonce}".encode()).digest()


def leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def meets(challenge: str, nonce: str, bits: int) -> bool:
    """Whether ``nonce`` solves ``challenge`` at ``bits``."""
    return leading_zero_bits(work(challenge, nonce)) >= bits


def solve(challenge: str, bits: int) -> str:
    """The first decimal nonce that meets ``bits`` (about 2**bits hashes)."""
    if not 0 < bits <= MAX_BITS:
        raise ValueError("difficulty out of range")
    prefix = hashlib.sha256(f"{challenge}:".encode())
    limit = 1 << (256 - bits)
    nonce = 0
    while True:
        h = prefix.copy()
        h.update(str(nonce).encode())
        if int.from_bytes(h.digest(), "big") < limit:
            return str(nonce)
        nonce += 1


__all__ = [
    "MAX_BITS",
    "leading_zero_bits",
    "meets",
    "solve",
    "work",
]
