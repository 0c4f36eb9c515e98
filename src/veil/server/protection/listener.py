"""The server's listening sockets and their accept loop (issue 13 §1, the network layer).

:class:`GuardedSite` replaces ``web.TCPSite``. It binds its sockets itself and accepts
from them in a reader callback of its own instead of the event loop's server, for two
reasons that a flood of connections makes plain:

- **Refusal costs a system call, not a transport.** A connection from a denied or
  blocked address, or one over its address's cap, is closed with an RST right after
  ``accept()`` (:meth:`ConnectionGuard.refusal`): no transport, no protocol object, no
  callbacks. A blocked attacker that reconnects thousands of times a second costs the
  server a few microseconds each.
- **A blocked client waits.** A connection of a blocked or denied address is held
  without a byte read for a few seconds before its reset (:class:`Tarpit`, bounded),
  so a client that retries in a loop retries at the pace a firewall's DROP would set.
- **Accepting is sliced.** The loop's own server takes every pending connection of the
  backlog in one turn (thousands in a burst); here one turn accepts at most
  :data:`ACCEPT_BATCH`, and the reader fires again on the next turn, so the requests
  and frames of connected clients are served in between.

An admitted socket is handed to ``loop.connect_accepted_socket`` with the guard's
:class:`~.connections.GuardedConnection` as its protocol, which checks the address
again (the cap may have filled meanwhile) and applies the timeouts. When the process
runs out of descriptors (EMFILE and friends), accepting pauses for a moment and the
error is logged once per pause, instead of a busy loop of failed accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import struct
from collections import deque
from typing import Any

from aiohttp import web

from veil.server.protection.addresses import address_key
from veil.server.protection.connections import POLL_S, ConnectionGuard, raise_fd_limit

log = logging.getLogger("veil.server.protection")

ACCEPT_BATCH = 64  # connections accepted per event-loop turn and listening socket
ACCEPT_PAUSE_S = 0.5  # accepting rests this long when descriptors run out
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST: the descriptor is freed at once (no TIME_WAIT)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    sock.close()


def bind_listeners(host: str, port: int, backlog: int,
                   reuse_address: bool = True) -> list[socket.socket]:
    """Non-blocking listening sockets for every address ``host`` resolves to (IPv6
    sockets are IPv6 only, as asyncio's servers make them)."""
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                               0, socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[Any, ...]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Tarpit:
    """Connections of blocked or denied addresses, held without a byte read for
    ``tarpit_s`` before their reset. A reset at once lets the client connect again at
    once — a blocked client that retries in a loop then costs the kernel a handshake
    and a reset, thousands of times a second, on the server's own cores. Held silent,
    its attempts wait as they would behind a firewall's DROP. Bounded per address and
    in all (``tarpit_per_address``, ``tarpit_max``): beyond that, a reset at once."""

    def __init__(self, guard: ConnectionGuard, loop: asyncio.AbstractEventLoop) -> None:
        self.guard = guard
        self.loop = loop
        self._held: deque[tuple[float, str, socket.socket]] = deque()
        self._per_key: dict[str, int] = {}
        self._sweep: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, key: str, conn: socket.socket) -> bool:
        """Keep ``conn`` for a while (True), or not when the tarpit is full (False)."""
        settings = self.guard.network.settings
        held = self._per_key.get(key, 0)
        if len(self._held) >= settings.tarpit_max or held >= settings.tarpit_per_address:
            return False
        self._held.append((self.loop.time() + settings.tarpit_s, key, conn))
        self._per_key[key] = held + 1
        if self._sweep is None:
            self._sweep = self.loop.call_later(settings.tarpit_s, self._release)
        return True

    def _release(self) -> None:
        """Reset the connections whose time is up; come back for the next one."""
        self._sweep = None
        now = self.loop.time()
        held = self._held
        while held and held[0][0] <= now:
            _deadline, key, conn = held.popleft()
            self._forget(key)
            reset(conn)
        if held:
            self._sweep = self.loop.call_at(max(held[0][0], now + 0.05), self._release)

    def _forget(self, key: str) -> None:
        left = self._per_key.get(key, 1) - 1
        if left > 0:
            self._per_key[key] = left
        else:
            self._per_key.pop(key, None)

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        while self._held:
            reset(self._held.popleft()[2])
        self._per_key.clear()


