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
from collections.abc import Awaitable, Callable

from aiohttp import web

from veil.protocol.responses import ErrorResponse
from veil.server.errors import MethodNotAllowed, NotFound, PayloadTooLarge, ServerError
from veil.server.http.context import (
    CONTEXT,
    Context,
    error_detail,
    error_response,
    json_response,
)
from veil.server.http.endpoint import ROUTE_TABLE, Route, prepare
from veil.server.http.routes import ROUTES
from veil.server.http.routes.uploads import tus_headers

log = logging.getLogger("veil.server.http")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(exc: ServerError) -> web.Response:
    response = json_response(ErrorResponse(error=error_detail(exc)), status=exc.status)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="veil"'
    return response


def guard(route: Route) -> _Handler:
    """The aiohttp handler of ``route``: its declaration enforced (:func:`prepare`), then
    its handler, and every error in the one JSON shape.

    A wrapper per route rather than an aiohttp middleware: a middleware chain keeps two
    extra frames alive for every open WebSocket, which is memory per idle connection.
    """
    handler = route.handler

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            # No local holds the Call: for a WebSocket this frame lives as long as the
            # connection, and the handler drops what it does not need.
            return await handler(await prepare(route, request))
        except ServerError as exc:
            return _error(exc)
        except web.HTTPRequestEntityTooLarge:
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

    return guarded


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
    "create_app",
    "guard",
]
