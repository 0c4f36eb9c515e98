"""Encrypting attachments in chunks, so files of any size stream in bounded memory
(issue 12 §1; docs/attachments.md, "Encryption").

A fresh random 32-byte key ``K`` per attachment. The plaintext is padded with zero bytes
to its Padmé length (at least :data:`MIN_PADDED`; :mod:`veil.core.padding`), cut into
chunks of :data:`CHUNK` bytes and each chunk sealed with AES-256-GCM in the STREAM
construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online Authenticated-Encryption and
its Nonce-Reuse Misuse-Resistance", CRYPTO 2015 §7): the nonce is a per-attachment
prefix, the chunk's index and a last-chunk flag, so chunks cannot be reordered, dropped,
repeated or the stream cut short without a chunk failing to open. Key and prefix come
from ``HKDF-SHA256(K, info = "veil attachment v1")``; the associated data binds the
plaintext size, so a pointer naming another size fails too.

The digest in the pointer is a hash chain over the sealed chunks, ``D_0 = 0^32``,
``D_{i+1} = SHA-256(D_i || chunk_i)``, the last ``D`` being the digest. A chain rather
than one SHA-256 over the blob so that a stream can stop after any chunk and go on
later from a :class:`Checkpoint` of 40 bytes (a killed client resumes an upload or a
download without reading back what it already handled). :class:`Decryptor` checks the
digest in :meth:`Decryptor.finish`: a caller that writes plaintext to a temporary file
and shows it only after ``finish`` never shows a byte of another blob than the one the
sender meant.

Why GCM, and why a resume cannot reuse a nonce towards the server: each key seals one
file. A resuming uploader (``veil.client.attachments``) checks the file's size and
modification time, then seals the file again from its first byte and compares the
chain at its saved checkpoint with the saved one (a changed file: the upload is
abandoned); a server that lost bytes it had acknowledged gets a new upload under a new
key. The bytes of a chunk re-sealed after a resume that the server already holds are
not sent again, so an honest server never sees two tags under one nonce.
:func:`prefix_unchanged` makes the same chain check on its own, for a caller that wants
it before sending anything. (GCM-SIV would not need that care, but runs at a twentieth
of GCM's speed in this library.)

What the server sees of a file: its ciphertext length, a function of the padded length
alone (:func:`ciphertext_length`), which reveals O(log log size) bits of the size.

Sans-I/O: bytes in, bytes out; no files, clocks or sockets.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from veil.core.errors import DecryptionFailed, MalformedMessage
from veil.core.padding import padme_length
from veil.core.primitives import AEAD_TAG_LEN, constant_time_equal, hkdf

KEY_LEN = 32
DIGEST_LEN = 32
CHUNK = 64 * 1024                    # plaintext bytes per chunk (the last may be shorter)
MIN_PADDED = 4096                    # a one-line note and a 3 KB sticker look the same
MAX_SIZE = 1 << 40                   # 1 TiB: far above any server's limit
_INFO = b"veil attachment v1"
_PREFIX_LEN = 7


def new_key() -> bytes:
    return os.urandom(KEY_LEN)


def padded_length(size: int) -> int:
    """The plaintext length after padding (what chunking works on)."""
    _check_size(size)
    return max(MIN_PADDED, padme_length(size))


def chunk_count(size: int) -> int:
    return -(-padded_length(size) // CHUNK)


def ciphertext_length(size: int) -> int:
    """How many bytes the blob of a ``size``-byte file has: all the server learns."""
    return padded_length(size) + chunk_count(size) * AEAD_TAG_LEN


def _check_size(size: int) -> None:
    if type(size) is not int or not 0 <= size <= MAX_SIZE:
        raise MalformedMessage(f"an attachment size is between 0 and {MAX_SIZE} bytes")


def _link(chain: bytes, chunk: bytes | bytearray | memoryview) -> bytes:
    step = hashlib.sha256(chain)
    step.update(chunk)
    return step.digest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a stream stopped: ``index`` chunks done and the digest chain over their
    sealed bytes. Offsets follow from the index: :meth:`blob_offset` in the blob,
    :meth:`file_offset` in the file."""

    index: int = 0
    chain: bytes = bytes(DIGEST_LEN)

    def blob_offset(self) -> int:
        return self.index * (CHUNK + AEAD_TAG_LEN)

    def file_offset(self, size: int) -> int:
        return min(size, self.index * CHUNK)

    def to_bytes(self) -> bytes:
        return self.index.to_bytes(8, "big") + self.chain

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        if len(data) != 8 + DIGEST_LEN:
            raise MalformedMessage("an attachment checkpoint is 40 bytes")
        return cls(int.from_bytes(data[:8], "big"), data[8:])


