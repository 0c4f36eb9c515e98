"""The registration puzzle of veil.core.proof_of_work, against hashlib computed here."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.core.proof_of_work import MAX_BITS, leading_zero_bits, meets, solve, work


def test_work_is_sha256_of_challenge_colon_nonce() -> None:
    assert work("abc", "17") == hashlib.sha256(b"abc:17").digest()


def test_leading_zero_bits_counts_from_the_most_significant_bit() -> None:
    assert leading_zero_bits(b"\x00\x00\xff") == 16
    assert leading_zero_bits(b"\x00\x01") == 15
    assert leading_zero_bits(b"\x80") == 0
    assert leading_zero_bits(b"\x00\x00") == 16


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=1, max_size=40), st.integers(1, 10))
def test_a_solution_meets_its_difficulty_and_is_the_first(challenge: str, bits: int) -> None:
    nonce = solve(challenge, bits)
    assert meets(challenge, nonce, bits)
    digest = hashlib.sha256(f"{challenge}:{nonce}".encode()).digest()
    assert int.from_bytes(digest, "big") >> (256 - bits) == 0
    assert not any(meets(challenge, str(n), bits) for n in range(int(nonce)))


@pytest.mark.parametrize("bits", [0, -1, MAX_BITS + 1])
def test_a_difficulty_out_of_range_is_refused(bits: int) -> None:
    with pytest.raises(ValueError):
        solve("c", bits)
