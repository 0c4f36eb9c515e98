"""Chunked attachment encryption (``veil.core.attachments``, docs/attachments.md)."""

from __future__ import annotations

import hashlib
from itertools import pairwise

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.core import attachments as att
from veil.core.errors import DecryptionFailed, MalformedMessage

KEY = bytes(range(32))
TAG = 16


def _independent_blob(key: bytes, data: bytes) -> bytes:
    """The blob as docs/attachments.md specifies it, computed without the module."""
    derived = HKDF(hashes.SHA256(), 39, None, b"veil attachment v1").derive(key)
    aead, prefix = AESGCM(derived[:32]), derived[32:]
    padded_len = max(4096, _padme(len(data)))
    padded = data + bytes(padded_len - len(data))
    pieces = [padded[i:i + 65536] for i in range(0, padded_len, 65536)]
    ad = b"veil attachment v1" + len(data).to_bytes(8, "big")
    return b"".join(
        aead.encrypt(prefix + i.to_bytes(4, "big") + bytes([i == len(pieces) - 1]), p, ad)
        for i, p in enumerate(pieces))


def _independent_digest(blob: bytes) -> bytes:
    chain = bytes(32)
    for i in range(0, len(blob), 65536 + 16):
        chain = hashlib.sha256(chain + blob[i:i + 65536 + 16]).digest()
    return chain


def _padme(n: int) -> int:
    if n < 2:
        return n
    e = n.bit_length() - 1
    s = e.bit_length()
    mask = (1 << (e - s)) - 1
    return (n + mask) & ~mask


@pytest.mark.parametrize("size", [0, 1, 4095, 4097, 65535, 65536, 65537, 3 * 65536 + 5,
                                  1_000_000])
def test_the_blob_is_the_specified_construction_and_opens_to_the_file(size: int) -> None:
    data = bytes((i * 7 + 3) % 251 for i in range(size))
    blob, digest = att.encrypt(KEY, data)
    assert blob == _independent_blob(KEY, data)
    assert digest == _independent_digest(blob)
    assert len(blob) == att.ciphertext_length(size)
    assert att.decrypt(KEY, size, digest, blob) == data


def test_sizes_leak_only_the_padded_class() -> None:
    assert att.ciphertext_length(1) == att.ciphertext_length(4000)      # one class
    assert att.padded_length(1_000_000) == 1_015_808                    # Padmé, < 12%
    for size in (10_000, 1 << 20, 100 << 20):
        assert size <= att.padded_length(size) <= size * 1.12
    # Every file between two Padmé boundaries has the same blob length.
    low = att.padded_length(1 << 20) + 1
    assert att.ciphertext_length(low) == att.ciphertext_length(att.padded_length(low))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=200_000), cuts=st.lists(st.integers(0, 300_000), max_size=8))
def test_any_split_of_the_input_gives_the_same_blob_and_plaintext(
        data: bytes, cuts: list[int]) -> None:
    whole, digest = att.encrypt(KEY, data)
    enc = att.Encryptor(KEY, len(data))
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    out = b"".join(enc.update(data[a:b]) for a, b in pairwise(bounds))
    out += enc.finish()
    assert out == whole and enc.digest == digest
    dec = att.Decryptor(KEY, len(data), digest)
    blob_bounds = sorted({0, len(whole), *(c for c in cuts if c < len(whole))})
    plain = b"".join(dec.update(whole[a:b])
                     for a, b in pairwise(blob_bounds))
    dec.finish()
    assert plain == data


def _three_chunks() -> tuple[bytes, bytes, int]:
    size = 2 * 65536 + 100
    blob, digest = att.encrypt(KEY, b"x" * size)
    return blob, digest, size


def test_tampered_reordered_cut_or_extended_blobs_are_refused() -> None:
    blob, digest, size = _three_chunks()
    step = 65536 + TAG
    chunks = [blob[i:i + step] for i in range(0, len(blob), step)]
    flipped = bytearray(blob)
    flipped[70_000] ^= 1
    cases = {
        "a flipped bit": bytes(flipped),
        "two chunks swapped": chunks[1] + chunks[0] + chunks[2],
        "the last chunk dropped": chunks[0] + chunks[1],
        "cut inside a chunk": blob[:-10],
        "a chunk repeated": chunks[0] + chunks[0] + chunks[1] + chunks[2],
        "bytes appended": blob + b"\x00",
    }
    for name, bad in cases.items():
        dec = att.Decryptor(KEY, size, digest)
        with pytest.raises(DecryptionFailed):
            dec.update(bad)
            dec.finish()
        del name


