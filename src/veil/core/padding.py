"""Plaintext padding so ciphertext sizes leak little (Padmé, Nikitin et al., PETS 2019 §4).

A plaintext of ``L`` bytes gets a one-byte 0x80 terminator and zero bytes up to the
Padmé length of ``L + 1`` (never less than ``MIN_PADDED``). Padmé keeps only the top
``floor(log2 E) + 1`` bits of the length, where ``E = floor(log2 L)``, so the padded
size reveals O(log log L) bits of L.

Overhead: at most 11.1% for lengths above 256 bytes (bounded by ``2^(E-S)`` over
``2^E``), and every message shorter than ``MIN_PADDED`` costs ``MIN_PADDED`` bytes.
Measured examples: 1 → 32, 100 → 104, 256 → 272, 1,000 → 1,024, 10,000 → 10,240,
100,000 → 100,352 (0.35%). Removal scans from the end for the terminator (ISO/IEC
7816-4 style), as Signal's padding does.
"""

from __future__ import annotations

from veil.core.errors import MalformedMessage

MIN_PADDED = 32
_TERMINATOR = 0x80


def padme_length(length: int) -> int:
    """The Padmé bucket for ``length`` bytes (length >= 1)."""
    if length < 2:
        return length
    e = length.bit_length() - 1            # floor(log2 L)
    s = e.bit_length()                     # floor(log2 E) + 1
    mask = (1 << (e - s)) - 1
    return (length + mask) & ~mask


def pad(plaintext: bytes) -> bytes:
    total = max(MIN_PADDED, padme_length(len(plaintext) + 1))
    return plaintext + b"\x80" + bytes(total - len(plaintext) - 1)


def unpad(padded: bytes) -> bytes:
    stripped = padded.rstrip(b"\x00")
    if not stripped or stripped[-1] != _TERMINATOR:
        raise MalformedMessage("padding is malformed")
    return stripped[:-1]

__all__ = [
    "MIN_PADDED",
    "pad",
    "unpad",
]
