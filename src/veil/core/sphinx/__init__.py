"""Sphinx packets (Danezis & Goldberg, IEEE S&P 2009) over X25519, sans-I/O.

One fixed packet size, up to five hops, per-hop blinding, per-hop routing commands
(next hop and delay), a header MAC, a replay tag per hop, filler, a LIONESS payload and
single-use reply blocks. See ``docs/mixnet.md`` for the layout and the choices made.
"""

from veil.core.sphinx.errors import (
    SphinxError,
    SphinxMacFailure,
    SphinxMalformed,
    SphinxPathError,
    SphinxPayloadCorrupt,
    SphinxReplay,
    SphinxReplayStoreFull,
)
from veil.core.sphinx.packet import (
    Deliver,
    DeliverReply,
    PathHop,
    ProcessResult,
    Relay,
    SphinxNode,
    create_forward_packet,
)
from veil.core.sphinx.params import (
    ADDRESS_SIZE,
    HEADER_SIZE,
    MAX_HOPS,
    MAX_MESSAGE_SIZE,
    PACKET_SIZE,
    PAYLOAD_SIZE,
    SURB_ID_SIZE,
    CommandType,
    RoutingCommand,
)
from veil.core.sphinx.replay import ReplayTagStore
from veil.core.sphinx.surb import SURB_SIZE, Surb, SurbSecret, create_surb

__all__ = [
    "ADDRESS_SIZE",
    "HEADER_SIZE",
    "MAX_HOPS",
    "MAX_MESSAGE_SIZE",
    "PACKET_SIZE",
    "PAYLOAD_SIZE",
    "SURB_ID_SIZE",
    "SURB_SIZE",
    "CommandType",
    "Deliver",
    "DeliverReply",
    "PathHop",
    "ProcessResult",
    "Relay",
    "ReplayTagStore",
    "RoutingCommand",
    "SphinxError",
    "SphinxMacFailure",
    "SphinxMalformed",
    "SphinxNode",
    "SphinxPathError",
    "SphinxPayloadCorrupt",
    "SphinxReplay",
    "SphinxReplayStoreFull",
    "Surb",
    "SurbSecret",
    "create_forward_packet",
    "create_surb",
    "errors",
    "keys",
    "lioness",
    "packet",
    "params",
    "replay",
    "surb",
]
