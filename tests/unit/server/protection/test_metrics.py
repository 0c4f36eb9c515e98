"""The monitoring layer's parts (issue 13 §4): the metrics of one process in their own
registry, counted from the event hub with bounded label values; the queue count cache;
the admin token and session checks; the dashboard's catalogs and language choice."""

from __future__ import annotations

import asyncio
import hmac
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from veil.server.admin import auth as admin_auth
from veil.server.admin.auth import AdminAuth
from veil.server.admin.dashboard import CSP, dashboard_page, login_page
from veil.server.admin.files import load_or_create_token, read_token
from veil.server.admin.strings import CATALOGS, EN, ZH, choose_language
from veil.server.protection import events as ev
from veil.server.protection.metrics import MAX_LABEL_VALUES, CachedCount, Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def samples(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        if family.name == name:
            return {tuple(sorted(s.labels.items())): s.value for s in family.samples
                    if not s.name.endswith("_created")}
    raise AssertionError(f"no family {name}")


def test_two_servers_in_one_process_keep_their_own_counts() -> None:
    a, b = Metrics(process=False), Metrics(process=False)
    a.observe_request("/v1/x", "GET", 200, 0.002)
    a.observe_request("/v1/x", "GET", 200, 0.004)
    got = samples(a, "veil_http_requests")
    assert got[(("method", "GET"), ("route", "/v1/x"), ("status", "200"))] == 2
    assert samples(b, "veil_http_requests") == {}
    assert a.total_requests == 2 and b.total_requests == 0


def test_events_are_counted_by_their_small_fields() -> None:
    hub = ev.EventHub(Clock())
    metrics = Metrics(hub, process=False)
    hub.emit(ev.RATE_LIMITED, "203.0.113.9", limit_class="submit", dimension="address")
    hub.emit(ev.ALERT, "203.0.113.9", rule="route_scan", hits=30, source_hash="ab" * 8)
    hub.emit(ev.CONNECTION_REFUSED, "203.0.113.9", reason="cap")
    hub.emit(ev.TIMEOUT, "203.0.113.9", phase="headers", count=3)
    assert samples(metrics, "veil_rate_limit_hits")[(("limit_class", "submit"),)] == 1
    assert samples(metrics, "veil_rule_firings")[(("rule", "route_scan"),)] == 1
    assert samples(metrics, "veil_connections_refused")[(("reason", "cap"),)] == 1
    assert samples(metrics, "veil_connection_timeouts")[(("phase", "headers"),)] == 3
    assert metrics.alerts_total == 1
    assert "203.0.113.9" not in metrics.exposition().decode()


def test_label_values_are_bounded() -> None:
    metrics = Metrics(process=False)
    for i in range(MAX_LABEL_VALUES + 50):
        metrics.observe_request(f"/r{i}", "GET", 200, 0.001)
    metrics.observe_request("/r0", "BREW", 418, 0.001)
    routes = {dict(k)["route"] for k in samples(metrics, "veil_http_requests")}
    assert len(routes) == MAX_LABEL_VALUES + 1 and "other" in routes
    methods = {dict(k)["method"] for k in samples(metrics, "veil_http_requests")}
    assert methods == {"GET", "other"}


def test_recent_latency_is_the_last_window_only() -> None:
    clock = Clock()
    metrics = Metrics(clock=clock, process=False)
    assert metrics.recent_latency() is None
    for ms in range(1, 101):
        metrics.observe_request("/v1/x", "GET", 200, ms / 1000)
    p50, p99 = metrics.recent_latency() or (0, 0)
    assert p50 == pytest.approx(0.050) and p99 == pytest.approx(0.099)
    clock.now += 60
    assert metrics.recent_latency() is None


class Sources:
    def __init__(self) -> None:
        self.fail = False

    def connections(self) -> dict[str, int]:
        if self.fail:
            raise RuntimeError("broken")
        return {"http": 3, "websocket": 2, "sealed_websocket": 1}

    def blocks_in_force(self) -> int | None:
        return 4

    def alerts_kept(self) -> int | None:
        return 5

    def messages(self) -> dict[str, int]:
        return {"stored": 7, "delivered": 6}

    def queued_envelopes(self) -> int | None:
        return 1


def test_scrape_time_gauges_and_a_broken_source() -> None:
    metrics = Metrics(process=True)
    sources = Sources()
    metrics.bind(sources)
    assert samples(metrics, "veil_connections")[(("kind", "websocket"),)] == 2
    assert samples(metrics, "veil_blocks_in_force")[()] == 4
    assert samples(metrics, "veil_messages")[(("state", "stored"),)] == 7
    assert samples(metrics, "veil_queued_envelopes")[()] == 1
    assert samples(metrics, "process_open_fds")[()] > 0
    sources.fail = True
    text = metrics.exposition().decode()  # still a valid exposition
    assert "veil_uptime_seconds" in text and "veil_connections{" not in text


async def test_the_queue_count_is_cached_and_refreshed_in_the_background() -> None:
    clock = Clock()
    calls = 0

    async def count() -> int:
        nonlocal calls
        calls += 1
        return 40 + calls

    cached = CachedCount(count, clock, ttl=10)
    assert cached.get() is None  # the first query runs in the background
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert cached.get() == 41 and calls == 1
    clock.now += 5
    assert cached.get() == 41 and calls == 1
    clock.now += 6
    cached.get()
    for _ in range(3):
        await asyncio.sleep(0)
    assert cached.get() == 42
    await cached.close()


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module the check calls
    auth = AdminAuth("s3cret-token")
    assert auth.token_ok("s3cret-token") and not auth.token_ok("s3cret-tokeX")
    assert not auth.token_ok("")
    # Digests of equal length: the time depends on neither the token nor the guess.
    assert len(seen) == 3 and all(len(a) == len(b) == 32 for a, b in seen)


def test_sessions_are_bounded_and_expire() -> None:
    clock = Clock()
    auth = AdminAuth("t", clock)
    assert auth.login("wrong") is None
    first = auth.login("t")
    assert first is not None
    for _ in range(admin_auth.MAX_SESSIONS):
        auth.login("t")
    assert len(auth._sessions) == admin_auth.MAX_SESSIONS
    assert admin_auth._digest(first[0]) not in auth._sessions  # the oldest went first


def test_the_token_file_is_made_once_and_private(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path)
    assert load_or_create_token(tmp_path) == token == read_token(tmp_path)
    assert (tmp_path / "admin" / "token").stat().st_mode & 0o777 == 0o600
    assert len(token) >= 40


def test_both_catalogs_have_the_same_keys_and_fields() -> None:
    assert EN.keys() == ZH.keys()
    for key in EN:
        assert set(re.findall(r"{(\w+)}", EN[key])) == set(re.findall(r"{(\w+)}", ZH[key])), key
        assert ZH[key] != EN[key] or key.startswith("kind.") or key in ("live",), key


@pytest.mark.parametrize(("cookie", "accept", "lang"), [
    (None, None, "en"), (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"), (None, "en-GB,zh;q=0.5", "en"),
    (None, "fr-FR, zh-TW;q=0.3", "zh"), ("en", "zh-CN", "en"), ("zh", "en", "zh"),
    ("xx", "de", "en"), (None, "zh;q=bad", "zh"),
])
def test_the_language_is_the_toggle_then_the_browser(cookie: str | None, accept: str | None,
                                                      lang: str) -> None:
    assert choose_language(cookie, accept) == lang


def test_the_pages_have_no_inline_script_or_style() -> None:
    for lang in CATALOGS:
        for page in (login_page(lang), login_page(lang, wrong=True),
                     dashboard_page(lang, "csrf-value", "invite")):
            scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
            for attrs, body in scripts:
                assert 'src="/admin/static/' in attrs or 'type="application/json"' in attrs
                assert body == "" or 'type="application/json"' in attrs
            assert "style=" not in page and "<style" not in page
            assert not re.search(r"<[^>]*\son\w+=", page)  # no onclick= and the like
            assert "http://" not in page and "https://" not in page
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