class GuardedListener:
    """The accept loop over some listening sockets; what aiohttp's site keeps as its
    ``_server`` (``sockets`` and ``close()`` are all it asks of one)."""

    def __init__(self, sockets: list[socket.socket], guard: ConnectionGuard,
                 protocol_factory: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.sockets = sockets
        self.guard = guard
        self.protocol_factory = protocol_factory
        self.loop = loop
        self.accepted = 0
        self.refused_at_accept = 0
        self.tarpit = Tarpit(guard, loop)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._paused: set[socket.socket] = set()
        self._closed = False
        for sock in sockets:
            loop.add_reader(sock.fileno(), self._readable, sock)

    def _readable(self, sock: socket.socket) -> None:
        guard = self.guard
        refused: dict[tuple[str, str], int] = {}
        # The family, type and protocol as plain ints: socket.accept() would convert
        # them to enums for every connection, a cost a flood of refusals notices.
        family, kind, proto = int(sock.family), int(sock.type), sock.proto
        try:
            for _ in range(ACCEPT_BATCH):
                try:
                    fd, peer = sock._accept()  # type: ignore[attr-defined]
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    if exc.errno in _RESOURCE_ERRORS:
                        self._pause(sock, exc)
                        return
                    continue  # ECONNABORTED and the like: that client is gone already
                conn = socket.socket(family, kind, proto, fileno=fd)
                ip = peer[0] if isinstance(peer, tuple) and peer else None
                key = address_key(ip)
                reason = guard.refusal(ip, key)
                if reason is None:
                    self._admit(conn)
                    continue
                if reason == "cap" or not self.tarpit.hold(key, conn):
                    reset(conn)  # over its cap: its own connections are still served
                self.refused_at_accept += 1
                refused[key, reason] = refused.get((key, reason), 0) + 1
        finally:
            # One event per address and reason for the whole batch: a reconnecting
            # blocked client costs the rules and metrics one call a turn, not hundreds.
            for (key, reason), count in refused.items():
                guard.refused(key, reason, "tcp", count)

    def _admit(self, conn: socket.socket) -> None:
        self.accepted += 1
        conn.setblocking(False)
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = self.loop.create_task(self._connect(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.protocol_factory, conn)
        except Exception as exc:  # the client reset during set-up: its business
            log.debug("accepted connection failed to start: %s", type(exc).__name__)
            reset(conn)

    def _pause(self, sock: socket.socket, exc: OSError) -> None:
        log.error("cannot accept connections: %s; pausing %.1f s",
                  exc.strerror or exc, ACCEPT_PAUSE_S)
        self.loop.remove_reader(sock.fileno())
        self._paused.add(sock)
        self.loop.call_later(ACCEPT_PAUSE_S, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        self._paused.discard(sock)
        if not self._closed:
            self.loop.add_reader(sock.fileno(), self._readable, sock)

    def close(self) -> None:
        """Stop accepting and close the listening sockets (open connections stay:
        aiohttp's runner shuts them down)."""
        if self._closed:
            return
        self._closed = True
        for sock in self.sockets:
            if sock not in self._paused:
                self.loop.remove_reader(sock.fileno())
            sock.close()
        for task in self._tasks:
            task.cancel()
        self.tarpit.close()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class GuardedSite(web.BaseSite):
    """``web.TCPSite`` with every accepted socket passed through a ConnectionGuard."""

    __slots__ = ("_bound_port", "_guard", "_host", "_port", "_reuse_address",
                 "_tls_context")

    def __init__(self, runner: web.BaseRunner, host: str, port: int,
                 guard: ConnectionGuard, ssl_context: ssl.SSLContext | None = None, *,
                 backlog: int = 4096, reuse_address: bool = True) -> None:
        # The TLS context is not handed to BaseSite: the connection starts TLS itself.
        super().__init__(runner, backlog=backlog)
        self._host, self._port = host, port
        self._guard = guard
        self._tls_context = ssl_context
        self._reuse_address = reuse_address
        self._bound_port = port

    @property
    def name(self) -> str:
        scheme = "https" if self._tls_context else "http"
        return str(f"{scheme}://{self._host}:{self._bound_port}")

    @property
    def port(self) -> int:
        return self._bound_port

    async def start(self) -> None:
        await super().start()
        # Thousands of sockets are normal here; the soft limit (often 1024) is not.
        log.info("open file limit %d", raise_fd_limit())
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        settings = self._guard.network.settings
        kwargs = dict(getattr(server, "_kwargs", {}))
        # aiohttp's own keep-alive timer stays as a backstop behind the guard's.
        kwargs["keepalive_timeout"] = settings.keepalive_timeout_s + 2 * POLL_S + 1.0

        def make_handler() -> web.RequestHandler:
            return web.RequestHandler(server, loop=loop, **kwargs)

        factory = self._guard.protocol_factory(make_handler, self._tls_context)
        sockets = bind_listeners(self._host, self._port, self._backlog, self._reuse_address)
        listener = GuardedListener(sockets, self._guard, factory, loop)
        self._server = listener  # type: ignore[assignment]  # sockets and close()
        if sockets:
            self._bound_port = sockets[0].getsockname()[1]


__all__ = [
    "ACCEPT_BATCH",
    "GuardedListener",
    "GuardedSite",
    "Tarpit",
    "bind_listeners",
    "reset",
]
