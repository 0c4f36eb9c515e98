"""Fuzz what the server decodes from any client: JSON bodies and WebSocket frames (as
veil.protocol decodes them with a server's limits) and the Authorization header."""

from __future__ import annotations

import base64

from veil.protocol import Codec, ProtocolError, encode
from veil.protocol import requests as rq
from veil.server.config import ServerConfig
from veil.server.errors import BadRequest, Unauthorized
from veil.server.http.context import parse_basic

ALLOWED: tuple[type[BaseException], ...] = (ProtocolError, Unauthorized, BadRequest)

_CODEC = Codec(ServerConfig().wire_limits())
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
    try:
        frame = _CODEC.decode_client_frame(body)
    except ProtocolError:
        pass
    else:  # what was accepted re-encodes to a frame that decodes to the same value
        assert _CODEC.decode_client_frame(encode(frame)) == frame
    for cls in (rq.Registration, rq.Submission, rq.PrekeyUpload, rq.SealedAccess,
                rq.UsernameRequest, rq.RelayedSubmission):
        try:
            _CODEC.decode(cls, body)
        except ProtocolError:
            pass
