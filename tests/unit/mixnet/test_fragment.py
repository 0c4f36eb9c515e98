"""Fragmenting messages into Sphinx payloads and bounded, exactly-once reassembly."""

from __future__ import annotations

import os
import random

import pytest

from veil.core.sphinx import MAX_MESSAGE_SIZE
from veil.mixnet.errors import FragmentError, QueueFull
from veil.mixnet.fragment import (
    FRAGMENT_DATA_SIZE,
    FRAGMENT_OVERHEAD,
    MAX_MESSAGE_BYTES,
    Fragment,
    Kind,
    Reassembler,
    cover,
    split,
)


@pytest.mark.parametrize("size", [0, 1, FRAGMENT_DATA_SIZE, FRAGMENT_DATA_SIZE + 1, 10_000])
def test_split_and_reassemble_in_any_order(size: int) -> None:
    message = os.urandom(size)
    fragments = split(message)
    assert all(len(f.encode()) <= MAX_MESSAGE_SIZE for f in fragments)
    random.Random(size).shuffle(fragments)
    reassembler = Reassembler()
    results = [reassembler.add(Fragment.decode(f.encode()), now=0.0) for f in fragments]
    assert results[:-1] == [None] * (len(fragments) - 1)
    assert results[-1] == message
    assert reassembler.buffered_bytes == 0 and len(reassembler) == 0


def test_a_message_completes_once_even_if_fragments_repeat() -> None:
    fragments = split(os.urandom(5000))
    reassembler = Reassembler()
    outputs = [reassembler.add(f, 0.0) for f in fragments + fragments]
    assert sum(o is not None for o in outputs) == 1
    assert reassembler.duplicates == len(fragments)


def test_oversized_message_is_refused() -> None:
    with pytest.raises(FragmentError):
        split(bytes(MAX_MESSAGE_BYTES + 1))


def test_bounds_on_partial_messages_and_bytes() -> None:
    # Full slots evict the oldest partial message rather than refuse new ones.
    few = Reassembler(max_messages=2)
    oldest, *rest = [split(os.urandom(4000)) for _ in range(3)]
    for fragments in (oldest, *rest):
        few.add(fragments[0], 0.0)
    assert len(few) == 2 and few.evicted == 1
    assert few.add(oldest[1], 0.0) is None  # its first part was evicted
    # One message bigger than the byte cap is still refused.
    small = Reassembler(max_bytes=FRAGMENT_DATA_SIZE + FRAGMENT_OVERHEAD)
    first, second, _ = split(os.urandom(3 * FRAGMENT_DATA_SIZE))
    small.add(first, 0.0)
    with pytest.raises(QueueFull):
        small.add(second, 0.0)
    # The byte cap evicts older partial messages to make room for a new one.
    roomy = Reassembler(max_bytes=2 * (FRAGMENT_DATA_SIZE + FRAGMENT_OVERHEAD))
    a, b = split(os.urandom(3 * FRAGMENT_DATA_SIZE))[0], split(os.urandom(2 * FRAGMENT_DATA_SIZE))
    roomy.add(a, 0.0)
    roomy.add(b[0], 0.0)
    assert roomy.add(b[1], 0.0) is not None and roomy.evicted == 1


def test_one_fragment_messages_need_no_slot() -> None:
    full = Reassembler(max_messages=1, max_bytes=1)
    with pytest.raises(QueueFull):
        full.add(split(os.urandom(2 * FRAGMENT_DATA_SIZE))[0], 0.0)
    assert full.add(split(b"short")[0], 0.0) == b"short"
    assert full.add(split(b"")[0], 0.0) == b""


def test_empty_fragments_count_toward_the_byte_cap() -> None:
    reassembler = Reassembler(max_bytes=10 * FRAGMENT_OVERHEAD)
    message_id = os.urandom(16)
    for index in range(10):
        reassembler.add(Fragment(Kind.REAL, message_id, index, 256, b""), 0.0)
    assert reassembler.buffered_bytes == 10 * FRAGMENT_OVERHEAD
    with pytest.raises(QueueFull):
        reassembler.add(Fragment(Kind.REAL, message_id, 10, 256, b""), 0.0)


def test_stale_partial_messages_expire() -> None:
    reassembler = Reassembler(timeout=10.0)
    first, second = split(os.urandom(2 * FRAGMENT_DATA_SIZE))
    reassembler.add(first, now=0.0)
    assert reassembler.add(split(b"x")[0], now=11.0) == b"x"
    assert reassembler.expired == 1 and len(reassembler) == 0
    assert reassembler.add(second, now=11.0) is None  # its first half is gone


def test_malformed_fragments() -> None:
    good = split(b"hello")[0].encode()
    for bad in (b"", good[:10], b"\x09" + good[1:]):
        with pytest.raises(FragmentError):
            Fragment.decode(bad)
    with pytest.raises(FragmentError):
        Fragment.decode(Fragment(Kind.REAL, bytes(16), 3, 2, b"").encode())
    reassembler = Reassembler()
    a, _ = split(os.urandom(2 * FRAGMENT_DATA_SIZE))
    reassembler.add(a, 0.0)
    with pytest.raises(FragmentError):
        reassembler.add(Fragment(Kind.REAL, a.message_id, 1, 3, b"x"), 0.0)
    with pytest.raises(FragmentError):
        reassembler.add(cover(Kind.DROP), 0.0)
