"""Route metadata, and the one place it is enforced before a handler runs.

Every route of the table declares how it authenticates, which query parameters it takes
(names, types, bounds), which body type of :mod:`veil.protocol.requests` it reads and
which answer types of :mod:`veil.protocol.responses` it gives, its path parameters, and two slots
the protection-layer and audit issues fill: a rate-limit class and an audit tag. The
OpenAPI document is generated from the same declaration (the two slots appear there as
``x-veil-rate-limit`` and ``x-veil-audit``), so what is documented is what is enforced.

:func:`prepare` applies a route's declaration to a request and hands the handler a
:class:`Call`: credentials already checked, query, path and body already validated. No
handler reads a header, the query string or the body itself.

Order of the checks (kept as the handlers had it, so that a request with two faults
gets the same error as before): unknown query parameters; for routes where device
credentials are optional (``DEVICE_OR_ACCESS_KEY``) the path, then the credentials; for
``DEVICE`` routes the credentials, then the path; then query values; then the body.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

from aiohttp import web

from veil.protocol import InvalidFields, MalformedJson
from veil.protocol.requests import Request
from veil.protocol.responses import Response
from veil.server.config import ServerConfig
from veil.server.encoding import b64decode
from veil.server.errors import (
    BadRequest,
    InvalidBlobToken,
    InvalidJson,
    PayloadTooLarge,
    RequestTimeout,
    ServerError,
    Unauthorized,
    ValidationFailed,
)
from veil.server.http.context import (
    ACCESS_KEY_HEADER,
    BLOB_TOKEN_HEADER,
    CONTEXT,
    GROUP_READ_HEADER,
    GROUP_WRITE_HEADER,
    Context,
    authenticate,
)
from veil.server.storage.base import DeviceRecord


class Auth(enum.Enum):
    """How a route authenticates (the values name the OpenAPI security requirement)."""

    NONE = "none"
    DEVICE = "device"  # device credentials required
    # Device credentials if sent, else the recipient's access key (sealed sender); the
    # service judges the key against the account, so an absent or wrong key is its call.
    DEVICE_OR_ACCESS_KEY = "access_key"
    # A group capability (services/groups.py) in Veil-Group-Read / Veil-Group-Write,
    # never device credentials: a sealed connection can make these requests, and the
    # server cannot tie a group to an account.
    GROUP_READ = "group_read"
    GROUP_WRITE = "group_write"
    # A blob's download token in Veil-Blob-Token (docs/attachments.md): no account.
    BLOB_TOKEN = "blob_token"  # noqa: S105 (a name)


# An int bound: a constant, or the name of an int ServerConfig field (bounds that
# operators configure, such as ``fetch_limit``).
Bound = int | str


def _bound(value: Bound, config: ServerConfig) -> int:
    if isinstance(value, int):
        return value
    resolved = getattr(config, value)
    if type(resolved) is not int:
        raise TypeError(f"ServerConfig.{value} is not an int")
    return resolved


@dataclass(frozen=True)
class IntQuery:
    """An optional non-negative integer query parameter within [low, high]."""

    name: str
    default: Bound
    low: Bound
    high: Bound

    def parse(self, text: str | None, config: ServerConfig) -> int:
        if text is None:
            return _bound(self.default, config)
        if not text.isascii() or not text.isdigit() or len(text) > 16:
            raise BadRequest(f"query parameter {self.name} must be a non-negative integer")
        value = int(text)
        low, high = _bound(self.low, config), _bound(self.high, config)
        if not low <= value <= high:
            raise BadRequest(f"query parameter {self.name} must be between {low} and {high}")
        return value

    def json_schema(self, config: ServerConfig) -> dict[str, Any]:
        return {"type": "integer", "minimum": _bound(self.low, config),
                "maximum": _bound(self.high, config),
                "default": _bound(self.default, config)}


# Routes that never looked at their query string (health, the documents, the WebSocket
# upgrades) keep accepting any: refusing one now could break a deployed client or a
# monitoring probe that adds a cache-busting parameter.
AnyQuery = Literal["any"]
ANY_QUERY: AnyQuery = "any"

PathParser = Callable[[str], Any]


@dataclass(frozen=True)
class PathParam:
    """A path parameter: its parser, and the pattern (ECMA-262, anchored) of the texts
    the parser accepts, which the OpenAPI document states; a text outside it is refused
    by the parser (400 or 422), one inside it is accepted by it."""

    parse: PathParser
    pattern: str
    description: str = ""

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "pattern": self.pattern}
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class HeaderParam:
    """A request header a handler reads itself (the tus protocol's, docs/attachments.md),
    declared so that the OpenAPI document states it; the handler enforces it."""

    name: str
    schema: Mapping[str, Any]
    required: bool = False
    description: str = ""


def path_parser(param: PathParser | PathParam) -> PathParser:
    return param.parse if isinstance(param, PathParam) else param


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler receives: the request with its inputs already checked."""

    request: web.Request
    c: Context
    device: DeviceRecord | None  # the authenticated device (None: none was sent)
    access_key: bytes | None  # DEVICE_OR_ACCESS_KEY without credentials: the header
    path: Mapping[str, Any]  # path parameters, parsed by the route's parsers
    query: Mapping[str, int]  # declared query parameters (defaults filled in)
    body: Any  # the decoded body, an instance of the route's body type (None: no body)
    capability: bytes = b""  # GROUP_READ / GROUP_WRITE routes: the header's 32 bytes

    @property
    def me(self) -> DeviceRecord:
        """The authenticated device of a ``DEVICE`` route."""
        if self.device is None:  # a route table mistake, not a client's
            raise RuntimeError("this route does not declare device authentication")
        return self.device


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    # The enforced metadata: no defaults, so every route states each of them.
    _: KW_ONLY
    auth: Auth
    query: tuple[IntQuery, ...] | AnyQuery
    body: type[Request] | None  # the body type (the server's limits bound in)
    rate_limit: str  # rate-limit class (the protection-layer issue enforces it)
    audit: str  # audit tag, "none" for routes that are not audited (the audit issue)
    tag: str
    path_params: Mapping[str, PathParser | PathParam] = field(default_factory=dict)
    # The statuses the handler itself answers with: a description, and the answer's
    # type (None: no body, as for 101 and 204). Error statuses the declaration implies
    # (400, 401, 413, 422, ...) are added by the OpenAPI generator.
    responses: Mapping[int, tuple[str, type[Response] | None]] = field(
        default_factory=dict)
    # Long-lived connections authenticate once: caching their records would only add
    # to what each idle connection costs.
    cache_credentials: bool = True
    # Routes that stream a body that is not JSON (tus PATCH): its media type, for the
    # OpenAPI document, and the headers they read (both enforced by the handler).
    raw_body: str = ""
    headers: tuple[HeaderParam, ...] = ()


# The assembled table, on the application: the OpenAPI handler reads it from there
# rather than importing the package that imports it.
ROUTE_TABLE: web.AppKey[tuple[Route, ...]] = web.AppKey("veil_routes", tuple)


async def _optional_device(request: web.Request) -> DeviceRecord | None:
    """Device credentials if sent; a request must not carry both kinds of authorisation."""
    if "Authorization" not in request.headers:
        return None
    if ACCESS_KEY_HEADER in request.headers:
        raise BadRequest(f"send either Authorization or {ACCESS_KEY_HEADER}, not both")
    return await authenticate(request)


def _secret_header(request: web.Request, header: str, length: int,
                   refusal: type[ServerError] = Unauthorized) -> bytes:
    """A base64 header of ``length`` bytes (an access key, a capability, a blob
    token): missing, not base64 or the wrong length is ``refusal``."""
    text = request.headers.get(header)
    if text is None:
        raise refusal(f"this endpoint needs the {header} header")
    try:
        value = b64decode(text, header)
    except ValidationFailed as exc:
        raise refusal(f"{header} is not base64") from exc
    if len(value) != length:
        raise refusal(f"{header} must be {length} bytes")
    return value


def _access_key(request: web.Request) -> bytes | None:
    if ACCESS_KEY_HEADER not in request.headers:
        return None
    return _secret_header(request, ACCESS_KEY_HEADER, 16)


_CAPABILITY_BYTES = 32


def _capability(request: web.Request, header: str) -> bytes:
    """A group capability header; group requests never carry device credentials."""
    if "Authorization" in request.headers or ACCESS_KEY_HEADER in request.headers:
        raise BadRequest("group requests carry a capability, never credentials or an "
                         "access key")
    return _secret_header(request, header, _CAPABILITY_BYTES)


BLOB_TOKEN_BYTES = 32


def blob_token(request: web.Request) -> bytes:
    """The 32-byte download token of a blob request (Veil-Blob-Token, base64)."""
    return _secret_header(request, BLOB_TOKEN_HEADER, BLOB_TOKEN_BYTES, InvalidBlobToken)


async def _body(request: web.Request, body_type: type[Request], c: Context) -> Any:
    """The body, decoded strictly as ``body_type``; one that does not arrive within
    ``network.body_timeout_s`` is 408 ``request_timeout`` (issue 13 §1: slow bodies)."""
    protection = getattr(c, "protection", None)
    guard = getattr(protection, "connections", None)
    timeout = (guard.network.settings if guard is not None else c.config.network).body_timeout_s
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        if guard is not None:
            guard.body_timed_out(request)
        raise RequestTimeout(f"the body did not arrive within {timeout:g} s") from None
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"the body is larger than {c.config.max_body_bytes} bytes") from exc
    if not raw:
        raise BadRequest("this endpoint needs a JSON body")
    try:
        return c.codec.decode(body_type, raw)
    except MalformedJson as exc:
        raise InvalidJson(exc.message) from None
    except InvalidFields as exc:
        raise ValidationFailed(exc.message) from None


