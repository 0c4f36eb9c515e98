"""Forward Sphinx packets: round trips, fixed size, tamper, replay, malformed input."""

from __future__ import annotations

import itertools
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.core.sphinx import (
    HEADER_SIZE,
    MAX_HOPS,
    MAX_MESSAGE_SIZE,
    PACKET_SIZE,
    Deliver,
    Relay,
    ReplayTagStore,
    SphinxError,
    SphinxMacFailure,
    SphinxMalformed,
    SphinxNode,
    SphinxPathError,
    SphinxPayloadCorrupt,
    SphinxReplay,
    SphinxReplayStoreFull,
    create_forward_packet,
)
from veil.core.sphinx.packet import PathHop

from .helpers import make_net

DEST = b"D" * 16


def run_path(net, packet: bytes) -> tuple[Deliver, list[bytes]]:
    """Process ``packet`` hop by hop; return the exit's result and every link's bytes."""
    links = [packet]
    for i, node in enumerate(net.nodes):
        result = node.process(packet)
        if i < len(net.nodes) - 1:
            assert isinstance(result, Relay)
            assert result.next_hop == net.addresses[i + 1]
            packet = result.packet
            links.append(packet)
    assert isinstance(result, Deliver)
    return result, links


@pytest.mark.parametrize("hops", range(1, MAX_HOPS + 1))
def test_round_trip_over_each_path_length(hops: int) -> None:
    net = make_net(hops)
    delays = [100 * (i + 1) for i in range(hops)]
    message = os.urandom(200)
    packet = create_forward_packet(net.path, delays, DEST, message)
    seen_delays = []
    for i, node in enumerate(net.nodes):
        result = node.process(packet)
        seen_delays.append(result.delay_ms)
        if i < hops - 1:
            packet = result.packet
    assert isinstance(result, Deliver)
    assert result.message == message
    assert result.destination == DEST
    assert seen_delays == delays


def test_every_link_carries_the_same_length_for_every_path_length() -> None:
    lengths = set()
    for hops in range(1, MAX_HOPS + 1):
        net = make_net(hops)
        for message in (b"", b"x", os.urandom(MAX_MESSAGE_SIZE)):
            _, links = run_path(net, create_forward_packet(net.path, [0] * hops, DEST, message))
            lengths.update(len(link) for link in links)
    assert lengths == {PACKET_SIZE}


def test_packets_change_completely_at_each_hop() -> None:
    net = make_net(3)
    _, links = run_path(net, create_forward_packet(net.path, [0, 0, 0], DEST, b"m"))
    for a, b in itertools.pairwise(links):
        same = sum(x == y for x, y in zip(a, b, strict=True))
        assert same < PACKET_SIZE // 64  # about 1/256 of bytes agree by chance


def test_maximum_message_fits_and_larger_is_refused() -> None:
    net = make_net(2)
    message = os.urandom(MAX_MESSAGE_SIZE)
    result, _ = run_path(net, create_forward_packet(net.path, [0, 0], DEST, message))
    assert result.message == message
    with pytest.raises(SphinxPathError):
        create_forward_packet(net.path, [0, 0], DEST, message + b"x")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hops=st.integers(1, MAX_HOPS), data=st.data())
