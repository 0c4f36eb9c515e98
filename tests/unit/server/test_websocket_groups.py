"""Group pushes on a socket, on fakes: the proved epoch only, the epoch's end, and a
congested socket losing its subscription instead of buffering."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from tests.unit.server.test_websocket import Transport
from veil.server.bus import GroupPosted, InProcessBus
from veil.server.config import ServerConfig
from veil.server.http.websocket import DeviceConnection
from veil.server.storage.base import DeviceRecord

GID = b"g" * 16


def connection(buffered: int = 0) -> tuple[DeviceConnection, InProcessBus]:
    fake: Any = SimpleNamespace
    bus = InProcessBus()
    device = DeviceRecord(b"a" * 16, 1, 1, b"h" * 32, b"i" * 33)
    conn = DeviceConnection(fake(closed=False), fake(config=ServerConfig(), bus=bus),
                            fake(transport=Transport(buffered)), device)
    return conn, bus


def frames(conn: DeviceConnection) -> list[Any]:
    return [json.loads(text) for text in conn.outbox or []]


def posted(seq: int, epoch: int, commit: bool = False) -> GroupPosted:
    return GroupPosted(GID, seq, epoch, 1000 + seq, commit, b"m%d" % seq)


async def test_only_the_proved_epoch_is_pushed_and_its_commit_ends_it():
    conn, bus = connection()
    conn._keep_group(GID, 3)
    bus.publish_group(posted(1, 2))  # an older epoch: not proved by this subscription
    bus.publish_group(posted(2, 3))
    bus.publish_group(posted(3, 3, commit=True))
    bus.publish_group(posted(4, 4))  # the next epoch needs its own capability
    assert [(f["type"], f.get("seq"), f.get("epoch")) for f in frames(conn)] == [
        ("group_message", 2, 3), ("group_message", 3, 3), ("group_epoch", None, 4)]
    assert bus.group_subscribers(GID) == 0 and conn.groups == {}


async def test_one_encoding_serves_every_subscriber():
    (a, bus), (b, _) = connection(), connection()
    b.c = a.c  # the same server
    for conn in (a, b):
        conn._keep_group(GID, 0)
    event = posted(1, 0)
    bus.publish_group(event)
    assert event.frame is not None
    assert a.outbox == b.outbox == [event.frame]


async def test_a_congested_socket_is_dropped_and_told_so():
    conn, bus = connection(buffered=10 << 20)
    conn._keep_group(GID, 0)
    for seq in range(1, 100):
        bus.publish_group(posted(seq, 0))
    assert frames(conn) == [{"type": "group_dropped", "group_id": "Z2dnZ2dnZ2dnZ2dnZ2dnZw==",
                             "epoch": 0}]
    assert bus.group_subscribers(GID) == 0


async def test_closing_drops_every_subscription():
    conn, bus = connection()
    for i in range(5):
        conn._keep_group(bytes([i]) * 16, 0)
    conn.drop_all_groups()
    assert all(bus.group_subscribers(bytes([i]) * 16) == 0 for i in range(5))


async def test_a_sealed_socket_that_listens_to_groups_still_has_an_idle_timeout():
    """Anyone can make a group and prove its capability: a subscription must not let a
    stranger keep a sealed slot forever (review of issue 11 §1)."""
    from veil.server.http.websocket import SealedConnection
    fake: Any = SimpleNamespace
    config = ServerConfig(sealed_idle_timeout_s=7.0)
    sealed = SealedConnection(fake(closed=False), fake(config=config, bus=InProcessBus()),
                              fake(transport=Transport(0)))
    assert sealed.idle_timeout() == 7.0
    sealed._keep_group(GID, 0)
    assert sealed.groups and sealed.idle_timeout() == 7.0
