"""In-process mix networks on loopback for the node, client and provider tests."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable

from veil.mixnet.directory import ROLE_MIX, ROLE_PROVIDER, Directory, NodeKey
from veil.mixnet.transport import read_packets

EPOCH_SECONDS = 3600


# Ports handed out by free_port() stay bound (not listening) for a while. A port that
# was only probed and let go can be taken, before the node binds it, by any process's
# outgoing connection or bind to port 0 (the same range), and the node then fails with
# EADDRINUSE; a loaded machine widens that window. Linux gives neither an ephemeral
# port that a socket holds by bind(), while a server's bind with SO_REUSEADDR (asyncio's
# default, here and in the ``veil mix`` processes) may share it with this one.
_RESERVED: deque[socket.socket] = deque()
_KEEP = 512


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` nobody else will be given until a server here binds it."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    _RESERVED.append(s)
    while len(_RESERVED) > _KEEP:
        _RESERVED.popleft().close()
    return int(s.getsockname()[1])


def directory_for(roles: list[tuple[str, int]], ports: list[int] | None = None,
                  epoch_seconds: int = EPOCH_SECONDS, epochs: range | None = None
                  ) -> tuple[Directory, list[NodeKey]]:
    keys = [NodeKey.generate() for _ in roles]
    ports = ports or [free_port() for _ in roles]
    if epochs is None:
        now = int(time.time() // epoch_seconds)
        epochs = range(now - 1, now + 2)
    nodes = tuple(k.descriptor(role, layer, f"127.0.0.1:{port}", epochs)
                  for k, (role, layer), port in zip(keys, roles, ports, strict=True))
    layers = max(layer for _, layer in roles)
    return Directory(layers, epoch_seconds, int(time.time()), nodes), keys


async def until(condition: Callable[[], object], timeout: float = 30.0) -> bool:
    """Wait until ``condition()`` holds (polled), at most ``timeout`` seconds; whether it did.

    Tests wait for the state they need rather than sleep for a guessed time: on a loaded
    machine any fixed sleep can be too short. The timeout only bounds a failing test."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        if loop.time() >= end:
            return False
        await asyncio.sleep(0.005)
    return True


MIX1_AND_NEXT = [(ROLE_MIX, 1), (ROLE_MIX, 2)]
THREE_LAYERS = [(ROLE_MIX, 1), (ROLE_MIX, 2), (ROLE_MIX, 3), (ROLE_PROVIDER, 0)]


class Collector:
    """A TCP endpoint that records every packet it receives and when."""

    def __init__(self) -> None:
        self.packets: list[tuple[float, bytes]] = []
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        async for packet in read_packets(reader):
            self.packets.append((loop.time(), packet))
        writer.close()

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(self.packets) < count and loop.time() < end:
            await asyncio.sleep(0.005)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def mix_with_collector(**node_options: object):  # type: ignore[no-untyped-def]
    """A layer-1 mix on loopback whose next hop is a :class:`Collector`.

    Returns the node, the collector, the node's (host, port) and ``packet(delay_ms,
    message)``, which builds a packet for that two-hop path."""
    from veil.core.sphinx import create_forward_packet
    from veil.mixnet.node import MixNode

    directory, keys = directory_for(MIX1_AND_NEXT)
    collector = Collector()
    await collector.start(int(directory.nodes[1].address.rsplit(":", 1)[1]))
    node = MixNode(keys[0], directory, **node_options)  # type: ignore[arg-type]
    address = await node.start("127.0.0.1", 0)
    epoch = directory.epoch_at(time.time())
    path = [n.hop(epoch) for n in directory.nodes]

    def packet(delay_ms: int = 0, message: bytes = b"m") -> bytes:
        return create_forward_packet(path, [delay_ms, 0], bytes(16), message)

    return node, collector, address, packet
