"""What every handler of the admin listener shares (issue 13 §4)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from veil.server.admin.auth import AdminAuth
from veil.server.admin.sources import ServerView
from veil.server.http.context import Context
from veil.server.protection.metrics import Metrics

# Live streams (SSE) one listener serves at once: a dashboard holds one per tab.
MAX_STREAMS = 16


@dataclass
class AdminState:
    context: Context
    view: ServerView
    auth: AdminAuth
    streams: set[web.StreamResponse] = field(default_factory=set)
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # ends the streams

    @property
    def metrics(self) -> Metrics:
        return self.context.protection.metrics


ADMIN = web.AppKey("admin", AdminState)

__all__ = [
    "ADMIN",
    "MAX_STREAMS",
    "AdminState",
]
