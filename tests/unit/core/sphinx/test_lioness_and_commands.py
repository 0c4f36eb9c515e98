"""LIONESS (wide-block payload cipher) and the routing-command encoding."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.core.sphinx import ADDRESS_SIZE, CommandType, RoutingCommand, SphinxMalformed
from veil.core.sphinx.errors import SphinxPathError
from veil.core.sphinx.lioness import Lioness
from veil.core.sphinx.params import COMMAND_SIZE


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=128, max_size=128), st.binary(min_size=33, max_size=3000))
def test_lioness_round_trip(key: bytes, block: bytes) -> None:
    cipher = Lioness(key)
    encrypted = cipher.encrypt(block)
    assert len(encrypted) == len(block)
    assert encrypted != block
    assert cipher.decrypt(encrypted) == block


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 1679), st.integers(0, 7))
def test_one_flipped_bit_garbles_the_whole_block(position: int, bit: int) -> None:
    cipher = Lioness(os.urandom(128))
    block = bytes(1680)
    tampered = bytearray(cipher.encrypt(block))
    tampered[position] ^= 1 << bit
    garbled = cipher.decrypt(bytes(tampered))
    # Both halves change: no bit position survives as a traceable tag.
    assert garbled[:32] != block[:32]
    assert sum(garbled[32:]) > 0
    assert garbled.count(0) < 100


def test_lioness_rejects_short_key_and_block() -> None:
    with pytest.raises(ValueError):
        Lioness(bytes(127))
    with pytest.raises(ValueError):
        Lioness(bytes(128)).encrypt(bytes(32))


def test_command_round_trip() -> None:
    for kind in CommandType:
        command = RoutingCommand(kind, 12345, os.urandom(ADDRESS_SIZE), os.urandom(16))
        encoded = command.encode()
        assert len(encoded) == COMMAND_SIZE
        assert RoutingCommand.decode(encoded) == command


def test_command_decoding_rejects_unknown_types_and_reserved_bytes() -> None:
    good = RoutingCommand(CommandType.RELAY, 1, bytes(16)).encode()
    with pytest.raises(SphinxMalformed):
        RoutingCommand.decode(b"\x09" + good[1:])
    with pytest.raises(SphinxMalformed):
        RoutingCommand.decode(good[:-1] + b"\x01")
    with pytest.raises(SphinxMalformed):
        RoutingCommand.decode(good[:-1])


def test_command_fields_are_checked() -> None:
    with pytest.raises(SphinxPathError):
        RoutingCommand(CommandType.RELAY, -1, bytes(16))
    with pytest.raises(SphinxPathError):
        RoutingCommand(CommandType.RELAY, 2**32, bytes(16))
    with pytest.raises(SphinxPathError):
        RoutingCommand(CommandType.RELAY, 0, bytes(15))
