"""What travels inside the encryption: the content of one 1:1 message.

A small JSON object, padded by the session layer before encryption:
``{"v": 1, "id": hex, "ts": ms, "kind": "text", "text": str, "pk": base64}``, where
``pk`` is the sender's profile key, so the recipient can derive the sender's access key
and answer with sealed sender afterwards (as Signal shares profile keys in messages).
A sync of a sent message to the sender's own other devices is ``"kind": "sent"`` with
``"to"``, the recipient account (docs/devices.md). A group message carries ``"sc"``,
the sender's server-signed sender certificate (``veil.core.sealed``), so members who
never talked 1:1 see the sender's ``@username`` vouched for by the server, as a 1:1
recipient does (docs/groups.md), and ``"n"``, the sending device's sequence number in
that group (1, 2, 3, ...), so a receiver sees a message the server dropped (a gap) or
served out of order (docs/groups.md, "Missing messages"). Content without ``"n"`` (older
clients) is accepted; it is just not counted.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass

from veil.core.errors import MalformedMessage

MAX_TEXT = 64 * 1024
MAX_TIMESTAMP = 1 << 53          # milliseconds; keeps every clock and JSON reader sane
MAX_CERTIFICATE = 2048
MAX_NUMBER = 1 << 53             # a group sequence number: exact in every JSON reader


@dataclass(frozen=True)
class Content:
    id: str
    timestamp: int
    text: str
    profile_key: bytes | None = None
    kind: str = "text"
    # kind "sent" (a sync to this account's other devices): the recipient account.
    to: str | None = None
    # A group message: the sender certificate (bytes of veil.core.sealed's).
    certificate: bytes | None = None
    # A group message: the sending device's sequence number in the group (from 1).
    number: int | None = None

    @classmethod
    def text_message(cls, text: str, now_ms: int, profile_key: bytes) -> Content:
        if len(text.encode()) > MAX_TEXT:
            raise MalformedMessage(f"message text is longer than {MAX_TEXT} bytes")
        return cls(os.urandom(16).hex(), now_ms, text, profile_key)

    def encode(self) -> bytes:
        body: dict[str, object] = {"v": 1, "id": self.id, "ts": self.timestamp,
                                   "kind": self.kind, "text": self.text}
        if self.profile_key is not None:
            body["pk"] = base64.b64encode(self.profile_key).decode()
        if self.to is not None:
            body["to"] = self.to
        if self.certificate is not None:
            body["sc"] = base64.b64encode(self.certificate).decode()
        if self.number is not None:
            body["n"] = self.number
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Content:
        try:
            body = json.loads(data)
            if not isinstance(body, dict) or body.get("v") != 1:
                raise ValueError("unknown content version")
            msg_id, ts, kind, text = body["id"], body["ts"], body["kind"], body["text"]
            if not (isinstance(msg_id, str) and len(msg_id) == 32 and type(ts) is int
                    and 0 <= ts < MAX_TIMESTAMP and isinstance(kind, str)
                    and isinstance(text, str) and len(text.encode()) <= MAX_TEXT):
                raise ValueError("content fields have wrong types or ranges")
            pk = body.get("pk")
            profile_key = base64.b64decode(pk, validate=True) if isinstance(pk, str) else None
            if profile_key is not None and len(profile_key) != 32:
                raise ValueError("profile key has the wrong size")
            to = body.get("to")
            if to is not None and not (isinstance(to, str) and len(to) == 32
                                       and all(c in "0123456789abcdef" for c in to)):
                raise ValueError("the recipient of a sync is not an account id")
            sc = body.get("sc")
            certificate = base64.b64decode(sc, validate=True) if isinstance(sc, str) else None
            if certificate is not None and len(certificate) > MAX_CERTIFICATE:
                raise ValueError("the sender certificate is too long")
            number = body.get("n")
            if number is not None and not (type(number) is int
                                           and 0 < number < MAX_NUMBER):
                raise ValueError("the sequence number is not a positive integer")
            return cls(msg_id, ts, text, profile_key, kind, to, certificate, number)
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise MalformedMessage(f"message content is malformed: {type(exc).__name__}")\
                from None

__all__ = [
    "Content",
]
