"""Connection caps and timeouts at the listener (issue 13 §1, "slow or idle connections").

:class:`~.listener.GuardedSite` replaces ``web.TCPSite``: it refuses at ``accept()``
what the :class:`ConnectionGuard` refuses, and the protocol of every socket it admits
is a :class:`GuardedConnection`, which asks the guard again before anything else is
allocated. A denied, blocked or over-cap address is refused with one RST (the
descriptor freed at once, CONNECTION_REFUSED counted): an address
holding thousands of idle sockets gets ``max_connections_per_address`` of them and no
more, so the server's descriptors are never exhausted by one client. Admitted
connections get aiohttp's ``RequestHandler`` (built by ``runner.server``) once the head
of their first request is complete — a connection that never finishes one (a slowloris,
an idle flood) costs a small buffer, not a handler — and every protocol callback is
forwarded to it. The connections of newly blocked addresses are aborted a slice at a
time (:data:`CLOSE_SLICE` every :data:`CLOSE_PAUSE_S`), so blocking thousands never
stalls everyone else's requests.

Timeouts, one ``call_at`` timer per connection, set only when its phase changes (never
per byte, so a busy connection costs nothing extra):

- *first byte*: a new connection (TLS handshake included) must send a byte within
  ``first_byte_timeout_s``;
- *header*: a request's head must be complete ``header_timeout_s`` after its first byte
  — dripping bytes does not extend it (slowloris). Still in its head after
  ``slow_after_s``, the connection is reported (SLOW_CONNECTION) long before it is cut;
- *keep-alive*: between requests a connection may idle ``keepalive_timeout_s``. Whether
  the handler finished its response is polled once a second while a request runs (a
  read of two of aiohttp's attributes; an aiohttp that renamed them only disables the
  poll, and aiohttp's own keep-alive timer, set a little longer, still closes);
- the *body* timeout is the JSON endpoints' (``http/endpoint.py``), the sealed socket's
  *lifetime* the WebSocket module's (:meth:`ConnectionGuard.expire_sealed`).

Upgraded connections (WebSockets, :meth:`ConnectionGuard.websocket_opened`) leave the
header and keep-alive timers: their own idle rules apply. Exempt addresses get the
proxy caps but the same timeouts. Each timeout emits TIMEOUT with its ``phase``.

TLS: the handshake is started by the connection itself (``loop.start_tls``) after the
address was admitted, so caps hold for connections that never finish a handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import resource
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from veil.server.errors import TooManyConnections
from veil.server.protection import events as ev
from veil.server.protection.addresses import address_key
from veil.server.protection.events import EventHub
from veil.server.protection.network import NetworkPolicy

log = logging.getLogger("veil.server.protection")

POLL_S = 1.0  # how often a running request is asked whether it is done
_TLS_BUFFER = 1 << 20  # bytes held from a TLS peer before its handler exists
MAX_HEAD_BYTES = 64 * 1024  # a first request's head gathered before aiohttp's handler
# What the first bytes of a request line can be: a method (letters) and a space.
_REQUEST_START = re.compile(rb"[A-Z]{0,15}(?: |$)")
_REFUSAL_LOG_S = 60.0  # refused connections are summed up in one line per minute
_CLOSE_AFTER_ANSWER_S = 0.5  # time for a 408 to leave before its connection closes
CLOSE_SLICE = 32  # connections of blocked addresses aborted at a time
CLOSE_PAUSE_S = 0.005  # and the pause between two such slices

# Phases of a connection.
FIRST, HEADERS, ACTIVE, IDLE, UPGRADED, CLOSED = range(6)


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def _handler_idle(handler: Any) -> bool:
    """Whether aiohttp's handler waits for the next request (its response is done)."""
    if getattr(handler, "_request_in_progress", True) or getattr(handler, "_messages", True):
        return False
    return getattr(handler, "_waiter", None) is not None


