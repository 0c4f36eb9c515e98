"""The guarded accept loop (protection/listener.py) on real loopback sockets: refusal
with an RST right after accept, accepting in slices, the handler built once the first
request's head is complete, and closing a blocked address's many connections a slice at a time."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from veil.server.protection import events as ev
from veil.server.protection.connections import CLOSE_SLICE, ConnectionGuard
from veil.server.protection.events import EventHub, SecurityEvent
from veil.server.protection.listener import ACCEPT_BATCH, GuardedListener, bind_listeners
from veil.server.protection.network import NetworkPolicy
from veil.server.protection.settings import NetworkSettings


class Handler(asyncio.Protocol):
    """A stand-in for aiohttp's RequestHandler: records what reaches it."""

    built = 0
    last: Handler | None = None

    def __init__(self) -> None:
        Handler.built += 1
        Handler.last = self
        self.data = b""
        self._request_count = 0
        self.lost = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Any) -> None:
        self.lost.set()


def make_guard(**settings: Any) -> tuple[ConnectionGuard, list[SecurityEvent]]:
    settings.setdefault("tarpit_max", 0)  # reset at once, unless a test wants the tarpit
    hub = EventHub(lambda: 0.0)
    seen: list[SecurityEvent] = []
    hub.subscribe(seen.append)
    guard = ConnectionGuard(NetworkPolicy(NetworkSettings(exempt=(), **settings)), hub)
    return guard, seen


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def client(port: int, source: str) -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def refused_by_reset(s: socket.socket) -> bool:
    s.settimeout(20.0)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
async def listening(request: pytest.FixtureRequest) -> Any:
    guard, seen = make_guard(max_connections_per_address=1000,
                             **getattr(request, "param", {}))
    loop = asyncio.get_running_loop()
    sockets = bind_listeners("127.0.0.1", 0, backlog=1024)
    listener = GuardedListener(sockets, guard,
                               guard.protocol_factory(Handler), loop)
    port = sockets[0].getsockname()[1]
    yield guard, seen, listener, port
    listener.close()
    guard.close()


async def test_a_blocked_address_is_reset_at_accept_and_others_get_through(
        listening: Any) -> None:
    guard, seen, listener, port = listening
    guard.blocked_for = lambda key: 60.0 if key == "127.0.0.2" else None
    bad = client(port, "127.0.0.2")
    good = client(port, "127.0.0.3")
    try:
        await wait_for(lambda: listener.refused_at_accept == 1 and listener.accepted == 1)
        assert await asyncio.to_thread(refused_by_reset, bad)
        assert [(e.kind, e.source, e.fields["reason"]) for e in seen] == [
            (ev.CONNECTION_REFUSED, "127.0.0.2", "blocked")]
        await wait_for(lambda: guard.snapshot()["total"] == 1)
        built = Handler.built
        good.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head not yet complete
        await asyncio.sleep(0.1)
        assert Handler.built == built  # no handler for it yet
        good.sendall(b"\r\n")  # complete: the handler is built and gets every byte
        await wait_for(lambda: Handler.built == built + 1)
        assert Handler.last is not None
        await wait_for(lambda: Handler.last is not None and len(Handler.last.data) == 27)
        assert Handler.last.data == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    finally:
        bad.close()
        good.close()


async def test_one_loop_turn_accepts_at_most_a_batch(listening: Any) -> None:
    guard, _seen, listener, port = listening
    loop = asyncio.get_running_loop()
    sock = listener.sockets[0]
    loop.remove_reader(sock.fileno())  # drive the accept loop by hand
    built = Handler.built
    clients = [client(port, "127.0.0.4") for _ in range(ACCEPT_BATCH * 2 + 5)]
    try:
        listener._readable(sock)
        assert listener.accepted == ACCEPT_BATCH
        listener._readable(sock)
        assert listener.accepted == 2 * ACCEPT_BATCH
        listener._readable(sock)
        assert listener.accepted == 2 * ACCEPT_BATCH + 5
        await wait_for(lambda: guard.snapshot()["total"] == len(clients))
        assert Handler.built == built  # nothing spoke: no handler was needed
    finally:
        loop.add_reader(sock.fileno(), listener._readable, sock)
        for c in clients:
            c.close()


async def test_a_blocked_address_loses_its_connections_a_slice_at_a_time(
        listening: Any) -> None:
    guard, _seen, _listener, port = listening
    n = CLOSE_SLICE * 3 + 1
    clients = [client(port, "127.0.0.5") for _ in range(n)]
    other = client(port, "127.0.0.6")
    try:
        await wait_for(lambda: guard.snapshot()["total"] == n + 1)
        assert guard.close_address("127.0.0.5") == n
        # The first slice is aborted at once, the rest a slice every CLOSE_PAUSE_S.
        await asyncio.sleep(0)
        assert guard.snapshot()["total"] > 1
        await wait_for(lambda: guard.snapshot()["total"] == 1)
        assert all(await asyncio.to_thread(lambda: [refused_by_reset(c) for c in clients]))
        other.sendall(b"x")  # the other address's connection is untouched
        await asyncio.sleep(0.05)
        assert guard.snapshot()["total"] == 1
    finally:
        for c in clients:
            c.close()
        other.close()


def silent(s: socket.socket, seconds: float) -> bool:
    """Nothing arrives and the connection stays open for ``seconds``."""
    s.settimeout(seconds)
    try:
        s.recv(1)
    except TimeoutError:
        return True
    except OSError:
        return False
    return False


@pytest.mark.parametrize("listening", [{"tarpit_max": 3, "tarpit_per_address": 2,
                                        "tarpit_s": 4.0}], indirect=True)
async def test_a_blocked_address_waits_in_the_tarpit_within_its_bounds(
        listening: Any) -> None:
    guard, seen, listener, port = listening
    guard.blocked_for = lambda key: 60.0 if key in ("127.0.0.7", "127.0.0.8") else None
    held = [client(port, "127.0.0.7") for _ in range(2)]
    third = client(port, "127.0.0.7")  # over tarpit_per_address: reset at once
    other = client(port, "127.0.0.8")  # the last place of tarpit_max
    fourth = client(port, "127.0.0.8")  # the tarpit is full: reset at once
    try:
        await wait_for(lambda: listener.refused_at_accept == 5)
        assert len(listener.tarpit) == 3
        assert sum(e.count for e in seen if e.kind == ev.CONNECTION_REFUSED) == 5
        assert await asyncio.to_thread(refused_by_reset, third)
        assert await asyncio.to_thread(refused_by_reset, fourth)
        # Held: no answer and no reset while the tarpit holds them, then a reset.
        assert await asyncio.to_thread(silent, held[0], 0.2)
        assert all(await asyncio.to_thread(
            lambda: [refused_by_reset(c) for c in (*held, other)]))
        await wait_for(lambda: len(listener.tarpit) == 0)
        assert guard.snapshot()["total"] == 0  # never tracked, never served
    finally:
        for c in (*held, third, other, fourth):
            c.close()
