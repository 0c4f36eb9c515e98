"""Range headers (RFC 9110 §14, veil.server.http.routes.blobs) and the blob file header
format (veil.server.blobs.record)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veil.server.blobs.record import (
    DATA_START,
    SLOT_BYTES,
    Header,
    decode_slot,
    is_blob_id,
    new_blob_id,
    read_header,
    token_hash,
    write_header,
)
from veil.server.errors import RangeNotSatisfiable
from veil.server.http.routes.blobs import ByteRange, parse_range, unsatisfiable


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=0-9", ByteRange(0, 10)),
    ("bytes=10-", ByteRange(10, 100)),
    ("bytes=-5", ByteRange(95, 100)),
    ("bytes=-500", ByteRange(0, 100)),
    ("bytes=90-1000", ByteRange(90, 100)),
    ("bytes=99-99", ByteRange(99, 100)),
    (" bytes = 1 - 2 ", ByteRange(1, 3)),
    ("BYTES=0-0", ByteRange(0, 1)),
])
def test_one_range_is_served(header: str, expected: ByteRange) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", [None, "items=0-5", "bytes=0-1,3-4", "garbage"])
def test_what_is_served_whole(header: str | None) -> None:
    assert parse_range(header, 100) is None


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=5-2", "bytes=x-1", "bytes=-0",
                                    "bytes=-", "bytes=", "bytes=1-2,x", "bytes=" + "9" * 30])
def test_bad_ranges_are_416(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


def test_an_empty_blob_has_no_range() -> None:
    for header in ("bytes=0-", "bytes=-1"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, 0)
    assert unsatisfiable(0) == "bytes */0"


def test_if_range_keeps_the_range_only_for_this_blob() -> None:
    assert parse_range("bytes=0-1", 10, '"abc"', '"abc"') == ByteRange(0, 2)
    assert parse_range("bytes=0-1", 10, '"xyz"', '"abc"') is None
    assert ByteRange(0, 2).content_range(10) == "bytes 0-1/10"


@given(st.integers(0, 10_000), st.text(max_size=30))
def test_any_header_gives_a_range_inside_the_blob_or_refuses(size: int, spec: str) -> None:
    try:
        got = parse_range("bytes=" + spec, size)
    except RangeNotSatisfiable:
        return
    assert got is None or 0 <= got.start < got.end <= size


def test_ids_and_tokens() -> None:
    ids = {new_blob_id() for _ in range(100)}
    assert len(ids) == 100 and all(is_blob_id(i) and len(i) == 32 for i in ids)
    assert not is_blob_id("A" * 32) and not is_blob_id("0" * 31)
    assert token_hash(b"t" * 32) != token_hash(b"u" * 32) and len(token_hash(b"")) == 32


def test_header_slots_round_trip_and_refuse_damage(tmp_path: Path) -> None:
    header = Header(b"a" * 16, 1000, 10, 1, 2, b"h" * 32)
    raw = header.encode()
    assert len(raw) == SLOT_BYTES and decode_slot(raw) == header
    for i in range(0, SLOT_BYTES, 7):  # any flipped byte is noticed
        damaged = bytearray(raw)
        damaged[i] ^= 1
        assert decode_slot(bytes(damaged)) is None
    path = tmp_path / "blob"
    path.write_bytes(bytes(DATA_START))
    fd = os.open(path, os.O_RDWR)
    try:
        assert read_header(fd) is None
        write_header(fd, header)
        newer = header.next(committed=500)
        write_header(fd, newer)
        assert newer.slot_offset != header.slot_offset
        assert read_header(fd) == newer
    finally:
        os.close(fd)
