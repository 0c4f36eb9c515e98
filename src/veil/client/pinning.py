"""The server's TLS certificate, pinned (issue 13 §1, first bullet).

``veil init --server https://… --pin SHA256`` (``Client.register(pin=...)``) keeps the
SHA-256 fingerprint of the server's DER certificate with the account's server URL
(``SelfRecord.tls_pin``). Every connection the client opens to that server — API calls
and the WebSocket (:mod:`veil.client.transport`, both of its pools, so sealed requests
too), blob uploads and downloads (:mod:`veil.client.blob_http`) — then accepts only
that certificate: aiohttp's :class:`~aiohttp.Fingerprint` compares it after the
handshake, instead of asking a certificate authority (a self-signed server has none).
Without a pin, https is verified against the system's CA store as usual.

A certificate that is not the pinned one is :class:`CertificateMismatch`; one the CA
store does not vouch for is :class:`CertificateUntrusted`. Both are kinds of
:class:`ServerUnreachable`: nothing was sent, and whatever waits in the outbox stays
there (no retry ever goes out over a connection that failed the check).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from veil.client.errors import (
    CertificateMismatch,
    CertificateUntrusted,
    ClientError,
    ServerUnreachable,
)

HEX = frozenset("0123456789abcdef")


def parse_pin(text: str) -> str:
    """A SHA-256 certificate fingerprint as 64 lowercase hex digits; colons (``AB:CD:…``,
    as ``openssl x509 -fingerprint -sha256`` prints it) and upper case are accepted."""
    value = text.strip().replace(":", "").lower()
    if len(value) != 64 or not set(value) <= HEX:
        raise ClientError(f"{text!r} is not a SHA-256 certificate fingerprint "
                          "(64 hex digits, colons allowed)")
    return value


def pin_for(server: str, pin: str | None) -> str:
    """The pin to keep with ``server`` ("" for none); a pin needs an https:// server."""
    if not pin:
        return ""
    if urlsplit(server).scheme != "https":
        raise ClientError(f"a certificate pin needs an https:// server URL, not {server!r}")
    return parse_pin(pin)


def tls_check(pin: str | None) -> aiohttp.Fingerprint | bool:
    """The ``ssl=`` argument of every request: the pinned certificate, else CA checks."""
    return aiohttp.Fingerprint(bytes.fromhex(pin)) if pin else True


def certificate_error(exc: BaseException, origin: str) -> ServerUnreachable | None:
    """The typed error for a refused certificate, or None for any other failure."""
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return CertificateMismatch(
            f"the TLS certificate of {origin} ({exc.got.hex()}) is not the pinned one "
            f"({exc.expected.hex()}); refusing to talk to it (wrong server, or someone "
            "in between)")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", None) or \
            type(exc.certificate_error).__name__
        return CertificateUntrusted(
            f"the TLS certificate of {origin} is not trusted ({reason}); for a "
            "self-signed server, pin its fingerprint (veil init --pin)")
    return None


__all__ = [
    "certificate_error",
    "parse_pin",
    "pin_for",
    "tls_check",
]
