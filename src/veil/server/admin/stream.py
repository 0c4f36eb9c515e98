"""The dashboard's live stream (issue 13 §4): one server-sent event a second.

Each frame holds the traffic rate (requests per second since the last frame), the
latency p50/p99 of the last seconds, connections by kind, alerts (count and the most
recent), blocks in force and the envelope counters — the same figures ``/metrics``
gives Prometheus (:class:`~veil.server.admin.sources.ServerView`). At most
:data:`~veil.server.admin.state.MAX_STREAMS` streams run at once, and every stream ends
when the listener closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from veil.server.admin.state import ADMIN, MAX_STREAMS, AdminState
from veil.server.errors import NotAvailable

INTERVAL_S = 1.0
FRAME_ALERTS = 20
FRAME_BLOCKS = 100


class Rate:
    """Requests per second between two calls of :meth:`frame`."""

    def __init__(self, state: AdminState) -> None:
        self._state = state
        self._at = state.view.clock()
        metrics = state.metrics
        self._requests = metrics.total_requests
        self._errors = metrics.total_errors

    def frame(self) -> dict[str, Any]:
        state = self._state
        view, metrics = state.view, state.metrics
        now = view.clock()
        elapsed = max(now - self._at, 1e-3)
        requests, errors = metrics.total_requests, metrics.total_errors
        rate = (requests - self._requests) / elapsed
        error_rate = (errors - self._errors) / elapsed
        self._at, self._requests, self._errors = now, requests, errors
        latency = metrics.recent_latency()
        connections = view.connections()
        active = view.active_blocks()
        alerts = view.recent_alerts(FRAME_ALERTS)
        return {
            "uptime_s": round(view.uptime_s(), 1),
            "requests_total": requests,
            "requests_per_s": round(rate, 2),
            "errors_per_s": round(error_rate, 2),
            "p50_ms": None if latency is None else round(latency[0] * 1000, 2),
            "p99_ms": None if latency is None else round(latency[1] * 1000, 2),
            "connections": connections,
            "connections_total": view.connection_totals().get(
                "total", sum(connections.values())),
            "alerts_total": metrics.alerts_total,
            "alerts": alerts,
            "blocks_total": len(active),
            "blocks": active[:FRAME_BLOCKS],
            "messages": view.messages(),
            "queued_envelopes": view.queued_envelopes(),
        }


async def stream(request: web.Request) -> web.StreamResponse:
    state = request.app[ADMIN]
    state.auth.check(request)
    if len(state.streams) >= MAX_STREAMS:
        raise NotAvailable("too many live streams are open on the admin listener")
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no"})
    await response.prepare(request)
    state.streams.add(response)
    rate = Rate(state)
    try:
        await response.write(b"retry: 2000\n\n")
        while not state.closing.is_set():
            frame = json.dumps(rate.frame(), separators=(",", ":"))
            await response.write(f"event: frame\ndata: {frame}\n\n".encode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.closing.wait(), INTERVAL_S)
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    finally:
        state.streams.discard(response)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/api/stream", stream)


__all__ = [
    "INTERVAL_S",
    "Rate",
    "add_routes",
]
