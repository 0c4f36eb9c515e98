"""A Loopix mix node: unwrap, check, hold for the header's delay, forward.

Loopix (Piotrowska et al., USENIX Security 2017), section 3.2: each mix is a stop-and-go
(continuous-time) mix that holds every packet for the exponentially distributed delay
its sender chose and wrote into the packet's header. Sphinx processing itself is
``veil.core.sphinx``; this module is the asyncio process around it:

* the MAC and the replay tag are checked before anything is queued; malformed, replayed,
  wrong-size and wrong-MAC packets are dropped and counted by error code;
* the Sphinx key rotates every directory epoch; the replay-tag store belongs to the key,
  so it is reset with it; around a boundary both epochs' keys work for a short grace;
* under a flood the node keeps its delay discipline: no packet leaves before its delay;
  when ``max_pending`` packets are already held, new ones are shed (dropped, counted),
  so memory stays bounded, and at most ``max_connections`` peers are served; a link on
  which no whole frame arrives for ``idle_timeout`` seconds is closed, so idle
  connections cannot hold every slot;
* a client may register a mailbox on its connection (a control frame, see
  ``transport``); a SURB reply whose exit is this node and whose destination is that
  mailbox goes back down the connection. That is how loop cover traffic returns. The
  first live registration of a mailbox id holds it: a second one is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from veil.core.sphinx import (
    Deliver,
    DeliverReply,
    Relay,
    ReplayTagStore,
    SphinxError,
    SphinxMacFailure,
    SphinxNode,
)
from veil.mixnet.directory import Directory, NodeKey, split_address
from veil.mixnet.errors import MixnetError, TransportError
from veil.mixnet.transport import (
    REGISTER,
    Connector,
    OutboundPool,
    delivery_frame,
    is_control,
    parse_control,
    read_packets,
    tcp_connect,
)

log = logging.getLogger(__name__)

ExitHandler = Callable[[Deliver | DeliverReply], None]
# A client that stops reading its mailbox must not make us buffer without limit.
MAX_MAILBOX_BUFFER = 64 * 2048
# readexactly returns without yielding while data is buffered; a link that always has
# data must still let the loop run (timers release held packets) every few packets.
YIELD_EVERY = 16
# Every counter stats() reports, present (at 0) before anything has been counted, so a
# reader (the CLI's "stopped" line, a test, a monitor) never mistakes a missing key for
# an unknown one. Drops named after another error code appear when they first count.
COUNTERS = (
    "received", "shed", "relayed", "exited", "mailbox_delivered", "mailboxes_registered",
    "refused_connections", "refused_mailbox_taken", "closed_idle",
    "dropped_sphinx_malformed", "dropped_sphinx_mac_failure", "dropped_sphinx_replay",
    "dropped_sphinx_replay_store_full", "dropped_unknown_next_hop", "dropped_link_full",
    "dropped_mailbox_full", "dropped_not_an_exit", "dropped_bad_control",
)


class KeyRing:
    """The Sphinx processors around an epoch boundary, each with its own replay store.

    Clocks disagree a little, so for ``grace`` seconds on either side of a boundary the
    node accepts packets built for either epoch: the previous key stays for ``grace``
    seconds after the boundary, and the next key is accepted ``grace`` seconds before
    it. The next key's replay store becomes the current one at the boundary, so a packet
    accepted early cannot be replayed after it; the old key's store goes with the old
    key. Time never moves backward here, so no epoch's store is ever rebuilt empty.
    """

    def __init__(self, key: NodeKey, epoch_seconds: int, *, grace: float = 30.0,
                 replay_capacity: int = 1 << 21) -> None:
        self._key = key
        self._epoch_seconds = epoch_seconds
        self._grace = min(grace, epoch_seconds / 2)
        self._capacity = replay_capacity
        self._epoch = -1
        self._latest = float("-inf")
        self._current: SphinxNode | None = None
        self._previous: SphinxNode | None = None
        self._next: SphinxNode | None = None
        self.rotations = 0

    def _node(self, epoch: int) -> SphinxNode:
        return SphinxNode(self._key.epoch_key(epoch), ReplayTagStore(self._capacity))

    def _at(self, now: float) -> list[SphinxNode]:
        # Time only moves forward here: were the clock to step back across a boundary,
        # the earlier epoch would get a new key state with an empty replay store and
        # accept again every packet it had seen. Until the clock catches up, the node
        # stays in its latest epoch (packets for an older one fail, closed).
        now = self._latest = max(now, self._latest)
        epoch = int(now // self._epoch_seconds)
        if epoch != self._epoch:
            adjacent = self._current is not None and epoch == self._epoch + 1
            self._previous = self._current if adjacent else None
            self._current = self._next if adjacent and self._next else self._node(epoch)
            self._next = None
            self._epoch = epoch
            self.rotations += 1
        assert self._current is not None
        start = epoch * self._epoch_seconds
        if self._previous is not None and now - start > self._grace:
            self._previous = None
        if self._next is None and start + self._epoch_seconds - now <= self._grace:
            self._next = self._node(epoch + 1)
        return [n for n in (self._current, self._previous, self._next) if n is not None]

    @property
    def replay_tags(self) -> int:
        nodes = (self._current, self._previous, self._next)
        return sum(len(n.replay_tags) for n in nodes if n is not None)

    def process(self, packet: bytes, now: float) -> Relay | Deliver | DeliverReply:
        """Unwrap with the current key, or an adjacent epoch's key near a boundary."""
        first, *others = self._at(now)
        try:
            return first.process(packet)
        except SphinxMacFailure:
            for other in others:
                try:
                    return other.process(packet)
                except SphinxMacFailure:
                    continue
            raise