def prefix_unchanged(key: bytes, size: int, saved: Checkpoint,
                     blocks: Iterable[bytes]) -> bool:
    """Whether the file read as ``blocks`` (any sizes; nothing beyond the checkpoint's
    chunks is read) still begins as it did when ``saved`` was taken: its first chunks
    sealed again, here and nowhere else, give the saved chain."""
    check = Encryptor(key, size)
    need = saved.file_offset(size)
    seen = 0
    for block in blocks:
        block = block[:need - seen]
        seen += len(block)
        check.update(block)
        if seen == need:
            break
    return seen == need and check.index == saved.index and \
        constant_time_equal(check.checkpoint().chain, saved.chain)


class _Stream:
    """What encryptor and decryptor share: the derived key, nonces, the AD, the
    position and the chains."""

    def __init__(self, key: bytes, size: int, start: Checkpoint) -> None:
        if len(key) != KEY_LEN:
            raise MalformedMessage("an attachment key is 32 bytes")
        _check_size(size)
        derived = hkdf(key, None, _INFO, KEY_LEN + _PREFIX_LEN)
        self._aead = AESGCM(derived[:KEY_LEN])
        self._prefix = derived[KEY_LEN:]
        self._ad = _INFO + size.to_bytes(8, "big")
        self.size = size
        self.padded = padded_length(size)
        self.chunks = chunk_count(size)
        if not 0 <= start.index <= self.chunks:
            raise MalformedMessage("the checkpoint is beyond the attachment's end")
        self.index = start.index                 # the next chunk to seal or open
        self._chain = start.chain

    def checkpoint(self) -> Checkpoint:
        """Where this stream is, after its last whole chunk."""
        return Checkpoint(self.index, self._chain)

    def _nonce(self) -> bytes:
        last = self.index == self.chunks - 1
        return self._prefix + self.index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")

    def _chunk_plain_len(self) -> int:
        return min(CHUNK, self.padded - self.index * CHUNK)

    def _advance(self, sealed: bytes | memoryview) -> None:
        self._chain = _link(self._chain, sealed)
        self.index += 1


class Encryptor(_Stream):
    """Feed the file's bytes (exactly ``size`` of them, from ``start``'s file offset
    on) to :meth:`update`, then call :meth:`finish`; the concatenated outputs are the
    blob from ``start``'s blob offset on, and :attr:`digest` is the pointer's digest."""

    def __init__(self, key: bytes, size: int, start: Checkpoint = Checkpoint()) -> None:
        super().__init__(key, size, start)
        self._buffer = bytearray()
        self._fed = start.file_offset(size)
        self.digest = b""

    def update(self, data: bytes) -> bytes:
        self._fed += len(data)
        if self._fed > self.size:
            raise MalformedMessage("the file is longer than the size it was opened with")
        view, pos, out = memoryview(data), 0, []
        # Keep the final chunk back until finish(): only then is it known to be last.
        if self._buffer:
            pos = min(len(data), CHUNK - len(self._buffer))
            self._buffer += view[:pos]
            if len(self._buffer) < CHUNK or self.index == self.chunks - 1:
                self._buffer += view[pos:]
                return b""
            out.append(self._seal(self._buffer))
            self._buffer = bytearray()
        while len(data) - pos >= CHUNK and self.index < self.chunks - 1:
            out.append(self._seal(view[pos:pos + CHUNK]))
            pos += CHUNK
        self._buffer += view[pos:]
        return b"".join(out)

    def finish(self) -> bytes:
        if self._fed != self.size:
            raise MalformedMessage("the file is shorter than the size it was opened with")
        self._buffer += bytes(self.padded - self.index * CHUNK - len(self._buffer))
        out = bytearray()
        while self.index < self.chunks:
            take = self._chunk_plain_len()
            out += self._seal(bytes(self._buffer[:take]))
            del self._buffer[:take]
        self.digest = self._chain
        return bytes(out)

    def _seal(self, plain: bytes | bytearray | memoryview) -> bytes:
        sealed = self._aead.encrypt(self._nonce(), plain, self._ad)
        self._advance(sealed)
        return sealed


