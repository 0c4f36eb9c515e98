"""WebSocket frames (docs/server.md, "WebSocket"): JSON text, one object per frame,
told apart by ``type``.

Client → server: :class:`SendFrame`, :class:`AckFrame` (strict: unknown fields are
refused and close the socket). Server → client: :class:`EnvelopeFrame`,
:class:`KeysLowFrame`, :class:`SentFrame`, :class:`ErrorFrame` (unknown fields and, in
:meth:`veil.protocol.codec.decode_server_frame`, unknown frame types are ignored, so a
newer server can add some).
"""

from __future__ import annotations

from typing import Annotated

from msgspec import UNSET, Meta, Struct, UnsetType

from veil.protocol.fields import MAX_JSON_INT, AccountHex, MessageId, Millis, b64
from veil.protocol.requests import ACCESS_KEY_BYTES, DEFAULT_MAX_DEVICES, EnvelopeItem, Request
from veil.protocol.responses import ErrorDetail, StoredEnvelope

__all__ = [
    "MAX_ACK_IDS",
    "AckFrame",
    "ClientFrame",
    "EnvelopeFrame",
    "ErrorFrame",
    "KeysLowFrame",
    "SendFrame",
    "SentFrame",
    "ServerFrame",
]

MAX_ACK_IDS = 1000
Req = Annotated[int, Meta(ge=0, le=MAX_JSON_INT, description="echoed in the reply")]


class SendFrame(Request, tag="send", tag_field="type", kw_only=True, frozen=True):
    """Envelopes for one account's devices; answered by ``sent`` or ``error`` with the
    same ``req``. ``access_key`` only on the sealed socket."""

    req: Req
    to: AccountHex
    access_key: Annotated[bytes, b64(ACCESS_KEY_BYTES, ACCESS_KEY_BYTES,
                                     "recipient's access key (sealed socket)")] \
        | UnsetType = UNSET
    messages: Annotated[list[EnvelopeItem], Meta(min_length=1, max_length=DEFAULT_MAX_DEVICES)]


class AckFrame(Request, tag="ack", tag_field="type", kw_only=True, frozen=True):
    """Envelopes pushed on this socket that the client has stored: the server deletes
    them."""

    ids: Annotated[list[MessageId], Meta(min_length=1, max_length=MAX_ACK_IDS)]


ClientFrame = SendFrame | AckFrame


class _ServerFrame(Struct, tag_field="type", kw_only=True, frozen=True):
    pass


class EnvelopeFrame(_ServerFrame, tag="envelope", kw_only=True, frozen=True):
    id: MessageId
    ts: Millis
    envelope: bytes


class KeysLowFrame(_ServerFrame, tag="keys_low", kw_only=True, frozen=True):
    one_time_prekeys: Annotated[int, Meta(ge=0, le=MAX_JSON_INT)]
    one_time_kem_prekeys: Annotated[int, Meta(ge=0, le=MAX_JSON_INT)]


class SentFrame(_ServerFrame, tag="sent", kw_only=True, frozen=True):
    req: Req
    messages: list[StoredEnvelope]


class ErrorFrame(_ServerFrame, tag="error", kw_only=True, frozen=True):
    req: Req
    error: ErrorDetail


ServerFrame = EnvelopeFrame | KeysLowFrame | SentFrame | ErrorFrame
