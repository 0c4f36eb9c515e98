"""What the monitoring layer reads from a running server (issue 13 §4).

:class:`ServerView` is the one place that knows where each number lives — the
WebSocket counters of the context, the connection guard's snapshot, the block list,
the detector's alerts, the message service's counters — so the Prometheus collector
(:mod:`veil.server.protection.metrics`), the admin API and the dashboard's live stream
all show the same figures. Every read is cheap and synchronous; the one storage count
(queued envelopes) is refreshed in the background and cached (:class:`CachedCount`).

A layer another engineer has not built yet reads as ``None`` (and the admin API
answers 503 ``not_available`` for its operations) rather than failing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from veil import __version__
from veil.server.http.context import Context
from veil.server.protection.metrics import CachedCount

# At most this many blocks and alerts in a status or a stream frame (the API pages the
# rest: the lists are bounded by their owners too).
MAX_LISTED = 200


def plain(value: Any) -> Any:
    """A dataclass, bytes, tuple … as JSON-ready values (blocks and alerts are the
    detection layer's dataclasses; their fields hold keyed hashes, never addresses)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name != "key"}  # a raw address key stays in memory
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items() if k != "key"}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class ServerView:
    """The figures of one running server, for metrics, admin API and dashboard."""

    def __init__(self, context: Context, clock: Callable[[], float] = time.monotonic) -> None:
        self.context = context
        self.protection = context.protection
        self.clock = clock
        self.clock_ms = context.clock_ms
        self.started = clock()
        self.listener_url = ""
        self.admin_url = ""
        self._queued = CachedCount(context.storage.queued_envelopes, clock)

    # --- components of other layers, None until they exist ------------------------------

    def component(self, name: str) -> Any:
        return getattr(self.protection, name, None)

    # --- Sources (protection/metrics.py) ------------------------------------------------

    def connections(self) -> dict[str, int]:
        """Open connections by kind: TCP connections still in HTTP, WebSockets, sealed
        WebSockets (the connection guard's counts)."""
        by_kind = self.protection.connections.snapshot().get("by_kind")
        counts: dict[str, int] = {}
        if isinstance(by_kind, dict):
            counts.update({str(k): int(v) for k, v in by_kind.items()})
        # The context's own WebSocket counters, should the guard not see a listener.
        sealed = self.context.sealed_connections
        counts.setdefault("websocket", self.context.connections - sealed)
        counts.setdefault("sealed_websocket", sealed)
        return counts

    def connection_totals(self) -> dict[str, int]:
        """All TCP connections, and the addresses holding any."""
        snapshot = self.protection.connections.snapshot()
        return {name: int(snapshot[name]) for name in ("total", "addresses")
                if isinstance(snapshot.get(name), int)}

    def active_blocks(self) -> list[dict[str, Any]]:
        """The blocks in force (keyed hashes only), the one ending soonest first."""
        now_ms = self.clock_ms()
        return [block.as_dict(now_ms) for block in self.protection.blocks.active()]

    def blocks_in_force(self) -> int:
        return len(self.protection.blocks.active())  # active() drops the expired

    def recent_alerts(self, limit: int = MAX_LISTED) -> list[dict[str, Any]]:
        """The detector's most recent alerts, newest first."""
        return [alert.as_dict() for alert in self.protection.detector.alerts(limit)]

    def alerts_kept(self) -> int:
        return len(self.protection.detector)

    def messages(self) -> dict[str, int]:
        service = self.context.messages
        return {"stored": service.stored, "delivered": service.delivered}

    def queued_envelopes(self) -> int | None:
        """The last count (None until the first one is back, or on a storage without
        it); refreshed in the background, at most every few seconds."""
        return self._queued.get()

    # --- for the admin API and the dashboard --------------------------------------------

    def uptime_s(self) -> float:
        return self.clock() - self.started

    def status(self) -> dict[str, Any]:
        config = self.context.config
        metrics = self.protection.metrics
        connections = self.connections()
        return {
            "version": __version__,
            "uptime_s": round(self.uptime_s(), 1),
            "listener_url": self.listener_url,
            "admin_url": self.admin_url,
            "registration": config.registration,
            "connections": connections,
            "connection_totals": self.connection_totals(),
            "blocks": self.blocks_in_force(),
            "alerts": metrics.alerts_total,
            "alerts_kept": self.alerts_kept(),
            "requests": metrics.total_requests,
            "messages": self.messages(),
            "queued_envelopes": self.queued_envelopes(),
            "network": self.protection.network.describe(),
            "audit": self.component("audit") is not None,
        }

    async def close(self) -> None:
        await self._queued.close()


__all__ = [
    "MAX_LISTED",
    "ServerView",
    "plain",
]
