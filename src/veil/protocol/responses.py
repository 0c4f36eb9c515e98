"""Answers of the HTTP API (docs/server.md, "API"), as the server encodes them and the
client decodes them.

Answers ignore unknown fields when decoded, so that a client keeps working against a
newer server that says more; every field a client relies on is required and bounded,
so that a malformed or hostile answer is a typed error rather than a surprise deeper
in the client.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from veil.protocol.fields import (
    MAX_JSON_INT,
    AccountHex,
    DeviceId,
    KeyId,
    MessageId,
    Millis,
    Username,
    b64,
)
from veil.protocol.requests import (
    IDENTITY_KEY_BYTES,
    KEM_PREKEY_BYTES,
    ONE_TIME_PREKEY_BYTES,
    SIGNED_PREKEY_BYTES,
)

__all__ = [
    "Accepted",
    "AccountInfo",
    "Bundles",
    "DeviceBundle",
    "ErrorDetail",
    "ErrorResponse",
    "Health",
    "MessagePage",
    "MismatchedDevices",
    "OneTimeKey",
    "PrekeyStatus",
    "QueuedEnvelope",
    "Registered",
    "Response",
    "SenderCertificate",
    "StoredEnvelope",
    "TrustRoot",
    "UsernameFound",
    "UsernameSet",
]

Count = Annotated[int, Meta(ge=0, le=MAX_JSON_INT)]
# Server documents (certificates, statements) are parsed and verified by veil.core;
# the bound here only keeps a hostile answer from being large.
Document = Annotated[bytes, b64(1, 64 * 1024)]


class Response(Struct, kw_only=True, frozen=True):
    """Base of every answer."""


class ErrorDetail(Response, kw_only=True, frozen=True):
    code: Annotated[str, Meta(max_length=64, description="stable machine-readable code")]
    message: Annotated[str, Meta(max_length=1024)]
    details: dict[str, Any] | UnsetType = UNSET


class ErrorResponse(Response, kw_only=True, frozen=True):
    """Every error answer: ``{"error": {"code", "message", "details"?}}``."""

    error: ErrorDetail


class MismatchedDevices(Response, kw_only=True, frozen=True):
    """The ``details`` of a ``mismatched_devices`` error (409): the submission named
    devices the account does not have, or left out some it has."""

    missing_devices: list[DeviceId]
    extra_devices: list[DeviceId]


class Registered(Response, kw_only=True, frozen=True):
    account_id: AccountHex
    device_id: DeviceId
    token: Annotated[bytes, b64(32, 32, "issued device credential")] | UnsetType = UNSET


class AccountInfo(Response, kw_only=True, frozen=True):
    account_id: AccountHex
    device_id: DeviceId
    username: Username | None
    has_access_key: bool
    unrestricted_sealed: bool
    devices: list[DeviceId]


class UsernameSet(Response, kw_only=True, frozen=True):
    username: Username


class UsernameFound(Response, kw_only=True, frozen=True):
    account_id: AccountHex
    username: Username


class PrekeyStatus(Response, kw_only=True, frozen=True):
    """This device's stock; ``low`` says it is time to upload more."""

    one_time_prekeys: Count
    one_time_kem_prekeys: Count
    has_signed_prekey: bool
    has_last_resort_kem_prekey: bool
    low: bool


class OneTimeKey(Response, kw_only=True, frozen=True):
    key_id: KeyId
    key: Annotated[bytes, b64(ONE_TIME_PREKEY_BYTES[0], KEM_PREKEY_BYTES[1])]


class DeviceBundle(Response, kw_only=True, frozen=True):
    """What a sender needs to start a session with one device (``null``: not published;
    a one-time key is ``null`` once the stock is used up)."""

    device_id: DeviceId
    registration_id: Annotated[int, Meta(ge=1, le=(1 << 31) - 1)]
    identity_key: Annotated[bytes, b64(*IDENTITY_KEY_BYTES)]
    signed_prekey: Annotated[bytes, b64(*SIGNED_PREKEY_BYTES)] | None
    last_resort_kem_prekey: Annotated[bytes, b64(*KEM_PREKEY_BYTES)] | None
    one_time_prekey: OneTimeKey | None
    one_time_kem_prekey: OneTimeKey | None


class Bundles(Response, kw_only=True, frozen=True):
    account_id: AccountHex
    devices: list[DeviceBundle]


class StoredEnvelope(Response, kw_only=True, frozen=True):
    """Where one envelope of a submission was queued."""

    device_id: DeviceId
    id: MessageId
    ts: Millis


class Accepted(Response, kw_only=True, frozen=True):
    """A submission stored durably, one entry per envelope."""

    messages: list[StoredEnvelope]


class QueuedEnvelope(Response, kw_only=True, frozen=True):
    id: MessageId
    ts: Millis
    envelope: bytes


class MessagePage(Response, kw_only=True, frozen=True):
    """Queued envelopes, oldest first; ``more``: fetch again after the last id."""

    messages: list[QueuedEnvelope]
    more: bool


class SenderCertificate(Response, kw_only=True, frozen=True):
    certificate: Document
    server_certificate: Document
    expires: Millis
    # Servers before the key statements (issue 8) sent none: the client then keeps the
    # statement it has.
    key_statement: Document | UnsetType = UNSET


class TrustRoot(Response, kw_only=True, frozen=True):
    public_key: Annotated[bytes, b64(32, 32, "Ed25519 trust root")]
    key_statement: Document | UnsetType = UNSET


class Health(Response, kw_only=True, frozen=True):
    status: Literal["ok"]
    schema_version: Count
    connections: Count