class MixNode:
    """One mix (or, with an exit handler, a provider) serving fixed-size packet links."""

    def __init__(self, key: NodeKey, directory: Directory, *,
                 exit_handler: ExitHandler | None = None, connect: Connector = tcp_connect,
                 max_pending: int = 50_000, max_connections: int = 1024,
                 replay_capacity: int = 1 << 21, max_delay: float = 60.0,
                 idle_timeout: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        if not idle_timeout > 0:
            raise MixnetError("idle_timeout must be positive")
        self.key = key
        self.directory = directory
        self.keys = KeyRing(key, directory.epoch_seconds, replay_capacity=replay_capacity)
        self._exit = exit_handler
        self._outbound = OutboundPool(connect)
        self._max_pending = max_pending
        self._max_connections = max_connections
        self._max_delay = max_delay
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._mailboxes: dict[bytes, asyncio.StreamWriter] = {}
        self.pending = 0
        self.max_pending_seen = 0
        self.counters: Counter[str] = Counter()
        self._addresses = {n.node_id: split_address(n.address) for n in directory.nodes}

    # -- packet path ---------------------------------------------------------------

    def handle_packet(self, packet: bytes) -> None:
        """Process one received packet: drop it, or hold it and then forward or exit."""
        self.counters["received"] += 1
        if self.pending >= self._max_pending:
            self.counters["shed"] += 1
            return
        try:
            result = self.keys.process(packet, self._clock())
        except SphinxError as exc:
            self.counters[f"dropped_{exc.code}"] += 1
            return
        delay = min(result.delay_ms / 1000.0, self._max_delay)
        loop = asyncio.get_running_loop()
        self.pending += 1
        self.max_pending_seen = max(self.max_pending_seen, self.pending)
        loop.call_at(loop.time() + delay, self._release, result)

    def _release(self, result: Relay | Deliver | DeliverReply) -> None:
        self.pending -= 1
        if isinstance(result, Relay):
            address = self._addresses.get(result.next_hop)
            if address is None:
                self.counters["dropped_unknown_next_hop"] += 1
                return
            if self._outbound.link(*address).send(result.packet):
                self.counters["relayed"] += 1
            else:
                self.counters["dropped_link_full"] += 1
            return
        if isinstance(result, DeliverReply) and result.destination in self._mailboxes:
            writer = self._mailboxes[result.destination]
            if writer.transport.get_write_buffer_size() > MAX_MAILBOX_BUFFER:
                self.counters["dropped_mailbox_full"] += 1
                return
            writer.write(delivery_frame(result.surb_id, result.payload))
            self.counters["mailbox_delivered"] += 1
            return
        if self._exit is None:
            self.counters["dropped_not_an_exit"] += 1
            return
        self.counters["exited"] += 1
        self._exit(result)

    def inject(self, first_hop: bytes, packet: bytes) -> bool:
        """Send a packet that starts here (a SURB reply) to the node ``first_hop``."""
        address = self._addresses.get(first_hop)
        if address is None:
            self.counters["dropped_unknown_next_hop"] += 1
            return False
        return self._outbound.link(*address).send(packet)

    # -- serving -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._connections) >= self._max_connections:
            self.counters["refused_connections"] += 1
            writer.close()
            return
        assert task is not None
        self._connections[task] = writer
        mailbox: bytes | None = None
        burst = 0
        try:
            async for packet in read_packets(reader, self._idle_timeout):
                if is_control(packet):
                    mailbox, keep = self._control(packet, writer, mailbox)
                    if not keep:
                        break
                else:
                    self.handle_packet(packet)
                burst += 1
                if burst >= YIELD_EVERY:
                    # Let timers and other links run during a busy link's burst.
                    burst = 0
                    await asyncio.sleep(0)
        except TimeoutError:
            self.counters["closed_idle"] += 1
        finally:
            self._connections.pop(task, None)
            if mailbox is not None and self._mailboxes.get(mailbox) is writer:
                del self._mailboxes[mailbox]
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    def _control(self, frame: bytes, writer: asyncio.StreamWriter, mailbox: bytes | None
                 ) -> tuple[bytes | None, bool]:
        """Handle a control frame: (the connection's mailbox afterwards, keep the link)."""
        try:
            kind, ident, _ = parse_control(frame)
        except TransportError:
            self.counters["dropped_bad_control"] += 1
            return mailbox, True
        if kind != REGISTER:
            self.counters["dropped_bad_control"] += 1
            return mailbox, True
        holder = self._mailboxes.get(ident)
        if holder is not None and holder is not writer:
            # First come, first served: otherwise anyone who learns (or guesses) a
            # mailbox id could take a client's loops and replies. The refused link is
            # closed, so an honest client whose old link is not yet gone (at most
            # idle_timeout) reconnects and tries again.
            self.counters["refused_mailbox_taken"] += 1
            return mailbox, False
        if mailbox is not None and self._mailboxes.get(mailbox) is writer:
            del self._mailboxes[mailbox]
        self._mailboxes[ident] = writer
        self.counters["mailboxes_registered"] += 1
        return ident, True

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port)
        bound = self._server.sockets[0].getsockname()
        log.info("mix node %s listening on %s:%d", self.key.node_id.hex()[:8], bound[0],
                 bound[1])
        return bound[0], bound[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # Aborting the transports ends each link's read loop; cancelling the handler
        # tasks instead makes asyncio log the cancellation as an error.
        tasks = list(self._connections.items())
        for _, writer in tasks:
            writer.transport.abort()
        if tasks:
            await asyncio.gather(*(task for task, _ in tasks), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        await self._outbound.flush(1.0)
        await self._outbound.close()

    def stats(self) -> dict[str, int]:
        out = dict.fromkeys(COUNTERS, 0)
        out.update(self.counters)
        out["pending"] = self.pending
        # Links being served now: lets a caller wait for a peer to have connected, or for
        # a link to have been closed, instead of sleeping and hoping.
        out["connections"] = len(self._connections)
        out["max_pending_seen"] = self.max_pending_seen
        out["replay_tags"] = self.keys.replay_tags
        out["mailboxes"] = len(self._mailboxes)
        out["link_sent"] = self._outbound.sent
        out["link_dropped"] = self._outbound.dropped
        return out

__all__ = [
    "KeyRing",
    "MixNode",
]
