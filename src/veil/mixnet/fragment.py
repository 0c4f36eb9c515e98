"""Splitting messages into Sphinx-sized fragments and putting them back together.

Every packet a client sends is the same size, so a message longer than one Sphinx
payload travels as several fragments, reassembled at the provider (the exit). The
fragment header sits inside the end-to-end encrypted Sphinx payload, so mixes never see
it; only the exit learns the kind of packet:

    fragment = kind (1) || message id (16) || index (2) || count (2) || data

Kinds: REAL (a piece of a message) and DROP (cover traffic the exit discards; Loopix
section 3.3). Loop cover traffic does not use fragments: it is a SURB the client sends
to itself (see ``client``).
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum

from veil.core.sphinx import MAX_MESSAGE_SIZE
from veil.mixnet.errors import FragmentError, QueueFull

_HEADER = struct.Struct(">B16sHH")
HEADER_SIZE = _HEADER.size
FRAGMENT_DATA_SIZE = MAX_MESSAGE_SIZE - HEADER_SIZE
MAX_FRAGMENTS = 256
MAX_MESSAGE_BYTES = MAX_FRAGMENTS * FRAGMENT_DATA_SIZE
# What a buffered fragment costs besides its data (bytes object header, dict entry),
# charged to the byte cap so that empty fragments cannot pile up uncounted.
FRAGMENT_OVERHEAD = 128


class Kind(IntEnum):
    REAL = 1
    DROP = 2


@dataclass(frozen=True, slots=True)
class Fragment:
    kind: Kind
    message_id: bytes
    index: int
    count: int
    data: bytes

    def encode(self) -> bytes:
        return _HEADER.pack(int(self.kind), self.message_id, self.index, self.count) + self.data

    @classmethod
    def decode(cls, data: bytes) -> Fragment:
        try:
            kind, message_id, index, count = _HEADER.unpack_from(data)
            kind = Kind(kind)
        except (struct.error, ValueError) as exc:
            raise FragmentError("malformed fragment") from exc
        if not 0 <= index < count <= MAX_FRAGMENTS:
            raise FragmentError("fragment index out of range")
        return cls(kind, message_id, index, count, data[HEADER_SIZE:])


def split(message: bytes) -> list[Fragment]:
    """The REAL fragments of ``message`` under a fresh random message id."""
    if len(message) > MAX_MESSAGE_BYTES:
        raise FragmentError(f"a message holds at most {MAX_MESSAGE_BYTES} bytes")
    message_id = os.urandom(16)
    pieces = [message[i:i + FRAGMENT_DATA_SIZE]
              for i in range(0, len(message), FRAGMENT_DATA_SIZE)] or [b""]
    return [Fragment(Kind.REAL, message_id, i, len(pieces), p) for i, p in enumerate(pieces)]


def cover(kind: Kind) -> Fragment:
    """A cover fragment under a random id; Sphinx pads it to the size of every payload."""
    return Fragment(kind, os.urandom(16), 0, 1, b"")


class _Partial:
    __slots__ = ("count", "first_seen", "parts", "size")

    def __init__(self, count: int, now: float) -> None:
        self.count = count
        self.first_seen = now
        self.parts: dict[int, bytes] = {}
        self.size = 0


class Reassembler:
    """Bounded reassembly of REAL fragments; each message id completes at most once.

    Bounds: at most ``max_messages`` partial messages and ``max_bytes`` buffered (each
    fragment's data plus ``FRAGMENT_OVERHEAD``); a partial message older than ``timeout``
    seconds is dropped. Anyone can send fragments to the provider, so when a bound is
    reached the oldest partial messages are evicted (counted) rather than new ones
    refused: refusing would let a flood of never-completed messages block every honest
    one. A one-fragment message never takes a slot. Time is passed in.
    """

    def __init__(self, *, max_messages: int = 4096, max_bytes: int = 64 << 20,
                 timeout: float = 120.0, remember: int = 65536) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("reassembly bounds must be positive")
        self._partial: OrderedDict[bytes, _Partial] = OrderedDict()
        self._done: OrderedDict[bytes, None] = OrderedDict()
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._remember = remember
        self._bytes = 0
        self.expired = 0
        self.evicted = 0
        self.duplicates = 0

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._partial)

    def _expire(self, now: float) -> None:
        while self._partial:
            message_id, partial = next(iter(self._partial.items()))
            if now - partial.first_seen < self._timeout:
                break
            self._drop(message_id)
            self.expired += 1

    def _drop(self, message_id: bytes) -> None:
        partial = self._partial.pop(message_id)
        self._bytes -= partial.size

    def add(self, fragment: Fragment, now: float) -> bytes | None:
        """The whole message once its last fragment arrives, else None."""
        if fragment.kind is not Kind.REAL:
            raise FragmentError("only REAL fragments are reassembled")
        self._expire(now)
        if fragment.message_id in self._done:
            self.duplicates += 1
            return None
        if fragment.count == 1:
            # Complete on arrival: nothing to buffer, so no slot for a flood to take.
            self._complete(fragment.message_id)
            return fragment.data
        partial = self._partial.get(fragment.message_id)
        if partial is None:
            while len(self._partial) >= self._max_messages:
                self._evict_oldest()
            partial = self._partial[fragment.message_id] = _Partial(fragment.count, now)
        if fragment.count != partial.count:
            raise FragmentError("fragment count disagrees with its message")
        if fragment.index in partial.parts:
            self.duplicates += 1
            return None
        cost = len(fragment.data) + FRAGMENT_OVERHEAD
        while self._bytes + cost > self._max_bytes and len(self._partial) > 1:
            self._evict_oldest(keep=fragment.message_id)
        if self._bytes + cost > self._max_bytes:
            raise QueueFull("reassembly buffer full")
        partial.parts[fragment.index] = fragment.data
        partial.size += cost
        self._bytes += cost
        if len(partial.parts) < partial.count:
            return None
        self._drop(fragment.message_id)
        self._complete(fragment.message_id)
        return b"".join(partial.parts[i] for i in range(partial.count))

    def _evict_oldest(self, keep: bytes | None = None) -> None:
        """Drop the oldest partial message other than ``keep``."""
        victim = next(m for m in self._partial if m != keep)
        self._drop(victim)
        self.evicted += 1

    def _complete(self, message_id: bytes) -> None:
        self._done[message_id] = None
        if len(self._done) > self._remember:
            self._done.popitem(last=False)

__all__ = [
    "FRAGMENT_DATA_SIZE",
    "FRAGMENT_OVERHEAD",
    "MAX_MESSAGE_BYTES",
    "Fragment",
    "Kind",
    "Reassembler",
    "cover",
    "split",
]
