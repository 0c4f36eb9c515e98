"""Single-use reply blocks: replies arrive, only the creator reads them, tamper and replay."""

from __future__ import annotations

import os

import pytest

from veil.core.sphinx import (
    MAX_HOPS,
    MAX_MESSAGE_SIZE,
    PACKET_SIZE,
    SURB_SIZE,
    DeliverReply,
    Relay,
    SphinxMalformed,
    SphinxPayloadCorrupt,
    SphinxReplay,
    Surb,
    create_surb,
)

from .helpers import make_net

ME = b"M" * 16


def carry(net, first_hop: bytes, packet: bytes) -> DeliverReply:
    assert first_hop == net.addresses[0]
    for node in net.nodes:
        assert len(packet) == PACKET_SIZE
        result = node.process(packet)
        if isinstance(result, Relay):
            packet = result.packet
    assert isinstance(result, DeliverReply)
    return result


@pytest.mark.parametrize("hops", range(1, MAX_HOPS + 1))
def test_reply_arrives_over_each_path_length(hops: int) -> None:
    net = make_net(hops)
    surb, secret = create_surb(net.path, [5] * hops, ME)
    # The SURB travels inside a message; the replier only sees its encoding.
    received = Surb.decode(surb.encode())
    message = os.urandom(MAX_MESSAGE_SIZE)
    result = carry(net, *received.reply_packet(message))
    assert result.destination == ME
    assert result.surb_id == secret.surb_id
    assert result.payload != message
    assert secret.open(result.payload) == message


def test_only_the_creator_can_open_the_reply() -> None:
    net = make_net(3)
    surb, _ = create_surb(net.path, [0] * 3, ME)
    _, other = create_surb(net.path, [0] * 3, ME)
    result = carry(net, *surb.reply_packet(b"secret"))
    with pytest.raises(SphinxPayloadCorrupt):
        other.open(result.payload)


def test_reply_payload_tamper_is_detected_by_the_creator() -> None:
    net = make_net(3)
    surb, secret = create_surb(net.path, [0] * 3, ME)
    first, packet = surb.reply_packet(b"ack")
    tampered = bytearray(packet)
    tampered[-1] ^= 0x80
    result = carry(net, first, bytes(tampered))
    with pytest.raises(SphinxPayloadCorrupt):
        secret.open(result.payload)


def test_a_surb_is_single_use() -> None:
    net = make_net(2)
    surb, _ = create_surb(net.path, [0, 0], ME)
    carry(net, *surb.reply_packet(b"first"))
    _, second = surb.reply_packet(b"second")
    with pytest.raises(SphinxReplay):
        net.nodes[0].process(second)


def test_surb_decoding_rejects_wrong_sizes() -> None:
    for size in (0, SURB_SIZE - 1, SURB_SIZE + 1):
        with pytest.raises(SphinxMalformed):
            Surb.decode(bytes(size))
