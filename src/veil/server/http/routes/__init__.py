"""The route table, assembled here from one module per resource.

Each module declares its routes with their enforced metadata (:class:`Route`); the order
below is the order of the OpenAPI document.
"""

from __future__ import annotations

from veil.server.http.endpoint import Route
from veil.server.http.routes import (
    accounts,
    blobs,
    certificates,
    devices,
    groups,
    key_packages,
    keys,
    messages,
    service,
    uploads,
)

ROUTES: tuple[Route, ...] = (
    *accounts.ROUTES,
    *devices.ROUTES,
    # Before keys: /v1/keys/mls/{account_id} also fits /v1/keys/{account_id}/{device_id}.
    *key_packages.ROUTES,
    *keys.ROUTES,
    *messages.ROUTES,
    *service.WEBSOCKET_ROUTES,
    *certificates.ROUTES,
    *groups.ROUTES,
    *uploads.ROUTES,  # attachments (docs/attachments.md)
    *blobs.ROUTES,
    *service.ROUTES,
)

__all__ = ["ROUTES", "Route", "accounts", "blobs", "certificates", "devices", "groups",
           "key_packages", "keys", "messages", "service", "uploads"]
