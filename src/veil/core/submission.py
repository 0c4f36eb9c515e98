"""A sealed envelope submission as one self-contained message (for relays such as the
mixnet provider, which forward bytes and know nothing of HTTP sessions).

Binary, version 1::

    u8 version | 16 recipient account | optional(16 access key) | u32 count
    | count x (u32 device id | var envelope)

It carries what ``PUT /v1/messages/{account}`` carries with a ``Veil-Access-Key``
header, and nothing that names the sender or where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.core.encoding import Reader, Writer
from veil.core.errors import MalformedMessage, UnsupportedVersion

VERSION = 1
MAX_DEVICES = 64
MAX_ENVELOPE = 256 * 1024


@dataclass(frozen=True, slots=True)
class Submission:
    recipient: bytes                       # 16-byte account id
    access_key: bytes | None               # the recipient's, or None (unrestricted)
    envelopes: tuple[tuple[int, bytes], ...]

    def encode(self) -> bytes:
        if len(self.recipient) != 16:
            raise MalformedMessage("recipient account id must be 16 bytes")
        w = Writer().u8(VERSION).raw(self.recipient).optional(self.access_key)
        w.u32(len(self.envelopes))
        for device, envelope in self.envelopes:
            w.u32(device).var(envelope)
        return w.finish()

    @classmethod
    def decode(cls, data: bytes) -> Submission:
        r = Reader(data, "submission")
        if r.u8() != VERSION:
            raise UnsupportedVersion("submission: unknown version")
        recipient = r.raw(16)
        access_key = r.optional(16)
        if access_key is not None and len(access_key) != 16:
            raise MalformedMessage("submission: access key must be 16 bytes")
        count = r.count(MAX_DEVICES)
        if count == 0:
            raise MalformedMessage("submission: no envelopes")
        envelopes = tuple((r.u32(), r.var(MAX_ENVELOPE)) for _ in range(count))
        r.done()
        return cls(recipient, access_key, envelopes)

__all__ = [
    "Submission",
]
