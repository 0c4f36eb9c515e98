"""HTTP handlers and the route table (which also generates the OpenAPI document).

Authentication schemes (see docs/server.md):
- ``device``: ``Authorization: Basic base64(account_hex.device_id:token_base64)``;
- ``access_key``: ``Veil-Access-Key: base64(16 bytes)`` of the *recipient* (sealed);
- ``none``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from veil.core.errors import CoreError
from veil.core.submission import Submission
from veil.server.encoding import (
    b64encode,
    normalise_username,
    parse_account_id,
    parse_device_id,
)
from veil.server.errors import BadRequest, MessageNotFound, PayloadTooLarge, ValidationFailed
from veil.server.http import openapi
from veil.server.http.context import (
    access_key,
    authenticate,
    body,
    ctx,
    json_response,
    no_query,
    optional_device,
    query_int,
    raw_body,
)
from veil.server.http.websocket import device_socket, sealed_socket
from veil.server.services.accounts import Registration
from veil.server.services.keys import PreKeyUpload
from veil.server.services.messages import DeviceSender, Outgoing, SealedSender, Sender
from veil.server.storage.base import DeviceBundle, OneTimeKey, PreKeyCounts
from veil.server.validation import Schema

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _upload(data: dict[str, Any]) -> PreKeyUpload:
    def keys(name: str) -> list[OneTimeKey]:
        return [OneTimeKey(k["key_id"], k["key"]) for k in data.get(name, [])]

    return PreKeyUpload(
        signed_prekey=data.get("signed_prekey"),
        last_resort_kem_prekey=data.get("last_resort_kem_prekey"),
        one_time_prekeys=keys("one_time_prekeys"),
        one_time_kem_prekeys=keys("one_time_kem_prekeys"),
    )


def _counts(counts: PreKeyCounts, low: bool) -> dict[str, Any]:
    return {
        "one_time_prekeys": counts.one_time_prekeys,
        "one_time_kem_prekeys": counts.one_time_kem_prekeys,
        "has_signed_prekey": counts.has_signed_prekey,
        "has_last_resort_kem_prekey": counts.has_last_resort_kem_prekey,
        "low": low,
    }


def _one_time(key: OneTimeKey | None) -> dict[str, Any] | None:
    return None if key is None else {"key_id": key.key_id, "key": b64encode(key.key)}


def _opt64(blob: bytes | None) -> str | None:
    return None if blob is None else b64encode(blob)


def _bundle(b: DeviceBundle) -> dict[str, Any]:
    return {
        "device_id": b.device_id,
        "registration_id": b.registration_id,
        "identity_key": b64encode(b.identity_key),
        "signed_prekey": _opt64(b.signed_prekey),
        "last_resort_kem_prekey": _opt64(b.last_resort_kem_prekey),
        "one_time_prekey": _one_time(b.one_time_prekey),
        "one_time_kem_prekey": _one_time(b.one_time_kem_prekey),
    }


# ---- accounts ------------------------------------------------------------------------------
async def register(request: web.Request) -> web.Response:
    no_query(request)
    c = ctx(request)
    data = await body(request, c.schemas.registration)
    username = data.get("username")
    result = await c.accounts.register(Registration(
        identity_key=data["identity_key"],
        registration_id=data["registration_id"],
        prekeys=_upload(data),
        token=data.get("token"),
        username=None if username is None else normalise_username(username),
        access_key=data.get("access_key"),
        unrestricted_sealed=data.get("unrestricted_sealed"),
        invite=data.get("invite"),
    ))
    out: dict[str, Any] = {"account_id": result.account_id.hex(), "device_id": result.device_id}
    if result.issued_token is not None:
        out["token"] = b64encode(result.issued_token)
    return json_response(out, status=201)


async def whoami(request: web.Request) -> web.Response:
    no_query(request)
    device = await authenticate(request)
    account = await ctx(request).accounts.account(device.account_id)
    return json_response({
        "account_id": account.account_id.hex(),
        "device_id": device.device_id,
        "username": account.username,
        "has_access_key": account.access_key is not None,
        "unrestricted_sealed": account.unrestricted_sealed,
        "devices": list(account.devices),
    })


async def put_username(request: web.Request) -> web.Response:
    no_query(request)
    device = await authenticate(request)
    c = ctx(request)
    username = normalise_username((await body(request, c.schemas.username))["username"])
    await c.accounts.set_username(device.account_id, username)
    return json_response({"username": username})


async def delete_username(request: web.Request) -> web.Response:
    no_query(request)
    device = await authenticate(request)
    await ctx(request).accounts.set_username(device.account_id, None)
    return web.Response(status=204)


async def put_sealed_access(request: web.Request) -> web.Response:
    no_query(request)
    device = await authenticate(request)
    c = ctx(request)
    data = await body(request, c.schemas.sealed_access)
    await c.accounts.set_sealed_access(
        device.account_id, data.get("access_key"), data["unrestricted_sealed"]
    )
    return web.Response(status=204)


async def lookup_username(request: web.Request) -> web.Response:
    no_query(request)
    await authenticate(request)
    username = normalise_username(request.match_info["username"])
    account_id = await ctx(request).accounts.lookup_username(username)
    return json_response({"account_id": account_id.hex(), "username": username})


# ---- keys ------------------------------------------------------------------------------------
async def put_keys(request: web.Request) -> web.Response:
    no_query(request)
    device = await authenticate(request)
    c = ctx(request)
    data = await body(request, c.schemas.prekeys)
    status = await c.keys.upload(
        device.account_id, device.device_id, device.identity_key, _upload(data)
    )
    return json_response(_counts(status.counts, status.low))


async def key_status(request: web.Request) -> web.Response:
    no_query(request)
    device = await authenticate(request)
    status = await ctx(request).keys.status(device.account_id, device.device_id)
    return json_response(_counts(status.counts, status.low))


async def get_bundles(request: web.Request) -> web.Response:
    no_query(request)
    account_id = parse_account_id(request.match_info["account_id"])
    device_text = request.match_info["device_id"]
    device_id = None if device_text == "*" else parse_device_id(device_text)
    requester = await optional_device(request)
    bundles = await ctx(request).keys.fetch(
        account_id, device_id, authenticated=requester is not None,
        access_key=None if requester is not None else access_key(request),
    )
    return json_response({
        "account_id": account_id.hex(), "devices": [_bundle(b) for b in bundles],
    })


# ---- messages -------------------------------------------------------------------------------
async def submit(request: web.Request) -> web.Response:
    no_query(request)
    recipient = parse_account_id(request.match_info["account_id"])
    requester = await optional_device(request)
    sender: Sender = (
        SealedSender(access_key(request)) if requester is None
        else DeviceSender(requester.account_id, requester.device_id)
    )
    c = ctx(request)
    raw, data = await raw_body(request, c.schemas.submission)
    items = [
        Outgoing(m["device_id"], m["envelope"], r["envelope"])
        for m, r in zip(data["messages"], raw["messages"], strict=True)
    ]
    accepted = await c.messages.submit(recipient, items, sender)
    return json_response({"messages": [
        {"device_id": a.device_id, "id": a.id, "ts": a.ts} for a in accepted
    ]})


async def relayed_submission(request: web.Request) -> web.Response:
    """A sealed submission that reached us through the mixnet's provider: the same rules
    as ``PUT /v1/messages/{account}`` with an access key, and the connection it came on
    is the provider's, never the sender's."""
    no_query(request)
    c = ctx(request)
    data = await body(request, c.schemas.relayed_submission)
    try:
        submission = Submission.decode(data["submission"])
    except CoreError as exc:
        raise ValidationFailed(f"submission: {exc}") from None
    items = []
    for device_id, envelope in submission.envelopes:
        if not envelope:  # as over HTTP and WebSocket: an envelope has at least one byte
            raise ValidationFailed("submission: an envelope is empty")
        if len(envelope) > c.config.max_envelope_bytes:
            raise PayloadTooLarge(f"an envelope is larger than {c.config.max_envelope_bytes} "
                                  "bytes")
        items.append(Outgoing(device_id, envelope, b64encode(envelope)))
    accepted = await c.messages.submit(submission.recipient, items,
                                       SealedSender(submission.access_key))
    return json_response({"messages": [
        {"device_id": a.device_id, "id": a.id, "ts": a.ts} for a in accepted
    ]})


async def fetch_messages(request: web.Request) -> web.Response:
    no_query(request, ("limit", "after"))
    device = await authenticate(request)
    c = ctx(request)
    limit = query_int(request, "limit", c.config.fetch_limit, 1, c.config.fetch_limit)
    after = query_int(request, "after", 0, 0, (1 << 53) - 1)
    rows = await c.messages.pending(device.account_id, device.device_id, limit + 1, after)
    # Cut by bytes too: a page of large envelopes would otherwise build a response of
    # limit × max_envelope_bytes (base64 and JSON on top). The first always fits.
    page, total = 0, 0
    for e in rows[:limit]:
        total += len(e.body)
        if page and total > c.config.fetch_max_bytes:
            break
        page += 1
    return json_response({
        "messages": [
            {"id": e.id, "ts": e.ts, "envelope": b64encode(e.body)} for e in rows[:page]
        ],
        "more": len(rows) > page,
    })


async def delete_message(request: web.Request) -> web.Response:
    no_query(request)
    device = await authenticate(request)
    text = request.match_info["id"]
    if not text.isascii() or not text.isdigit() or len(text) > 16:
        raise BadRequest("message id must be a positive integer")
    deleted = await ctx(request).messages.acknowledge(
        device.account_id, device.device_id, [int(text)]
    )
    if deleted == 0:
        raise MessageNotFound("no queued envelope with that id")
    return web.Response(status=204)


# ---- certificates, health, docs ------------------------------------------------------------
async def sender_certificate(request: web.Request) -> web.Response:
    no_query(request)
    device = await authenticate(request)
    c = ctx(request)
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


async def trust_root(request: web.Request) -> web.Response:
    no_query(request)
    ca = ctx(request).ca
    return json_response({"public_key": b64encode(ca.trust_root),
                          "key_statement": b64encode(ca.key_statement)})


async def health(request: web.Request) -> web.Response:
    c = ctx(request)
    return json_response({
        "status": "ok", "schema_version": await c.storage.schema_version(),
        "connections": c.connections,
    })


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(openapi.document(ROUTES, ctx(request).schemas))


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=openapi.DOCS_HTML, content_type="text/html")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    auth: str = "none"  # "device", "access_key" (device or access key), "none"
    body: str | None = None  # attribute name in Schemas
    responses: dict[int, str] = field(default_factory=lambda: {200: "OK"})
    tag: str = "misc"

    def schema(self, schemas: Any) -> Schema | None:
        return None if self.body is None else getattr(schemas, self.body)


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/accounts", register, "Register an account with its first device",
          body="registration", responses={201: "Created: account_id, device_id, token?"},
          tag="accounts"),
    Route("GET", "/v1/accounts/me", whoami, "This account and its devices", "device",
          tag="accounts"),
    Route("PUT", "/v1/accounts/me/username", put_username, "Set or change the username",
          "device", body="username", tag="accounts"),
    Route("DELETE", "/v1/accounts/me/username", delete_username, "Remove the username",
          "device", responses={204: "Removed"}, tag="accounts"),
    Route("PUT", "/v1/accounts/me/sealed_access", put_sealed_access,
          "Set the access key and whether anyone may send sealed envelopes", "device",
          body="sealed_access", responses={204: "Saved"}, tag="accounts"),
    Route("GET", "/v1/usernames/{username}", lookup_username, "Find an account by username",
          "device", tag="accounts"),
    Route("PUT", "/v1/keys", put_keys, "Publish or replenish this device's prekeys", "device",
          body="prekeys", tag="keys"),
    Route("GET", "/v1/keys/status", key_status, "Prekey stock of this device", "device",
          tag="keys"),
    Route("GET", "/v1/keys/{account_id}/{device_id}", get_bundles,
          "Claim prekey bundles of one device, or of all with device_id '*'", "access_key",
          tag="keys"),
    Route("PUT", "/v1/messages/{account_id}", submit,
          "Submit one envelope per recipient device (sealed: Veil-Access-Key)", "access_key",
          body="submission", responses={200: "Stored durably", 409: "Mismatched devices"},
          tag="messages"),
    Route("POST", "/v1/mixnet/submissions", relayed_submission,
          "Deliver a sealed submission relayed by a mixnet provider (access key inside)",
          body="relayed_submission",
          responses={200: "Stored durably", 409: "Mismatched devices"}, tag="messages"),
    Route("GET", "/v1/messages", fetch_messages,
          "Queued envelopes of this device, oldest first (?limit, ?after)", "device",
          tag="messages"),
    Route("DELETE", "/v1/messages/{id}", delete_message,
          "Acknowledge (delete) one queued envelope", "device",
          responses={204: "Deleted"}, tag="messages"),
    Route("GET", "/v1/websocket", device_socket,
          "WebSocket: live delivery, acknowledgements, sends (see docs/server.md)", "device",
          responses={101: "Switching protocols"}, tag="websocket"),
    Route("GET", "/v1/websocket/sealed", sealed_socket,
          "WebSocket without identity, for sealed sends with access keys",
          responses={101: "Switching protocols"}, tag="websocket"),
    Route("GET", "/v1/certificate", sender_certificate, "A short-lived sender certificate",
          "device", tag="certificates"),
    Route("GET", "/v1/certificate/trust_root", trust_root, "The trust root public key",
          tag="certificates"),
    Route("GET", "/health", health, "Liveness and schema version"),
    Route("GET", "/openapi.json", openapi_json, "This document"),
    Route("GET", "/docs", docs, "Browsable API documentation"),
)
