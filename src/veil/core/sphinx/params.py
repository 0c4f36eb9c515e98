"""Sizes and the per-hop routing command of Veil's Sphinx packets.

Danezis & Goldberg, "Sphinx: A Compact and Provably Secure Mix Format" (IEEE S&P 2009),
section 3: a packet is a header (alpha, beta, gamma) and a payload delta. Veil fixes one
layout for every packet so all packets on every link have the same length:

    packet  = alpha (32) || beta (MAX_HOPS * SLOT) || gamma (16) || delta (PAYLOAD_SIZE)
    slot    = command (48) || MAC for the next hop (16)
    command = type (1) || delay in ms (4, big-endian) || address (16) || surb id (16)
              || reserved zeros (11)

The command field is wider than the paper's (next-hop address only) because Loopix
(Piotrowska et al., USENIX Security 2017, section 3) puts the per-hop delay in the
header, and a SURB's exit needs the reply identifier.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from veil.core.sphinx.errors import SphinxMalformed, SphinxPathError

MAX_HOPS = 5
GROUP_ELEMENT_SIZE = 32
MAC_SIZE = 16
ADDRESS_SIZE = 16
SURB_ID_SIZE = 16
COMMAND_SIZE = 48
SLOT_SIZE = COMMAND_SIZE + MAC_SIZE
BETA_SIZE = MAX_HOPS * SLOT_SIZE
HEADER_SIZE = GROUP_ELEMENT_SIZE + BETA_SIZE + MAC_SIZE
PACKET_SIZE = 2048
PAYLOAD_SIZE = PACKET_SIZE - HEADER_SIZE
# Forward payloads start with this many zero bytes; the exit checks them (paper, 3.4).
PAYLOAD_TAG_SIZE = 16
# The body of a forward payload carries a two-byte length before the message.
MAX_MESSAGE_SIZE = PAYLOAD_SIZE - PAYLOAD_TAG_SIZE - 2
MAX_DELAY_MS = 2**32 - 1

_COMMAND = struct.Struct(">BI16s16s11s")
_RESERVED = bytes(11)
_NO_SURB = bytes(SURB_ID_SIZE)


class CommandType(IntEnum):
    RELAY = 1  # forward to ``address`` after ``delay_ms``
    DELIVER = 2  # exit: the payload is a forward message for ``address``
    DELIVER_REPLY = 3  # exit: the payload is a SURB reply for ``address``, id ``surb_id``


@dataclass(frozen=True, slots=True)
class RoutingCommand:
    """What one hop learns: what to do with the packet, where, and how long to hold it."""

    type: CommandType
    delay_ms: int
    address: bytes
    surb_id: bytes = _NO_SURB

    def __post_init__(self) -> None:
        if len(self.address) != ADDRESS_SIZE:
            raise SphinxPathError(f"address must be {ADDRESS_SIZE} bytes")
        if len(self.surb_id) != SURB_ID_SIZE:
            raise SphinxPathError(f"SURB id must be {SURB_ID_SIZE} bytes")
        if not 0 <= self.delay_ms <= MAX_DELAY_MS:
            raise SphinxPathError("delay out of range")

    def encode(self) -> bytes:
        return _COMMAND.pack(int(self.type), self.delay_ms, self.address, self.surb_id,
                             _RESERVED)

    @classmethod
    def decode(cls, data: bytes) -> RoutingCommand:
        """Decode the command a node found in its slot (after the MAC verified)."""
        try:
            type_, delay, address, surb_id, reserved = _COMMAND.unpack(data)
            kind = CommandType(type_)
        except (struct.error, ValueError) as exc:
            raise SphinxMalformed("unknown routing command") from exc
        if reserved != _RESERVED:
            raise SphinxMalformed("reserved command bytes are not zero")
        return cls(kind, delay, address, surb_id)

__all__ = [
    "ADDRESS_SIZE",
    "BETA_SIZE",
    "COMMAND_SIZE",
    "GROUP_ELEMENT_SIZE",
    "HEADER_SIZE",
    "MAC_SIZE",
    "MAX_HOPS",
    "MAX_MESSAGE_SIZE",
    "PACKET_SIZE",
    "PAYLOAD_SIZE",
    "PAYLOAD_TAG_SIZE",
    "SLOT_SIZE",
    "SURB_ID_SIZE",
    "CommandType",
    "RoutingCommand",
]
