"""What every handler needs: the services, the schemas and request helpers (auth, body)."""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from veil.server.bus import Bus
from veil.server.certificates import CertificateAuthority
from veil.server.config import ServerConfig
from veil.server.encoding import b64decode, parse_account_id, parse_device_id
from veil.server.errors import BadRequest, PayloadTooLarge, Unauthorized, ValidationFailed
from veil.server.http.schemas import Schemas
from veil.server.services.accounts import AccountService
from veil.server.services.keys import KeyService
from veil.server.services.messages import MessageService
from veil.server.storage.base import DeviceRecord, Storage
from veil.server.validation import Schema, load_json

ACCESS_KEY_HEADER = "Veil-Access-Key"


@dataclass
class Context:
    config: ServerConfig
    storage: Storage
    bus: Bus
    accounts: AccountService
    keys: KeyService
    messages: MessageService
    ca: CertificateAuthority
    schemas: Schemas
    clock_ms: Callable[[], int]
    connections: int = 0  # every WebSocket, sealed ones included
    sealed_connections: int = 0


CONTEXT: web.AppKey[Context] = web.AppKey("veil_context", Context)


def ctx(request: web.Request) -> Context:
    return request.app[CONTEXT]


def parse_basic(header: str) -> tuple[bytes, int, bytes]:
    """``Basic base64(account_hex.device_id:token_base64)`` → (account, device, token)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise Unauthorized("use Authorization: Basic base64(account.device:token)")
    try:
        decoded = binascii.a2b_base64(value.strip().encode("ascii"), strict_mode=True)
        user, sep, token_text = decoded.decode("ascii").partition(":")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise Unauthorized("malformed Authorization header") from exc
    account_text, dot, device_text = user.partition(".")
    if not sep or not dot:
        raise Unauthorized("malformed Authorization header")
    try:
        account_id = parse_account_id(account_text)
        device_id = parse_device_id(device_text)
        token = b64decode(token_text, "token")
    except (BadRequest, ValidationFailed) as exc:
        raise Unauthorized("malformed Authorization header") from exc
    return account_id, device_id, token


async def authenticate(request: web.Request, *, cache: bool = True) -> DeviceRecord:
    header = request.headers.get("Authorization")
    if header is None:
        raise Unauthorized("this endpoint needs device credentials")
    account_id, device_id, token = parse_basic(header)
    return await ctx(request).accounts.authenticate(account_id, device_id, token, cache=cache)


async def optional_device(request: web.Request) -> DeviceRecord | None:
    """Device credentials if sent; a request must not carry both kinds of authorisation."""
    if "Authorization" not in request.headers:
        return None
    if ACCESS_KEY_HEADER in request.headers:
        raise BadRequest(f"send either Authorization or {ACCESS_KEY_HEADER}, not both")
    return await authenticate(request)


def access_key(request: web.Request) -> bytes | None:
    text = request.headers.get(ACCESS_KEY_HEADER)
    if text is None:
        return None
    try:
        key = b64decode(text, ACCESS_KEY_HEADER)
    except ValidationFailed as exc:
        raise Unauthorized(f"{ACCESS_KEY_HEADER} is not base64") from exc
    if len(key) != 16:
        raise Unauthorized(f"{ACCESS_KEY_HEADER} must be 16 bytes")
    return key


async def body(request: web.Request, schema: Schema) -> dict[str, Any]:
    return (await raw_body(request, schema))[1]


async def raw_body(request: web.Request, schema: Schema) -> tuple[Any, dict[str, Any]]:
    """The decoded JSON as sent and its validated form."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(
            f"the body is larger than {ctx(request).config.max_body_bytes} bytes"
        ) from exc
    if not raw:
        raise BadRequest("this endpoint needs a JSON body")
    value = load_json(raw)
    validated: dict[str, Any] = schema.validate(value, "body")
    return value, validated


def no_query(request: web.Request, allowed: tuple[str, ...] = ()) -> None:
    for key in request.query:
        if key not in allowed:
            raise BadRequest(f"unknown query parameter {key[:40]!r}")


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 16:
        raise BadRequest(f"query parameter {name} must be a non-negative integer")
    value = int(text)
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name} must be between {low} and {high}")
    return value


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")), status=status,
        content_type="application/json",
    )
