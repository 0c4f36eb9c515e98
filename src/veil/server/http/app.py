"""The aiohttp application: routes, the one JSON error shape, and no access log.

Every error leaves as ``{"error": {"code", "message", "details"?}}``. ServerErrors carry
their status; aiohttp's own exceptions (unknown route, wrong method, body too large) are
translated; anything unexpected is logged and answered as a bare 500 without detail.
Unknown paths and methods are answered by a fallback route in the same shape.
The access log is off on purpose: it would record account ids and client addresses.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from veil.protocol.responses import ErrorResponse
from veil.server.errors import (
    Blocked,
    InvalidJson,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
    ValidationFailed,
)
from veil.server.http.context import (
    CONTEXT,
    Context,
    error_detail,
    error_response,
    json_response,
)
from veil.server.http.endpoint import ROUTE_TABLE, Auth, Call, Route, prepare
from veil.server.http.routes import ROUTES
from veil.server.http.routes.uploads import tus_headers
from veil.server.protection import events as ev
from veil.server.protection.facade import Protection
from veil.server.protection.keyed import keyed_for
from veil.server.protection.policy import protection_of, request_key

log = logging.getLogger("veil.server.http")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(exc: ServerError) -> web.Response:
    response = json_response(ErrorResponse(error=error_detail(exc)), status=exc.status)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="veil"'
    if isinstance(exc, RateLimited | Blocked):
        response.headers["Retry-After"] = str(exc.retry_after)  # RFC 9110 §10.2.3
    return response


def guard(route: Route) -> _Handler:
    """The aiohttp handler of ``route``: the protection layers' checks (blocks, rate
    limits, security events; issue 13 §2), its declaration enforced (:func:`prepare`),
    then its handler, and every error in the one JSON shape.

    A wrapper per route rather than an aiohttp middleware: a middleware chain keeps two
    extra frames alive for every open WebSocket, which is memory per idle connection.
    """
    handler = route.handler
    limit_class = route.rate_limit
    credentials = route.auth in (Auth.DEVICE, Auth.DEVICE_OR_ACCESS_KEY)

    async def guarded(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        protection = protection_of(request.app[CONTEXT])
        source = request_key(protection, request)
        response = await _serve(request, protection, source)
        metrics = protection.metrics
        if metrics is not None and not isinstance(response, web.WebSocketResponse):
            metrics.observe_request(route.path, request.method, response.status,
                                    time.perf_counter() - started)
        return response

    async def _serve(request: web.Request, protection: Protection,
                     source: str) -> web.StreamResponse:
        try:
            admit(protection, source, limit_class)
            if credentials and "Authorization" in request.headers:
                wait = protection.limits.exhausted("auth_failure", source)
                if wait > 0.0:
                    # Too many failed credentials from here: refused before they are
                    # checked, so guessing costs the guesser, not the database.
                    protection.events.emit(ev.RATE_LIMITED, source,
                                           limit_class="auth_failure", dimension="address")
                    raise RateLimited.after(wait, "auth_failure")
            # No local holds the Call: for a WebSocket this frame lives as long as the
            # connection, and the handler drops what it does not need.
            return await handler(await _prepared(route, request, protection, source))
        except ServerError as exc:
            _note(protection, source, exc)
            return _error(exc)
        except web.HTTPRequestEntityTooLarge:
            protection.events.emit(ev.OVERSIZED, source, route=route.path)
            return _error(PayloadTooLarge("the request body is too large"))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = "bad_request" if exc.status < 500 else "internal_error"
            return error_response(code, exc.reason or "error", exc.status)
        except ConnectionError as exc:
            # Reading the body or writing the answer of a client that reset or closed
            # its connection: its business, one DEBUG line (issue 10 §5, item 4).
            # A ConnectionError while the client is still there is a fault of ours.
            if not _client_gone(request):
                log.exception("unhandled error in %s", handler.__name__)
                return error_response("internal_error", "internal server error", 500)
            log.debug("client went away during %s %s (%s)", request.method, route.path,
                      type(exc).__name__)
            return web.Response(status=499)  # never sent: there is no one to send it to
        except asyncio.CancelledError:
            if _client_gone(request):
                log.debug("client went away during %s %s (cancelled)", request.method,
                          route.path)
            raise
        except Exception:
            log.exception("unhandled error in %s", handler.__name__)
            return error_response("internal_error", "internal server error", 500)

    def _note(protection: Protection, source: str, exc: ServerError) -> None:
        """The security event an error stands for (the detection layer counts them)."""
        if isinstance(exc, PayloadTooLarge):
            protection.events.emit(ev.OVERSIZED, source, route=route.path)
        elif isinstance(exc, InvalidJson | ValidationFailed):
            protection.events.emit(ev.MALFORMED, source, route=route.path)

    return guarded


def admit(protection: Protection, source: str, limit_class: str) -> None:
    """Refuse a blocked address (403 ``blocked``) and take the per-address bucket of
    ``limit_class`` (429 ``rate_limited``): before any work is done for the request."""
    blocks = getattr(protection, "blocks", None)
    if blocks is not None:
        left = blocks.blocked_for(source)
        if left:
            protection.events.emit(ev.BLOCKED_REQUEST, source)
            raise Blocked.after(left)
    protection.limits.check(limit_class, address=source)


async def _prepared(route: Route, request: web.Request, protection: Protection,
                    source: str) -> Call:
    """:func:`prepare`, then the limits on what it identified (account, device, target):
    failed credentials are counted, claims of someone's keys are limited per target."""
    try:
        call = await prepare(route, request)
    except Unauthorized:
        protection.events.emit(ev.AUTH_FAILURE, source, route=route.path)
        protection.limits.spend("auth_failure", source)
        raise
    limits = protection.limits
    if limits.is_exempt(source):
        return call
    keys: dict[str, str] = {}
    device = call.device
    if device is not None:
        account = device.account_id.hex()
        keys["account"] = account
        keys["device"] = f"{account}.{device.device_id}"
    target = call.path.get("account_id") if route.rate_limit in _CLAIMS else None
    if route.rate_limit == "submit":
        target = call.path.get("target")
    if isinstance(target, bytes):
        keys["target"] = target.hex()
        keys["pair"] = keys["share"] = f"{source}>{target.hex()}"
    if keys:
        limits.check(route.rate_limit, source=source, **keys)
    kind = _CLAIMS.get(route.rate_limit)
    if kind is None and route.rate_limit == "submit":
        kind = ev.MESSAGE_SUBMIT
    if kind is not None and isinstance(target, bytes):
        protection.events.emit(kind, source, target=keyed_for(protection, target.hex()))
    return call


