"""The HTTP guard's protection checks (issue 13 §2): blocked addresses, limits on
failed credentials, the security events it emits and the metrics it feeds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.unit.server.test_endpoint import PROBE, Accounts, basic, context
from veil.server.http.app import fallback, guard
from veil.server.http.context import CONTEXT
from veil.server.protection import events as ev
from veil.server.protection.events import EventHub, SecurityEvent
from veil.server.protection.policy import RateLimits
from veil.server.protection.settings import LimitSettings


class Blocks:
    def __init__(self) -> None:
        self.left: float | None = None

    def blocked_for(self, key: str) -> float | None:
        return self.left


class Metrics:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        assert seconds >= 0
        self.seen.append((route, method, status))


@pytest.fixture
async def guarded() -> AsyncIterator[tuple[TestClient[Any, Any], Any, list[SecurityEvent],
                                           Accounts]]:
    hub = EventHub(lambda: 0.0)
    seen: list[SecurityEvent] = []
    hub.subscribe(seen.append)
    # The test client is on loopback: nothing is exempt here, so the limits apply.
    limits = RateLimits(LimitSettings(rates={"auth_failure.address": "1/3600s burst 3"}),
                        hub, lambda: 0.0, exempt=lambda _key: False)
    protection = SimpleNamespace(events=hub, limits=limits, metrics=Metrics(),
                                 blocks=Blocks())
    accounts = Accounts()
    ctx = context(accounts)
    ctx.protection = protection
    app = web.Application()
    app[CONTEXT] = ctx
    app.router.add_route(PROBE.method, PROBE.path, guard(PROBE))
    app.router.add_route("*", "/{tail:.*}", fallback)
    async with TestClient(TestServer(app)) as client:
        yield client, protection, seen, accounts


async def test_a_blocked_address_is_refused_with_retry_after(guarded: Any) -> None:
    client, protection, seen, accounts = guarded
    protection.blocks.left = 29.2
    async with client.put("/probe/1", json={"username": "bob"},
                          headers={"Authorization": basic()}) as r:
        assert r.status == 403
        assert r.headers["Retry-After"] == "30"
        assert (await r.json())["error"]["code"] == "blocked"
    assert accounts.checked == 0
    assert [e.kind for e in seen] == [ev.BLOCKED_REQUEST]
    assert protection.metrics.seen == [("/probe/{n}", "PUT", 403)]


async def test_failed_credentials_are_events_then_refused_before_checking(
        guarded: Any) -> None:
    client, _, seen, accounts = guarded
    for _ in range(3):
        async with client.put("/probe/1", json={"username": "bob"},
                              headers={"Authorization": basic(b"x" * 32)}) as r:
            assert r.status == 401
    assert accounts.checked == 3
    async with client.put("/probe/1", json={"username": "bob"},
                          headers={"Authorization": basic()}) as r:
        assert r.status == 429
        assert int(r.headers["Retry-After"]) > 0
        assert (await r.json())["error"]["details"]["limit"] == "auth_failure"
    assert accounts.checked == 3  # the credentials were not even looked at
    kinds = [e.kind for e in seen]
    assert kinds == [ev.AUTH_FAILURE] * 3 + [ev.RATE_LIMITED]
    assert seen[0].fields == {"route": "/probe/{n}"}


async def test_malformed_oversized_and_unknown_routes_are_events(guarded: Any) -> None:
    client, protection, seen, _ = guarded
    async with client.put("/probe/1", data=b"{nope", headers={
            "Authorization": basic(), "Content-Type": "application/json"}) as r:
        assert r.status == 400
    async with client.put("/probe/1", json={"username": 5},
                          headers={"Authorization": basic()}) as r:
        assert r.status == 422
    async with client.get("/no/such/thing") as r:
        assert r.status == 404
    assert [e.kind for e in seen] == [ev.MALFORMED, ev.MALFORMED, ev.UNKNOWN_ROUTE]
    assert ("unmatched", "GET", 404) in protection.metrics.seen
