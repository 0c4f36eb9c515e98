"""Single-use reply blocks (SURBs): answering a sender without learning its route.

Sphinx paper, section 3.5: the creator builds a header for a path that ends at itself
(here: at its provider, with a DELIVER_REPLY command naming it and a SURB id) and hands
out the header, the first hop and a fresh payload key. The replier LIONESS-encrypts its
message under that key and sends header || payload; every hop then applies its usual
payload decryption. Only the creator, who kept every hop's payload key, can undo them.

Encoded SURB: first hop (16) || header (HEADER_SIZE) || payload key seed (32).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.core.sphinx.errors import SphinxMalformed, SphinxPathError
from veil.core.sphinx.lioness import KEYS_SIZE, Lioness
from veil.core.sphinx.packet import (
    PathHop,
    build_header,
    decode_forward_payload,
    encode_forward_payload,
    route_commands,
)
from veil.core.sphinx.params import (
    ADDRESS_SIZE,
    HEADER_SIZE,
    PAYLOAD_SIZE,
    SURB_ID_SIZE,
    CommandType,
    RoutingCommand,
)

SEED_SIZE = 32
SURB_SIZE = ADDRESS_SIZE + HEADER_SIZE + SEED_SIZE
_INFO = b"veil sphinx v1 surb payload key"


def _reply_key(seed: bytes) -> Lioness:
    return Lioness(HKDF(hashes.SHA256(), KEYS_SIZE, None, _INFO).derive(seed))


@dataclass(frozen=True, slots=True)
class Surb:
    """What the replier gets: where to send, the header, and the payload key seed."""

    first_hop: bytes
    header: bytes
    key_seed: bytes

    def encode(self) -> bytes:
        return self.first_hop + self.header + self.key_seed

    @classmethod
    def decode(cls, data: bytes) -> Surb:
        if len(data) != SURB_SIZE:
            raise SphinxMalformed("wrong SURB size")
        return cls(data[:ADDRESS_SIZE], data[ADDRESS_SIZE:ADDRESS_SIZE + HEADER_SIZE],
                   data[ADDRESS_SIZE + HEADER_SIZE:])

    def reply_packet(self, message: bytes) -> tuple[bytes, bytes]:
        """(first hop, packet) carrying ``message`` back to the SURB's creator."""
        payload = _reply_key(self.key_seed).encrypt(encode_forward_payload(message))
        return self.first_hop, self.header + payload


class SurbSecret:
    """What the creator keeps to read the reply: the id and every layer's payload key."""

    __slots__ = ("_hop_payload_keys", "_reply_key", "surb_id")

    def __init__(self, surb_id: bytes, reply_key: Lioness, hop_payload_keys: list[Lioness]
                 ) -> None:
        self.surb_id = surb_id
        self._reply_key = reply_key
        self._hop_payload_keys = hop_payload_keys

    def open(self, payload: bytes) -> bytes:
        """The replier's message; SphinxPayloadCorrupt if the payload was altered."""
        if len(payload) != PAYLOAD_SIZE:
            raise SphinxMalformed("wrong payload size")
        # Every hop decrypted one layer; encrypting in reverse order undoes them.
        for key in reversed(self._hop_payload_keys):
            payload = key.encrypt(payload)
        return decode_forward_payload(self._reply_key.decrypt(payload))


def create_surb(path: Sequence[PathHop], delays_ms: Sequence[int], destination: bytes,
                surb_id: bytes | None = None) -> tuple[Surb, SurbSecret]:
    """A SURB whose replies travel ``path`` and exit to ``destination`` with ``surb_id``."""
    surb_id = os.urandom(SURB_ID_SIZE) if surb_id is None else surb_id
    if len(surb_id) != SURB_ID_SIZE or not delays_ms:
        raise SphinxPathError("a SURB needs a 16-byte id and one delay per hop")
    exit_command = RoutingCommand(CommandType.DELIVER_REPLY, delays_ms[-1], destination, surb_id)
    header, hop_keys = build_header(path, route_commands(path, delays_ms, exit_command))
    seed = os.urandom(SEED_SIZE)
    secret = SurbSecret(surb_id, _reply_key(seed), [k.payload for k in hop_keys])
    return Surb(path[0].address, header, seed), secret

__all__ = [
    "SURB_SIZE",
    "Surb",
    "SurbSecret",
    "create_surb",
]
