"""Strict decoding of the TLS presentation language (RFC 9420 §2.1)."""

from __future__ import annotations

import pytest

from veil.core.errors import MalformedMessage
from veil.core.mls.codec import Reader, Writer, decode_all, encode_varint
from veil.core.mls.errors import MlsDecodeError
from veil.core.mls.leaf import Credential
from veil.core.mls.messages import MLSMessage


@pytest.mark.parametrize("value", [0, 1, 63, 64, 16383, 16384, (1 << 30) - 1])
def test_varint_round_trip(value: int) -> None:
    assert Reader(encode_varint(value)).varint() == value


@pytest.mark.parametrize("header", ["4000", "403f", "80000000", "80003fff"])
def test_non_minimal_length_is_rejected(header: str) -> None:
    with pytest.raises(MlsDecodeError, match="non-minimal"):
        Reader(bytes.fromhex(header)).varint()


def test_reserved_length_prefix_is_rejected() -> None:
    with pytest.raises(MlsDecodeError, match="prefix"):
        Reader(bytes.fromhex("c0000000")).varint()


def test_too_long_for_varint() -> None:
    with pytest.raises(MlsDecodeError):
        encode_varint(1 << 30)


def test_trailing_bytes_are_rejected() -> None:
    w = Writer()
    Credential.basic(b"alice").write(w)
    assert decode_all(w.bytes(), Credential.read).identity == b"alice"
    with pytest.raises(MlsDecodeError, match="trailing"):
        decode_all(w.bytes() + b"\x00", Credential.read)


def test_vector_longer_than_its_container_is_rejected() -> None:
    # A credential whose identity claims 10 bytes but only 3 follow.
    with pytest.raises(MlsDecodeError, match="truncated"):
        decode_all(bytes.fromhex("00010a616263"), Credential.read)


def test_oversize_opaque_is_rejected() -> None:
    w = Writer()
    w.opaque(b"x" * 100)
    with pytest.raises(MlsDecodeError, match="longer"):
        Reader(w.bytes()).opaque(max_len=99)


def test_vector_items_may_not_overrun_the_vector() -> None:
    # A u16 vector of declared length 3 cannot hold whole u16 items.
    with pytest.raises(MlsDecodeError):
        decode_all(bytes.fromhex("03000100"), lambda r: r.vector(lambda rr: rr.u16()))


def test_bad_optional_flag() -> None:
    with pytest.raises(MlsDecodeError, match="optional"):
        decode_all(b"\x02", lambda r: r.optional(lambda rr: rr.u8()))


def test_decode_error_is_a_malformed_message() -> None:
    with pytest.raises(MalformedMessage):
        decode_all(b"\x00\x02\x00\x01", MLSMessage.read)


def test_unknown_wire_format_and_version() -> None:
    with pytest.raises(MlsDecodeError, match="version"):
        decode_all(bytes.fromhex("00020001"), MLSMessage.read)
    with pytest.raises(MlsDecodeError, match="wire format"):
        decode_all(bytes.fromhex("00010009"), MLSMessage.read)
