"""Fuzz the Sphinx hop processor: any bytes a peer sends a mix node."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from veil.core.sphinx import (
    PACKET_SIZE,
    PathHop,
    ReplayTagStore,
    SphinxError,
    SphinxNode,
    create_forward_packet,
)

ALLOWED: tuple[type[BaseException], ...] = (SphinxError,)

_KEY = X25519PrivateKey.from_private_bytes(bytes(range(32)))
_PATH = [PathHop(b"n" * 16, _KEY.public_key().public_bytes_raw())]


def _node() -> SphinxNode:
    # A fresh store per input: a seed processed twice must reach the decoder, not the
    # replay check, and the store must not fill over a long run.
    return SphinxNode(_KEY, ReplayTagStore(4))


SEEDS: list[bytes] = [
    create_forward_packet(_PATH, [0], b"d" * 16, b"hello"),
    create_forward_packet(_PATH * 3, [1, 2, 3], b"d" * 16, bytes(100)),
]


def target(data: bytes) -> None:
    node = _node()
    try:
        node.process(data)
    finally:
        # Short inputs also reach the decoder at the right size.
        if data and len(data) != PACKET_SIZE:
            padded = (data * (PACKET_SIZE // len(data) + 1))[:PACKET_SIZE]
            node.process(padded)
