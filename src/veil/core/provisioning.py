"""Linking a new device: the link code and the provisioning message (issue 11 §2).

The new device makes an ephemeral X25519 key pair E, opens a provisioning channel on
the server (which stores E and answers a random 10-byte channel id) and draws a
16-byte **link secret** s that never goes to the server. Its **link code** is::

    check = SHA-256("veil link check v2" || channel id || s || E)[:4]
    code  = base32(channel id || s || check)     (48 characters, 12 groups of 4)

and the same text (``veil-link:`` + code) is the QR payload. Only someone who saw the
code (the person, and the approving device they typed it into) knows s.

The approving device encrypts the provisioning message to E with a fresh ephemeral key
of its own (:func:`seal`), and s is in the key schedule::

    shared = X25519(sender ephemeral, recipient ephemeral)
    key    = HKDF-SHA256(shared, salt = s, info = label || channel id || recipient pub
                         || sender pub)
    wire   = version (2) || sender pub (32) || AES-256-GCM(key, nonce 0, plaintext,
             ad = label || version || channel id || recipient pub || sender pub)

Why s. E is public (the server stores it), so without s anyone, the server first, could
seal a payload of its own to E (its identity, its approval, its contacts) and the new
device would take it. With s in the key, a payload opens only if its sender saw the
code: a successful AEAD open is the approving device's proof that it did, and a payload
from anyone else fails (:class:`~veil.core.errors.DecryptionFailed`). It also keeps the
message secret from a server that swapped E for a key of its own: it has the DH secret,
not s (128 bits, not guessable in the channel's minutes or after).

The 32-bit ``check`` is no longer what security rests on: it lets the approving device
refuse before it sends anything when the code is mistyped or the key it is handed is
not the new device's (:meth:`LinkCode.check`); a server without s cannot compute it
for a key of its own. Nothing here draws randomness: callers pass the secret
(``os.urandom(SECRET_LEN)``) and the key pairs (``primitives.x25519_generate``).
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from veil.core import primitives as p
from veil.core.errors import CoreError, DecryptionFailed, MalformedMessage, UnsupportedVersion

CHANNEL_ID_LEN = 10
SECRET_LEN = 16              # 128 bits, never sent to the server
CHECK_LEN = 4                # 32 bits: typos and swapped keys, caught before sending
QR_PREFIX = "veil-link:"
_CHECK_LABEL = b"veil link check v2"
_LABEL = b"veil provisioning v2"
_VERSION = 2
_NONCE = bytes(12)
_CODE_BYTES = CHANNEL_ID_LEN + SECRET_LEN + CHECK_LEN
_CODE_CHARS = _CODE_BYTES * 8 // 5      # 48: base32 of 30 bytes, no padding
_GROUP = 4


class LinkCodeMismatch(CoreError):
    """The key the channel holds does not match the link code: a mistyped code, or
    someone between the two devices substituted it."""

    code = "link_code_mismatch"


class BadLinkCode(MalformedMessage):
    """Text that is not a link code."""

    code = "bad_link_code"


def key_check(channel_id: bytes, secret: bytes, public_key: bytes) -> bytes:
    return p.sha256(_CHECK_LABEL + channel_id + secret + public_key)[:CHECK_LEN]


@dataclass(frozen=True, slots=True)
class LinkCode:
    channel_id: bytes
    secret: bytes
    check_value: bytes

    @classmethod
    def create(cls, channel_id: bytes, secret: bytes, public_key: bytes) -> LinkCode:
        if len(channel_id) != CHANNEL_ID_LEN or len(secret) != SECRET_LEN:
            raise BadLinkCode("link code: a 10-byte channel id and a 16-byte secret")
        return cls(channel_id, secret, key_check(channel_id, secret, public_key))

    def text(self) -> str:
        """``ABCD-EFGH-…``: 12 groups of 4 base32 letters and digits."""
        raw = base64.b32encode(self.channel_id + self.secret + self.check_value).decode()
        return "-".join(raw[i:i + _GROUP] for i in range(0, len(raw), _GROUP))

    def qr_payload(self) -> str:
        return QR_PREFIX + self.text()

    @classmethod
    def parse(cls, text: str) -> LinkCode:
        """The code as printed or scanned: case, spaces and dashes do not matter."""
        body = text.strip()
        if body.lower().startswith(QR_PREFIX):
            body = body[len(QR_PREFIX):]
        body = "".join(body.split()).replace("-", "").upper()
        if len(body) != _CODE_CHARS:
            raise BadLinkCode(f"a link code has {_CODE_CHARS} letters and digits "
                              f"({_CODE_CHARS // _GROUP} groups of {_GROUP})")
        try:
            raw = base64.b32decode(body)
        except ValueError:
            raise BadLinkCode("a link code uses the letters A-Z and digits 2-7 only") \
                from None
        secret_end = CHANNEL_ID_LEN + SECRET_LEN
        return cls(raw[:CHANNEL_ID_LEN], raw[CHANNEL_ID_LEN:secret_end], raw[secret_end:])

    def check(self, public_key: bytes) -> None:
        """Raise :class:`LinkCodeMismatch` unless ``public_key`` is the code's key."""
        expected = key_check(self.channel_id, self.secret, public_key)
        if not hmac.compare_digest(expected, self.check_value):
            raise LinkCodeMismatch(
                "the new device's key does not match the link code: check the code, or "
                "someone between the devices (the server?) substituted the key")


def _key_and_ad(shared: bytes, code: LinkCode, recipient: bytes,
                sender: bytes) -> tuple[bytes, bytes]:
    bound = code.channel_id + recipient + sender
    key = p.hkdf(shared, code.secret, _LABEL + bound, 32)
    return key, _LABEL + bytes((_VERSION,)) + bound


def seal(plaintext: bytes, code: LinkCode, recipient_public: bytes,
         sender_ephemeral: x25519.X25519PrivateKey) -> bytes:
    """Encrypt ``plaintext`` to the new device's ephemeral key under the code's secret;
    ``sender_ephemeral`` must be fresh and used once."""
    recipient = p.x25519_public(recipient_public)
    sender_pub = p.x25519_raw(sender_ephemeral.public_key())
    key, ad = _key_and_ad(p.dh(sender_ephemeral, recipient), code, recipient_public,
                          sender_pub)
    return bytes((_VERSION,)) + sender_pub + AESGCM(key).encrypt(_NONCE, plaintext, ad)


def open_sealed(data: bytes, code: LinkCode, recipient: x25519.X25519PrivateKey) -> bytes:
    """Decrypt a provisioning message with the new device's ephemeral private key and
    its code; :class:`DecryptionFailed` unless the sender knew the code's secret."""
    if len(data) < 1 + 32 + p.AEAD_TAG_LEN:
        raise MalformedMessage("provisioning message: truncated")
    if data[0] != _VERSION:
        raise UnsupportedVersion("provisioning message: unknown version")
    sender_pub = data[1:33]
    recipient_pub = p.x25519_raw(recipient.public_key())
    key, ad = _key_and_ad(p.dh(recipient, p.x25519_public(sender_pub)), code,
                          recipient_pub, sender_pub)
    try:
        return AESGCM(key).decrypt(_NONCE, data[33:], ad)
    except InvalidTag:
        raise DecryptionFailed("provisioning message: authentication failed (not sealed "
                               "by a device that saw the link code)") from None

__all__ = [
    "CHANNEL_ID_LEN",
    "CHECK_LEN",
    "QR_PREFIX",
    "SECRET_LEN",
    "BadLinkCode",
    "LinkCode",
    "LinkCodeMismatch",
    "key_check",
    "open_sealed",
    "seal",
]
