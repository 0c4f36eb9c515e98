"""The client–server wire formats of Veil, as typed classes shared by both sides.

Layering (DESIGN.md, "Layers"): ``veil.protocol`` sits above ``veil.core`` and below
``veil.server`` and ``veil.client``, which both import it and never each other. Every
request body (:mod:`~veil.protocol.requests`), answer (:mod:`~veil.protocol.responses`)
and WebSocket frame (:mod:`~veil.protocol.frames`) is declared once here as a
``msgspec.Struct``; the server decodes requests and frames with a :class:`Codec` that
binds its configured limits, and generates its OpenAPI document from the same classes.
docs/protocol.md argues the choice of msgspec with a measurement.
"""

from veil.protocol.codec import (
    Codec,
    Limits,
    convert,
    decode_server_frame,
    decode_value,
    encode,
    given,
    to_builtins,
)
from veil.protocol.errors import InvalidFields, MalformedJson, ProtocolError

__all__ = [
    "Codec",
    "InvalidFields",
    "Limits",
    "MalformedJson",
    "ProtocolError",
    "convert",
    "decode_server_frame",
    "decode_value",
    "encode",
    "given",
    "to_builtins",
]
