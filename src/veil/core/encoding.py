"""A small strict binary codec for Veil's own wire formats and stored state.

Big-endian fixed-width integers and length-prefixed byte strings. Every read is
bounds-checked; a short read, an oversized length or trailing bytes raise
:class:`~veil.core.errors.MalformedMessage` (never ``IndexError``/``struct.error``), so
decoders built on it only ever raise the documented error type.
"""

from __future__ import annotations

import struct

from veil.core.errors import MalformedMessage

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Writer:
    """Accumulates fields; ``bytes(writer)`` or :meth:`finish` gives the encoding."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def _pack(self, packer: struct.Struct, value: int) -> Writer:
        try:
            self._parts.append(packer.pack(value))
        except struct.error:
            # A counter or id that outgrew its field is a typed error, not a traceback.
            raise MalformedMessage(f"value {value} does not fit its "
                                   f"{packer.size * 8}-bit field") from None
        return self

    def u8(self, value: int) -> Writer:
        return self._pack(_U8, value)

    def u16(self, value: int) -> Writer:
        return self._pack(_U16, value)

    def u32(self, value: int) -> Writer:
        return self._pack(_U32, value)

    def u64(self, value: int) -> Writer:
        return self._pack(_U64, value)

    def raw(self, data: bytes) -> Writer:
        """Fixed-size field: the reader must know its length."""
        self._parts.append(data)
        return self

    def var(self, data: bytes) -> Writer:
        """Length-prefixed (u32) byte string."""
        self._parts.append(_U32.pack(len(data)))
        self._parts.append(data)
        return self

    def optional(self, data: bytes | None) -> Writer:
        if data is None:
            return self.u8(0)
        return self.u8(1).var(data)

    def finish(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads fields written by :class:`Writer`; ``what`` names the structure in errors."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedMessage(f"{what}: expected bytes, got {type(data).__name__}")
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise MalformedMessage(f"{self._what}: truncated")
        chunk = self._data[self._pos:end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self._take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self._take(8))[0]
        return value

    def raw(self, n: int) -> bytes:
        return self._take(n)

    def var(self, limit: int) -> bytes:
        """A length-prefixed byte string of at most ``limit`` bytes."""
        n = self.u32()
        if n > limit:
            raise MalformedMessage(f"{self._what}: field of {n} bytes exceeds {limit}")
        return self._take(n)

    def optional(self, limit: int) -> bytes | None:
        flag = self.u8()
        if flag == 0:
            return None
        if flag != 1:
            raise MalformedMessage(f"{self._what}: bad optional flag")
        return self.var(limit)

    def optional_exact(self, size: int) -> bytes | None:
        """An optional field that, when present, is exactly ``size`` bytes (e.g. a key)."""
        value = self.optional(size)
        if value is not None and len(value) != size:
            raise MalformedMessage(f"{self._what}: field must be {size} bytes")
        return value

    def flag(self) -> bool:
        value = self.u8()
        if value > 1:
            raise MalformedMessage(f"{self._what}: bad boolean")
        return value == 1

    def count(self, limit: int) -> int:
        """A u32 element count bounded by ``limit``."""
        n = self.u32()
        if n > limit:
            raise MalformedMessage(f"{self._what}: {n} elements exceed {limit}")
        return n

    @property
    def offset(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def rest(self) -> bytes:
        return self._take(self.remaining)

    def done(self) -> None:
        if self._pos != len(self._data):
            raise MalformedMessage(f"{self._what}: {self.remaining} trailing bytes")

__all__ = [
    "Reader",
    "Writer",
]
