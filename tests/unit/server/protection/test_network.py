"""The network policy (issue 13 §1): CIDR allow/deny lists over IPv4 and IPv6, proxies and
exempt addresses, X-Forwarded-For from trusted proxies only, reloads and runtime rules;
and the connection guard's bookkeeping (caps, refusals, snapshot)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from veil.server.errors import ConfigError, TooManyConnections
from veil.server.protection import events as ev
from veil.server.protection.connections import (
    MAX_HEAD_BYTES,
    ConnectionGuard,
    GuardedConnection,
    _handler_idle,
    raise_fd_limit,
)
from veil.server.protection.events import EventHub, SecurityEvent
from veil.server.protection.network import NetworkPolicy
from veil.server.protection.settings import NetworkSettings
from veil.server.storage.base import NetworkRule


@dataclass
class FakeRequest:
    remote: str | None
    headers: dict[str, str] = field(default_factory=dict)
    transport: Any = None


def policy(**settings: Any) -> NetworkPolicy:
    return NetworkPolicy(NetworkSettings(**settings))


def test_deny_lists_match_ipv4_and_ipv6_networks() -> None:
    p = policy(deny=("203.0.113.0/24", "2001:db8:bad::/48", "198.51.100.7"))
    assert not p.admits("203.0.113.99")
    assert not p.admits("198.51.100.7")
    assert p.admits("198.51.100.8")
    assert not p.admits("2001:db8:bad:1::5")
    assert p.admits("2001:db8:900d::5")
    assert not p.admits("::ffff:203.0.113.1")  # IPv4-mapped counts as IPv4
    assert not p.admits("2001:db8:bad:1::/64")  # an address key of the /64


def test_an_allow_list_admits_only_its_networks_and_exempt_addresses() -> None:
    p = policy(allow=("10.0.0.0/8", "fd00::/8"), deny=("10.6.6.0/24",))
    assert p.admits("10.1.2.3") and p.admits("fd12::1")
    assert not p.admits("192.0.2.1") and not p.admits("2001:db8::1")
    assert not p.admits("10.6.6.6")  # deny wins over allow
    assert p.admits("127.0.0.1") and p.admits("::1")  # exempt: the operator's machine
    assert not p.admits(None)  # no address is not in an allow list


def test_proxies_and_exempt_addresses() -> None:
    p = policy(proxies=("192.0.2.0/24",), forwarded_for_from=("10.0.0.1",))
    assert p.is_proxy("192.0.2.9") and p.is_proxy("10.0.0.1")
    assert not p.is_proxy("192.0.3.9")
    assert p.is_exempt("127.0.0.1") and p.is_exempt("::1") and not p.is_exempt("127.0.0.2")
    assert p.large_caps("127.0.0.1") and p.large_caps("192.0.2.1")
    assert not p.large_caps("198.51.100.1")


def test_bad_networks_are_configuration_errors() -> None:
    with pytest.raises(ConfigError, match=r"network\.deny"):
        policy(deny=("10.0.0.300/8",))


def test_forwarded_for_is_believed_only_from_the_configured_proxies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = policy(forwarded_for_from=("10.0.0.1", "10.0.0.2"))
    via_proxy = FakeRequest("10.0.0.1", {"X-Forwarded-For": "6.6.6.6, 198.51.100.4"})
    assert p.client_key(via_proxy) == "198.51.100.4"  # the last hop the proxy added
    chained = FakeRequest("10.0.0.1", {"X-Forwarded-For": "198.51.100.4, 10.0.0.2"})
    assert p.client_key(chained) == "198.51.100.4"  # trusted hops are skipped
    v6 = FakeRequest("10.0.0.1", {"X-Forwarded-For": "2001:db8:1:2:3:4:5:6"})
    assert p.client_key(v6) == "2001:db8:1:2::/64"
    garbage = FakeRequest("10.0.0.1", {"X-Forwarded-For": "not-an-ip"})
    assert p.client_key(garbage) == "10.0.0.1"
    stranger = FakeRequest("198.51.100.9", {"X-Forwarded-For": "1.2.3.4"})
    assert p.client_key(stranger) == "198.51.100.9"  # anyone else's header is ignored
    assert p.client_key(FakeRequest("198.51.100.9")) == "198.51.100.9"
    assert p.client_key(FakeRequest(None)) == "unknown"
    # An exempt peer sending the header, not listed as a proxy: warned once, no address.
    with caplog.at_level(logging.WARNING, logger="veil.server.protection"):
        for _ in range(3):
            assert p.client_key(FakeRequest("127.0.0.1", {"X-Forwarded-For": "1.2.3.4"})) \
                == "127.0.0.1"
    warnings = [r for r in caplog.records if "forwarded_for_from" in r.getMessage()]
    assert len(warnings) == 1
    assert "1.2.3.4" not in warnings[0].getMessage()


def test_reload_replaces_the_lists_and_a_bad_one_changes_nothing() -> None:
    p = policy(deny=("198.51.100.0/24",))
    changed: list[int] = []
    p.on_change.append(lambda: changed.append(1))
    p.reload(NetworkSettings(deny=("203.0.113.0/24",)))
    assert p.admits("198.51.100.1") and not p.admits("203.0.113.1")
    assert changed == [1]
    with pytest.raises(ConfigError):
        p.reload(NetworkSettings(deny=("203.0.113.0/24", "nonsense")))
    assert not p.admits("203.0.113.1")
    assert p.settings.deny == ("203.0.113.0/24",)


class RuleStorage:
    """The storage calls of runtime rules (the real ones are tested with storage)."""

    def __init__(self) -> None:
        self.rules: dict[str, NetworkRule] = {}

    async def network_rules_add(self, cidr: str, action: str, now_ms: int) -> None:
        self.rules[cidr] = NetworkRule(cidr, action, now_ms)

    async def network_rules_remove(self, cidr: str) -> bool:
        return self.rules.pop(cidr, None) is not None

    async def network_rules(self) -> list[NetworkRule]:
        return list(self.rules.values())


async def test_runtime_deny_rules_are_kept_and_survive_a_restart_and_a_reload() -> None:
    storage: Any = RuleStorage()
    p = NetworkPolicy(NetworkSettings(), storage, lambda: 1000)
    await p.open()
    assert await p.deny_runtime("203.0.113.7") == "203.0.113.7/32"
    assert await p.deny_runtime("2001:db8::1/48") == "2001:db8::/48"
    assert not p.admits("203.0.113.7") and not p.admits("2001:db8:0:1::9")
    p.reload(NetworkSettings(deny=("192.0.2.0/24",)))
    assert not p.admits("203.0.113.7")  # a reload keeps the runtime rules
    again = NetworkPolicy(NetworkSettings(), storage)
    await again.open()
    assert again.runtime_rules() == ["203.0.113.7/32", "2001:db8::/48"]
    assert not again.admits("203.0.113.7")
    assert await again.remove_runtime("203.0.113.7/32")
    assert not await again.remove_runtime("203.0.113.7/32")
    assert again.admits("203.0.113.7")
    with pytest.raises(ConfigError):
        await again.deny_runtime("nope")


# ---- the connection guard ---------------------------------------------------------------

class FakeTransport:
    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.aborted = False
        self.closed = False
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.ip, 4242) if name == "peername" else default

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True

    def get_protocol(self) -> Any:
        return self.protocol

    def is_closing(self) -> bool:
        return self.aborted or self.closed


class FakeHandler:
    """What the guard reads of aiohttp's RequestHandler."""

    def __init__(self) -> None:
        self._request_count = 0
        self._request_in_progress = False
        self._messages: list[Any] = []
        self._waiter: Any = None
        self._payload_parser: Any = None
        self.received: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        self._waiter = object()

    def data_received(self, data: bytes) -> None:
        self.received.append(data)
        if b"\r\n\r\n" in data:
            self._request_count += 1

    def connection_lost(self, exc: Any) -> None:
        self.lost = True


