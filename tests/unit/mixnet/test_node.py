"""A mix node over real loopback sockets: bad input, delays, floods, key rotation."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from veil.core.sphinx import (
    PACKET_SIZE,
    PAYLOAD_SIZE,
    SphinxMacFailure,
    SphinxReplay,
    create_forward_packet,
    create_surb,
)
from veil.mixnet.directory import NodeKey
from veil.mixnet.errors import TransportError
from veil.mixnet.node import KeyRing
from veil.mixnet.transport import (
    CONTROL_PREFIX,
    DELIVERY,
    REGISTER,
    delivery_frame,
    parse_control,
    register_frame,
)

from .nethelpers import MIX1_AND_NEXT, directory_for, mix_with_collector, until


async def _setup(**node_options):
    node, collector, address, packet = await mix_with_collector(**node_options)
    _, writer = await asyncio.open_connection(*address)
    return node, collector, writer, packet


async def _teardown(node, collector, writer) -> None:
    writer.close()
    await node.close()
    collector.close()


async def test_bad_packets_are_dropped_and_counted_and_the_node_keeps_working() -> None:
    node, collector, writer, packet = await _setup()
    good = packet()
    tampered = bytearray(packet())
    tampered[100] ^= 1
    writer.write(os.urandom(PACKET_SIZE))  # wrong MAC
    writer.write(bytes(tampered))  # wrong MAC
    writer.write((1).to_bytes(32, "little") + os.urandom(PACKET_SIZE - 32))  # small order
    writer.write(good + good)  # the second is a replay
    writer.write(packet())
    await writer.drain()
    # One link, read in order: once both good packets are out, all six have been judged.
    await collector.wait_for(2, timeout=30)
    stats = node.stats()
    assert stats["received"] == 6
    assert stats["dropped_sphinx_mac_failure"] == 2
    assert stats["dropped_sphinx_malformed"] == 1
    assert stats["dropped_sphinx_replay"] == 1
    assert stats["relayed"] == 2 and len(collector.packets) == 2
    assert all(len(p) == PACKET_SIZE for _, p in collector.packets)
    # A wrong-size frame: the tail never forms a packet, the link closes cleanly.
    writer.write(os.urandom(PACKET_SIZE // 2))
    writer.write_eof()
    assert await until(lambda: node.stats()["connections"] == 0)  # read to the end, closed
    assert node.stats()["received"] == 6
    await _teardown(node, collector, writer)


async def test_packets_are_held_for_their_header_delay() -> None:
    node, collector, writer, packet = await _setup()
    loop = asyncio.get_running_loop()
    delays = [0, 50, 150, 300]
    sent = {}
    for delay in delays:
        p = packet(delay, message=str(delay).encode())
        sent[delay] = loop.time()
        writer.write(p)
        await writer.drain()
    await collector.wait_for(len(delays))
    assert len(collector.packets) == len(delays)
    arrivals = sorted(t for t, _ in collector.packets)
    for delay, arrived in zip(delays, arrivals, strict=True):
        held = arrived - sent[delay]
        assert delay / 1000 - 0.002 <= held < delay / 1000 + 0.15, (delay, held)
    await _teardown(node, collector, writer)


async def test_a_flood_is_shed_with_bounded_memory_and_delays_kept() -> None:
    # The flood must be judged whole before the first held packet is due, or the node
    # rightly takes more than 40 (a slot is free again). How long 120 packets take to
    # unwrap depends on the machine's load, so: start with 200 ms, and if a packet was
    # already released when the last one was judged, start over with twice the delay.
    delay_ms = 200
    loop = asyncio.get_running_loop()
    while True:
        node, collector, writer, packet = await _setup(max_pending=40)
        packets = [packet(delay_ms) for _ in range(120)]
        start = loop.time()
        for p in packets:
            writer.write(p)
        await writer.drain()
        # Wait until the node has judged all 120 (a loaded machine may take a while).
        assert await until(lambda n=node: n.stats()["received"] == 120)
        stats = node.stats()
        if stats["relayed"] == 0 or delay_ms >= 6400:
            break
        await _teardown(node, collector, writer)
        delay_ms *= 2
    delay = delay_ms / 1000
    assert stats["pending"] <= 40 and stats["max_pending_seen"] == 40
    assert stats["shed"] == 80
    if loop.time() - start < delay - 0.01:
        assert collector.packets == []  # nothing leaves before its delay, flood or not
    await collector.wait_for(40, timeout=30)
    await asyncio.sleep(0.05)  # room for a 41st to show up, were the node to leak one
    assert len(collector.packets) == 40
    assert min(t for t, _ in collector.packets) - start >= delay - 0.002
    assert node.stats()["pending"] == 0
    await _teardown(node, collector, writer)


async def test_connection_cap() -> None:
    node, collector, writer, packet = await _setup(max_connections=1)
    _, second = await asyncio.open_connection(*node._server.sockets[0].getsockname()[:2])
    second.write(packet())
    await second.drain()
    assert await until(lambda: node.stats()["refused_connections"] >= 1)
    assert node.stats()["refused_connections"] == 1
    assert node.stats()["received"] == 0
    second.close()
    await _teardown(node, collector, writer)


def test_key_ring_rotates_resets_replay_tags_and_honours_the_grace() -> None:
    directory, keys = directory_for(MIX1_AND_NEXT, epoch_seconds=100, epochs=range(0, 10))
    ring = KeyRing(keys[0], 100, grace=10.0)

    def packet(epoch: int) -> bytes:
        path = [n.hop(epoch) for n in directory.nodes]
        return create_forward_packet(path, [0, 0], bytes(16), b"m")

    old = packet(3)
    ring.process(old, now=350.0)
    with pytest.raises(SphinxReplay):
        ring.process(old, now=360.0)
    assert ring.replay_tags == 1
    # Epoch 4 begins: a new key and an empty store; epoch-3 packets work for the grace.
    late = packet(3)
    ring.process(packet(4), now=401.0)
    ring.process(late, now=405.0)
    assert ring.rotations == 2
    with pytest.raises(SphinxMacFailure):
        ring.process(packet(3), now=415.0)
    # Two epochs later the old store is gone, and so is the old key.
    ring.process(packet(6), now=650.0)
    assert ring.replay_tags == 1
    with pytest.raises(SphinxMacFailure):
        ring.process(old, now=651.0)
    # A client whose clock runs ahead: the next epoch's key works just before the
    # boundary, and its replay tag carries over into that epoch.
    early = packet(7)
    ring.process(early, now=695.0)
    with pytest.raises(SphinxReplay):
        ring.process(early, now=701.0)
    with pytest.raises(SphinxMacFailure):
        ring.process(packet(8), now=750.0)  # too early for epoch 8


def test_node_key_rotation_uses_the_directory_epoch() -> None:
    key = NodeKey.generate()
    assert key.epoch_key(7).public_key() != key.epoch_key(8).public_key()


async def test_replies_to_a_registered_mailbox_go_back_down_its_connection() -> None:
    node, collector, writer, _ = await _setup()
    directory = node.directory
    epoch = directory.epoch_at(time.time())
    mailbox = os.urandom(16)
    reader, home = await asyncio.open_connection(*node._server.sockets[0].getsockname()[:2])
    home.write(register_frame(mailbox))
    home.write(CONTROL_PREFIX + b"\x09" + bytes(PACKET_SIZE - 33))  # unknown control frame
    await home.drain()
    surb, secret = create_surb([directory.nodes[0].hop(epoch)], [0], mailbox)
    _, packet = surb.reply_packet(b"welcome home")
    stray, _ = create_surb([directory.nodes[0].hop(epoch)], [0], os.urandom(16))
    # The reply comes on another link: it must not overtake the registration.
    assert await until(lambda: node.stats()["mailboxes_registered"] == 1
                       and node.stats()["dropped_bad_control"] == 1)
    writer.write(packet + stray.reply_packet(b"nobody")[1])
    await writer.drain()
    frame = await asyncio.wait_for(reader.readexactly(PACKET_SIZE), 30)
    kind, surb_id, payload = parse_control(frame)
    assert (kind, surb_id) == (DELIVERY, secret.surb_id)
    assert secret.open(payload) == b"welcome home"
    assert await until(lambda: node.stats()["dropped_not_an_exit"] >= 1)  # the stray
    stats = node.stats()
    assert stats["mailbox_delivered"] == 1 and stats["mailboxes"] == 1
    assert stats["dropped_not_an_exit"] == 1
    assert stats["dropped_bad_control"] == 1
    home.close()
    assert await until(lambda: node.stats()["mailboxes"] == 0)
    assert node.stats()["mailboxes"] == 0
    await _teardown(node, collector, writer)


def test_control_frames_encode_and_parse() -> None:
    mailbox = os.urandom(16)
    assert parse_control(register_frame(mailbox)) == (REGISTER, mailbox, b"")
    payload = os.urandom(PAYLOAD_SIZE)
    frame = delivery_frame(b"s" * 16, payload)
    assert len(frame) == PACKET_SIZE and parse_control(frame) == (DELIVERY, b"s" * 16, payload)
    for bad in (b"", os.urandom(PACKET_SIZE), CONTROL_PREFIX + bytes(PACKET_SIZE - 32)):
        with pytest.raises(TransportError):
            parse_control(bad)
    with pytest.raises(TransportError):
        register_frame(b"short")
