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
    GROUP_ID_BYTES,
    IDENTITY_KEY_BYTES,
    KEM_PREKEY_BYTES,
    KEY_PACKAGE_BYTES,
    MAX_EPOCH,
    ONE_TIME_PREKEY_BYTES,
    SIGNED_PREKEY_BYTES,
)

__all__ = [
    "Accepted",
    "AccountInfo",
    "Bundles",
    "DeviceAdded",
    "DeviceBundle",
    "DeviceEntry",
    "DeviceList",
    "EpochConflict",
    "ErrorDetail",
    "ErrorResponse",
    "GroupAppended",
    "GroupMailbox",
    "GroupMessagePage",
    "GroupStoredMessage",
    "Health",
    "KeyPackageStatus",
    "MessagePage",
    "MismatchedDevices",
    "MlsDeviceKeyPackage",
    "MlsKeyPackages",
    "OneTimeKey",
    "PowChallenge",
    "PrekeyStatus",
    "ProvisioningChannel",
    "ProvisioningKey",
    "ProvisioningMessage",
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
    # The device's approval by the account's identity (docs/devices.md); absent for a
    # first device registered before approvals. Clients verify it.
    approval: Annotated[bytes, b64(97, 97)] | UnsetType = UNSET


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


class PowChallenge(Response, kw_only=True, frozen=True):
    """A registration challenge (issue 13 §2): find a decimal nonce such that
    SHA-256(challenge ":" nonce) starts with ``bits`` zero bits."""

    challenge: Annotated[str, Meta(max_length=200)]
    bits: Annotated[int, Meta(ge=1, le=32)]
    algorithm: Literal["sha256"]
    expires_in_s: Count
    required: bool  # whether this server's registration asks for it


class TrustRoot(Response, kw_only=True, frozen=True):
    public_key: Annotated[bytes, b64(32, 32, "Ed25519 trust root")]
    key_statement: Document | UnsetType = UNSET


class Health(Response, kw_only=True, frozen=True):
    status: Literal["ok"]
    schema_version: Count
    connections: Count



# ---- MLS Delivery Service (issue 11 §1) -------------------------------------------------
Epoch = Annotated[int, Meta(ge=0, le=MAX_EPOCH)]
Seq = Annotated[int, Meta(ge=0, le=MAX_JSON_INT, description="per-group sequence number")]


class KeyPackageStatus(Response, kw_only=True, frozen=True):
    """This device's KeyPackage stock; ``low``: time to upload more."""

    one_time: Count
    last_resort: Count
    low: bool


class MlsDeviceKeyPackage(Response, kw_only=True, frozen=True):
    device_id: DeviceId
    key_package: Annotated[bytes, b64(*KEY_PACKAGE_BYTES)]
    last_resort: bool


class MlsKeyPackages(Response, kw_only=True, frozen=True):
    """One KeyPackage per device that has one of the asked suite (one-time ones are
    handed out once; a last-resort one may be handed out again)."""

    account_id: AccountHex
    devices: list[MlsDeviceKeyPackage]


class GroupMailbox(Response, kw_only=True, frozen=True):
    """A group mailbox's public state: its current epoch and last sequence number."""

    group_id: Annotated[bytes, b64(*GROUP_ID_BYTES)]
    epoch: Epoch
    last_seq: Seq


class GroupAppended(Response, kw_only=True, frozen=True):
    """A group message stored (once, for every member): its sequence number, and the
    group's epoch after it (one more than the message's for a commit)."""

    seq: Seq
    ts: Millis
    epoch: Epoch


class GroupStoredMessage(Response, kw_only=True, frozen=True):
    seq: Seq
    epoch: Epoch
    ts: Millis
    commit: bool
    message: bytes


class GroupMessagePage(Response, kw_only=True, frozen=True):
    """Messages of one epoch, oldest first. ``more``: fetch again after the last seq;
    ``epoch_ended``: the commit that ends the epoch is in this page or an earlier one
    (derive the next epoch's capability and go on); ``current_epoch``: the group's."""

    messages: list[GroupStoredMessage]
    more: bool
    epoch_ended: bool
    current_epoch: Epoch


class EpochConflict(Response, kw_only=True, frozen=True):
    """The ``details`` of an ``epoch_conflict`` error (409)."""

    current_epoch: Epoch


# --- linked devices (docs/devices.md) ---------------------------------------------------
class DeviceAdded(Response, kw_only=True, frozen=True):
    device_id: DeviceId


class DeviceEntry(Response, kw_only=True, frozen=True):
    device_id: DeviceId
    registration_id: Annotated[int, Meta(ge=1, le=(1 << 31) - 1)]
    created_at: Millis
    approval: Annotated[bytes, b64(97, 97)] | UnsetType = UNSET


class DeviceList(Response, kw_only=True, frozen=True):
    """This account's devices (names are not the server's: they stay on the devices)."""

    devices: list[DeviceEntry]


class ProvisioningChannel(Response, kw_only=True, frozen=True):
    channel_id: Annotated[bytes, b64(10, 10, "the channel id, part of the link code")]
    expires: Millis
    max_message_bytes: Count


class ProvisioningKey(Response, kw_only=True, frozen=True):
    """What the approving device reads: the key to check against the link code."""

    public_key: Annotated[bytes, b64(32, 32)]
    expires: Millis
    max_message_bytes: Count


class ProvisioningMessage(Response, kw_only=True, frozen=True):
    """The message, once posted (the channel is then deleted), else null."""

    message: bytes | None
