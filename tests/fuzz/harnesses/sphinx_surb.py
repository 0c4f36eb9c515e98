"""Fuzz SURB decoding and routing-command decoding: bytes that arrive inside messages."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from veil.core.sphinx import (
    PACKET_SIZE,
    SURB_SIZE,
    PathHop,
    RoutingCommand,
    SphinxError,
    Surb,
    create_surb,
)
from veil.core.sphinx.params import COMMAND_SIZE

ALLOWED: tuple[type[BaseException], ...] = (SphinxError,)

_KEY = X25519PrivateKey.from_private_bytes(bytes(range(32)))
_PATH = [PathHop(b"n" * 16, _KEY.public_key().public_bytes_raw())]

SEEDS: list[bytes] = [create_surb(_PATH, [0], b"m" * 16)[0].encode(), bytes(COMMAND_SIZE)]


def target(data: bytes) -> None:
    if len(data) == COMMAND_SIZE or len(data) < SURB_SIZE // 2:
        command = RoutingCommand.decode(data)
        assert RoutingCommand.decode(command.encode()) == command
        return
    surb = Surb.decode(data)
    assert Surb.decode(surb.encode()) == surb
    first_hop, packet = surb.reply_packet(os.urandom(8))
    assert first_hop == surb.first_hop and len(packet) == PACKET_SIZE
