"""The protocol layer's error tree: what decoding a request, answer or frame can raise.

Both sides map these to their own trees: the server to ``invalid_json`` (400) and
``validation_failed`` (422), the client to a ``bad_response`` rejection. Messages name
the field path (``body.messages[0].envelope``) and never echo more than a short prefix
of what the peer sent.
"""

from __future__ import annotations

from veil.core.errors import VeilError

__all__ = ["InvalidFields", "MalformedJson", "ProtocolError"]


class ProtocolError(VeilError):
    """A document that does not decode into the protocol type it was read as."""

    code = "protocol_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedJson(ProtocolError):
    """Not UTF-8 JSON at all (NaN, a document nested too deep, truncated, ...)."""

    code = "malformed_json"


class InvalidFields(ProtocolError):
    """JSON, but not of the expected shape: a wrong type, an unknown or missing field, a
    value out of bounds. ``path`` is where (``body.messages[0]``)."""

    code = "invalid_fields"

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path
