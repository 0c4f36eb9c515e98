"""TLS presentation-language codec with MLS variable-length vectors (RFC 9420 §2.1).

Decoding is strict: a length header must use the shortest encoding, vectors may not
run past their container and a top-level decode must consume every byte. Every
failure is an :class:`MlsDecodeError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import TypeVar

from veil.core.mls.errors import MlsDecodeError

T = TypeVar("T")

MAX_VARINT = (1 << 30) - 1


def encode_varint(value: int) -> bytes:
    """The minimal 1-, 2- or 4-byte header for a vector length (RFC 9420 §2.1.2)."""
    if value < 0 or value > MAX_VARINT:
        raise MlsDecodeError("vector length out of range")
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    return (value | 0x80000000).to_bytes(4, "big")


class Writer:
    """Accumulates an encoding; every ``write_*`` appends."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def u8(self, v: int) -> None:
        self.buf.append(v)

    def u16(self, v: int) -> None:
        self.buf += v.to_bytes(2, "big")

    def u32(self, v: int) -> None:
        self.buf += v.to_bytes(4, "big")

    def u64(self, v: int) -> None:
        self.buf += v.to_bytes(8, "big")

    def raw(self, data: bytes) -> None:
        self.buf += data

    def opaque(self, data: bytes) -> None:
        self.buf += encode_varint(len(data))
        self.buf += data

    def vector(self, items: Sequence[T], write_item: Callable[[Writer, T], None]) -> None:
        inner = Writer()
        for item in items:
            write_item(inner, item)
        self.opaque(bytes(inner.buf))

    def optional(self, item: T | None, write_item: Callable[[Writer, T], None]) -> None:
        if item is None:
            self.buf.append(0)
        else:
            self.buf.append(1)
            write_item(self, item)

    def bytes(self) -> bytes:
        return bytes(self.buf)


class Reader:
    """Cursor over untrusted bytes; every ``read_*`` raises MlsDecodeError on shortfall."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def _take(self, n: int) -> bytes:
        start = self.pos
        stop = start + n
        if stop > self.end:
            raise MlsDecodeError("truncated structure")
        self.pos = stop
        return self.data[start:stop]

    def u8(self) -> int:
        if self.pos >= self.end:
            raise MlsDecodeError("truncated structure")
        v = self.data[self.pos]
        self.pos += 1
        return v

    def u16(self) -> int:
        return int.from_bytes(self._take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self._take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self._take(8), "big")

    def raw(self, n: int) -> bytes:
        return self._take(n)

    def varint(self) -> int:
        first = self.u8()
        prefix = first >> 6
        if prefix == 0:
            return first & 0x3F
        if prefix == 1:
            value = ((first & 0x3F) << 8) | self.u8()
            if value < 0x40:
                raise MlsDecodeError("non-minimal vector length")
            return value
        if prefix == 2:
            value = ((first & 0x3F) << 24) | int.from_bytes(self._take(3), "big")
            if value < 0x4000:
                raise MlsDecodeError("non-minimal vector length")
            return value
        raise MlsDecodeError("invalid vector length prefix")

    def opaque(self, max_len: int | None = None) -> bytes:
        # Fast path for the common one-byte length header (keys, signatures, hashes):
        # decoding a 10,000-member tree or commit reads ~10^5 of these.
        pos = self.pos
        if pos < self.end:
            first = self.data[pos]
            if first < 0x40 and (max_len is None or first <= max_len):
                stop = pos + 1 + first
                if stop > self.end:
                    raise MlsDecodeError("truncated structure")
                self.pos = stop
                return self.data[pos + 1:stop]
        n = self.varint()
        if max_len is not None and n > max_len:
            raise MlsDecodeError("vector longer than allowed")
        return self._take(n)

    def vector(self, read_item: Callable[[Reader], T]) -> list[T]:
        n = self.varint()
        stop = self.pos + n
        if stop > self.end:
            raise MlsDecodeError("truncated vector")
        sub = Reader(self.data, self.pos, stop)
        items: list[T] = []
        while sub.pos < stop:
            items.append(read_item(sub))
        self.pos = stop
        return items

    def u16_vector(self) -> tuple[int, ...]:
        """A vector of uint16 (capabilities): one unpack instead of a call per item."""
        n = self.varint()
        if n % 2:
            raise MlsDecodeError("truncated structure")
        data = self._take(n)
        return struct.unpack(f">{n // 2}H", data)

    def optional(self, read_item: Callable[[Reader], T]) -> T | None:
        flag = self.u8()
        if flag == 0:
            return None
        if flag == 1:
            return read_item(self)
        raise MlsDecodeError("invalid optional flag")

    def boolean(self) -> bool:
        flag = self.u8()
        if flag > 1:
            raise MlsDecodeError("invalid boolean")
        return flag == 1

    def done(self) -> None:
        if self.pos != self.end:
            raise MlsDecodeError("trailing bytes after structure")


def decode_all(data: bytes, read: Callable[[Reader], T]) -> T:
    """Decode exactly one structure from ``data``; any other failure becomes MlsDecodeError."""
    if not isinstance(data, bytes | bytearray):
        raise MlsDecodeError("input is not bytes")
    reader = Reader(bytes(data))
    try:
        value = read(reader)
    except MlsDecodeError:
        raise
    except (ValueError, IndexError, KeyError, OverflowError, TypeError) as exc:
        raise MlsDecodeError(f"malformed structure: {type(exc).__name__}") from None
    reader.done()
    return value


def encode(value: T, write: Callable[[Writer, T], None]) -> bytes:
    w = Writer()
    write(w, value)
    return w.bytes()


def write_opaque(w: Writer, data: bytes) -> None:
    w.opaque(data)


def read_opaque(r: Reader) -> bytes:
    return r.opaque()


def write_u16(w: Writer, v: int) -> None:
    w.u16(v)


def read_u16(r: Reader) -> int:
    return r.u16()


def write_u32(w: Writer, v: int) -> None:
    w.u32(v)


def read_u32(r: Reader) -> int:
    return r.u32()

__all__ = [
    "Reader",
    "Writer",
    "decode_all",
    "encode_varint",
    "read_u32",
    "write_u16",
    "write_u32",
]
