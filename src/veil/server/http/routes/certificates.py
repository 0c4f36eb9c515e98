"""Sender certificates and the trust root clients pin."""

from __future__ import annotations

from aiohttp import web

from veil.server.encoding import b64encode
from veil.server.http.context import json_response
from veil.server.http.endpoint import Auth, Call, Route


async def sender_certificate(call: Call) -> web.Response:
    device, c = call.me, call.c
    cert = c.ca.issue(
        device.account_id, device.device_id, device.identity_key, c.clock_ms(),
        c.config.sender_certificate_ttl_s,
    )
    return json_response({
        "certificate": b64encode(cert.encoded),
        "server_certificate": b64encode(c.ca.server_certificate),
        "expires": cert.expires_ms,
        "key_statement": b64encode(c.ca.key_statement),
    })


async def trust_root(call: Call) -> web.Response:
    ca = call.c.ca
    return json_response({"public_key": b64encode(ca.trust_root),
                          "key_statement": b64encode(ca.key_statement)})


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/certificate", sender_certificate, "A short-lived sender certificate",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="certificate",
          audit="none", tag="certificates"),
    Route("GET", "/v1/certificate/trust_root", trust_root, "The trust root public key",
          auth=Auth.NONE, query=(), body=None, rate_limit="public", audit="none",
          tag="certificates"),
)

__all__ = [
    "ROUTES",
]