class GuardedConnection(asyncio.Protocol):
    """One accepted socket: admitted (or aborted), timed, forwarded to aiohttp."""

    __slots__ = ("guard", "head", "inner", "key", "phase", "requests", "since", "slow",
                 "timer", "tls", "tls_buffer", "tracked", "transport")

    def __init__(self, guard: ConnectionGuard, tls: ssl.SSLContext | None) -> None:
        self.guard = guard
        self.tls = tls
        self.inner: Any = None  # aiohttp's RequestHandler, once admitted (and TLS is up)
        self.transport: asyncio.BaseTransport | None = None
        self.key = ""
        self.phase = FIRST
        self.requests = 0  # request heads aiohttp parsed so far
        self.since = 0.0
        self.slow = False
        self.timer: asyncio.TimerHandle | None = None
        self.tls_buffer: bytearray | None = None
        self.head: bytearray | None = None  # the first request's head, while incomplete
        self.tracked = False

    # ---- asyncio protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) and peer else None
        guard = self.guard
        self.key = address_key(ip)
        reason = guard.refusal(ip, self.key)
        if reason is not None:
            self.phase = CLOSED
            guard.refused(self.key, reason, "tcp")
            _abort(transport)
            return
        guard.track(self)
        self.tracked = True
        loop = guard.loop()
        self.since = loop.time()
        self._set_timer(self.since + guard.network.settings.first_byte_timeout_s)
        if self.tls is None:
            return  # the handler comes with the first request (data_received)
        # uvloop's TCPTransport is an asyncio.Transport in all but its class (no
        # isinstance), and its loop.start_tls takes it: no assert here (TLS review).
        raw: Any = transport
        raw.pause_reading()  # nothing may reach this protocol before start_tls
        self.tls_buffer = bytearray()
        task = loop.create_task(self._start_tls(raw, self.tls))
        guard.tasks.add(task)
        task.add_done_callback(guard.tasks.discard)

    async def _start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        loop = self.guard.loop()
        try:
            transport = await loop.start_tls(
                raw, self, context, server_side=True,
                ssl_handshake_timeout=self.guard.network.settings.first_byte_timeout_s)
        except BaseException as exc:
            # A peer that is no TLS client, or went away, or timed out: its business.
            log.debug("TLS handshake failed: %s", type(exc).__name__)
            raw.abort()
            self.connection_lost(None)  # the TLS layer tells no one during a handshake
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if self.phase == CLOSED or transport is None:
            if transport is not None:
                transport.abort()
            return
        pending, self.tls_buffer = self.tls_buffer, None
        self._attach(transport)
        if pending:
            self.data_received(bytes(pending))

    def _attach(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner = self.guard.make_handler()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        inner = self.inner
        if inner is None:
            if self.phase == CLOSED:
                return
            buffer = self.tls_buffer
            if buffer is not None:
                buffer += data
                if len(buffer) > _TLS_BUFFER:
                    self.close(None)
                return
            if self.tls is not None:
                return  # TLS is set up and the handler attached by _start_tls
            # A plain connection's first request: aiohttp's handler (a task, a parser,
            # buffers) is built only once its head is complete, so connections that
            # never finish one — a slowloris, an idle flood — cost a small buffer each.
            data = self._head(data)
            if not data:
                return
            assert self.transport is not None
            self._attach(self.transport)
            inner = self.inner
        phase = self.phase
        if phase == ACTIVE or phase == UPGRADED:
            inner.data_received(data)
            return
        if phase != HEADERS:
            self.since = self.guard.loop().time()
        inner.data_received(data)
        count = getattr(inner, "_request_count", None)
        if count is None or count != self.requests:
            # The head of a request is complete: it is the handler's now.
            self.requests = count or 0
            self.phase = ACTIVE
            self._set_timer(self.guard.loop().time() + POLL_S)
        elif phase != HEADERS and self.phase != CLOSED:
            self.phase = HEADERS
            self.slow = False
            settings = self.guard.network.settings
            self._set_timer(self.since + min(settings.slow_after_s, settings.header_timeout_s))

    def _head(self, data: bytes) -> bytes:
        """Gather the first request's head: b"" while it is incomplete, else every byte
        so far (also bytes that cannot start a request, or a head over MAX_HEAD_BYTES,
        for aiohttp to answer with its error)."""
        head = self.head
        if head is None:
            head = self.head = bytearray()
            self.since = self.guard.loop().time()
            self.phase = HEADERS
            settings = self.guard.network.settings
            self._set_timer(self.since + min(settings.slow_after_s, settings.header_timeout_s))
        start = max(0, len(head) - 3)
        head += data
        if (_REQUEST_START.match(head, 0, 16) is None or head.find(b"\r\n\r\n", start) >= 0
                or head.find(b"\n\n", start) >= 0 or len(head) > MAX_HEAD_BYTES):
            self.head = None
            return bytes(head)
        return b""

    def eof_received(self) -> bool | None:
        if self.inner is not None:
            return self.inner.eof_received()  # type: ignore[no-any-return]
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.tracked:
            self.tracked = False
            self.guard.untrack(self)
        self.phase = CLOSED
        inner, self.inner = self.inner, None
        self.tls_buffer = None
        self.head = None
        if inner is not None:
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # ---- timers ---------------------------------------------------------------------
    def _set_timer(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.guard.loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self.timer = None
        guard = self.guard
        settings = guard.network.settings
        now = guard.loop().time()
        phase = self.phase
        if phase == FIRST:
            self.close("first_byte")
        elif phase == HEADERS:
            deadline = self.since + settings.header_timeout_s
            if not self.slow and now < deadline:
                self.slow = True
                guard.events.emit(ev.SLOW_CONNECTION, self.key, phase="header")
                self._set_timer(deadline)
            else:
                self.close("header")
        elif phase == ACTIVE:
            inner = self.inner
            if inner is not None and getattr(inner, "_payload_parser", None) is not None:
                self.upgraded()  # a WebSocket nobody told the guard about
            elif inner is not None and _handler_idle(inner):
                self.phase = IDLE
                self._set_timer(now + settings.keepalive_timeout_s)
            else:
                self._set_timer(now + POLL_S)
        elif phase == IDLE:
            self.close("keepalive")

    def upgraded(self) -> None:
        """A WebSocket now: no header or keep-alive timeouts any more."""
        if self.phase == CLOSED:
            return
        self.phase = UPGRADED
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self, phase: str | None, gently: bool = False) -> None:
        """Close for a timeout ``phase`` (emitted), or without an event (None); gently:
        after what is written has left, else at once (RST)."""
        if phase is not None:
            self.guard.events.emit(ev.TIMEOUT, self.key, phase=phase)
        transport = self.transport
        if transport is not None:
            if gently or phase == "keepalive":
                transport.close()  # an idle client did nothing wrong: a clean FIN
            else:
                _abort(transport)


def _abort(transport: asyncio.BaseTransport) -> None:
    abort = getattr(transport, "abort", None)
    if abort is not None:
        abort()
    else:
        transport.close()


class ConnectionGuard:
    """Per-address counts of TCP connections and WebSockets, and the refusals."""

    def __init__(self, network: NetworkPolicy, events: EventHub,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.network = network
        self.events = events
        self.clock = clock
        # Set by the facade once the detection layer exists: seconds a key stays blocked.
        self.blocked_for: Callable[[str], float | None] | None = None
        self.make_handler: Callable[[], Any] = _no_handler
        self.tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Bounded by the connections held: a key leaves when its last one closes.
        self._by_key: dict[str, set[GuardedConnection]] = {}
        self._websockets: dict[str, int] = {}
        self._sealed: dict[str, int] = {}
        self.total = 0
        self.websockets = 0
        self.sealed = 0
        self._refusals: dict[str, int] = {}
        self._refusal_logged = 0.0
        # Connections of blocked addresses waiting for their turn to be aborted.
        self._closing: deque[GuardedConnection] = deque()
        self._closer: asyncio.TimerHandle | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # ---- TCP ------------------------------------------------------------------------
    def refusal(self, ip: str | None, key: str) -> str | None:
        """Why a new connection from ``ip`` is refused (deny, blocked, cap), or None."""
        network = self.network
        if not network.admits(ip):
            return "deny"
        blocked_for = self.blocked_for
        if blocked_for is not None and not network.is_exempt(ip) and blocked_for(key):
            return "blocked"
        settings = network.settings
        cap = (settings.proxy_max_connections_per_address if network.large_caps(ip)
               else settings.max_connections_per_address)
        held = self._by_key.get(key)
        if held is not None and len(held) >= cap:
            return "cap"
        return None

    def refused(self, key: str, reason: str, connection: str, count: int = 1) -> None:
        """Count ``count`` refusals of ``key`` for one reason (``connection``: tcp,
        websocket, sealed_websocket) — one event for them all."""
        self.events.emit(ev.CONNECTION_REFUSED, key, count=count, reason=reason,
                         connection=connection)
        self._refusals[reason] = self._refusals.get(reason, 0) + count
        now = self.clock()
        if now - self._refusal_logged >= _REFUSAL_LOG_S:
            # One line a minute at most, and no address in it: the detection layer
            # names (by keyed hash) who it was.
            counts = ", ".join(f"{r} {n}" for r, n in sorted(self._refusals.items()))
            log.warning("refused connections in the last minute: %s", counts)
            self._refusals.clear()
            self._refusal_logged = now

    def track(self, conn: GuardedConnection) -> None:
        self._by_key.setdefault(conn.key, set()).add(conn)
        self.total += 1

    def untrack(self, conn: GuardedConnection) -> None:
        held = self._by_key.get(conn.key)
        if held is not None and conn in held:
            held.discard(conn)
            self.total -= 1
            if not held:
                del self._by_key[conn.key]

    def close_address(self, key: str) -> int:
        """Abort every connection of ``key`` (a block started); returns how many. The
        first :data:`CLOSE_SLICE` go at once, the rest join one queue for every address
        that is drained a slice every :data:`CLOSE_PAUSE_S`: ten addresses blocked
        together with hundreds of connections each are closed over a fraction of a
        second, not in one burst that (with the clients' reconnections it sets off)
        would hold up everyone else's requests."""
        held = list(self._by_key.get(key, ()))
        for conn in held[:CLOSE_SLICE]:
            conn.close(None)
        if len(held) > CLOSE_SLICE:
            self._closing.extend(held[CLOSE_SLICE:])
            if self._closer is None:
                self._closer = self.loop().call_later(CLOSE_PAUSE_S, self._close_more)
        return len(held)

    def _close_more(self) -> None:
        self._closer = None
        closing = self._closing
        for _ in range(min(CLOSE_SLICE, len(closing))):
            closing.popleft().close(None)
        if closing:
            self._closer = self.loop().call_later(CLOSE_PAUSE_S, self._close_more)

    def close_denied(self) -> int:
        """Abort the connections of addresses the network policy no longer admits
        (after a reload or a runtime deny rule); returns how many."""
        closed = 0
        for key in [k for k in self._by_key if not self.network.admits(k)]:
            closed += self.close_address(key)
        return closed

    # ---- WebSockets (http/websocket.py) ----------------------------------------------
    def websocket_opened(self, request: web.BaseRequest, sealed: bool) -> str:
        """Count a WebSocket of the request's client (its address key is returned, for
        :meth:`websocket_closed`), or raise TooManyConnections over its cap."""
        network = self.network
        ip = network.client_ip(request)
        key = address_key(ip)
        settings = network.settings
        large = network.large_caps(ip)
        cap = (settings.proxy_max_websockets_per_address if large
               else settings.max_websockets_per_address)
        if self._websockets.get(key, 0) >= cap:
            self.refused(key, "cap", "websocket")
            raise TooManyConnections("this address holds its maximum number of WebSockets")
        if sealed:
            sealed_cap = (settings.proxy_max_sealed_websockets_per_address if large
                          else settings.max_sealed_websockets_per_address)
            if self._sealed.get(key, 0) >= sealed_cap:
                self.refused(key, "cap", "sealed_websocket")
                raise TooManyConnections(
                    "this address holds its maximum number of sealed WebSockets")
            self._sealed[key] = self._sealed.get(key, 0) + 1
            self.sealed += 1
        self._websockets[key] = self._websockets.get(key, 0) + 1
        self.websockets += 1
        transport = request.transport
        protocol = transport.get_protocol() if transport is not None else None
        if isinstance(protocol, GuardedConnection):
            protocol.upgraded()
        return key

    def websocket_closed(self, key: str, sealed: bool) -> None:
        _decrement(self._websockets, key)
        self.websockets -= 1
        if sealed:
            _decrement(self._sealed, key)
            self.sealed -= 1

    def body_timed_out(self, request: web.BaseRequest) -> None:
        """A JSON body did not arrive in time (``http/endpoint.py`` answers 408): count
        it, and close the connection once the answer is out rather than read the rest."""
        key = address_key(self.network.client_ip(request))
        self.events.emit(ev.TIMEOUT, key, phase="body")
        transport = request.transport
        protocol = transport.get_protocol() if transport is not None else None
        if isinstance(protocol, GuardedConnection):
            self.loop().call_later(_CLOSE_AFTER_ANSWER_S, protocol.close, None, True)

    def expire_sealed(self, key: str, close: Callable[[], None]) -> asyncio.TimerHandle:
        """Call ``close`` when a sealed socket reaches ``sealed_max_lifetime_s``, busy or
        not (so slots turn over); cancel the handle when it closes first."""
        def expire() -> None:
            self.events.emit(ev.TIMEOUT, key, phase="sealed_lifetime")
            close()

        return self.loop().call_later(self.network.settings.sealed_max_lifetime_s, expire)

    def close(self) -> None:
        """Abort what aiohttp does not know of yet (TLS handshakes) at shutdown."""
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        self._closing.clear()
        for held in list(self._by_key.values()):
            for conn in list(held):
                if conn.inner is None:
                    conn.close(None)
        for task in list(self.tasks):
            task.cancel()

    # ---- reports --------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Counts for metrics and the dashboard (no address in them)."""
        return {
            "total": self.total,
            "addresses": len(self._by_key),
            "by_kind": {"http": self.total - self.websockets,
                        "websocket": self.websockets - self.sealed,
                        "sealed_websocket": self.sealed},
        }

    def protocol_factory(self, make_handler: Callable[[], Any],
                         ssl_context: ssl.SSLContext | None = None,
                         ) -> Callable[[], GuardedConnection]:
        self.make_handler = make_handler
        return lambda: GuardedConnection(self, ssl_context)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def _no_handler() -> Any:
    raise RuntimeError("the connection guard serves no site yet")


__all__ = [
    "ConnectionGuard",
    "GuardedConnection",
    "raise_fd_limit",
]