def test_header_tamper_anywhere_is_detected_at_the_next_hop(hops: int, data: st.DataObject
                                                            ) -> None:
    net = make_net(hops)
    packet = create_forward_packet(net.path, [0] * hops, DEST, b"payload")
    at_hop = data.draw(st.integers(0, hops - 1))
    for node in net.nodes[:at_hop]:
        packet = node.process(packet).packet
    position = data.draw(st.integers(0, HEADER_SIZE - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = bytearray(packet)
    tampered[position] ^= 1 << bit
    with pytest.raises((SphinxMacFailure, SphinxMalformed)):
        net.nodes[at_hop].process(bytes(tampered))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hops=st.integers(1, MAX_HOPS), data=st.data())
def test_payload_tamper_anywhere_is_detected_at_the_exit(hops: int, data: st.DataObject) -> None:
    net = make_net(hops)
    packet = create_forward_packet(net.path, [0] * hops, DEST, b"payload")
    at_hop = data.draw(st.integers(0, hops - 1))
    for node in net.nodes[:at_hop]:
        packet = node.process(packet).packet
    position = data.draw(st.integers(HEADER_SIZE, PACKET_SIZE - 1))
    tampered = bytearray(packet)
    tampered[position] ^= 1 << data.draw(st.integers(0, 7))
    packet = bytes(tampered)
    # The header is intact, so the hops in between relay it; the exit rejects it.
    for node in net.nodes[at_hop:-1]:
        packet = node.process(packet).packet
    with pytest.raises(SphinxPayloadCorrupt):
        net.nodes[-1].process(packet)


def test_replay_is_dropped_at_every_hop() -> None:
    net = make_net(3)
    packet = create_forward_packet(net.path, [0, 0, 0], DEST, b"once")
    for node in net.nodes:
        result = node.process(packet)
        with pytest.raises(SphinxReplay):
            node.process(packet)
        if isinstance(result, Relay):
            packet = result.packet


def test_replay_store_reset_on_rotation_and_bounded() -> None:
    store = ReplayTagStore(capacity=2)
    node = SphinxNode(X25519PrivateKey.generate(), store)
    path = [PathHop(b"a" * 16, node.public_key)]
    packets = [create_forward_packet(path, [0], DEST, b"%d" % i) for i in range(3)]
    node.process(packets[0])
    node.process(packets[1])
    with pytest.raises(SphinxReplayStoreFull):
        node.process(packets[2])
    assert len(store) == 2
    store.reset()
    assert node.process(packets[0]).message == b"0"


def test_packet_for_another_node_fails_the_mac() -> None:
    net = make_net(2)
    stranger = SphinxNode(X25519PrivateKey.generate())
    packet = create_forward_packet(net.path, [0, 0], DEST, b"m")
    with pytest.raises(SphinxMacFailure):
        stranger.process(packet)


@pytest.mark.parametrize("size", [0, 1, PACKET_SIZE - 1, PACKET_SIZE + 1, 2 * PACKET_SIZE])
def test_wrong_size_is_malformed(size: int) -> None:
    with pytest.raises(SphinxMalformed):
        make_net(1).nodes[0].process(bytes(size))


def test_small_order_group_element_is_malformed() -> None:
    # u = 0 and u = 1 are small-order points: the shared secret would be all zero.
    for alpha in (bytes(32), (1).to_bytes(32, "little")):
        with pytest.raises(SphinxMalformed):
            make_net(1).nodes[0].process(alpha + os.urandom(PACKET_SIZE - 32))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=PACKET_SIZE, max_size=PACKET_SIZE))
def test_random_packets_only_raise_sphinx_errors(packet: bytes) -> None:
    node = make_net(1).nodes[0]
    with pytest.raises(SphinxError):
        node.process(packet)


def test_path_errors() -> None:
    net = make_net(MAX_HOPS + 1)
    with pytest.raises(SphinxPathError):
        create_forward_packet(net.path, [0] * (MAX_HOPS + 1), DEST, b"m")
    with pytest.raises(SphinxPathError):
        create_forward_packet([], [], DEST, b"m")
    with pytest.raises(SphinxPathError):
        create_forward_packet(net.path[:2], [0], DEST, b"m")
    with pytest.raises(SphinxPathError):
        create_forward_packet(net.path[:1], [-1], DEST, b"m")
    with pytest.raises(SphinxPathError):
        create_forward_packet([PathHop(b"a" * 16, bytes(32))], [0], DEST, b"m")
    with pytest.raises(SphinxPathError):
        PathHop(b"short", bytes(32))


def _routing_seen_by(node: SphinxNode, packet: bytes) -> bytes:
    """The routing information a hop decrypts (what it could inspect for clues)."""
    from veil.core.sphinx.keys import HopKeys
    from veil.core.sphinx.params import BETA_SIZE, SLOT_SIZE

    alpha, beta = packet[:32], packet[32:32 + BETA_SIZE]
    secret = node._key.exchange(X25519PublicKey.from_public_bytes(alpha))
    return HopKeys(secret, alpha).stream_xor(beta + bytes(SLOT_SIZE))


@pytest.mark.parametrize("hops", range(1, MAX_HOPS + 1))
def test_no_hop_sees_structure_past_its_own_slot(hops: int) -> None:
    from veil.core.sphinx.params import SLOT_SIZE

    # Past its slot a hop sees the next hops' encrypted slots, then (at the exit) random
    # padding and the filler: if any of it were zeros, the exit would learn the path
    # length and a middle hop its position.
    net = make_net(hops)
    packet = create_forward_packet(net.path, [0] * hops, DEST, b"m")
    for node in net.nodes:
        tail = _routing_seen_by(node, packet)[SLOT_SIZE:]
        assert tail.count(0) < 12, tail.count(0)  # about 1.25 expected by chance
        result = node.process(packet)
        if isinstance(result, Relay):
            packet = result.packet