def guard(**settings: Any) -> tuple[ConnectionGuard, list[SecurityEvent]]:
    hub = EventHub(lambda: 0.0)
    seen: list[SecurityEvent] = []
    hub.subscribe(seen.append)
    g = ConnectionGuard(NetworkPolicy(NetworkSettings(**settings)), hub)
    g.protocol_factory(FakeHandler)
    return g, seen


def connect(g: ConnectionGuard, ip: str) -> tuple[GuardedConnection, FakeTransport]:
    conn = GuardedConnection(g, None)
    transport = FakeTransport(ip)
    transport.protocol = conn
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def test_the_per_address_cap_refuses_at_accept_and_frees_on_close() -> None:
    g, seen = guard(max_connections_per_address=2)
    held = [connect(g, "198.51.100.1") for _ in range(2)]
    over, transport = connect(g, "198.51.100.1")
    assert transport.aborted and over.inner is None
    assert [(e.kind, e.fields["reason"]) for e in seen] == [(ev.CONNECTION_REFUSED, "cap")]
    assert not connect(g, "198.51.100.2")[1].aborted  # another address
    assert not connect(g, "127.0.0.1")[1].aborted  # exempt: the proxy cap
    assert g.snapshot()["total"] == 4 and g.snapshot()["addresses"] == 3
    held[0][0].connection_lost(None)
    over.connection_lost(None)  # a refused one never counted
    assert not connect(g, "198.51.100.1")[1].aborted
    assert g.snapshot()["total"] == 4


async def test_denied_and_blocked_addresses_are_refused_and_closed() -> None:
    g, seen = guard(deny=("203.0.113.0/24",))
    assert connect(g, "203.0.113.5")[1].aborted
    g.blocked_for = lambda key: 30.0 if key == "198.51.100.66" else None
    assert connect(g, "198.51.100.66")[1].aborted
    assert not connect(g, "198.51.100.67")[1].aborted
    assert [e.fields["reason"] for e in seen] == ["deny", "blocked"]
    _conn, transport = connect(g, "192.0.2.1")
    g.network.reload(NetworkSettings(deny=("192.0.2.0/24",)))
    assert g.close_denied() == 1 and transport.aborted
    _conn2, transport2 = connect(g, "192.0.2.200")
    assert transport2.aborted  # refused at accept now
    _other, t3 = connect(g, "198.51.100.9")
    assert g.close_address("198.51.100.9") == 1 and t3.aborted


