"""BlockList (issue 13 §3): blocks, repeat offenders, expiry, lifting, exemption,
callbacks and persistence through both storage back ends. Time is an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from veil.server.protection import events as ev
from veil.server.protection.addresses import NetworkList
from veil.server.protection.blocks import BlockList
from veil.server.protection.events import EventHub, SecurityEvent
from veil.server.protection.settings import RuleSettings
from veil.server.storage.base import Storage


class Clock:
    """Monotonic seconds and wall-clock milliseconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall_ms = 1_700_000_000_000

    def __call__(self) -> float:
        return self.now

    def ms(self) -> int:
        return self.wall_ms

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall_ms += int(seconds * 1000)


def hashed(value: str) -> str:
    return "h:" + value[::-1]


def make(clock: Clock, storage: Storage | None = None, *, settings: RuleSettings | None = None,
         max_blocks: int = 1000) -> tuple[BlockList, list[SecurityEvent]]:
    hub = EventHub(clock)
    seen: list[SecurityEvent] = []
    hub.subscribe(seen.append)
    exempt = NetworkList(("127.0.0.1/32", "::1/128")).contains
    blocks = BlockList(storage, hub, settings or RuleSettings(), clock, clock.ms,
                       keyed=hashed, is_exempt=exempt, max_blocks=max_blocks)
    return blocks, seen


def test_block_applies_to_its_key_only_and_hides_the_address() -> None:
    clock = Clock()
    blocks, _ = make(clock)
    block = blocks.block("127.0.0.2", 60, "auth_bruteforce")
    assert block is not None
    assert blocks.blocked_for("127.0.0.2") == pytest.approx(60)
    assert blocks.blocked_for("127.0.0.3") is None
    assert block.key_hash == hashed("127.0.0.2")
    assert "127.0.0.2" not in repr(block) and "127.0.0.2" not in str(block.as_dict(clock.ms()))
    assert (block.rule, block.count, block.seconds) == ("auth_bruteforce", 1, 60)
    assert block.until - block.since == 60_000
    clock.advance(20)
    assert blocks.blocked_for("127.0.0.2") == pytest.approx(40)
    assert blocks.active() == [block]
    assert blocks.get(block.id) == block


def test_block_expires_by_itself_with_an_event() -> None:
    clock = Clock()
    blocks, seen = make(clock)
    block = blocks.block("127.0.0.2", 30, "route_scan")
    assert block is not None
    clock.advance(29.9)
    assert blocks.sweep() == 0
    assert blocks.blocked_for("127.0.0.2") is not None
    clock.advance(0.2)
    assert blocks.sweep() == 1
    assert blocks.blocked_for("127.0.0.2") is None
    assert blocks.active() == []
    lifted = [e for e in seen if e.kind == ev.BLOCK_LIFTED]
    assert len(lifted) == 1
    assert lifted[0].fields == {"block_id": block.id, "rule": "route_scan", "by": "expiry",
                                "key_hash": block.key_hash}


def test_lookup_alone_ends_an_expired_block() -> None:
    clock = Clock()
    blocks, seen = make(clock)
    blocks.block("10.0.0.9", 5, "slowloris")
    clock.advance(5)
    assert blocks.blocked_for("10.0.0.9") is None
    assert [e.fields["by"] for e in seen if e.kind == ev.BLOCK_LIFTED] == ["expiry"]
    assert blocks.sweep() == 0 and len(blocks) == 0


def test_repeat_offender_blocks_double_up_to_the_cap() -> None:
    clock = Clock()
    blocks, _ = make(clock, settings=RuleSettings(max_block_s=500, offence_memory_s=3600))
    lengths = []
    for _ in range(6):
        block = blocks.block("127.0.0.2", 60, "auth_bruteforce")
        assert block is not None
        lengths.append((block.seconds, block.count))
        clock.advance(block.seconds + 1)  # expires, then the source offends again
        blocks.sweep()
    assert lengths == [(60, 1), (120, 2), (240, 3), (480, 4), (500, 5), (500, 6)]


def test_offence_memory_forgets_a_reformed_address() -> None:
    clock = Clock()
    blocks, _ = make(clock, settings=RuleSettings(offence_memory_s=600))
    first = blocks.block("127.0.0.2", 60, "malformed_storm")
    assert first is not None
    clock.advance(60 + 599)
    second = blocks.block("127.0.0.2", 60, "malformed_storm")
    assert second is not None and (second.seconds, second.count) == (120, 2)
    clock.advance(120 + 601)  # longer than offence_memory_s since the last block ended
    third = blocks.block("127.0.0.2", 60, "malformed_storm")
    assert third is not None and (third.seconds, third.count) == (60, 1)


def test_a_blocked_key_keeps_its_block() -> None:
    clock = Clock()
    blocks, _ = make(clock)
    first = blocks.block("127.0.0.2", 60, "auth_bruteforce")
    again = blocks.block("127.0.0.2", 600, "route_scan")
    assert again == first and len(blocks) == 1


