"""The provider: the mixnet's exit, in front of the Veil server.

Loopix (Piotrowska et al., USENIX Security 2017), section 3.1. The provider is the last
Sphinx hop of every client path. It unwraps the final layer, discards drop cover
traffic (loop cover traffic only passes through it as an ordinary relay), reassembles
REAL fragments and hands each complete
message to a :class:`~veil.mixnet.sink.ProviderSink` through a bounded queue with a
retrying worker, so a slow or failing Veil server never makes the provider buffer
without limit.

:meth:`Provider.send_reply` answers a client through a SURB the client put in its
message (an acknowledgement, a server reply): the reply goes into the mixnet at the
SURB's first hop and exits at the client's home mix, so the provider never learns where
the client is. SURB replies that exit *here* (``DeliverReply``) have no mailbox to go
to and are counted and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from veil.core.sphinx import Deliver, DeliverReply, Surb
from veil.mixnet.directory import Directory, NodeKey
from veil.mixnet.errors import MixnetError, QueueFull
from veil.mixnet.fragment import Fragment, Kind, Reassembler
from veil.mixnet.node import MixNode
from veil.mixnet.sink import ProviderSink
from veil.mixnet.transport import Connector, tcp_connect

log = logging.getLogger(__name__)

# The provider's own counters, reported (at 0) from the start like the node's.
COUNTERS = (
    "cover_drop", "fragments", "delivered", "replies_dropped", "replies_sent",
    "dropped_mixnet_fragment_error", "dropped_mixnet_queue_full", "dropped_sink_queue_full",
    "dropped_sink_failed",
)


class Provider:
    """A mix node whose exit hands complete messages to a sink."""

    def __init__(self, key: NodeKey, directory: Directory, sink: ProviderSink, *,
                 connect: Connector = tcp_connect, max_queue: int = 10_000,
                 max_queue_bytes: int = 64 << 20, retries: int = 5, retry_delay: float = 0.5,
                 idle_timeout: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.node = MixNode(key, directory, exit_handler=self._on_exit, connect=connect,
                            idle_timeout=idle_timeout, clock=clock)
        self.reassembler = Reassembler()
        self._sink = sink
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(max_queue)
        self._queue_bytes = 0
        self._max_queue_bytes = max_queue_bytes
        self._retries = retries
        self._retry_delay = retry_delay
        self._clock = clock
        self._worker: asyncio.Task[None] | None = None
        self._busy = False
        self.counters = self.node.counters

    def _on_exit(self, result: Deliver | DeliverReply) -> None:
        if isinstance(result, DeliverReply):
            self.counters["replies_dropped"] += 1
            return
        try:
            fragment = Fragment.decode(result.message)
            if fragment.kind is Kind.DROP:
                self.counters["cover_drop"] += 1
                return
            message = self.reassembler.add(fragment, self._clock())
        except MixnetError as exc:
            self.counters[f"dropped_{exc.code}"] += 1
            return
        self.counters["fragments"] += 1
        if message is None:
            return
        if self._queue_bytes + len(message) > self._max_queue_bytes:
            self.counters["dropped_sink_queue_full"] += 1
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.counters["dropped_sink_queue_full"] += 1
            return
        self._queue_bytes += len(message)

    def send_reply(self, surb: bytes, message: bytes) -> None:
        """Answer through an encoded SURB from a client's message.

        Raises SphinxError for a malformed SURB or an oversized message, and
        QueueFull when the link to the SURB's first hop is saturated.
        """
        block = Surb.decode(surb)
        first_hop, packet = block.reply_packet(message)
        if not self.node.inject(first_hop, packet):
            raise QueueFull("cannot send the reply: first hop unknown or its link is full")
        self.counters["replies_sent"] += 1

    async def _deliver_forever(self) -> None:
        while True:
            message = await self._queue.get()
            self._queue_bytes -= len(message)
            self._busy = True
            for attempt in range(self._retries):
                try:
                    await self._sink.deliver(message)
                except MixnetError as exc:
                    log.warning("sink delivery failed (%s), attempt %d", exc.code, attempt + 1)
                    await asyncio.sleep(self._retry_delay * (attempt + 1))
                else:
                    self.counters["delivered"] += 1
                    break
            else:
                self.counters["dropped_sink_failed"] += 1
            self._busy = False

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._worker = asyncio.get_running_loop().create_task(self._deliver_forever())
        return await self.node.start(host, port)

    async def drain(self, timeout: float) -> None:
        """Wait until every queued message has been handed to the sink."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while (not self._queue.empty() or self._busy or self.node.pending) and loop.time() < end:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        await self.node.close()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def stats(self) -> dict[str, int]:
        out = self.node.stats()
        for name in COUNTERS:
            out.setdefault(name, 0)
        out["sink_queue"] = self._queue.qsize()
        out["partial_messages"] = len(self.reassembler)
        out["partial_evicted"] = self.reassembler.evicted
        return out

__all__ = [
    "Provider",
]
