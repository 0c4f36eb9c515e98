"""Typed records the client keeps in its encrypted store (JSON inside the encryption)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from veil.client.api import b64, unb64
from veil.client.errors import CorruptStore
from veil.core.keys import IdentityPublicKey
from veil.core.sealed import derive_access_key


def _load(kind: str, data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError:
        raise CorruptStore(f"stored {kind} record is not readable") from None
    if not isinstance(body, dict):
        raise CorruptStore(f"stored {kind} record is not readable")
    return body


@dataclass
class SelfRecord:
    """Who this device is and where it is registered."""

    server: str
    account: str              # 32 hex chars
    device_id: int
    token: bytes
    username: str | None
    profile_key: bytes
    registration_id: int
    trust_root: bytes
    # The lowest server key id the root still vouches for (veil.client.trust); stores
    # written before revocation existed have none and start at 0.
    min_server_key_id: int = 0
    # The SHA-256 of the server's TLS certificate, hex, pinned with the URL (``veil init
    # --pin``, veil.client.pinning); "" for none (CA verification), as in older stores.
    tls_pin: str = ""

    def encode(self) -> bytes:
        body = asdict(self)
        for name in ("token", "profile_key", "trust_root"):
            body[name] = b64(body[name])
        return json.dumps(body).encode()

    @classmethod
    def decode(cls, data: bytes) -> SelfRecord:
        body = _load("identity", data)
        try:
            for name in ("token", "profile_key", "trust_root"):
                body[name] = unb64(body[name])
            return cls(**body)
        except (KeyError, TypeError, ValueError):
            raise CorruptStore("stored identity record is damaged") from None


_CONTACT_BYTES = ("identity", "profile_key", "link_access_key", "pinned_identity")


@dataclass
class Contact:
    """Someone we talk to: identity as first seen (or verified), devices, profile key."""

    account: str
    username: str | None = None
    identity: bytes | None = None           # IdentityPublicKey bytes, shared by its devices
    verified: bool = False
    identity_changed: bool = False          # the key changed after it was verified
    profile_key: bytes | None = None
    devices: list[int] = field(default_factory=list)
    # From a contact link (veil.client.contact_link): the access key it carried, used
    # until a message brings the profile key, and the identity fingerprint that the
    # server's bundles must match.
    link_access_key: bytes | None = None
    pinned_identity: bytes | None = None
    # Devices whose approval by the contact's identity was checked (docs/devices.md),
    # or that proved the identity in a session; a new one is a DeviceLinked event.
    linked_devices: list[int] = field(default_factory=list)

    def identity_key(self) -> IdentityPublicKey | None:
        return None if self.identity is None else IdentityPublicKey.from_bytes(self.identity)

    def access_key(self) -> bytes | None:
        """The key that lets us send to this contact sealed, if we have one."""
        if self.profile_key is not None:
            return derive_access_key(self.profile_key)
        return self.link_access_key

    def encode(self) -> bytes:
        body = asdict(self)
        for name in _CONTACT_BYTES:
            body[name] = None if body[name] is None else b64(body[name])
        return json.dumps(body).encode()

    @classmethod
    def decode(cls, data: bytes) -> Contact:
        body = _load("contact", data)
        try:
            for name in _CONTACT_BYTES:
                if name not in body:
                    continue              # written before the field existed
                body[name] = None if body[name] is None else unb64(body[name])
            return cls(**body)
        except (KeyError, TypeError, ValueError):
            raise CorruptStore("stored contact record is damaged") from None


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a conversation, as the store keeps it."""

    id: str
    direction: str            # "in" or "out"
    peer: str                 # the other account
    text: str
    timestamp: int
    device: int
    # A group message from a leaf whose identity is not its account's (docs/groups.md).
    identity_changed: bool = False
    # Conversations (issue 12; veil.client.conversations). "text"; "unsupported" (a kind
    # from a newer client, kept); "timer" (a notice: someone set the timer).
    kind: str = "text"
    reply_to: str | None = None
    # Attachment pointers (veil.client.attachments.Pointer.to_json), each with "path"
    # once downloaded here.
    attachments: list[dict[str, Any]] = field(default_factory=list)
    edits: list[list[Any]] = field(default_factory=list)     # earlier [text, ts], oldest first
    reactions: dict[str, str] = field(default_factory=dict)  # account → emoji
    deleted: bool = False          # deleted for everyone: text and attachments dropped
    expires_at: int | None = None  # ms, this device's clock: then deleted everywhere here
    timer_s: int | None = None     # kind "timer": the timer set (0: off)
    # An outgoing line: account → {"delivered": ms, "read": ms}, from their receipts.
    receipts: dict[str, dict[str, int]] = field(default_factory=dict)
    read_at: int | None = None     # an incoming line: when it was read on this account

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> HistoryEntry:
        try:
            return cls(**_load("history", data))
        except TypeError:
            raise CorruptStore("stored history entry is damaged") from None

__all__ = [
    "Contact",
    "HistoryEntry",
    "SelfRecord",
]
