"""Alerts POSTed to the operator's webhook (issue 13 §3: "an optional webhook — a real
HTTP POST, retried with backoff, bounded queue").

Each ``ALERT`` event on the hub becomes one JSON document (the alert's fields: rule,
source_hash, count, window_s, blocked_s, at, block_id — no message content, no address)
POSTed to ``[webhook] url`` by one background task, in order. With a ``secret`` every
POST carries ``Veil-Signature: sha256=<hex HMAC-SHA256 of the body>`` (the receiver
recomputes it over the raw body), and ``Veil-Delivery`` names the alert so a receiver
can drop a repeat after a retry whose answer was lost.

The hub's subscriber only appends to a bounded deque: an emitter is never held up by a
slow or dead endpoint. When the queue is full the oldest alert is dropped (and
counted: the newest tell the most). A delivery that fails — no connection, a timeout,
a 5xx or 429 answer — is retried with exponential backoff up to ``max_attempts``; any
other answer ends it (a 4xx will not get better by repeating it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp

from veil.server.protection import events as ev
from veil.server.protection.events import EventHub, SecurityEvent
from veil.server.protection.settings import WebhookSettings

log = logging.getLogger("veil.server.protection")

SIGNATURE_HEADER = "Veil-Signature"
DELIVERY_HEADER = "Veil-Delivery"
BACKOFF_S = 1.0  # the first retry's delay; each next one doubles it
MAX_BACKOFF_S = 60.0


def signature(secret: str, body: bytes) -> str:
    """The ``Veil-Signature`` header value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


@dataclass
class WebhookStats:
    queued: int = 0  # waiting now
    sent: int = 0  # delivered (2xx)
    failed: int = 0  # given up on (attempts exhausted, or a final answer)
    dropped: int = 0  # pushed out of a full queue before any attempt
    retries: int = 0  # attempts after the first


class Webhook:
    """POSTs the hub's alerts to ``settings.url`` (nothing at all when it is empty)."""

    def __init__(self, settings: WebhookSettings, events: EventHub, *,
                 backoff_s: float = BACKOFF_S, max_backoff_s: float = MAX_BACKOFF_S) -> None:
        self.settings = settings
        self.events = events
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.enabled = bool(settings.url)
        self._queue: deque[tuple[str, bytes]] = deque(maxlen=settings.max_queue)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stats = WebhookStats()
        if self.enabled:
            events.subscribe(self.on_event, (ev.ALERT,))

    def stats(self) -> WebhookStats:
        self._stats.queued = len(self._queue)
        return WebhookStats(**vars(self._stats))

    # --- the subscriber: never blocks ---------------------------------------------

    def on_event(self, event: SecurityEvent) -> None:
        if event.kind != ev.ALERT:
            return
        self.submit(payload(event))

    def submit(self, document: dict[str, Any]) -> None:
        """Queue one document (dropping the oldest if the queue is full)."""
        delivery = secrets.token_hex(8)  # the same over retries, unique over restarts
        body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        if len(self._queue) == self._queue.maxlen:
            self._stats.dropped += 1
        self._queue.append((delivery, body))
        self._wake.set()

    # --- the sender ---------------------------------------------------------------

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="veil-webhook")

    async def stop(self) -> None:
        if self.enabled:
            self.events.unsubscribe(self.on_event)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            delivery, body = self._queue.popleft()
            await self._deliver(delivery, body)

    async def _deliver(self, delivery: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery,
                   "User-Agent": "veil-server"}
        if self.settings.secret:
            headers[SIGNATURE_HEADER] = signature(self.settings.secret, body)
        delay, attempt, why = self.backoff_s, 0, ""
        while attempt < self.settings.max_attempts:
            if attempt:
                self._stats.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
            attempt += 1
            outcome = await self._post(body, headers)
            if outcome is None:
                self._stats.sent += 1
                return
            why, again = outcome
            if not again:
                break
            log.debug("webhook: delivery %s attempt %d failed (%s)", delivery, attempt, why)
        self._stats.failed += 1
        log.warning("webhook: gave up on delivery %s after %d attempts (%s)", delivery,
                    attempt, why)

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[str, bool] | None:
        """None when delivered, else (why, worth retrying)."""
        assert self._session is not None
        try:
            async with self._session.post(self.settings.url, data=body,
                                          headers=headers) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}", _retryable(response.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return type(exc).__name__, True


def payload(event: SecurityEvent) -> dict[str, Any]:
    """The JSON document of an ALERT event (only the alert's own small fields)."""
    f = event.fields
    return {"type": "alert", "rule": f.get("rule"), "source_hash": f.get("source_hash"),
            "scope": f.get("scope", "source"), "count": f.get("hits", event.count),
            "window_s": f.get("window_s"), "blocked_s": f.get("blocked_s"),
            "at": f.get("at"), "block_id": f.get("block_id"),
            "alert_id": f.get("alert_id")}


__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "Webhook",
    "WebhookStats",
    "payload",
    "signature",
]
