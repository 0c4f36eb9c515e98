"""Regression tests for the security review of the mixnet (findings 1-6), on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import pytest

from veil.core.sphinx import (
    PACKET_SIZE,
    ReplayTagStore,
    SphinxError,
    SphinxNode,
    SphinxReplay,
    create_forward_packet,
    create_surb,
)
from veil.core.sphinx.packet import Relay
from veil.mixnet.client import MixClient
from veil.mixnet.directory import ROLE_MIX, ROLE_PROVIDER
from veil.mixnet.errors import MixnetError
from veil.mixnet.fragment import Fragment, Kind, Reassembler, split
from veil.mixnet.node import KeyRing, MixNode
from veil.mixnet.provider import Provider
from veil.mixnet.sink import QueueSink
from veil.mixnet.transport import Outbound, parse_control, register_frame, tcp_connect

from .nethelpers import MIX1_AND_NEXT, THREE_LAYERS, directory_for, mix_with_collector
from .nethelpers import until as _until


async def _mix_and_collector(**options):
    node, collector, address, packet = await mix_with_collector(**options)
    return node, collector, address, lambda: packet(0, b"honest")


# -- finding 2: idle connections ---------------------------------------------------------

async def test_idle_connections_are_closed_and_an_honest_packet_then_gets_through() -> None:
    # Every slot must be held by an idle link when the late peer comes, so the idle
    # timeout must outlast opening 1,024 connections, and on a loaded machine that may
    # take longer than any fixed timeout. So start short, and when an idle link was
    # already closed before the late peer came (it was then let in, not refused), the
    # fill was too slow for that timeout: start again with twice the timeout.
    idle_timeout = 0.5
    while True:
        node, collector, address, packet = await _mix_and_collector(idle_timeout=idle_timeout)
        idle = [await asyncio.open_connection(*address) for _ in range(1024)]
        _, late = await asyncio.open_connection(*address)
        assert await _until(lambda n=node: n.counters["refused_connections"] >= 1
                            or n.counters["closed_idle"] >= 1, 120)
        if node.counters["refused_connections"] or idle_timeout >= 32:
            break
        for _, writer in [*idle, (None, late)]:
            writer.close()
        await node.close()
        collector.close()
        idle_timeout *= 2
    assert node.counters["refused_connections"] == 1  # every slot is held by an idle link
    late.close()
    assert await _until(lambda: node.counters["closed_idle"] >= 1024, 120)
    assert node.counters["closed_idle"] == 1024
    _, honest = await asyncio.open_connection(*address)
    honest.write(packet())
    await honest.drain()
    await collector.wait_for(1, timeout=30)
    assert len(collector.packets) == 1 and node.counters["relayed"] == 1
    for _, writer in idle:
        writer.close()
    honest.close()
    await node.close()
    collector.close()


async def test_a_trickling_peer_is_closed_too() -> None:
    node, collector, address, _ = await _mix_and_collector(idle_timeout=0.3)
    _, writer = await asyncio.open_connection(*address)
    with contextlib.suppress(ConnectionError):  # the node closes it mid-trickle
        for _ in range(10):  # a byte now and then never makes a whole frame
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)
    assert await _until(lambda: node.counters["closed_idle"] >= 1)
    assert node.counters["closed_idle"] == 1
    writer.close()
    await node.close()
    collector.close()
    with pytest.raises(MixnetError):
        MixNode(node.key, node.directory, idle_timeout=0)


async def test_a_link_the_peer_closed_for_idleness_reconnects_before_the_next_packet() -> None:
    node, collector, address, packet = await _mix_and_collector(idle_timeout=0.3)
    link = Outbound(*address, tcp_connect, retry_delay=0.01)
    assert link.send(packet())
    await collector.wait_for(1, timeout=30)
    assert await _until(lambda: node.counters["closed_idle"] >= 1)
    # The link has seen the EOF when it is connected again (the node serves it anew).
    assert await _until(lambda: node.stats()["connections"] == 1 and link.connected)
    assert link.send(packet())
    await collector.wait_for(2, timeout=30)
    assert len(collector.packets) == 2
    await link.close()
    await node.close()
    collector.close()


# -- finding 3: mailbox takeover ---------------------------------------------------------

async def test_a_second_registration_of_a_live_mailbox_is_refused() -> None:
    node, collector, address, _ = await _mix_and_collector()
    directory = node.directory
    mailbox = os.urandom(16)
    victim_reader, victim = await asyncio.open_connection(*address)
    victim.write(register_frame(mailbox))
    await victim.drain()
    assert await _until(lambda: node.counters["mailboxes_registered"] == 1)
    thief_reader, thief = await asyncio.open_connection(*address)
    thief.write(register_frame(mailbox))
    await thief.drain()
    assert await asyncio.wait_for(thief_reader.read(), 30) == b""  # refused and closed
    assert node.counters["refused_mailbox_taken"] == 1
    epoch = directory.epoch_at(time.time())
    surb, secret = create_surb([directory.nodes[0].hop(epoch)], [0], mailbox)
    _, reply = surb.reply_packet(b"for the victim")
    _, sender = await asyncio.open_connection(*address)
    sender.write(reply)
    await sender.drain()
    frame = await asyncio.wait_for(victim_reader.readexactly(PACKET_SIZE), 30)
    assert secret.open(parse_control(frame)[2]) == b"for the victim"
    # Once the holder is gone, the id is free again (an honest client reconnecting).
    victim.close()
    assert await _until(lambda: node.stats()["mailboxes"] == 0)
    _, again = await asyncio.open_connection(*address)
    again.write(register_frame(mailbox))
    await again.drain()
    assert await _until(lambda: node.counters["mailboxes_registered"] == 2)
    assert node.stats()["mailboxes"] == 1
    for writer in (sender, again):
        writer.close()
    await node.close()
    collector.close()


# -- finding 4: the clock steps back -----------------------------------------------------

def test_a_backward_clock_step_does_not_empty_an_epochs_replay_store() -> None:
    directory, keys = directory_for(MIX1_AND_NEXT, epoch_seconds=600, epochs=range(0, 20))
    ring = KeyRing(keys[0], 600)

    def packet(epoch: int) -> bytes:
        return create_forward_packet([n.hop(epoch) for n in directory.nodes], [0, 0],
                                     bytes(16), b"m")

    seen = packet(10)
    ring.process(seen, now=10 * 600 + 100)
    ring.process(packet(11), now=11 * 600 + 5)
    rotations = ring.rotations
    with pytest.raises(SphinxReplay):  # 10 s back across the boundary
        ring.process(seen, now=11 * 600 - 5)
    with pytest.raises(SphinxError):  # a whole epoch back: still not accepted
        ring.process(seen, now=10 * 600 + 200)
    assert ring.rotations == rotations


# -- finding 1 and 6: reassembly at the provider -----------------------------------------

async def test_a_partial_slot_flood_does_not_stop_a_one_fragment_message() -> None:
    sink = QueueSink()
    directory, keys = directory_for([(ROLE_MIX, 1), (ROLE_PROVIDER, 0)])
    provider = Provider(keys[1], directory, sink)
    provider.reassembler = Reassembler(max_messages=64)
    port = int(directory.providers()[0].address.rsplit(":", 1)[1])
    await provider.start("127.0.0.1", port)
    hop = [directory.providers()[0].hop(directory.epoch_at(time.time()))]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    # The provider's key is public: anyone can send it one half of made-up messages.
    for _ in range(128):
        made_up = Fragment(Kind.REAL, os.urandom(16), 0, 2, b"")
        writer.write(create_forward_packet(hop, [0], bytes(16), made_up.encode()))
    await writer.drain()
    assert await _until(lambda: provider.counters["fragments"] >= 128)
    honest = [b"one fragment", os.urandom(3000)]
    for message in honest:
        for fragment in split(message):
            writer.write(create_forward_packet(hop, [0], bytes(16), fragment.encode()))
    await writer.drain()
    got = [await asyncio.wait_for(sink.queue.get(), 30) for _ in honest]
    assert got == honest
    stats = provider.stats()
    assert stats["partial_messages"] <= 64 and stats["partial_evicted"] >= 64
    writer.close()
    await provider.close()


# -- finding 5: loops are delayed at the provider ---------------------------------------

def test_loops_get_a_delay_at_the_provider_hop() -> None:
    directory, keys = directory_for(THREE_LAYERS)
    client = MixClient(directory, mean_delay=1.0)
    epoch = directory.epoch_at(time.time())
    nodes = {n.node_id: SphinxNode(k.epoch_key(epoch), ReplayTagStore())
             for n, k in zip(directory.nodes, keys, strict=True)}
    provider_id = directory.providers()[0].node_id
    provider_delays = []
    for _ in range(20):
        first, packet = client.loop_packet()
        hop = first.node_id
        while hop != provider_id:
            result = nodes[hop].process(packet)
            assert isinstance(result, Relay)
            hop, packet = result.next_hop, result.packet
        result = nodes[hop].process(packet)
        assert isinstance(result, Relay)  # the provider relays a loop to the home mix
        provider_delays.append(result.delay_ms)
    # Exponential with a 1 s mean: a zero draw (< 0.5 ms) has odds of 1 in 2,000.
    assert sum(d > 0 for d in provider_delays) >= 19
    assert max(provider_delays) > 100
