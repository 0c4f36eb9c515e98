from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veil.core import padding
from veil.core.errors import MalformedMessage


@given(st.binary(max_size=5000))
def test_round_trip_and_overhead(data: bytes) -> None:
    padded = padding.pad(data)
    assert padding.unpad(padded) == data
    assert len(padded) >= padding.MIN_PADDED
    if len(data) > 256:
        assert len(padded) <= (len(data) + 1) * 1.12


def test_buckets_hide_small_differences() -> None:
    assert {len(padding.pad(bytes(n))) for n in range(0, 31)} == {32}
    assert len(padding.pad(bytes(256))) == 272


@pytest.mark.parametrize("bad", [b"", bytes(32), b"abc"])
def test_malformed(bad: bytes) -> None:
    with pytest.raises(MalformedMessage):
        padding.unpad(bad)
