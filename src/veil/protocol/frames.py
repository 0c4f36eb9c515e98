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
from veil.protocol.requests import (
    ACCESS_KEY_BYTES,
    DEFAULT_MAX_DEVICES,
    GROUP_ID_BYTES,
    MAX_EPOCH,
    EnvelopeItem,
    Request,
)
from veil.protocol.responses import ErrorDetail, StoredEnvelope

__all__ = [
    "MAX_ACK_IDS",
    "AckFrame",
    "ClientFrame",
    "EnvelopeFrame",
    "ErrorFrame",
    "GroupDroppedFrame",
    "GroupEpochFrame",
    "GroupMessageFrame",
    "GroupSubscribeFrame",
    "GroupSubscribedFrame",
    "GroupUnsubscribeFrame",
    "KeysLowFrame",
    "MlsKeysLowFrame",
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


GroupIdField = Annotated[bytes, b64(*GROUP_ID_BYTES, "the MLS group id")]
EpochField = Annotated[int, Meta(ge=0, le=MAX_EPOCH)]
SeqField = Annotated[int, Meta(ge=0, le=MAX_JSON_INT)]
CAPABILITY_BYTES = 32


class GroupSubscribeFrame(Request, tag="group_subscribe", tag_field="type", kw_only=True,
                          frozen=True):
    """Push this group's messages of ``epoch`` (proved by its read capability) with a
    seq above ``after``; answered by ``group_subscribed`` or ``error`` with ``req``.
    Subscribing again to a group replaces its subscription."""

    req: Req
    group_id: GroupIdField
    epoch: EpochField
    read: Annotated[bytes, b64(CAPABILITY_BYTES, CAPABILITY_BYTES,
                               "the epoch's read capability")]
    after: SeqField = 0


class GroupUnsubscribeFrame(Request, tag="group_unsubscribe", tag_field="type",
                            kw_only=True, frozen=True):
    group_id: GroupIdField


ClientFrame = SendFrame | AckFrame | GroupSubscribeFrame | GroupUnsubscribeFrame


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


class MlsKeysLowFrame(_ServerFrame, tag="mls_keys_low", kw_only=True, frozen=True):
    """This device's one-time MLS KeyPackages ran low: upload more."""

    one_time: Annotated[int, Meta(ge=0, le=MAX_JSON_INT)]


class GroupSubscribedFrame(_ServerFrame, tag="group_subscribed", kw_only=True, frozen=True):
    """The subscription holds. ``last_seq``: the group's last seq when it started
    (fetch from ``after`` up to it over HTTP if it is higher; later ones are pushed).
    ``current_epoch`` above ``epoch``: the epoch has ended, nothing more will come for
    it (the subscription is not kept): catch up and subscribe to the next."""

    req: Req
    group_id: GroupIdField
    epoch: EpochField
    current_epoch: EpochField
    last_seq: SeqField


class GroupMessageFrame(_ServerFrame, tag="group_message", kw_only=True, frozen=True):
    group_id: GroupIdField
    seq: SeqField
    epoch: EpochField
    ts: Millis
    commit: bool
    message: bytes


class GroupEpochFrame(_ServerFrame, tag="group_epoch", kw_only=True, frozen=True):
    """The subscribed epoch ended (its commit was pushed just before): subscribe again
    with the next epoch's read capability."""

    group_id: GroupIdField
    epoch: EpochField


class GroupDroppedFrame(_ServerFrame, tag="group_dropped", kw_only=True, frozen=True):
    """The subscription was dropped (the socket fell behind): fetch from your cursor
    over HTTP and subscribe again."""

    group_id: GroupIdField
    epoch: EpochField


ServerFrame = (EnvelopeFrame | KeysLowFrame | SentFrame | ErrorFrame | MlsKeysLowFrame
               | GroupSubscribedFrame | GroupMessageFrame | GroupEpochFrame
               | GroupDroppedFrame)