def _path(route: Route, request: web.Request) -> dict[str, Any]:
    info = request.match_info
    return {name: path_parser(param)(info[name]) for name, param in route.path_params.items()}


async def prepare(route: Route, request: web.Request) -> Call:
    """Apply ``route``'s declaration to ``request`` (see the module docstring for the
    order); any failure raises the ServerError the client gets."""
    c = request.app[CONTEXT]
    declared = route.query
    if declared != ANY_QUERY:
        names = {q.name for q in declared}
        for name in request.query:
            if name not in names:
                raise BadRequest(f"unknown query parameter {name[:40]!r}")
    device: DeviceRecord | None = None
    key: bytes | None = None
    capability = b""
    if route.auth is Auth.GROUP_READ or route.auth is Auth.GROUP_WRITE:
        path = _path(route, request)
        capability = _capability(request, GROUP_READ_HEADER if route.auth is Auth.GROUP_READ
                                 else GROUP_WRITE_HEADER)
    elif route.auth is Auth.DEVICE:
        device = await authenticate(request, cache=route.cache_credentials)
        path = _path(route, request)
    elif route.auth is Auth.BLOB_TOKEN:
        path = _path(route, request)
        capability = blob_token(request)
    elif route.auth is Auth.DEVICE_OR_ACCESS_KEY:
        path = _path(route, request)
        device = await _optional_device(request)
        if device is None:
            key = _access_key(request)
    else:
        path = _path(route, request)
    query: dict[str, int] = {}
    if declared != ANY_QUERY:
        for q in declared:
            query[q.name] = q.parse(request.query.get(q.name), c.config)
    body = None if route.body is None else await _body(request, route.body, c)
    return Call(request, c, device, key, path, query, body, capability)

__all__ = [
    "ANY_QUERY",
    "ROUTE_TABLE",
    "Auth",
    "Call",
    "HeaderParam",
    "IntQuery",
    "Route",
    "blob_token",
    "prepare",
]