async def test_timeouts_by_phase() -> None:
    g, seen = guard(first_byte_timeout_s=0.05, header_timeout_s=0.2, slow_after_s=0.05,
                    keepalive_timeout_s=0.05)
    _silent, t1 = connect(g, "198.51.100.1")
    slow, t2 = connect(g, "198.51.100.2")
    slow.data_received(b"GET / HTTP/1.1\r\n")
    idle, t3 = connect(g, "198.51.100.3")
    idle.data_received(b"GET / HTTP/1.1\r\n\r\n")  # a whole head: the handler's now
    inner = idle.inner
    for _ in range(200):
        if t1.aborted and t2.aborted and t3.closed:
            break
        await asyncio.sleep(0.02)
    assert t1.aborted and t2.aborted and t3.closed and inner.received
    kinds = [(e.kind, e.fields.get("phase"), e.source) for e in seen]
    assert (ev.TIMEOUT, "first_byte", "198.51.100.1") in kinds
    assert (ev.SLOW_CONNECTION, "header", "198.51.100.2") in kinds
    assert (ev.TIMEOUT, "header", "198.51.100.2") in kinds
    assert (ev.TIMEOUT, "keepalive", "198.51.100.3") in kinds


async def test_websocket_caps_per_address_and_upgrade_ends_the_http_timers() -> None:
    g, seen = guard(max_websockets_per_address=3, max_sealed_websockets_per_address=1,
                    keepalive_timeout_s=0.05)
    conn, transport = connect(g, "198.51.100.1")
    conn.data_received(b"GET /v1/websocket/sealed HTTP/1.1\r\n\r\n")
    request = FakeRequest("198.51.100.1", transport=transport)
    key = g.websocket_opened(request, True)  # type: ignore[arg-type]
    assert key == "198.51.100.1" and conn.timer is None
    with pytest.raises(TooManyConnections):
        g.websocket_opened(request, True)  # type: ignore[arg-type]
    g.websocket_opened(request, False)  # type: ignore[arg-type]
    g.websocket_opened(request, False)  # type: ignore[arg-type]
    with pytest.raises(TooManyConnections):
        g.websocket_opened(request, False)  # type: ignore[arg-type]
    kinds = g.snapshot()["by_kind"]
    assert kinds["websocket"] == 2 and kinds["sealed_websocket"] == 1
    g.websocket_closed(key, True)
    g.websocket_opened(request, True)  # type: ignore[arg-type]
    assert [e.fields["connection"] for e in seen] == ["sealed_websocket", "websocket"]
    await asyncio.sleep(0.15)
    assert not transport.closed  # no keep-alive timeout for a WebSocket


def test_the_handler_attributes_the_guard_reads_exist_in_this_aiohttp() -> None:
    # If aiohttp renames them the keep-alive poll and header detection stop working:
    # this test says so rather than the timeouts quietly getting longer.
    from aiohttp.web_protocol import RequestHandler
    slots = set().union(*(getattr(c, "__slots__", ()) for c in RequestHandler.__mro__))
    for name in ("_request_count", "_request_in_progress", "_messages", "_waiter",
                 "_payload_parser"):
        assert name in slots, name
    assert not _handler_idle(FakeHandler())  # no waiter: not idle


def test_the_descriptor_limit_is_raised_to_the_hard_limit() -> None:
    import resource
    soft = raise_fd_limit()
    assert soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or soft == hard


async def test_the_handler_comes_with_a_complete_head_or_with_bytes_it_must_answer() -> None:
    g, _seen = guard()
    dripping, _t = connect(g, "198.51.100.20")
    for part in (b"GE", b"T /health HTTP/1.1\r\n", b"X-Slow: 1\r\n"):
        dripping.data_received(part)
        assert dripping.inner is None  # a slowloris costs no handler
    dripping.data_received(b"\r\n")
    assert dripping.inner is not None
    assert b"".join(dripping.inner.received) == b"GET /health HTTP/1.1\r\nX-Slow: 1\r\n\r\n"
    # Bytes that cannot start a request (a TLS hello on the plain port): aiohttp's
    # handler at once, which answers 400 instead of waiting for a header timeout.
    hello, _t = connect(g, "198.51.100.21")
    hello.data_received(b"\x16\x03\x01\x02\x00")
    assert hello.inner is not None and b"".join(hello.inner.received) == b"\x16\x03\x01\x02\x00"
    # A head that never ends: handed over past MAX_HEAD_BYTES (aiohttp answers 431).
    endless, _t = connect(g, "198.51.100.22")
    endless.data_received(b"GET / HTTP/1.1\r\n")
    while endless.inner is None:
        endless.data_received(b"X-Long: " + b"a" * 1000 + b"\r\n")
    assert len(b"".join(endless.inner.received)) > MAX_HEAD_BYTES