def test_a_pointer_with_another_key_size_or_digest_opens_nothing() -> None:
    blob, digest, size = _three_chunks()
    with pytest.raises(DecryptionFailed):
        att.decrypt(bytes(32), size, digest, blob)
    with pytest.raises(DecryptionFailed):            # the size is bound in
        att.decrypt(KEY, size - 1, digest, blob)
    with pytest.raises(DecryptionFailed, match="digest"):
        att.decrypt(KEY, size, bytes(32), blob)
    with pytest.raises(MalformedMessage):
        att.Decryptor(KEY, size, b"short")
    with pytest.raises(MalformedMessage):
        att.Decryptor(b"k" * 31, size, digest)
    with pytest.raises(MalformedMessage):
        att.Encryptor(KEY, -1)


def test_the_encryptor_holds_the_file_to_its_declared_size() -> None:
    enc = att.Encryptor(KEY, 10)
    with pytest.raises(MalformedMessage, match="longer"):
        enc.update(b"x" * 11)
    enc = att.Encryptor(KEY, 10)
    enc.update(b"x" * 9)
    with pytest.raises(MalformedMessage, match="shorter"):
        enc.finish()


def test_memory_is_bounded_by_the_read_size_not_the_file() -> None:
    """A 64 MiB file in 1 MiB reads: no output or buffer ever holds more than a read
    and a chunk (what streaming through disk and network relies on)."""
    size = 64 << 20
    enc = att.Encryptor(KEY, size)
    dec = att.Decryptor(KEY, size, bytes(32))
    block = b"\x5a" * (1 << 20)
    largest = 0
    for _ in range(size // len(block)):
        sealed = enc.update(block)
        largest = max(largest, len(sealed), len(enc._buffer), len(dec._buffer))
        assert dec.update(sealed) == block[:len(sealed) - (len(sealed) // (65536 + TAG)) * TAG]
    dec.update(enc.finish())
    assert largest <= (1 << 20) + 65536 + 16 * 17
    with pytest.raises(DecryptionFailed, match="digest"):
        dec.finish()                      # the pointer's digest was a wrong one


def test_a_stream_stopped_at_a_checkpoint_goes_on_to_the_same_blob() -> None:
    """A killed uploader or downloader resumes from a saved 40-byte checkpoint."""
    size = 5 * 65536 + 1234
    data = bytes((i * 13) % 256 for i in range(size))
    whole, digest = att.encrypt(KEY, data)
    first = att.Encryptor(KEY, size)
    head = first.update(data[:2 * 65536 + 500])        # then the process dies
    saved = att.Checkpoint.from_bytes(first.checkpoint().to_bytes())
    assert saved.index == 2 and saved.blob_offset() == len(head) == 2 * (65536 + 16)
    assert att.prefix_unchanged(KEY, size, saved, iter([data[:100_000], data[100_000:]]))
    assert not att.prefix_unchanged(KEY, size, saved, [b"y" + data[1:]])   # edited
    assert not att.prefix_unchanged(KEY, size, saved, [data[:1000]])       # now shorter
    assert att.prefix_unchanged(KEY, size, att.Checkpoint(), [])
    again = att.Encryptor(KEY, size, saved)
    tail = again.update(data[saved.file_offset(size):]) + again.finish()
    assert head + tail == whole and again.digest == digest
    # The reader the same way: stop after some chunks, go on from the checkpoint.
    reader = att.Decryptor(KEY, size, digest)
    got = reader.update(whole[:3 * (65536 + 16) + 7])
    mark = reader.checkpoint()
    rest = att.Decryptor(KEY, size, digest, mark)
    got = got[:mark.file_offset(size)] + rest.update(whole[mark.blob_offset():])
    rest.finish()
    assert got == data
    with pytest.raises(DecryptionFailed, match="digest"):   # a forged chain
        bad = att.Decryptor(KEY, size, digest, att.Checkpoint(mark.index, bytes(32)))
        bad.update(whole[mark.blob_offset():])
        bad.finish()
    with pytest.raises(MalformedMessage):
        att.Encryptor(KEY, size, att.Checkpoint(99))
    with pytest.raises(MalformedMessage):
        att.Checkpoint.from_bytes(b"x" * 72)
