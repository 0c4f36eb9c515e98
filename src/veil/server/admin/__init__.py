"""The admin listener: Prometheus metrics, health, the admin API and the live dashboard
(issue 13 §4; docs/operations.md)."""

from veil.server.admin.app import AdminListener, start_admin

__all__ = [
    "AdminListener",
    "start_admin",
]
