"""The monitoring layer against a real server process (issue 13 §4): ``/metrics`` in
Prometheus' text format with every family and no identifier in any label, ``/health``
and ``/ready``, the admin API behind its token (status, alerts, blocks, lift, deny,
invites, reload, the audit log), the dashboard's session with its CSRF header, and the
live stream."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server.admin_helpers import (
    ATTACKER,
    BYSTANDER,
    AdminRef,
    admin_of,
    api,
    eventually,
    scan_routes,
    session_from,
)
from tests.integration.server.harness import ServerProcess, register, send_sealed

FAMILIES = {
    "veil_http_requests", "veil_http_request_duration_seconds", "veil_connections",
    "veil_messages", "veil_storage_call_duration_seconds", "veil_security_events",
    "veil_rate_limit_hits", "veil_rule_firings", "veil_connections_refused",
    "veil_connection_timeouts", "veil_blocks_in_force", "veil_queued_envelopes",
    "veil_uptime_seconds", "process_resident_memory_bytes", "process_open_fds",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(Path(tmp_path_factory.mktemp("veil")) / "data").start()
    yield proc
    proc.stop()


@pytest.fixture
def admin(server: ServerProcess) -> AdminRef:
    return admin_of(server)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def metrics_text(http: aiohttp.ClientSession, admin: AdminRef) -> str:
    async with http.get(admin.url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return await r.text()


def test_the_token_file_is_private_and_the_address_names_a_loopback_port(
        server: ServerProcess, admin: AdminRef) -> None:
    token_file = server.data_dir / "admin" / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(admin.token) >= 32
    assert admin.url.startswith("http://127.0.0.1:") and admin.url != server.url
    out = (server.data_dir.parent / f"{server.data_dir.name}.out").read_text()
    assert f"admin: {admin.url} — metrics at /metrics" in out


async def test_metrics_parse_and_count_traffic_without_identifiers(
        server: ServerProcess, admin: AdminRef, http: aiohttp.ClientSession) -> None:
    alice = await register(http, server.url, username="alice_metrics")
    bob = await register(http, server.url, username="bob_metrics")
    status, _ = await send_sealed(http, server.url, bob, {bob.device_id: os.urandom(64)})
    assert status == 200
    async with http.get(server.url + "/v1/accounts/me", headers=alice.auth()) as r:
        assert r.status == 200
    async with http.get(server.url + "/no-such-route") as r:
        assert r.status == 404
    # An attacker's scan on another address: counted, and still no address in a label.
    await scan_routes(server.url, requests=5)

    async def counted() -> dict[str, Any] | None:
        found = families(await metrics_text(http, admin))
        stored = [s.value for s in found["veil_messages"].samples
                  if s.labels.get("state") == "stored" and s.name == "veil_messages_total"]
        return found if stored and stored[0] >= 1 else None

    found = await eventually(counted, what="the stored envelope in the metrics")
    assert FAMILIES <= set(found), FAMILIES - set(found)
    requests = {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value
                for s in found["veil_http_requests"].samples if s.name.endswith("_total")}
    assert requests[("/v1/accounts", "POST", "201")] >= 2
    assert requests[("/v1/messages/{target}", "PUT", "200")] >= 1
    assert requests[("unmatched", "GET", "404")] >= 6
    latency = [s for s in found["veil_http_request_duration_seconds"].samples
               if s.name.endswith("_count") and s.labels["route"] == "/v1/accounts/me"]
    assert latency and latency[0].value >= 1
    unknown = [s.value for s in found["veil_security_events"].samples
               if s.labels.get("kind") == "unknown_route"]
    assert unknown and unknown[0] >= 5

    # No label value anywhere is an account id, a username or an address.
    text = await metrics_text(http, admin)
    for identifier in (alice.account_id, bob.account_id, "alice_metrics", "bob_metrics",
                       "127.0.0.1", ATTACKER):
        assert identifier not in text
    for family in found.values():
        for sample in family.samples:
            for name, value in sample.labels.items():
                if name == "le":  # a histogram bucket's bound
                    continue
                assert not _is_address(value), (sample.name, name, value)
                assert not re.fullmatch(r"[0-9a-fA-F]{12,}", value), (sample.name, value)
                assert len(value) <= 64, (sample.name, value)


async def test_health_and_ready(admin: AdminRef, http: aiohttp.ClientSession) -> None:
    async with http.get(admin.url + "/health") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    async with http.get(admin.url + "/ready") as r:
        body = await r.json()
        assert r.status == 200, body
        assert body["status"] == "ready"
        assert body["checks"]["storage"] == "ok" and body["checks"]["migrations"] == "done"


@pytest.mark.parametrize("path", ["/admin/api/status", "/admin/api/alerts",
                                  "/admin/api/blocks", "/admin/api/stream",
                                  "/admin/api/audit/export"])
async def test_the_admin_api_needs_the_token(admin: AdminRef, http: aiohttp.ClientSession,
                                             path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer not-the-token"},
                    {"Authorization": "Bearer " + admin.token[:-1]},
                    {"Authorization": "Basic " + admin.token}):
        async with http.get(admin.url + path, headers=headers) as r:
            assert r.status == 401, (path, headers)
            assert (await r.json())["error"]["code"] == "invalid_admin_token"
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    for method, write in (("POST", "/admin/api/blocks/x/lift"), ("POST", "/admin/api/deny"),
                          ("DELETE", "/admin/api/deny"), ("POST", "/admin/api/invites"),
                          ("POST", "/admin/api/reload")):
        async with http.request(method, admin.url + write, json={"cidr": "10.0.0.0/8"}) as r:
            assert r.status == 401, write


async def test_status(server: ServerProcess, admin: AdminRef,
                      http: aiohttp.ClientSession) -> None:
    status, body = await api(http, admin, "GET", "/admin/api/status")
    assert status == 200
    assert body["listener_url"] == server.url and body["admin_url"] == admin.url
    assert body["registration"] == "open" and body["version"]
    assert body["uptime_s"] >= 0
    assert {"http", "websocket", "sealed_websocket"} <= set(body["connections"])
    assert isinstance(body["blocks"], int) and isinstance(body["alerts"], int)


async def test_an_attack_is_seen_listed_and_lifted(server: ServerProcess, admin: AdminRef,
                                                   http: aiohttp.ClientSession) -> None:
    await scan_routes(server.url)

    async def blocked() -> list[dict[str, Any]] | None:
        _, body = await api(http, admin, "GET", "/admin/api/blocks")
        return [b for b in body["blocks"] if b["rule"] == "route_scan"] or None

    block = (await eventually(blocked, what="the route_scan block"))[0]
    assert block["seconds_left"] > 0 and len(block["key_hash"]) >= 8
    assert ATTACKER not in json.dumps(block)
    status, alerts = await api(http, admin, "GET", "/admin/api/alerts")
    assert status == 200 and alerts["total"] >= 1
    assert any(a["rule"] == "route_scan" for a in alerts["alerts"])
    assert ATTACKER not in json.dumps(alerts)
    found = families(await metrics_text(http, admin))
    firings = {s.labels["rule"]: s.value for s in found["veil_rule_firings"].samples
               if s.name.endswith("_total")}
    assert firings.get("route_scan", 0) >= 1
    assert found["veil_blocks_in_force"].samples[0].value >= 1

    status, body = await api(http, admin, "POST", f"/admin/api/blocks/{block['id']}/lift")
    assert status == 200 and body["lifted"] == block["id"]
    _, listed = await api(http, admin, "GET", "/admin/api/blocks")
    assert all(b["id"] != block["id"] for b in listed["blocks"])
    async with session_from(ATTACKER) as attacker, attacker.get(server.url + "/health") as r:
        assert r.status == 200
    status, body = await api(http, admin, "POST", f"/admin/api/blocks/{block['id']}/lift")
    assert status == 404 and body["error"]["code"] == "block_not_found"

    async def recorded() -> list[dict[str, Any]] | None:
        async with http.get(admin.url + "/admin/api/audit/export",
                            headers=admin.bearer) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("application/x-ndjson")
            rows = [json.loads(line) for line in (await r.text()).splitlines()]
        return [row for row in rows if row["kind"] == "admin.lift"] or None

    lifted = await eventually(recorded, what="admin.lift in the audit log")
    assert lifted[0]["fields"]["block"] == block["id"]
    status, verified = await api(http, admin, "GET", "/admin/api/audit/verify")
    assert status == 200 and verified["report"]["ok"] is True


async def test_deny_and_allow_a_network(server: ServerProcess, admin: AdminRef,
                                        http: aiohttp.ClientSession) -> None:
    status, body = await api(http, admin, "POST", "/admin/api/deny",
                             json={"cidr": f"{BYSTANDER}/32"})
    assert status == 200 and f"{BYSTANDER}/32" in body["rules"]

    async def refused() -> bool:
        try:
            async with session_from(BYSTANDER) as s, s.get(server.url + "/health") as r:
                return r.status == 403
        except (aiohttp.ClientConnectionError, OSError):
            return True

    assert await eventually(refused, what="the denied address refused")
    async with http.get(server.url + "/health") as r:  # 127.0.0.1 untouched
        assert r.status == 200
    _, listed = await api(http, admin, "GET", "/admin/api/deny")
    assert f"{BYSTANDER}/32" in listed["rules"]
    status, body = await api(http, admin, "DELETE", "/admin/api/deny",
                             json={"cidr": f"{BYSTANDER}/32"})
    assert status == 200 and body["removed"] is True
    async with session_from(BYSTANDER) as s, s.get(server.url + "/health") as r:
        assert r.status == 200
    for wrong in ("not-a-network", "300.1.2.3/8", "", 12):
        status, body = await api(http, admin, "POST", "/admin/api/deny", json={"cidr": wrong})
        assert status == 422 and body["error"]["code"] == "validation_failed"


async def test_invites_are_minted(admin: AdminRef, http: aiohttp.ClientSession) -> None:
    status, body = await api(http, admin, "POST", "/admin/api/invites",
                             json={"count": 3, "hours": 2})
    assert status == 200 and len(set(body["invites"])) == 3 and body["hours"] == 2
    for wrong in ({"count": 0}, {"count": 5000}, {"hours": 0}, {"count": "2"}):
        status, body = await api(http, admin, "POST", "/admin/api/invites", json=wrong)
        assert status == 422, wrong


async def test_invites_register_on_an_invite_only_server(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", {"registration": "invite"}).start()
    try:
        admin = admin_of(server)
        async with aiohttp.ClientSession() as http:
            _, body = await api(http, admin, "POST", "/admin/api/invites", json={"count": 1})
            device = await register(http, server.url, invite=body["invites"][0])
            assert device.account_id
    finally:
        server.stop()
    # A stopped server leaves no address behind (``veil admin`` then says it is stopped).
    assert not (server.data_dir / "admin" / "address").exists()


async def test_reload_reads_the_config_file_again(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", {"network": {"deny": []}}).start()
    try:
        admin = admin_of(server)
        async with aiohttp.ClientSession() as http:
            async with session_from(BYSTANDER) as s, s.get(server.url + "/health") as r:
                assert r.status == 200
            server.settings = {"network": {"deny": [f"{BYSTANDER}/32"]}}
            server.write_config()
            status, body = await api(http, admin, "POST", "/admin/api/reload")
            assert status == 200 and body["reloaded"] is True
            assert body["result"]["network"]["deny"] == 1

            async def refused() -> bool:
                try:
                    async with session_from(BYSTANDER) as s, \
                            s.get(server.url + "/health") as r:
                        return r.status == 403
                except (aiohttp.ClientConnectionError, OSError):
                    return True

            assert await eventually(refused, what="the address denied by the file")
            server.config_path.write_text("[network]\ndeny = [\"not a network\"]\n")
            status, body = await api(http, admin, "POST", "/admin/api/reload")
            assert status == 422 and "not applied" in body["error"]["message"]
            assert await refused()  # the bad file changed nothing
    finally:
        server.stop()


async def test_a_dashboard_session_needs_its_csrf_header(
        admin: AdminRef, http: aiohttp.ClientSession) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.post(admin.url + "/admin/login", data={"token": "wrong"}) as r:
            assert r.status == 401 and "veil_admin" not in r.cookies
        async with browser.post(admin.url + "/admin/login", data={"token": admin.token},
                                allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/admin/"
            cookie = r.cookies["veil_admin"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
            assert cookie["path"] == "/admin"
        async with browser.get(admin.url + "/admin/") as r:
            page = await r.text()
            assert r.status == 200 and 'name="veil-csrf"' in page
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp
            assert "unsafe-inline" not in csp
        csrf = page.split('name="veil-csrf" content="', 1)[1].split('"', 1)[0]
        async with browser.get(admin.url + "/admin/api/status") as r:
            assert r.status == 200  # reading needs the session only
        async with browser.post(admin.url + "/admin/api/invites", json={"count": 1}) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "csrf_refused"
        async with browser.post(admin.url + "/admin/api/invites", json={"count": 1},
                                headers={"X-Veil-CSRF": csrf,
                                         "Origin": "http://evil.example"}) as r:
            assert r.status == 403
        async with browser.post(admin.url + "/admin/api/invites", json={"count": 1},
                                headers={"X-Veil-CSRF": csrf}) as r:
            assert r.status == 200
        async with browser.post(admin.url + "/admin/logout",
                                headers={"X-Veil-CSRF": csrf}) as r:
            assert r.status == 200
        async with browser.get(admin.url + "/admin/api/status") as r:
            assert r.status == 401


async def test_the_live_stream_sends_a_frame_a_second(
        server: ServerProcess, admin: AdminRef, http: aiohttp.ClientSession) -> None:
    frames: list[dict[str, Any]] = []
    async with http.get(admin.url + "/admin/api/stream", headers=admin.bearer) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
        async for raw in r.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                frames.append(json.loads(line[6:]))
                async with http.get(server.url + "/health") as h:
                    await h.read()
            if len(frames) == 3:
                break
    last = frames[-1]
    for key in ("requests_per_s", "p50_ms", "p99_ms", "connections", "alerts_total",
                "blocks", "uptime_s"):
        assert key in last
    assert last["requests_total"] > frames[0]["requests_total"]


async def test_static_assets_are_served_and_nothing_else(
        admin: AdminRef, http: aiohttp.ClientSession) -> None:
    for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        async with http.get(f"{admin.url}/admin/static/{name}") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith(kind)
            assert "http://" not in await r.text() and "https://" not in await r.text()
    for name in ("../app.py", "app.py", "%2e%2e%2fapp.py"):
        async with http.get(f"{admin.url}/admin/static/{name}") as r:
            assert r.status == 404
