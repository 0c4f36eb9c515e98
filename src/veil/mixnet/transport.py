"""Moving fixed-size Sphinx packets over TCP.

Between clients, mixes and providers a connection carries nothing but back-to-back
PACKET_SIZE frames: no length prefix, no handshake, so every link looks the same and a
reader needs only ``readexactly``. Each destination gets one outbound connection fed by a
bounded queue; when the queue is full the packet is dropped and counted rather than
buffered without limit (a flooded or unreachable next hop must not grow our memory).

Control frames (client <-> its entry mix only) are PACKET_SIZE frames too. They start
with 32 zero bytes, which as a Sphinx group element is the small-order point u = 0 that
no valid packet can carry, so they never collide with packets:

    register: zeros (32) || 0x01 || mailbox id (16) || zero padding
    delivery: zeros (32) || 0x02 || SURB id (16) || payload (PAYLOAD_SIZE) || zero padding

A client registers a mailbox on its connection to its entry mix; SURB replies (its loop
cover traffic, acknowledgements) whose exit is that mix come back down the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from veil.core.sphinx import ADDRESS_SIZE, PACKET_SIZE, PAYLOAD_SIZE, SURB_ID_SIZE
from veil.mixnet.errors import TransportError

log = logging.getLogger(__name__)

Connector = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


CONTROL_PREFIX = bytes(32)
REGISTER = 0x01
DELIVERY = 0x02
_CONTROL_BODY = PACKET_SIZE - len(CONTROL_PREFIX) - 1


def is_control(frame: bytes) -> bool:
    return frame.startswith(CONTROL_PREFIX)


def register_frame(mailbox: bytes) -> bytes:
    if len(mailbox) != ADDRESS_SIZE:
        raise TransportError("a mailbox id is 16 bytes")
    return (CONTROL_PREFIX + bytes([REGISTER]) + mailbox).ljust(PACKET_SIZE, b"\0")


def delivery_frame(surb_id: bytes, payload: bytes) -> bytes:
    if len(surb_id) != SURB_ID_SIZE or len(payload) != PAYLOAD_SIZE:
        raise TransportError("malformed delivery")
    return (CONTROL_PREFIX + bytes([DELIVERY]) + surb_id + payload).ljust(PACKET_SIZE, b"\0")


def parse_control(frame: bytes) -> tuple[int, bytes, bytes]:
    """(kind, mailbox or SURB id, payload) of a control frame."""
    if len(frame) != PACKET_SIZE or not is_control(frame):
        raise TransportError("not a control frame")
    kind = frame[32]
    ident = frame[33:33 + ADDRESS_SIZE]
    if kind == REGISTER:
        return kind, ident, b""
    if kind == DELIVERY:
        start = 33 + SURB_ID_SIZE
        return kind, ident, frame[start:start + PAYLOAD_SIZE]
    raise TransportError("unknown control frame")


async def tcp_connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


def bound_connector(local_host: str) -> Connector:
    """A connector whose connections leave from ``local_host`` (a chosen source address)."""

    async def connect(host: str, port: int
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, port, local_addr=(local_host, 0))

    return connect


async def read_packets(reader: asyncio.StreamReader, idle_timeout: float | None = None
                       ) -> AsyncIterator[bytes]:
    """Every whole packet until the peer closes; a trailing partial frame is discarded.

    With ``idle_timeout``, raises TimeoutError when no whole frame arrives for that many
    seconds, so that a peer that connects and sends nothing (or trickles bytes) cannot
    hold a connection slot forever.
    """
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                packet = await reader.readexactly(PACKET_SIZE)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        yield packet


class Outbound:
    """One destination: a bounded queue drained by a task that (re)connects as needed."""

    def __init__(self, host: str, port: int, connect: Connector, *, max_queue: int = 4096,
                 retry_delay: float = 0.2, hello: bytes | None = None,
                 on_frame: Callable[[bytes], None] | None = None) -> None:
        self.host, self.port = host, port
        self._connect = connect
        self._hello = hello
        self._on_frame = on_frame
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(max_queue)
        self._retry_delay = retry_delay
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.dropped = 0
        # Accepted by send() and not yet written (queued, or taken off the queue by the
        # writer): what flush() waits for. The queue alone is not enough, because a
        # packet the writer has taken but not yet written would be lost by a close that
        # followed an "empty" queue, though it was counted as sent by the caller.
        self._unsent = 0
        self.connected = False

    def start(self) -> None:
        """Connect now rather than at the first packet (a link that also receives)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def send(self, packet: bytes) -> bool:
        """Queue ``packet``; False (and counted) when the queue is full."""
        self.start()
        try:
            self._queue.put_nowait(packet)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        self._unsent += 1
        return True

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def _run(self) -> None:
        while True:
            try:
                reader, writer = await self._connect(self.host, self.port)
            except (OSError, TransportError) as exc:
                log.debug("connect to %s:%d failed: %s", self.host, self.port, exc)
                await asyncio.sleep(self._retry_delay)
                continue
            # Always listen: the peer closes idle links (its read timeout), and the EOF
            # must make us reconnect before the next packet rather than write it into a
            # closed socket, where it would be lost (and the hello, a mailbox, with it).
            loop = asyncio.get_running_loop()
            listener = loop.create_task(self._listen(reader))
            self.connected = True
            packet: bytes | None = None
            try:
                if self._hello is not None:
                    writer.write(self._hello)
                while not listener.done():
                    if self._queue.empty():
                        getter = loop.create_task(self._queue.get())
                        try:
                            await asyncio.wait({getter, listener},
                                               return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            # A no-op once it has its item; otherwise the item stays
                            # in the queue (Queue.get passes it on), so none is lost.
                            getter.cancel()
                        if not getter.done():
                            break
                        packet = getter.result()
                    else:
                        packet = self._queue.get_nowait()
                    writer.write(packet)
                    if writer.transport.get_write_buffer_size() > 16 * PACKET_SIZE:
                        await writer.drain()
                    elif self._queue.empty():
                        await writer.drain()
                    self.sent += 1
                    self._unsent -= 1
                    packet = None
            except (OSError, ConnectionError) as exc:
                self.dropped += 1
                if packet is not None:  # the one in hand is lost with the link
                    self._unsent -= 1
                log.debug("link to %s:%d lost: %s", self.host, self.port, exc)
            finally:
                self.connected = False
                listener.cancel()
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()
            await asyncio.sleep(self._retry_delay)

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        """Hand frames from the peer to ``on_frame`` (if any) until it closes."""
        async for frame in read_packets(reader):
            if self._on_frame is not None:
                self._on_frame(frame)

    async def flush(self, timeout: float, *, while_connected: bool = False) -> None:
        """Wait until every packet accepted by :meth:`send` has been written to the
        connection (or ``timeout`` passes); with ``while_connected``, stop waiting as soon
        as the link is not connected (a close must not wait for an unreachable peer)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._unsent > 0 and loop.time() < end:
            if while_connected and not self.connected:
                return
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class OutboundPool:
    """One :class:`Outbound` per destination address."""

    def __init__(self, connect: Connector = tcp_connect, *, max_queue: int = 4096) -> None:
        self._connect = connect
        self._max_queue = max_queue
        self._links: dict[tuple[str, int], Outbound] = {}

    def link(self, host: str, port: int, *, hello: bytes | None = None,
             on_frame: Callable[[bytes], None] | None = None) -> Outbound:
        """The link to ``host:port``; ``hello`` and ``on_frame`` apply when it is created."""
        key = (host, port)
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = Outbound(host, port, self._connect,
                                               max_queue=self._max_queue, hello=hello,
                                               on_frame=on_frame)
        return link

    @property
    def dropped(self) -> int:
        return sum(link.dropped for link in self._links.values())

    @property
    def sent(self) -> int:
        return sum(link.sent for link in self._links.values())

    async def flush(self, timeout: float, *, while_connected: bool = False) -> None:
        """Wait until every link has written what it accepted (``timeout`` in all)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        for link in list(self._links.values()):
            await link.flush(max(0.0, end - loop.time()), while_connected=while_connected)

    async def close(self) -> None:
        for link in list(self._links.values()):
            await link.close()
        self._links.clear()

__all__ = [
    "CONTROL_PREFIX",
    "DELIVERY",
    "REGISTER",
    "Connector",
    "Outbound",
    "OutboundPool",
    "bound_connector",
    "delivery_frame",
    "is_control",
    "parse_control",
    "read_packets",
    "register_frame",
    "tcp_connect",
]
