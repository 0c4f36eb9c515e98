"""What every handler needs: the services and the codec, device credentials, JSON responses.

Routes read their inputs through :mod:`veil.server.http.endpoint`, which checks them.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from msgspec import UNSET

from veil.protocol import Codec, encode
from veil.protocol.responses import ErrorDetail, ErrorResponse, Response
from veil.server.blobs.base import BlobStore
from veil.server.bus import Bus
from veil.server.certificates import CertificateAuthority
from veil.server.config import ServerConfig
from veil.server.encoding import b64decode, parse_account_id, parse_device_id
from veil.server.errors import BadRequest, ServerError, Unauthorized, ValidationFailed
from veil.server.protection.facade import Protection
from veil.server.services.accounts import AccountService
from veil.server.services.devices import DeviceService
from veil.server.services.groups import GroupService
from veil.server.services.key_packages import KeyPackageService
from veil.server.services.keys import KeyService
from veil.server.services.messages import MessageService
from veil.server.storage.base import DeviceRecord, Storage

ACCESS_KEY_HEADER = "Veil-Access-Key"
GROUP_READ_HEADER = "Veil-Group-Read"
GROUP_WRITE_HEADER = "Veil-Group-Write"
BLOB_TOKEN_HEADER = "Veil-Blob-Token"  # noqa: S105 (a header name; docs/attachments.md)


@dataclass
class Context:
    config: ServerConfig
    storage: Storage
    bus: Bus
    accounts: AccountService
    keys: KeyService
    messages: MessageService
    groups: GroupService
    key_packages: KeyPackageService
    devices: DeviceService
    ca: CertificateAuthority
    codec: Codec  # the wire formats, with this server's limits bound in
    clock_ms: Callable[[], int]
    protection: Protection  # the protection layers (docs/protection.md)
    connections: int = 0  # every WebSocket, sealed ones included
    sealed_connections: int = 0
    blobs: BlobStore | None = None  # attachments (docs/attachments.md)


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


def error_detail(exc: ServerError) -> ErrorDetail:
    """The one error shape, for an answer or a WebSocket ``error`` frame."""
    return ErrorDetail(code=exc.code, message=exc.message,
                       details=exc.details if exc.details else UNSET)


def error_response(code: str, message: str, status: int) -> web.Response:
    """An error answer that no ServerError describes (aiohttp's own, a bug)."""
    return json_response(ErrorResponse(error=ErrorDetail(code=code, message=message)),
                         status=status)


def json_response(data: Response | dict[str, Any], status: int = 200) -> web.Response:
    """An answer of :mod:`veil.protocol.responses` (or a document, such as OpenAPI's)."""
    return web.Response(body=encode(data), status=status, content_type="application/json")

__all__ = [
    "ACCESS_KEY_HEADER",
    "BLOB_TOKEN_HEADER",
    "CONTEXT",
    "GROUP_READ_HEADER",
    "GROUP_WRITE_HEADER",
    "Context",
    "authenticate",
    "error_detail",
    "error_response",
    "json_response",
    "parse_basic",
]
