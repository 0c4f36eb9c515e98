"""DeviceConnection on fakes: what it queues for a socket that is not reading."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from veil.server.bus import EnvelopeQueued, KeysLow
from veil.server.config import ServerConfig
from veil.server.http.websocket import DeviceConnection
from veil.server.storage.base import DeviceRecord

KEYS_LOW = KeysLow(one_time_prekeys=9, one_time_kem_prekeys=9)


class Transport:
    def __init__(self, buffered: int) -> None:
        self.buffered = buffered
        self.written: list[bytes] = []

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written.append(data)


def connection(buffered: int) -> DeviceConnection:
    fake: Any = SimpleNamespace
    device = DeviceRecord(b"a" * 16, 1, 1, b"h" * 32, b"i" * 33)
    return DeviceConnection(
        fake(closed=False), fake(config=ServerConfig()), fake(transport=Transport(buffered)),
        device,
    )


async def test_notices_are_dropped_for_a_congested_socket():
    reading = connection(buffered=0)
    reading.deliver(KEYS_LOW)
    assert reading.outbox is not None and len(reading.outbox) == 1
    congested = connection(buffered=10 << 20)
    for _ in range(1000):  # anyone can cause notices (claims): none may pile up
        congested.deliver(KEYS_LOW)
    assert congested.outbox is None


async def test_events_become_the_documented_frames():
    """The bus carries typed events; the frames are built here, as docs/server.md says."""
    conn = connection(buffered=0)
    conn.behind = False  # as after the first refill found the queue empty
    conn.deliver(KEYS_LOW)
    conn.deliver(EnvelopeQueued(7, 1234, b"x"))
    conn.deliver(EnvelopeQueued(7, 1234, b"x"))  # pushed already: not twice
    assert conn.outbox is not None
    assert [json.loads(text) for text in conn.outbox] == [
        {"type": "keys_low", "one_time_prekeys": 9, "one_time_kem_prekeys": 9},
        {"type": "envelope", "id": 7, "ts": 1234, "envelope": "eA=="},
    ]
