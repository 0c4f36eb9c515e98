"""Request bodies and WebSocket frames, as validation schemas (also the OpenAPI source).

Limits that depend on configuration (envelope size, batch size) are built per server
from its :class:`~veil.server.config.ServerConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.server.config import ServerConfig
from veil.server.services.keys import (
    IDENTITY_KEY_BYTES,
    KEM_PREKEY_BYTES,
    MAX_KEY_ID,
    ONE_TIME_PREKEY_BYTES,
    SIGNED_PREKEY_BYTES,
)
from veil.server.validation import Bool, Bytes, Int, List, Obj, Schema, Str

ACCOUNT_HEX = r"[0-9a-f]{32}"
USERNAME_INPUT = r"[A-Za-z0-9_]{3,32}"
MAX_REQ = (1 << 53) - 1
MAX_ACK_IDS = 1000


def _one_time(bounds: tuple[int, int], what: str) -> Schema:
    return Obj(
        {
            "key_id": Int(0, MAX_KEY_ID, "client-chosen id, unique per device and kind"),
            "key": Bytes(bounds[0], bounds[1], what),
        },
        required=("key_id", "key"),
    )


@dataclass(frozen=True)
class Schemas:
    registration: Schema
    prekeys: Schema
    username: Schema
    sealed_access: Schema
    submission: Schema
    relayed_submission: Schema
    ws_send: Schema
    ws_ack: Schema
    ws_type: Schema


def build_schemas(config: ServerConfig) -> Schemas:
    n = config.max_prekeys_per_upload
    prekey_fields: dict[str, Schema] = {
        "signed_prekey": Bytes(
            *SIGNED_PREKEY_BYTES, description="signed X25519 prekey record, verified"),
        "last_resort_kem_prekey": Bytes(
            *KEM_PREKEY_BYTES, description="signed last-resort ML-KEM-768 prekey, verified"),
        "one_time_prekeys": List(
            _one_time(ONE_TIME_PREKEY_BYTES, "one-time X25519 prekey record"), n),
        "one_time_kem_prekeys": List(
            _one_time(KEM_PREKEY_BYTES, "signed one-time ML-KEM-768 prekey, verified"), n),
    }
    account_fields: dict[str, Schema] = {
        "identity_key": Bytes(*IDENTITY_KEY_BYTES, description="the device's identity key"),
        "registration_id": Int(1, (1 << 31) - 1, "random id clients use to detect reinstalls"),
        "token": Bytes(32, 32, "device credential; omitted: the server issues one"),
        "username": Str(32, USERNAME_INPUT, "optional unique username, case-insensitive"),
        "access_key": Bytes(16, 16, "HMAC-SHA256(profile_key, 'veil access key v1')[:16]"),
        "unrestricted_sealed": Bool("accept sealed envelopes from anyone"),
        "invite": Str(128, r"[0-9a-f]{8,128}", "invite token (invite-only servers)"),
    }
    envelope_item = Obj(
        {
            "device_id": Int(1, (1 << 31) - 1, "recipient device"),
            "envelope": Bytes(1, config.max_envelope_bytes, "opaque sealed envelope"),
        },
        required=("device_id", "envelope"),
    )
    messages = List(envelope_item, config.max_devices_per_account, min_items=1)
    return Schemas(
        registration=Obj(
            {**account_fields, **prekey_fields},
            required=("identity_key", "registration_id"),
            description="a new account with its first device",
        ),
        prekeys=Obj(prekey_fields, description="prekeys to publish (slots replace, lists append)"),
        username=Obj({"username": Str(32, USERNAME_INPUT)}, required=("username",)),
        sealed_access=Obj(
            {"access_key": account_fields["access_key"],
             "unrestricted_sealed": account_fields["unrestricted_sealed"]},
            required=("unrestricted_sealed",),
            description="who may send sealed envelopes to this account",
        ),
        submission=Obj({"messages": messages}, required=("messages",)),
        relayed_submission=Obj(
            # At most what fits in a body of max_body_bytes with its JSON around it.
            {"submission": Bytes(1, 3 * ((config.max_body_bytes - 64) // 4),
                                 "veil.core.submission encoding of a sealed submission")},
            required=("submission",),
            description="a sealed submission relayed by a mixnet provider",
        ),
        ws_send=Obj(
            {
                "type": Str(8, "send"),
                "req": Int(0, MAX_REQ, "echoed in the reply"),
                "to": Str(32, ACCOUNT_HEX, "recipient account id"),
                "access_key": Bytes(16, 16, "recipient's access key (sealed socket)"),
                "messages": messages,
            },
            required=("type", "req", "to", "messages"),
        ),
        ws_ack=Obj(
            {"type": Str(8, "ack"), "ids": List(Int(1, MAX_REQ), MAX_ACK_IDS, min_items=1)},
            required=("type", "ids"),
        ),
        ws_type=Str(8, "send|ack"),
    )

__all__ = [
    "MAX_ACK_IDS",
    "MAX_REQ",
    "Schemas",
    "build_schemas",
]
