"""WebSocket upgrades, health and the API documents."""

from __future__ import annotations

from aiohttp import web

from veil.protocol import responses as rs
from veil.server.http import openapi
from veil.server.http.context import json_response
from veil.server.http.endpoint import ANY_QUERY, ROUTE_TABLE, Auth, Call, Route
from veil.server.http.websocket import device_socket, sealed_socket


async def health(call: Call) -> web.Response:
    c = call.c
    return json_response(rs.Health(
        status="ok", schema_version=await c.storage.schema_version(),
        connections=c.connections,
    ))


async def openapi_json(call: Call) -> web.Response:
    c = call.c
    return json_response(openapi.document(call.request.app[ROUTE_TABLE], c.codec, c.config))


async def docs(call: Call) -> web.Response:
    return web.Response(text=openapi.DOCS_HTML, content_type="text/html")


# The upgrades never looked at their query string; they still accept any (ANY_QUERY).
WEBSOCKET_ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/websocket", device_socket,
          "WebSocket: live delivery, acknowledgements, sends (see docs/server.md)",
          auth=Auth.DEVICE, query=ANY_QUERY, body=None, rate_limit="connect", audit="none",
          responses={101: ("Switching protocols", None)}, tag="websocket", cache_credentials=False),
    Route("GET", "/v1/websocket/sealed", sealed_socket,
          "WebSocket without identity, for sealed sends with access keys",
          auth=Auth.NONE, query=ANY_QUERY, body=None, rate_limit="connect_sealed",
          audit="none",
          responses={101: ("Switching protocols", None)}, tag="websocket"),
)

ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", health, "Liveness and schema version",
          auth=Auth.NONE, query=ANY_QUERY, body=None, rate_limit="public", audit="none",
          tag="misc", responses={200: ("Serving", rs.Health)}),
    Route("GET", "/openapi.json", openapi_json, "This document",
          auth=Auth.NONE, query=ANY_QUERY, body=None, rate_limit="public", audit="none",
          tag="misc", responses={200: ("The OpenAPI 3.1 document", None)}),
    Route("GET", "/docs", docs, "Browsable API documentation",
          auth=Auth.NONE, query=ANY_QUERY, body=None, rate_limit="public", audit="none",
          tag="misc", responses={200: ("An HTML page", None)}),
)

__all__ = [
    "ROUTES",
    "WEBSOCKET_ROUTES",
]
