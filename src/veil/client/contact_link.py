"""Contact links: what a person hands out so that even the first message to them is sealed.

A link (``veil:`` and base64url, no padding, so it survives a shell, a chat and a QR
code) carries

- the account id (16 bytes): no username lookup, which the server would see;
- the account's sealed-sender access key (16 bytes, ``veil.core.sealed``): the holder
  claims prekey bundles and submits envelopes without credentials, so the server does
  not learn who first contacted whom (issue 10 §4, "first contact is sealed");
- a 16-byte fingerprint of the identity key: the bundles the server hands out must
  belong to that identity, or the client refuses them (a server that substitutes keys
  at first contact is caught without comparing safety numbers);
- the username, if any, as a label (the server-signed sender certificate confirms it
  once a message arrives).

Anyone holding the link can send sealed messages to the account, as with Signal's
profile key; a new profile key (a later issue) revokes old links. Format version 1::

    version (1) || account (16) || access key (16) || fingerprint (16) || username (0-32)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from veil.client.errors import UnknownUser
from veil.core.sealed import ACCESS_KEY_LEN, ACCOUNT_ID_LEN

SCHEME = "veil:"
VERSION = 1
FINGERPRINT_LEN = 16
_FINGERPRINT_LABEL = b"veil contact link identity v1"
_USERNAME = re.compile(r"[a-z0-9_]{3,32}")
_FIXED = 1 + ACCOUNT_ID_LEN + ACCESS_KEY_LEN + FINGERPRINT_LEN


@dataclass(frozen=True)
class ContactLink:
    account: str                 # 32 hex characters
    access_key: bytes
    fingerprint: bytes           # of the identity key, see identity_fingerprint
    username: str | None

    def encode(self) -> str:
        raw = (bytes((VERSION,)) + bytes.fromhex(self.account) + self.access_key
               + self.fingerprint + (self.username or "").encode("ascii"))
        return SCHEME + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def matches(self, identity: bytes) -> bool:
        """Whether ``identity`` (IdentityPublicKey bytes) is the one this link names."""
        return hmac.compare_digest(identity_fingerprint(identity), self.fingerprint)


def identity_fingerprint(identity: bytes) -> bytes:
    return hashlib.sha256(_FINGERPRINT_LABEL + identity).digest()[:FINGERPRINT_LEN]


def is_link(text: str) -> bool:
    return text.strip().lower().startswith(SCHEME)


def parse(text: str) -> ContactLink:
    """A link as a person pasted it; anything else is :class:`UnknownUser`, one line."""
    body = text.strip()
    if not body.lower().startswith(SCHEME):
        raise UnknownUser("a contact link starts with 'veil:'")
    data = body[len(SCHEME):]
    try:
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        raise UnknownUser("this contact link is damaged (not base64url); ask for it "
                          "again") from None
    if len(raw) < _FIXED or raw[0] != VERSION:
        raise UnknownUser("this contact link is damaged or from a newer Veil; ask for it "
                          "again")
    account = raw[1:1 + ACCOUNT_ID_LEN].hex()
    access = raw[1 + ACCOUNT_ID_LEN:1 + ACCOUNT_ID_LEN + ACCESS_KEY_LEN]
    fingerprint = raw[_FIXED - FINGERPRINT_LEN:_FIXED]
    name_bytes = raw[_FIXED:]
    username = None
    if name_bytes:
        name = name_bytes.decode("ascii", errors="replace")
        if not _USERNAME.fullmatch(name):
            raise UnknownUser("this contact link is damaged (its username is not valid); "
                              "ask for it again")
        username = name
    return ContactLink(account, access, fingerprint, username)

__all__ = [
    "SCHEME",
    "ContactLink",
    "identity_fingerprint",
    "is_link",
    "parse",
]
