"""The client side of the mixnet: paths, fragments, and Poisson sending with cover.

Loopix (Piotrowska et al., USENIX Security 2017), sections 3.2-3.3: a client sends at a
constant rate drawn from a Poisson process whatever it has to say. At each tick it sends
the next real fragment if one is waiting, and otherwise a cover packet: a loop or a
drop (discarded at the provider). Every packet takes a fresh path, one random mix per
layer then the provider, and every hop's delay is drawn from an exponential distribution
with the configured mean, so the mixes are continuous-time (stop-and-go) mixes. On the
wire real and cover packets are the same size and indistinguishable.

Loops come back. The client registers a mailbox on its connection to a "home" mix of
layer 1; a loop is a SURB for the path (layer 1, 2, 3, provider, home) that the client
uses itself, so the provider only relays it and the client checks that it returned
(Loopix's defence against (n-1) and dropping attacks needs that signal). The same
mechanism carries replies: :meth:`MixClient.reply_block` hands out a SURB that the
provider (the Veil server) can use to answer or acknowledge without learning the route.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable

from veil.core.errors import VeilError
from veil.core.sphinx import ADDRESS_SIZE, MAX_HOPS, SurbSecret, create_forward_packet, create_surb
from veil.mixnet.directory import Directory, NodeDescriptor, split_address
from veil.mixnet.errors import DirectoryError, MixnetError, QueueFull
from veil.mixnet.fragment import Fragment, Kind, cover, split
from veil.mixnet.transport import (
    DELIVERY,
    Connector,
    Outbound,
    OutboundPool,
    parse_control,
    register_frame,
    tcp_connect,
)

log = logging.getLogger(__name__)

SUBMISSION_DESTINATION = bytes(ADDRESS_SIZE)
MAX_DELAY_MS = 60_000
LOOP_TOKEN_SIZE = 16

# Every counter stats() reports, present (at 0) before anything has been counted, so a
# reader never has to guess whether a missing key means zero: a short run may well end
# before the Poisson process has drawn a single loop or drop. Error counters named after
# an error code (dropped_<code>, failed_<code>) appear when they first count.
COUNTERS = (
    "messages_queued", "sent_real", "sent_loop", "sent_drop", "sent_marker",
    "loops_returned", "loops_lost", "markers_returned", "markers_lost",
    "replies_received", "replies_expired", "dropped_link_full", "dropped_bad_frame",
    "dropped_unknown_reply", "dropped_bad_loop", "dropped_replies_full",
)


class MixClient:
    """Send messages through the mixnet to one provider at a constant Poisson rate."""

    def __init__(self, directory: Directory, provider_id: bytes | None = None, *,
                 rate: float = 10.0, mean_delay: float = 0.1, loop_fraction: float = 0.5,
                 connect: Connector = tcp_connect, max_queue: int = 10_000,
                 max_outstanding: int = 4096, surb_timeout: float = 60.0,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or mean_delay < 0 or not 0 <= loop_fraction <= 1:
            raise MixnetError("rate must be positive, delay and loop fraction in range")
        if directory.layers + 2 > MAX_HOPS:
            raise DirectoryError(f"loops cross every layer, the provider and back: at most "
                                 f"{MAX_HOPS - 2} layers")
        providers = directory.providers()
        if provider_id is None:
            if not providers:
                raise DirectoryError("the directory lists no provider")
            self._provider = providers[0]
        else:
            self._provider = directory.node(provider_id)
        self.directory = directory
        self.rate = rate
        self.mean_delay = mean_delay
        self.loop_fraction = loop_fraction
        self._clock = clock
        # Ages SURBs and times loops; injectable so that tests can age them exactly.
        self._monotonic = monotonic
        self._rng = random.SystemRandom()
        self._fragments: deque[Fragment] = deque()
        self._max_queue = max_queue
        self._outbound = OutboundPool(connect)
        self._task: asyncio.Task[None] | None = None
        self.counters: Counter[str] = Counter()
        self._home = self._rng.choice(directory.mixes(1))
        self._mailbox = os.urandom(ADDRESS_SIZE)
        # SURB id -> (secret, loop token or None for a reply block, time sent); bounded.
        self._outstanding: OrderedDict[bytes, tuple[SurbSecret, bytes | None, float]] = (
            OrderedDict())
        self._max_outstanding = max_outstanding
        self._surb_timeout = surb_timeout
        # The longest per-hop delay drawn so far, and the SURB ids of drain() markers
        # still out: what drain() needs to know that everything sent before has left.
        self.max_delay_ms = 0
        self._markers: set[bytes] = set()
        self._markers_back = asyncio.Event()
        self.loop_rtts: deque[float] = deque(maxlen=10_000)
        self.replies: asyncio.Queue[bytes] = asyncio.Queue(1024)

    # -- what the application calls ------------------------------------------------

    def send(self, message: bytes) -> None:
        """Queue ``message``; it leaves fragment by fragment at the Poisson ticks."""
        fragments = split(message)
        if len(self._fragments) + len(fragments) > self._max_queue:
            raise QueueFull("mixnet send queue is full")
        self._fragments.extend(fragments)
        self.counters["messages_queued"] += 1

    @property
    def queued(self) -> int:
        return len(self._fragments)

    async def start(self) -> None:
        self._home_link().start()
        self._task = asyncio.get_running_loop().create_task(self._tick_forever())

    def _home_link(self) -> Outbound:
        return self._outbound.link(*split_address(self._home.address),
                                   hello=register_frame(self._mailbox), on_frame=self._on_frame)

    def reply_block(self) -> bytes:
        """An encoded SURB whose replies reach this client (e.g. to put in a message)."""
        epoch = self.directory.epoch_at(self._clock())
        path = [*self.choose_path()[:-1], self._home]
        surb, secret = create_surb([n.hop(epoch) for n in path],
                                   [self._delay_ms() for _ in path[:-1]] + [0], self._mailbox)
        self._remember(secret, None)
        return surb.encode()

    def _remember(self, secret: SurbSecret, token: bytes | None) -> None:
        now = self._monotonic()
        self._outstanding[secret.surb_id] = (secret, token, now)
        # Oldest first: a loop that has not come back by the timeout counts as lost,
        # the signal Loopix uses to notice (n-1) and dropping attacks.
        while self._outstanding:
            _, (_, old_token, sent) = next(iter(self._outstanding.items()))
            if (len(self._outstanding) <= self._max_outstanding
                    and now - sent < self._surb_timeout):
                break
            old_id, _ = self._outstanding.popitem(last=False)
            if old_id in self._markers:
                self.counters["markers_lost"] += 1
                self._marker_done(old_id)
            else:
                self.counters["loops_lost" if old_token is not None
                              else "replies_expired"] += 1

    def _on_frame(self, frame: bytes) -> None:
        """A frame from the home mix: a SURB reply (a returning loop, or a reply)."""
        try:
            kind, surb_id, payload = parse_control(frame)
        except MixnetError:
            self.counters["dropped_bad_frame"] += 1
            return
        entry = self._outstanding.pop(surb_id, None) if kind == DELIVERY else None
        if entry is None:
            self.counters["dropped_unknown_reply"] += 1
            return
        secret, token, sent = entry
        try:
            message = secret.open(payload)
        except VeilError as exc:
            self.counters[f"dropped_{exc.code}"] += 1
            return
        if token is None:
            try:
                self.replies.put_nowait(message)
            except asyncio.QueueFull:
                self.counters["dropped_replies_full"] += 1
                return
            self.counters["replies_received"] += 1
        elif message == token and surb_id in self._markers:
            self.counters["markers_returned"] += 1
            self._marker_done(surb_id)
        elif message == token:
            self.counters["loops_returned"] += 1
            self.loop_rtts.append(self._monotonic() - sent)
        else:
            self.counters["dropped_bad_loop"] += 1

    def _marker_done(self, surb_id: bytes) -> None:
        self._markers.discard(surb_id)
        if not self._markers:
            self._markers_back.set()

    async def flush(self, timeout: float) -> None:
        """Wait until every queued fragment has left (or ``timeout`` passes)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._fragments and loop.time() < end:
            await asyncio.sleep(0.01)
        await self._outbound.flush(max(0.0, end - loop.time()))

    async def stop_sending(self) -> None:
        """Stop the Poisson process; links stay up so loops and replies still arrive."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def drain(self, timeout: float, *, min_delay_ms: int = 0) -> bool:
        """Stop sending, then wait until every packet sent so far has left every mix.

        A mix holds each packet for the delay in its header and then forwards it, and
        each link between two nodes is one TCP connection, first in, first out. So a
        packet that enters a node after another one, on the same link, and is held
        longer there, leaves after it, and reaches the next node after it on the same
        link again. This sends such a marker along every path through the network
        (each mix of each layer, then our provider, then home): a loop whose delay at
        every hop is 1 ms longer than any this client has drawn. Once every marker is
        back, every packet this client sent before (on links that stayed up) has been
        released by every node on its path: forwarded, handed to the provider's exit
        (reassembly, the sink's queue) or, for a drop, discarded there; and each loop
        has been handed to the home mix's mailbox link ahead of the markers. That is an
        event to wait for instead of a guess at how long the mixes need, which no sleep
        can bound on a loaded machine. (It needs delays below the mixes' cap, 60 s by
        default, where a longer delay would no longer mean a later release.)

        ``min_delay_ms`` raises the markers' delay for packets another sender put into
        the same mixes (pass that sender's ``max_delay_ms``); they are covered if the
        first mix had already read them when drain() was called.

        Markers are not cover traffic: a burst outside the Poisson process, one per
        path (the product of the layer widths), with conspicuous delays. Use this to
        shut down cleanly or in tests. Returns whether every marker came back within
        ``timeout``; a mix that sheds or drops one (a full queue) makes it False.
        """
        await self.stop_sending()
        delay = max(self.max_delay_ms, min_delay_ms) + 1
        epoch = self.directory.epoch_at(self._clock())
        layers = [self.directory.mixes(layer) for layer in range(1, self.directory.layers + 1)]
        self._markers_back.clear()
        complete = True
        for mixes in itertools.product(*layers):
            path = [*mixes, self._provider, self._home]
            # Held at the home mix too, so that loops along the same path reach the
            # mailbox link ahead of it (a tie at a zero delay has no order).
            surb, secret = create_surb([n.hop(epoch) for n in path], [delay] * len(path),
                                       self._mailbox)
            token = os.urandom(LOOP_TOKEN_SIZE)
            _, packet = surb.reply_packet(token)
            if not self._outbound.link(*split_address(path[0].address)).send(packet):
                self.counters["dropped_link_full"] += 1
                complete = False
                continue
            self._markers.add(secret.surb_id)
            self._remember(secret, token)
            self.counters["sent_marker"] += 1
        if self._markers:
            try:
                await asyncio.wait_for(self._markers_back.wait(), timeout)
            except TimeoutError:
                return False
        return complete

    async def close(self) -> None:
        await self.stop_sending()
        # Every packet counted as sent is written before the links go: cancelling a link
        # that still holds some would lose them, and stats() would count packets that no
        # mix ever saw. Bounded, and not waiting on a link that is down.
        await self._outbound.flush(1.0, while_connected=True)
        await self._outbound.close()

    # -- the Poisson process -------------------------------------------------------

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            # Absolute deadlines: time spent building packets does not slow the rate.
            due += self._rng.expovariate(self.rate)
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                self.tick()
            except VeilError as exc:
                self.counters[f"failed_{exc.code}"] += 1
                log.warning("mixnet send failed: %s", exc.code)

    def tick(self) -> None:
        """Send one packet now: the next real fragment, else a cover packet."""
        if self._fragments:
            first, packet = self.packet_for(self._fragments.popleft())
            self.counters["sent_real"] += 1
        elif self._rng.random() < self.loop_fraction:
            first, packet = self.loop_packet()
            self.counters["sent_loop"] += 1
        else:
            first, packet = self.packet_for(cover(Kind.DROP))
            self.counters["sent_drop"] += 1
        if not self._outbound.link(*split_address(first.address)).send(packet):
            self.counters["dropped_link_full"] += 1

    def choose_path(self) -> list[NodeDescriptor]:
        path = [self._rng.choice(self.directory.mixes(layer))
                for layer in range(1, self.directory.layers + 1)]
        path.append(self._provider)
        return path

    def _delay_ms(self) -> int:
        if self.mean_delay == 0:
            return 0
        delay = min(MAX_DELAY_MS, round(self._rng.expovariate(1 / self.mean_delay) * 1000))
        self.max_delay_ms = max(self.max_delay_ms, delay)
        return delay

    def packet_for(self, fragment: Fragment) -> tuple[NodeDescriptor, bytes]:
        epoch = self.directory.epoch_at(self._clock())
        path = self.choose_path()
        hops = [node.hop(epoch) for node in path]
        delays = [self._delay_ms() for _ in path[:-1]] + [0]
        packet = create_forward_packet(hops, delays, SUBMISSION_DESTINATION, fragment.encode())
        return path[0], packet

    def loop_packet(self) -> tuple[NodeDescriptor, bytes]:
        """A loop: through every layer and the provider, back to our home mix."""
        epoch = self.directory.epoch_at(self._clock())
        path = [*self.choose_path(), self._home]
        # The provider relays a loop, so it holds it like any mix: with no delay there, an
        # observer would see it leave for the home mix at once and know it for a loop.
        delays = [self._delay_ms() for _ in path[:-1]] + [0]
        surb, secret = create_surb([n.hop(epoch) for n in path], delays, self._mailbox)
        token = os.urandom(LOOP_TOKEN_SIZE)
        self._remember(secret, token)
        _, packet = surb.reply_packet(token)
        return path[0], packet

    def stats(self) -> dict[str, int]:
        out = dict.fromkeys(COUNTERS, 0)
        out.update(self.counters)
        out["queued"] = len(self._fragments)
        out["max_delay_ms"] = self.max_delay_ms
        out["outstanding_surbs"] = len(self._outstanding)
        out["link_sent"] = self._outbound.sent
        out["link_dropped"] = self._outbound.dropped
        return out

__all__ = [
    "MixClient",
]
