"""The route table, assembled here from one module per resource.

Each module declares its routes with their enforced metadata (:class:`Route`); the order
below is the order of the OpenAPI document.
"""

from __future__ import annotations

from veil.server.http.endpoint import Route
from veil.server.http.routes import accounts, certificates, keys, messages, service

ROUTES: tuple[Route, ...] = (
    *accounts.ROUTES,
    *keys.ROUTES,
    *messages.ROUTES,
    *service.WEBSOCKET_ROUTES,
    *certificates.ROUTES,
    *service.ROUTES,
)

__all__ = ["ROUTES", "Route", "accounts", "certificates", "keys", "messages", "service"]