# Claims of someone's one-time keys: the event each is, limited per target account.
_CLAIMS = {"keys_claim": ev.KEY_CLAIM, "key_packages_claim": ev.KEY_PACKAGE_CLAIM}


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


_PATHS = [
    (re.compile("^" + re.sub(r"\\{\w+\\}", "[^/]+", re.escape(r.path)) + "$"), r.method)
    for r in ROUTES
]


async def fallback(request: web.Request) -> web.Response:
    """Every request no route takes: 405 if the path exists for another method, with the
    methods it takes in ``Allow`` (RFC 9110 §15.5.6), else 404."""
    started = time.perf_counter()
    protection = protection_of(request.app[CONTEXT])
    source = request_key(protection, request)
    try:
        admit(protection, source, "unknown_route")
    except ServerError as exc:
        return _error(exc)
    protection.events.emit(ev.UNKNOWN_ROUTE, source)
    response = _fallback(request)
    if protection.metrics is not None:
        protection.metrics.observe_request("unmatched", request.method, response.status,
                                           time.perf_counter() - started)
    return response


def _fallback(request: web.Request) -> web.Response:
    allowed = sorted({method for pattern, method in _PATHS if pattern.match(request.path)})
    if allowed:
        response = _error(MethodNotAllowed("this endpoint does not accept that method"))
        response.headers["Allow"] = ", ".join(allowed)
        return response
    return _error(NotFound("no such endpoint"))


def create_app(context: Context) -> web.Application:
    app = web.Application(client_max_size=context.config.max_body_bytes)
    app[CONTEXT] = context
    app[ROUTE_TABLE] = ROUTES
    for route in ROUTES:
        app.router.add_route(route.method, route.path, guard(route))
    app.router.add_route("*", "/{tail:.*}", fallback)
    app.on_response_prepare.append(tus_headers)  # tus 1.0: Tus-Resumable on every answer
    return app

__all__ = [
    "admit",
    "create_app",
    "guard",
]
