"""Fuzz what the server decodes from any client: JSON bodies, WebSocket frames (schemas
and their fast paths) and the Authorization header."""

from __future__ import annotations

import base64

from veil.server.config import ServerConfig
from veil.server.errors import (
    BadRequest,
    InvalidJson,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
)
from veil.server.http.context import parse_basic
from veil.server.http.frames import fast_ack, fast_send
from veil.server.http.schemas import build_schemas
from veil.server.validation import load_json

ALLOWED: tuple[type[BaseException], ...] = (
    InvalidJson, ValidationFailed, PayloadTooLarge, Unauthorized, BadRequest,
)

_CONFIG = ServerConfig()
_SCHEMAS = build_schemas(_CONFIG)
_B64 = base64.b64encode(b"envelope").decode()

SEEDS: list[bytes] = [
    b'J{"type":"send","req":1,"to":"' + b"a" * 32 + b'","access_key":"AAAAAAAAAAAAAAAAAAAAAA==",'
    b'"messages":[{"device_id":1,"envelope":"' + _B64.encode() + b'"}]}',
    b'J{"type":"ack","ids":[1,2,3]}',
    b'J{"identity_key":"' + _B64.encode() + b'","registration_id":1,"username":"bob",'
    b'"one_time_prekeys":[{"key_id":1,"key":"' + _B64.encode() + b'"}]}',
    b'J{"messages":[{"device_id":1,"envelope":"' + _B64.encode() + b'"}]}',
    b"ABasic " + base64.b64encode(b"a" * 32 + b".1:" + base64.b64encode(bytes(32))),
]


def target(data: bytes) -> None:
    kind, body = data[:1], data[1:]
    if kind == b"A":
        parse_basic(body.decode("latin-1"))
        return
    value = load_json(body)
    if isinstance(value, dict):
        fast = fast_send(value, _CONFIG.max_envelope_bytes, _CONFIG.max_devices_per_account)
        if fast is not None:
            assert fast == _SCHEMAS.ws_send.validate(value, "frame")
        ack = fast_ack(value)
        if ack is not None:
            assert ack == _SCHEMAS.ws_ack.validate(value, "frame")["ids"]
    for schema in (_SCHEMAS.ws_send, _SCHEMAS.ws_ack, _SCHEMAS.registration,
                   _SCHEMAS.submission, _SCHEMAS.prekeys, _SCHEMAS.sealed_access):
        try:
            schema.validate(value, "body")
        except ALLOWED:
            pass
