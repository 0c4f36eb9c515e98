"""Sender certificates and the trust root clients pin."""

from __future__ import annotations

from aiohttp import web

from veil.protocol import responses as rs
from veil.server.http.context import json_response
from veil.server.http.endpoint import Auth, Call, Route


async def sender_certificate(call: Call) -> web.Response:
    device, c = call.me, call.c
    account = await c.accounts.account(device.account_id)
    cert = c.ca.issue(
        device.account_id, device.device_id, device.identity_key, c.clock_ms(),
        c.config.sender_certificate_ttl_s, account.username,
    )
    return json_response(rs.SenderCertificate(
        certificate=cert.encoded, server_certificate=c.ca.server_certificate,
        expires=cert.expires_ms, key_statement=c.ca.key_statement,
    ))


async def trust_root(call: Call) -> web.Response:
    ca = call.c.ca
    return json_response(rs.TrustRoot(public_key=ca.trust_root,
                                      key_statement=ca.key_statement))


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/certificate", sender_certificate, "A short-lived sender certificate",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="certificate",
          audit="none", tag="certificates",
          responses={200: ("The certificate and what vouches for the key that signed it",
                           rs.SenderCertificate)}),
    Route("GET", "/v1/certificate/trust_root", trust_root, "The trust root public key",
          auth=Auth.NONE, query=(), body=None, rate_limit="public", audit="none",
          tag="certificates",
          responses={200: ("The trust root and its statement of the signing key",
                           rs.TrustRoot)}),
)

__all__ = [
    "ROUTES",
]
