"""Fast paths for the two hot WebSocket frames (``send`` and ``ack``).

The generic validator (:mod:`veil.server.validation`) is the definition; these
functions accept only frames that are plainly valid and return exactly what it would,
or ``None`` to hand the frame to the generic validator (which then raises the precise
error or, if the fast path was merely cautious, accepts it). A unit test checks that
both agree on valid and invalid frames alike.
"""

from __future__ import annotations

import binascii
import re
from typing import Any

from veil.server.http.schemas import MAX_ACK_IDS, MAX_REQ

_ACK_KEYS = frozenset({"type", "ids"})
_SEND_KEYS = frozenset({"type", "req", "to", "access_key", "messages"})
_SEND_REQUIRED = frozenset({"type", "req", "to", "messages"})
_ITEM_KEYS = {"device_id", "envelope"}
_HEX32 = re.compile(r"[0-9a-f]{32}")
_MAX_DEVICE = (1 << 31) - 1


def fast_ack(frame: dict[str, Any]) -> list[int] | None:
    if frame.keys() != _ACK_KEYS or frame["type"] != "ack":
        return None
    ids = frame["ids"]
    if type(ids) is not list or not 0 < len(ids) <= MAX_ACK_IDS:
        return None
    for i in ids:
        if type(i) is not int or not 0 < i <= MAX_REQ:
            return None
    return ids


def _b64(text: Any, max_len: int) -> bytes | None:
    if type(text) is not str or not 0 < len(text) <= max_len:
        return None
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def fast_send(
    frame: dict[str, Any], max_envelope_bytes: int, max_items: int
) -> dict[str, Any] | None:
    keys = frame.keys()
    if not keys <= _SEND_KEYS or not _SEND_REQUIRED <= keys or frame["type"] != "send":
        return None
    req, to, messages = frame["req"], frame["to"], frame["messages"]
    if type(req) is not int or not 0 <= req <= MAX_REQ:
        return None
    if type(to) is not str or len(to) != 32 or not _HEX32.fullmatch(to):
        return None
    out: dict[str, Any] = {"type": "send", "req": req, "to": to}
    if "access_key" in frame:
        key = _b64(frame["access_key"], 24)
        if key is None or len(key) != 16:
            return None
        out["access_key"] = key
    if type(messages) is not list or not 0 < len(messages) <= max_items:
        return None
    max_text = 4 * ((max_envelope_bytes + 2) // 3)
    items = []
    for m in messages:
        if type(m) is not dict or m.keys() != _ITEM_KEYS:
            return None
        device_id = m["device_id"]
        if type(device_id) is not int or not 0 < device_id <= _MAX_DEVICE:
            return None
        body = _b64(m["envelope"], max_text)
        if body is None or not 0 < len(body) <= max_envelope_bytes:
            return None
        items.append({"device_id": device_id, "envelope": body})
    out["messages"] = items
    return out

__all__ = [
    "fast_ack",
    "fast_send",
]
