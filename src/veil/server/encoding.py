"""Text forms of identifiers and bytes on the wire, and the log-safe form of identifiers.

Account ids are 16 random bytes written as 32 lowercase hex characters; device ids are
small positive integers; binary fields are standard base64 with padding. Logs never
carry a full identifier: :func:`log_id` gives a short keyed-less hash prefix, enough to
correlate lines of one incident and useless to enumerate accounts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from veil.server.errors import BadRequest, ValidationFailed

ACCOUNT_ID_BYTES = 16
MAX_DEVICE_ID = 1 << 31
_HEX32 = re.compile(r"[0-9a-f]{32}")
USERNAME_RE = re.compile(r"[a-z0-9_]{3,32}")


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str = "value") -> bytes:
    """Strict standard base64 (padding required, no stray characters)."""
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise ValidationFailed(f"{what} is not valid base64") from exc


def parse_account_id(text: str) -> bytes:
    """Parse a path or body account id; only the canonical lowercase form is accepted."""
    if not _HEX32.fullmatch(text):
        raise BadRequest("account id must be 32 lowercase hex characters")
    return bytes.fromhex(text)


def parse_device_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise BadRequest("device id must be a positive integer")
    value = int(text)
    if not 1 <= value < MAX_DEVICE_ID:
        raise BadRequest("device id must be a positive integer")
    return value


def normalise_username(text: str) -> str:
    """Usernames are case-insensitive: stored and compared in lowercase."""
    lowered = text.lower()
    # ASCII only before lowering: "\u212a".lower() is "k", a homoglyph route to a name.
    if not text.isascii() or not USERNAME_RE.fullmatch(lowered):
        raise ValidationFailed("username must be 3-32 characters of a-z, 0-9 and _")
    return lowered


def log_id(value: bytes | str) -> str:
    """A short hash prefix for logs: correlates lines without naming the account."""
    raw = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(b"veil log id\x00" + raw).hexdigest()[:8]

__all__ = [
    "ACCOUNT_ID_BYTES",
    "b64decode",
    "b64encode",
    "log_id",
    "normalise_username",
    "parse_account_id",
    "parse_device_id",
]
