"""Fuzz what the mixnet decodes around Sphinx packets: fragments, control frames, directories.

A provider decodes fragments from any client, a mix decodes control frames from any
connection, and a client or node parses the directory document it downloads.
"""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from veil.core.sphinx import PACKET_SIZE
from veil.mixnet.directory import ROLE_MIX, ROLE_PROVIDER, Directory, NodeKey
from veil.mixnet.errors import MixnetError
from veil.mixnet.fragment import Fragment, Reassembler, split
from veil.mixnet.transport import CONTROL_PREFIX, delivery_frame, parse_control, register_frame

ALLOWED: tuple[type[BaseException], ...] = (MixnetError,)

_AUTHORITY = Ed25519PrivateKey.from_private_bytes(bytes(32))
_KEY = NodeKey(b"n" * 16, bytes(32))
_PROVIDER = NodeKey(b"p" * 16, bytes(range(32)))
_DIRECTORY = Directory(1, 60, 0, (
    _KEY.descriptor(ROLE_MIX, 1, "127.0.0.1:1", range(2)),
    _PROVIDER.descriptor(ROLE_PROVIDER, 0, "[::1]:2", range(1)),
)).sign(_AUTHORITY)

SEEDS: list[bytes] = [
    b"F" + split(b"hello world")[0].encode(),
    b"C" + register_frame(b"m" * 16)[:64],
    b"C" + delivery_frame(b"s" * 16, bytes(1680))[:64],
    b"D" + _DIRECTORY,
    b"B" + json.dumps(json.loads(_DIRECTORY)["directory"]).encode(),
    b"B" + b'{"version": 1, "layers": 1, "epoch_seconds": 1, "issued_at": "x", "nodes": []}',
    b"B" + b'{"version": 1, "layers": 99999999999, "epoch_seconds": 1, "issued_at": 0, '
           b'"nodes": [{"id": "00", "role": "mix", "layer": 1, "address": "h:1", "keys": 5}]}',
]


def target(data: bytes) -> None:
    if not data:
        return
    selector, body = data[:1], data[1:]
    if selector == b"F":
        fragment = Fragment.decode(body)
        assert Fragment.decode(fragment.encode()) == fragment
        if fragment.kind == 1:
            Reassembler(max_messages=2).add(fragment, 0.0)
    elif selector == b"C":
        frame = (CONTROL_PREFIX + body[len(CONTROL_PREFIX):]).ljust(PACKET_SIZE, b"\0")
        parse_control(frame[:PACKET_SIZE])
        parse_control(body)
    elif selector == b"D":
        Directory.verify(body, _AUTHORITY.public_key())
    else:
        # A signed body can still be nonsense: the parser behind the signature check.
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            return
        Directory.from_body(parsed)
        Directory.from_body({"version": 1, "layers": 1, "epoch_seconds": 1, "issued_at": 0,
                             "nodes": [{"id": body.hex()[:32], "role": "mix", "layer": 1,
                                        "address": body.decode("latin-1"), "keys": {}}]})