class Decryptor(_Stream):
    """Feed the blob's bytes (from ``start``'s blob offset on, any split) to
    :meth:`update`; it returns plaintext as chunks open, padding removed.
    :meth:`finish` raises unless the whole blob arrived and its digest is ``digest``:
    until then, treat what came out as unverified."""

    def __init__(self, key: bytes, size: int, digest: bytes,
                 start: Checkpoint = Checkpoint()) -> None:
        super().__init__(key, size, start)
        if len(digest) != DIGEST_LEN:
            raise MalformedMessage("an attachment digest is 32 bytes")
        self._expected = digest
        self._buffer = bytearray()
        self._emitted = start.file_offset(size)

    def update(self, data: bytes) -> bytes:
        view, pos, out = memoryview(data), 0, []
        if self._buffer and self.index < self.chunks:
            need = self._chunk_plain_len() + AEAD_TAG_LEN
            pos = min(len(data), need - len(self._buffer))
            self._buffer += view[:pos]
            if len(self._buffer) < need:
                return b""
            out.append(self._open(bytes(self._buffer)))
            self._buffer = bytearray()
        while self.index < self.chunks:
            need = self._chunk_plain_len() + AEAD_TAG_LEN
            if len(data) - pos < need:
                break
            out.append(self._open(view[pos:pos + need]))
            pos += need
        self._buffer += view[pos:]
        if self._buffer and self.index == self.chunks:
            raise DecryptionFailed("the attachment is longer than its size says")
        return b"".join(out)

    def finish(self) -> None:
        if self.index != self.chunks or self._buffer:
            raise DecryptionFailed("the attachment is cut short")
        if not constant_time_equal(self._chain, self._expected):
            raise DecryptionFailed("the attachment's digest does not match its pointer")

    def _open(self, sealed: bytes | memoryview) -> bytes:
        try:
            plain = self._aead.decrypt(self._nonce(), sealed, self._ad)
        except InvalidTag:
            raise DecryptionFailed(f"attachment chunk {self.index} failed to "
                                   "authenticate") from None
        self._advance(sealed)
        keep = max(0, min(len(plain), self.size - self._emitted))
        if keep < len(plain) and plain[keep:].count(0) != len(plain) - keep:
            raise DecryptionFailed("the attachment's padding is not zero")
        self._emitted += keep
        return plain[:keep]


def encrypt(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    """The whole blob and its digest, for small files (thumbnails, tests)."""
    enc = Encryptor(key, len(data))
    blob = enc.update(data) + enc.finish()
    return blob, enc.digest


def decrypt(key: bytes, size: int, digest: bytes, blob: bytes) -> bytes:
    dec = Decryptor(key, size, digest)
    plain = dec.update(blob)
    dec.finish()
    return plain


__all__ = [
    "CHUNK",
    "DIGEST_LEN",
    "KEY_LEN",
    "MIN_PADDED",
    "Checkpoint",
    "Decryptor",
    "Encryptor",
    "chunk_count",
    "ciphertext_length",
    "decrypt",
    "encrypt",
    "new_key",
    "padded_length",
    "prefix_unchanged",
]
