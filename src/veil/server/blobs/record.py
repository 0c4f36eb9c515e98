"""The on-disk form of one blob file of :mod:`veil.server.blobs.files`: two header slots,
then the bytes.

A blob file carries its own metadata, so that the one atomic ``rename`` that makes a
finished upload visible moves data and metadata together (there is no sidecar to get
out of step, and no database row: see docs/attachments.md, "Storage").

Each header slot is 128 bytes::

    magic "VEILBLOB" | u8 version=1 | u8 flags (1: complete) | u16 0 | u32 generation |
    account (16) | u64 length | u64 committed | u64 created_ms | u64 expires_ms |
    SHA-256(download token) (32) | 16 zero bytes | SHA-256(the 112 bytes before)[:16]

A header update writes the slot ``generation % 2`` with the next generation, after the
data it describes was fsynced; readers take the valid slot with the higher generation.
A write torn by a crash therefore leaves the previous slot in force. ``committed`` is
the offset of bytes known to be durable: after a crash the bytes beyond it are cut
off, so a resumed upload never builds on bytes a power cut may have left undefined.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from dataclasses import dataclass, replace

MAGIC = b"VEILBLOB"
VERSION = 1
SLOT_BYTES = 128
DATA_START = 2 * SLOT_BYTES
FLAG_COMPLETE = 1
ID_BYTES = 16  # 128 random bits, as 32 lower-case hex characters
TOKEN_BYTES = 32
ID_PATTERN = r"^[0-9a-f]{32}$"
_ID = re.compile(ID_PATTERN[1:-1])
_FIXED = struct.Struct(">8sBBHI16sQQQQ32s16x")  # 112 bytes
_CHECK_BYTES = 16
assert _FIXED.size + _CHECK_BYTES == SLOT_BYTES


def new_blob_id() -> str:
    return os.urandom(ID_BYTES).hex()


def is_blob_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None


def token_hash(token: bytes) -> bytes:
    return hashlib.sha256(b"veil blob token v1\x00" + token).digest()


@dataclass(frozen=True, slots=True)
class Header:
    account: bytes
    length: int
    committed: int
    created_ms: int
    expires_ms: int
    token_hash: bytes
    complete: bool = False
    generation: int = 0

    def encode(self) -> bytes:
        fixed = _FIXED.pack(MAGIC, VERSION, FLAG_COMPLETE if self.complete else 0, 0,
                            self.generation, self.account, self.length, self.committed,
                            self.created_ms, self.expires_ms, self.token_hash)
        return fixed + hashlib.sha256(fixed).digest()[:_CHECK_BYTES]

    def next(self, **changes: int | bool) -> Header:
        """The next generation with ``changes``: written to the other slot."""
        return replace(self, generation=self.generation + 1, **changes)  # type: ignore[arg-type]

    @property
    def slot_offset(self) -> int:
        return (self.generation % 2) * SLOT_BYTES


def decode_slot(raw: bytes) -> Header | None:
    """One slot, or None when it is empty, torn or not ours."""
    if len(raw) != SLOT_BYTES:
        return None
    fixed, check = raw[:_FIXED.size], raw[_FIXED.size:]
    if hashlib.sha256(fixed).digest()[:_CHECK_BYTES] != check:
        return None
    (magic, version, flags, _, generation, account, length, committed, created, expires,
     hashed) = _FIXED.unpack(fixed)
    if magic != MAGIC or version != VERSION or committed > length:
        return None
    return Header(account, length, committed, created, expires, hashed,
                  bool(flags & FLAG_COMPLETE), generation)


def read_header(fd: int) -> Header | None:
    """The header in force of an open blob file (None: no valid slot)."""
    raw = os.pread(fd, DATA_START, 0)
    slots = [h for h in (decode_slot(raw[:SLOT_BYTES]), decode_slot(raw[SLOT_BYTES:]))
             if h is not None]
    return max(slots, key=lambda h: h.generation) if slots else None


def write_header(fd: int, header: Header) -> None:
    """Write ``header`` into its slot and fsync (the data it names must be synced)."""
    data = header.encode()
    if os.pwrite(fd, data, header.slot_offset) != len(data):
        raise OSError("short write of a blob header")
    os.fsync(fd)


__all__ = [
    "DATA_START",
    "ID_PATTERN",
    "TOKEN_BYTES",
    "Header",
    "decode_slot",
    "is_blob_id",
    "new_blob_id",
    "read_header",
    "token_hash",
    "write_header",
]
