"""Field types of the wire formats: bounded integers, strings and base64 byte strings.

Each is an ``Annotated`` type that msgspec both enforces while decoding and states in
the JSON Schema it generates, so the OpenAPI document (docs/server.md, "API") says
exactly what the server accepts. Byte strings travel as padded standard base64
(RFC 4648 §4); their bounds are on the decoded bytes, and the schema carries the
equivalent bounds and a pattern on the encoded text.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

__all__ = [
    "ACCOUNT_HEX_PATTERN",
    "MAX_DEVICE_ID",
    "MAX_JSON_INT",
    "USERNAME_PATTERN",
    "AccountHex",
    "DeviceId",
    "KeyId",
    "MessageId",
    "Millis",
    "Username",
    "b64",
    "base64_pattern",
]

MAX_JSON_INT = (1 << 53) - 1  # integers every JSON implementation reads exactly
MAX_DEVICE_ID = (1 << 31) - 1
ACCOUNT_HEX_PATTERN = "^[0-9a-f]{32}$"
USERNAME_PATTERN = "^[A-Za-z0-9_]{3,32}$"

AccountHex = Annotated[str, Meta(pattern=ACCOUNT_HEX_PATTERN, max_length=32,
                                 description="account id, 32 lower-case hex digits")]
Username = Annotated[str, Meta(pattern=USERNAME_PATTERN, max_length=32,
                               description="username, case-insensitive")]
DeviceId = Annotated[int, Meta(ge=1, le=MAX_DEVICE_ID)]
KeyId = Annotated[int, Meta(ge=0, le=MAX_DEVICE_ID,
                            description="client-chosen id, unique per device and kind")]
MessageId = Annotated[int, Meta(ge=1, le=MAX_JSON_INT)]
Millis = Annotated[int, Meta(ge=0, le=MAX_JSON_INT, description="milliseconds since 1970")]


_B64 = "[A-Za-z0-9+/]"
# The last group of an encoding of 3g + 1 and 3g + 2 bytes.
_TAILS = ("", f"{_B64}{{2}}==", f"{_B64}{{3}}=")


def _quantifier(low: int, high: int) -> str:
    return f"{{{low}}}" if low == high else f"{{{low},{high}}}"


def base64_pattern(min_bytes: int, max_bytes: int) -> str:
    """A JSON Schema pattern (ECMA-262, anchored) matching exactly the padded standard
    base64 encodings of ``min_bytes`` to ``max_bytes`` bytes."""
    options = []
    for rest, tail in enumerate(_TAILS):
        # 3g + rest bytes: g full groups of four characters, then the tail.
        low = max(0, -(-(min_bytes - rest) // 3))
        high = (max_bytes - rest) // 3
        if high >= low and 3 * high + rest >= min_bytes:
            groups = "" if high == 0 else f"(?:{_B64}{{4}}){_quantifier(low, high)}"
            if groups or tail:
                options.append(groups + tail)
    if min_bytes == 0:
        options.append("")
    return "^(?:" + "|".join(dict.fromkeys(options)) + ")$"


def b64(min_bytes: int, max_bytes: int, description: str = "") -> Meta:
    """The bounds of ``Annotated[bytes, b64(low, high)]``: bytes of ``min_bytes`` to
    ``max_bytes``, as base64 text on the wire.

    The pattern is only for the document (msgspec checks the decoded length and the
    encoding itself, faster than a regular expression would): a generator of test
    cases that follows the document then produces strings the server accepts.
    """
    return Meta(
        min_length=min_bytes, max_length=max_bytes, description=description or None,
        extra_json_schema={"pattern": base64_pattern(min_bytes, max_bytes),
                           "x-bytes": [min_bytes, max_bytes]},
    )
