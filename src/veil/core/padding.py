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

Outer sealed envelopes (issue 10 §4, item 3) are padded to a few fixed sizes instead
(:func:`bucket_length`, :data:`ENVELOPE_BUCKETS`): the smallest, 2,560 bytes, holds a first
message (PQXDH header with its 1,088-byte ML-KEM ciphertext) with a short text as well as
every ordinary message up to about 1.6 KB of text, so the size of an envelope does not
tell a first message from a later one. Larger envelopes take the next bucket (4, 8, 16,
32, 64 KiB) and above 64 KiB their Padmé length; what still shows is the size class of a
long text. :func:`pad_to` fills a plaintext to an exact length with the same terminator.
"""

from __future__ import annotations

from veil.core.errors import MalformedMessage

MIN_PADDED = 32
_TERMINATOR = 0x80
# Total sizes of sealed envelopes (bytes); above the last one, Padmé.
ENVELOPE_BUCKETS: tuple[int, ...] = (2560, 4096, 8192, 16384, 32768, 65536)


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


def bucket_length(length: int, buckets: tuple[int, ...] = ENVELOPE_BUCKETS) -> int:
    """The smallest of ``buckets`` (ascending) that holds ``length`` bytes; above the
    last, the Padmé length (at most 11.1% more)."""
    for size in buckets:
        if length <= size:
            return size
    return padme_length(length)


def pad_to(plaintext: bytes, total: int) -> bytes:
    """``plaintext``, the 0x80 terminator and zero bytes up to exactly ``total`` bytes
    (:func:`unpad` removes them)."""
    if total < len(plaintext) + 1:
        raise MalformedMessage("padding target is shorter than the plaintext")
    return plaintext + b"\x80" + bytes(total - len(plaintext) - 1)


def unpad(padded: bytes) -> bytes:
    stripped = padded.rstrip(b"\x00")
    if not stripped or stripped[-1] != _TERMINATOR:
        raise MalformedMessage("padding is malformed")
    return stripped[:-1]

__all__ = [
    "ENVELOPE_BUCKETS",
    "MIN_PADDED",
    "bucket_length",
    "pad",
    "pad_to",
    "unpad",
]
