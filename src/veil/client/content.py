"""What travels inside the encryption: the content of one message (1:1 or group).

A small JSON object, padded by the session layer before encryption:
``{"v": 1, "id": hex, "ts": ms, "kind": "text", "text": str, "pk": base64}``, where
``pk`` is the sender's profile key, so the recipient can derive the sender's access key
and answer with sealed sender afterwards (as Signal shares profile keys in messages).
A sync of a sent message to the sender's own other devices is ``"kind": "sent"`` with
``"to"``, the recipient account (docs/devices.md); any other kind from one of our own
devices with ``"to"`` is a sync of that kind in the conversation with ``to``. A group
message carries ``"sc"``, the sender's server-signed sender certificate
(``veil.core.sealed``), so members who never talked 1:1 see the sender's ``@username``
vouched for by the server, as a 1:1 recipient does (docs/groups.md), and ``"n"``, the
sending device's sequence number in that group (1, 2, 3, ...), so a receiver sees a
message the server dropped (a gap) or served out of order (docs/groups.md, "Missing
messages"). Content without ``"n"`` (older clients) is accepted; it is just not counted.

Conversation kinds (issue 12 §2, §3; docs/client.md, "Conversations"), each with its
fields checked strictly (a known kind with a wrong field is ``MalformedMessage``):

- ``text``: ``text``; optional ``re`` (the id of the message it replies to), ``att``
  (attachment pointers, ``veil.client.attachments.Pointer``), ``exp`` (the
  conversation's disappearing timer in seconds, so every device applies it);
- ``edit``: ``tg`` (the id of one's own earlier message) and the new ``text``;
- ``delete``: ``tg`` (deleted for everyone);
- ``reaction``: ``tg``, ``em`` (one emoji) or ``rm: true`` (taken back);
- ``receipt``: ``rc`` (``delivered`` or ``read``), ``ids`` (up to 100 message ids),
  and ``g``, the group id, when the messages were group messages (receipts go 1:1 to
  the author, never to the whole group);
- ``typing``: ``ty`` (true: started, false: stopped), ``g`` for a group;
- ``timer``: ``exp`` (seconds; 0 turns disappearing messages off).

A kind this version does not know (from a newer client) decodes with its envelope
fields only and is kept as an "unsupported message": never an error, never dropped.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

from veil.client.attachments import Pointer
from veil.core.errors import MalformedMessage

MAX_TEXT = 64 * 1024
MAX_TIMESTAMP = 1 << 53          # milliseconds; keeps every clock and JSON reader sane
MAX_CERTIFICATE = 2048
MAX_NUMBER = 1 << 53             # a group sequence number: exact in every JSON reader
MAX_ATTACHMENTS = 10
MAX_RECEIPT_IDS = 100
MAX_EMOJI_BYTES = 32
TIMER_MIN_S = 30
TIMER_MAX_S = 4 * 7 * 24 * 3600  # four weeks
CONVERSATION_KINDS = ("text", "edit", "delete", "reaction", "receipt", "typing", "timer")
RECEIPT_TYPES = ("delivered", "read")


_HEX = frozenset("0123456789abcdef")


def _message_id(value: object, what: str) -> str:
    """A message id: 32 lower-case hex characters (16 random bytes). Ids become store
    keys, so nothing else (a lone surrogate, say) may reach the store."""
    if not (isinstance(value, str) and len(value) == 32 and _HEX.issuperset(value)):
        raise ValueError(f"{what} is not a message id")
    return value


def _group_id(value: object) -> str | None:
    if value is None:
        return None
    if not (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value)):
        raise ValueError("the group of a receipt is not a group id")
    return value


def check_timer(seconds: object) -> int:
    """0 (off) or 30 s … 4 weeks, else ``ValueError``."""
    if type(seconds) is not int or not (seconds == 0 or TIMER_MIN_S <= seconds <= TIMER_MAX_S):
        raise ValueError(f"a disappearing timer is 0 (off) or {TIMER_MIN_S} s to four weeks")
    return seconds


def check_emoji(text: object) -> str:
    if not isinstance(text, str) or not text or len(text.encode()) > MAX_EMOJI_BYTES \
            or any(c.isspace() or ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in text) \
            or text.isascii():
        raise ValueError("a reaction is one emoji")
    return text


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
    # Conversation kinds (module docstring).
    reply_to: str | None = None                    # "re"
    attachments: tuple[dict[str, object], ...] = ()  # "att": pointers, checked on use
    expire_s: int | None = None                    # "exp"
    target: str | None = None                      # "tg"
    emoji: str | None = None                       # "em" (None with kind reaction: "rm")
    receipt: str | None = None                     # "rc"
    ids: tuple[str, ...] = ()                      # "ids"
    typing: bool | None = None                     # "ty"
    group: str | None = None                       # "g"

    @property
    def known(self) -> bool:
        """A kind this version understands (else shown as an unsupported message)."""
        return self.kind in CONVERSATION_KINDS or self.kind in ("sent", "group_welcome")

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
        optional: dict[str, object] = {
            "re": self.reply_to, "att": list(self.attachments) or None, "exp": self.expire_s,
            "tg": self.target, "em": self.emoji, "rc": self.receipt,
            "ids": list(self.ids) or None, "ty": self.typing, "g": self.group}
        if self.kind == "reaction" and self.emoji is None:
            optional["rm"] = True
        body.update((k, v) for k, v in optional.items() if v is not None)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def decode(cls, data: bytes) -> Content:
        try:
            body = json.loads(data)
            if not isinstance(body, dict) or body.get("v") != 1:
                raise ValueError("unknown content version")
            msg_id, ts, kind, text = body["id"], body["ts"], body["kind"], body["text"]
            _message_id(msg_id, "the message id")
            if not (isinstance(msg_id, str) and type(ts) is int
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
            base = cls(msg_id, ts, text, profile_key, kind, to, certificate, number)
            return _with_kind_fields(base, body)
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise MalformedMessage(f"message content is malformed: {type(exc).__name__}")\
                from None

def _with_kind_fields(base: Content, body: dict[str, object]) -> Content:
    """The fields of ``base.kind``, strictly; an unknown kind keeps none of them."""
    kind = base.kind
    fields: dict[str, Any] = {}
    if kind in ("text", "sent"):
        if body.get("re") is not None:
            fields["reply_to"] = _message_id(body["re"], "the replied-to message")
        att = body.get("att")
        if att is not None:
            if not isinstance(att, list) or not 0 < len(att) <= MAX_ATTACHMENTS:
                raise ValueError("attachments are a list of up to 10 pointers")
            fields["attachments"] = tuple(Pointer.from_json(a).to_json() for a in att)
        if body.get("exp") is not None:
            fields["expire_s"] = check_timer(body["exp"])
    elif kind in ("edit", "delete", "reaction"):
        fields["target"] = _message_id(body.get("tg"), "the target")
        if kind == "reaction":
            if body.get("rm") is True:
                fields["emoji"] = None
            else:
                fields["emoji"] = check_emoji(body.get("em"))
        elif kind == "delete" and base.text:
            raise ValueError("a deletion carries no text")
    elif kind == "receipt":
        receipt, ids = body.get("rc"), body.get("ids")
        if receipt not in RECEIPT_TYPES:
            raise ValueError("a receipt is delivered or read")
        if not isinstance(ids, list) or not 0 < len(ids) <= MAX_RECEIPT_IDS:
            raise ValueError("a receipt names 1 to 100 messages")
        fields.update(receipt=receipt, ids=tuple(_message_id(i, "a receipt's message")
                                                  for i in ids),
                      group=_group_id(body.get("g")))
    elif kind == "typing":
        if not isinstance(body.get("ty"), bool):
            raise ValueError("typing is true or false")
        fields.update(typing=body["ty"], group=_group_id(body.get("g")))
    elif kind == "timer":
        fields["expire_s"] = check_timer(body.get("exp"))
    return dataclasses.replace(base, **fields) if fields else base


__all__ = [
    "CONVERSATION_KINDS",
    "Content",
    "check_emoji",
    "check_timer",
]
