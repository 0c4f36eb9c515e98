"""Fragmenting messages into Sphinx payloads and bounded, exactly-once reassembly."""

from __future__ import annotations

import os
import random

import pytest

from veil.core.sphinx import MAX_MESSAGE_SIZE
from veil.mixnet.errors import FragmentError, QueueFull
from veil.mixnet.fragment import (
    FRAGMENT_DATA_SIZE,
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
    few = Reassembler(max_messages=2)
    for _ in range(2):
        few.add(split(os.urandom(4000))[0], 0.0)
    with pytest.raises(QueueFull):
        few.add(split(os.urandom(4000))[0], 0.0)
    small = Reassembler(max_bytes=FRAGMENT_DATA_SIZE)
    first, second, _ = split(os.urandom(3 * FRAGMENT_DATA_SIZE))
    small.add(first, 0.0)
    with pytest.raises(QueueFull):
        small.add(second, 0.0)


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