def test_operator_lifts_a_block_and_forgives_the_offence() -> None:
    clock = Clock()
    blocks, seen = make(clock)
    block = blocks.block("127.0.0.2", 60, "auth_bruteforce")
    assert block is not None
    assert blocks.lift(block.id) is True
    assert blocks.blocked_for("127.0.0.2") is None
    assert blocks.lift(block.id) is False
    assert blocks.lift("no-such-block") is False
    assert [e.fields["by"] for e in seen if e.kind == ev.BLOCK_LIFTED] == ["operator"]
    again = blocks.block("127.0.0.2", 60, "auth_bruteforce")
    assert again is not None and again.count == 1 and again.seconds == 60
    clock.advance(61)  # the lifted block's stale expiry does not lift the new one early
    assert blocks.sweep() == 1


def test_exempt_addresses_are_never_blocked() -> None:
    clock = Clock()
    blocks, _ = make(clock)
    assert blocks.block("127.0.0.1", 60, "auth_bruteforce") is None
    assert blocks.block("::1/128", 60, "auth_bruteforce") is None
    assert blocks.blocked_for("127.0.0.1") is None
    assert len(blocks) == 0


def test_ipv6_keys_block_the_whole_64() -> None:
    clock = Clock()
    blocks, _ = make(clock)
    assert blocks.block("2001:db8:1:2::/64", 60, "route_scan") is not None
    assert blocks.blocked_for("2001:db8:1:2::/64") is not None
    assert blocks.blocked_for("2001:db8:1:3::/64") is None


async def test_callbacks_run_when_a_block_starts() -> None:
    clock = Clock()
    blocks, _ = make(clock)
    closed: list[str] = []
    closed_async: list[str] = []

    async def close_later(key: str) -> None:
        closed_async.append(key)

    def broken(key: str) -> None:
        raise RuntimeError("a fault in one callback")

    blocks.on_block(broken)
    blocks.on_block(closed.append)
    blocks.on_block(close_later)
    blocks.block("127.0.0.2", 60, "connection_flood")
    blocks.block("127.0.0.2", 60, "connection_flood")  # already blocked: no new start
    blocks.block("127.0.0.1", 60, "connection_flood")  # exempt: no block, no callback
    assert closed == ["127.0.0.2"]
    for _ in range(100):
        if closed_async:
            break
        await asyncio.sleep(0)
    assert closed_async == ["127.0.0.2"]


def test_bounded_number_of_blocks_drops_the_one_ending_soonest() -> None:
    clock = Clock()
    blocks, seen = make(clock, max_blocks=3)
    for i, seconds in enumerate((100, 50, 300)):
        blocks.block(f"10.0.0.{i}", seconds, "route_scan")
    blocks.block("10.0.0.9", 200, "route_scan")
    assert len(blocks) == 3
    assert blocks.blocked_for("10.0.0.1") is None  # the 50 s one gave way
    assert all(blocks.blocked_for(k) is not None for k in ("10.0.0.0", "10.0.0.2", "10.0.0.9"))
    assert [e.fields["by"] for e in seen if e.kind == ev.BLOCK_LIFTED] == ["capacity"]


def test_stale_heap_entries_stay_bounded() -> None:
    clock = Clock()
    blocks, _ = make(clock)
    for _ in range(5000):
        block = blocks.block("127.0.0.2", 3600, "route_scan")
        assert block is not None
        blocks.lift(block.id)
    assert len(blocks._heap) <= 2 * len(blocks) + 65
    assert len(blocks._offences) <= blocks.max_offenders


async def test_blocks_outlive_a_restart(storage: Storage) -> None:
    clock = Clock()
    blocks, _ = make(clock, storage)
    await blocks.open()
    kept = blocks.block("127.0.0.2", 600, "auth_bruteforce")
    lifted = blocks.block("127.0.0.3", 600, "route_scan")
    short = blocks.block("127.0.0.4", 10, "route_scan")
    assert kept is not None and lifted is not None and short is not None
    blocks.lift(lifted.id)
    await blocks.close()

    clock.advance(100)
    again, _ = make(clock, storage)
    await again.open()
    try:
        assert [b.id for b in again.active()] == [kept.id]
        assert again.blocked_for("127.0.0.2") == pytest.approx(500)
        assert again.blocked_for("127.0.0.3") is None
        assert again.blocked_for("127.0.0.4") is None
        # The offence is remembered: the next block is twice as long.
        assert again.lift(kept.id, by="expiry")
        repeat = again.block("127.0.0.2", 600, "auth_bruteforce")
        assert repeat is not None and (repeat.count, repeat.seconds) == (2, 1200)
    finally:
        await again.close()
    rows = await storage.blocks_load(clock.ms())
    assert [(r.block_id, r.key, r.key_hash) for r in rows] == [
        (repeat.id, "127.0.0.2", hashed("127.0.0.2"))]


async def test_expiry_runs_in_the_background(storage: Storage) -> None:
    import time

    blocks = BlockList(storage, EventHub(time.monotonic), RuleSettings(), time.monotonic,
                       lambda: int(time.time() * 1000), keyed=hashed)
    lifted = asyncio.Event()
    blocks.events.subscribe(lambda e: lifted.set() if e.kind == ev.BLOCK_LIFTED else None)
    await blocks.open()
    try:
        blocks.block("127.0.0.2", 0.2, "route_scan")
        await asyncio.wait_for(lifted.wait(), 10)
        for _ in range(200):  # the writer deletes the row soon after
            if not await storage.blocks_load(0):
                break
            await asyncio.sleep(0.05)
        assert await storage.blocks_load(0) == []
    finally:
        await blocks.close()
