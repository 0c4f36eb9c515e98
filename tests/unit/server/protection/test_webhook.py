"""The alert webhook (issue 13 §3) against a real aiohttp HTTP server on loopback:
the POSTed JSON and its HMAC signature, retries with backoff after 5xx answers and
refused connections, the attempt limit, and the bounded queue that drops the oldest."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from tests.integration.server.harness import free_port
from veil.server.protection import events as ev
from veil.server.protection.events import EventHub
from veil.server.protection.settings import WebhookSettings
from veil.server.protection.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, Webhook


@dataclass
class Receiver:
    """A loopback HTTP endpoint recording every POST; ``answers`` are popped per POST
    (200 once they run out); ``gate`` holds each POST until set."""

    url: str = ""
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        await self.gate.wait()
        async with self.arrived:
            self.posts.append((dict(request.headers), body))
            self.arrived.notify_all()
        return web.Response(status=self.answers.pop(0) if self.answers else 200)

    async def wait_posts(self, n: int, timeout: float = 20.0) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.posts) >= n),
                                   timeout)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    rec.gate.set()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


def alert(hub: EventHub, n: int = 1) -> None:
    hub.emit(ev.ALERT, "127.0.0.2", rule="auth_bruteforce", hits=20 + n, window_s=60.0,
             blocked_s=900.0, source_hash="abcd" * 4, scope="source", at=1_700_000_000_000 + n,
             block_id=f"b{n}", alert_id=n)


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_alert_is_posted_as_signed_json(receiver: Receiver) -> None:
    hub = EventHub(time.monotonic)
    hook = Webhook(WebhookSettings(url=receiver.url, secret="s3cret"), hub)
    hook.start()
    try:
        hub.emit(ev.RATE_LIMITED, "127.0.0.2", limit_class="submit")  # not an alert
        alert(hub)
        await receiver.wait_posts(1)
    finally:
        await hook.stop()
    [(headers, body)] = receiver.posts
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == "sha256=" + expected
    assert headers["Content-Type"] == "application/json"
    assert headers[DELIVERY_HEADER]
    doc = json.loads(body)
    assert doc == {"type": "alert", "rule": "auth_bruteforce", "source_hash": "abcd" * 4,
                   "scope": "source", "count": 21, "window_s": 60.0, "blocked_s": 900.0,
                   "at": 1_700_000_000_001, "block_id": "b1", "alert_id": 1}
    assert "127.0.0.2" not in body.decode()
    assert hook.stats().sent == 1


async def test_no_secret_no_signature(receiver: Receiver) -> None:
    hub = EventHub(time.monotonic)
    hook = Webhook(WebhookSettings(url=receiver.url), hub)
    hook.start()
    try:
        alert(hub)
        await receiver.wait_posts(1)
    finally:
        await hook.stop()
    assert SIGNATURE_HEADER not in receiver.posts[0][0]


async def test_server_errors_are_retried_with_the_same_delivery(receiver: Receiver) -> None:
    receiver.answers = [500, 503]
    hub = EventHub(time.monotonic)
    hook = Webhook(WebhookSettings(url=receiver.url, secret="k"), hub, backoff_s=0.01)
    hook.start()
    try:
        alert(hub)
        await receiver.wait_posts(3)
        await wait_until(lambda: hook.stats().sent == 1)
    finally:
        await hook.stop()
    assert len({h[DELIVERY_HEADER] for h, _ in receiver.posts}) == 1
    assert len({b for _, b in receiver.posts}) == 1
    stats = hook.stats()
    assert (stats.sent, stats.retries, stats.failed) == (1, 2, 0)


async def test_gives_up_after_max_attempts_and_goes_on(receiver: Receiver) -> None:
    receiver.answers = [500] * 4
    hub = EventHub(time.monotonic)
    hook = Webhook(WebhookSettings(url=receiver.url, max_attempts=4), hub, backoff_s=0.01)
    hook.start()
    try:
        alert(hub, 1)
        alert(hub, 2)
        await receiver.wait_posts(5)
        await wait_until(lambda: hook.stats().sent == 1)
    finally:
        await hook.stop()
    stats = hook.stats()
    assert (stats.failed, stats.sent, stats.retries) == (1, 1, 3)
    assert json.loads(receiver.posts[-1][1])["alert_id"] == 2


async def test_a_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.answers = [400]
    hub = EventHub(time.monotonic)
    hook = Webhook(WebhookSettings(url=receiver.url), hub, backoff_s=0.01)
    hook.start()
    try:
        alert(hub, 1)
        alert(hub, 2)
        await receiver.wait_posts(2)
        await wait_until(lambda: hook.stats().sent == 1)
    finally:
        await hook.stop()
    assert hook.stats().failed == 1 and hook.stats().retries == 0


async def test_refused_connections_are_retried_until_the_endpoint_is_up() -> None:
    port = free_port()
    rec = Receiver()
    rec.gate.set()
    hub = EventHub(time.monotonic)
    hook = Webhook(WebhookSettings(url=f"http://127.0.0.1:{port}/hook", max_attempts=50),
                   hub, backoff_s=0.02, max_backoff_s=0.1)
    hook.start()
    runner: web.AppRunner | None = None
    try:
        alert(hub)
        await wait_until(lambda: hook.stats().retries >= 2)
        app = web.Application()
        app.router.add_post("/hook", rec.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await rec.wait_posts(1)
        await wait_until(lambda: hook.stats().sent == 1)
    finally:
        await hook.stop()
        if runner is not None:
            await runner.cleanup()


async def test_full_queue_drops_the_oldest_without_blocking(receiver: Receiver) -> None:
    receiver.gate.clear()  # the endpoint hangs: the first POST stays in flight
    hub = EventHub(time.monotonic)
    hook = Webhook(WebhookSettings(url=receiver.url, max_queue=3, timeout_s=30), hub)
    hook.start()
    try:
        alert(hub, 1)
        await wait_until(lambda: hook.stats().queued == 0)  # taken by the sender
        started = time.monotonic()
        for n in range(2, 12):
            alert(hub, n)
        assert time.monotonic() - started < 0.5  # the emitter never waits
        stats = hook.stats()
        assert (stats.queued, stats.dropped) == (3, 7)
        receiver.gate.set()
        await receiver.wait_posts(4)
        await wait_until(lambda: hook.stats().sent == 4)
    finally:
        await hook.stop()
    assert [json.loads(b)["alert_id"] for _, b in receiver.posts] == [1, 9, 10, 11]


async def test_no_url_no_webhook() -> None:
    hub = EventHub(time.monotonic)
    hook = Webhook(WebhookSettings(), hub)
    hook.start()
    alert(hub)
    assert not hook.enabled and hook.stats().queued == 0
    await hook.stop()
