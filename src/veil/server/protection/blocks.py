"""Automatic temporary blocks of client addresses (issue 13 §3, detection layer).

A rule of :mod:`.rules` that fires puts the offending address key on the
:class:`BlockList` for the rule's ``block_s``; a repeat offender — an address blocked
again less than ``offence_memory_s`` after its last block ended — is blocked for twice
as long as the last time, up to ``max_block_s`` (fail2ban's ``bantime.increment``).
The network layer refuses a blocked address at accept and the application layer at the
request (``blocked_for`` is one dict look-up); when a block starts the registered
callbacks run (``ConnectionGuard.close_address`` drops what the address already holds).

A block ends by itself (``BLOCK_LIFTED`` with ``by="expiry"``) or when the operator
lifts it (``by="operator"``). Exempt addresses (``[network] exempt``) are never blocked.

Privacy: a :class:`Block` — what the operator, the admin API, logs and events see —
names the address only by its keyed hash. Storage keeps the raw key with the block, so
that a block still applies after a restart, and deletes it when the block ends
(``blocks_load`` drops ended ones); nothing else about the address is stored.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from veil.server.protection.events import BLOCK_LIFTED, EventHub
from veil.server.protection.settings import RuleSettings
from veil.server.storage.base import BlockRow

log = logging.getLogger("veil.server.protection")

OnBlock = Callable[[str], object]  # called with the raw key; may return an awaitable

MAX_BLOCKS = 100_000  # blocks in force at most; the one ending soonest gives way
MAX_OFFENDERS = 100_000  # addresses whose last block is remembered (LRU)
SWEEP_INTERVAL_S = 1.0  # how often expired blocks are lifted without being asked


class BlockStore(Protocol):
    """The storage calls blocks are kept with (storage/base.py, both back ends)."""

    async def blocks_save(self, row: BlockRow) -> None: ...

    async def blocks_delete(self, block_id: str) -> bool: ...

    async def blocks_load(self, now_ms: int) -> list[BlockRow]: ...


@dataclass(frozen=True, slots=True)
class Block:
    """A block as the operator sees it: the address only by its keyed hash.

    ``since`` and ``until`` are wall-clock milliseconds; ``count`` is the offence number
    (1 for a first block, 2 for the first repeat …); ``seconds`` its length."""

    id: str
    key_hash: str
    rule: str
    since: int
    until: int
    count: int
    seconds: float

    def as_dict(self, now_ms: int) -> dict[str, Any]:
        """JSON-ready, with the seconds still to run (admin API, dashboard)."""
        return {"id": self.id, "key_hash": self.key_hash, "rule": self.rule,
                "since_ms": self.since, "until_ms": self.until, "count": self.count,
                "seconds": self.seconds,
                "seconds_left": max(0.0, (self.until - now_ms) / 1000)}


@dataclass(slots=True)
class _Entry:
    block: Block
    key: str  # the raw address key: memory and storage only
    deadline: float  # monotonic


@dataclass(slots=True)
class _Offence:
    seconds: float  # the length of the last block
    ended: float  # monotonic: when it ended (or will)
    count: int


class BlockList:
    """The blocks in force, with repeat-offender lengthening and expiry."""

    def __init__(self, storage: BlockStore | None, events: EventHub,
                 settings: RuleSettings, clock: Callable[[], float],
                 clock_ms: Callable[[], int], *, keyed: Callable[[str], str],
                 is_exempt: Callable[[str], bool] = lambda key: False,
                 max_blocks: int = MAX_BLOCKS, max_offenders: int = MAX_OFFENDERS) -> None:
        self.storage = storage  # None: in memory only
        self.events = events
        self.settings = settings
        self.clock = clock
        self.clock_ms = clock_ms
        self.keyed = keyed
        self.is_exempt = is_exempt
        self.max_blocks = max_blocks
        self.max_offenders = max_offenders
        self._by_key: dict[str, _Entry] = {}
        self._by_id: dict[str, _Entry] = {}
        self._heap: list[tuple[float, str]] = []  # (deadline, id), stale ones skipped
        self._offences: OrderedDict[str, _Offence] = OrderedDict()
        self._callbacks: list[OnBlock] = []
        self._tasks: set[asyncio.Future[Any]] = set()  # callbacks' awaitables, held
        # Writes to storage, latest per block id wins (None: delete); bounded by the
        # blocks in force plus the ones just lifted.
        self._pending: dict[str, BlockRow | None] = {}
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    # --- look-ups -----------------------------------------------------------------

    def blocked_for(self, key: str) -> float | None:
        """Seconds the address key ``key`` stays blocked, or None if it is not."""
        entry = self._by_key.get(key)
        if entry is None:
            return None
        left = entry.deadline - self.clock()
        if left <= 0:
            self._end(entry, "expiry")
            return None
        return left

    def active(self) -> list[Block]:
        """The blocks in force, the one ending soonest first."""
        self.sweep()
        return sorted((e.block for e in self._by_id.values()), key=lambda b: b.until)

    def get(self, block_id: str) -> Block | None:
        entry = self._by_id.get(block_id)
        return entry.block if entry is not None else None

    def __len__(self) -> int:
        return len(self._by_id)

    def on_block(self, callback: OnBlock) -> None:
        """Call ``callback(key)`` whenever a block starts (e.g. to close its sockets)."""
        self._callbacks.append(callback)

    # --- changes ------------------------------------------------------------------

    def block(self, key: str, seconds: float, rule: str) -> Block | None:
        """Block ``key`` for ``seconds`` (longer for a repeat offender); None if the key
        is exempt. A key already blocked keeps its block (returned as it is)."""
        if self.is_exempt(key):
            return None
        current = self._by_key.get(key)
        if current is not None and current.deadline > self.clock():
            return current.block
        if current is not None:
            self._end(current, "expiry")
        now = self.clock()
        offence = self._offences.get(key)
        count = 1
        if offence is not None and now - offence.ended <= self.settings.offence_memory_s:
            # Twice the last block (never shorter than this rule's own).
            seconds = max(seconds, offence.seconds * 2)
            count = offence.count + 1
        seconds = min(float(seconds), float(self.settings.max_block_s))
        while len(self._by_id) >= self.max_blocks:
            self._evict_soonest()
        now_ms = self.clock_ms()
        block = Block(id=secrets.token_hex(8), key_hash=self.keyed(key), rule=rule,
                      since=now_ms, until=now_ms + int(seconds * 1000), count=count,
                      seconds=seconds)
        self._add(_Entry(block, key, now + seconds))
        self._remember(key, seconds, now + seconds, count)
        self._persist(block.id, BlockRow(block.id, key, block.key_hash, rule, block.since,
                                         block.until, count))
        log.info("block %s: address %s for %.0f s (rule %s, offence %d)",
                 block.id, block.key_hash, seconds, rule, count)
        for callback in self._callbacks:
            self._call(callback, key)
        return block

    def lift(self, block_id: str, by: str = "operator") -> bool:
        """End a block before its time; False if there is none of that id. An operator
        lifting a block also forgets the offence (it was a mistake, or forgiven)."""
        entry = self._by_id.get(block_id)
        if entry is None:
            return False
        if by == "operator":
            self._offences.pop(entry.key, None)
        self._end(entry, by)
        return True

    def sweep(self) -> int:
        """Lift every block whose time is up; the number lifted."""
        now = self.clock()
        lifted = 0
        while self._heap and self._heap[0][0] <= now:
            deadline, block_id = heapq.heappop(self._heap)
            entry = self._by_id.get(block_id)
            if entry is not None and entry.deadline == deadline:
                self._end(entry, "expiry")
                lifted += 1
        return lifted

    # --- life cycle ---------------------------------------------------------------

    async def open(self) -> None:
        """Load the blocks still in force from storage and start the expiry sweep and
        the storage writer."""
        if self.storage is not None:
            now, now_ms = self.clock(), self.clock_ms()
            for row in await self.storage.blocks_load(now_ms):
                if (row.until_ms <= now_ms or row.block_id in self._by_id
                        or row.key in self._by_key or self.is_exempt(row.key)):
                    continue
                block = Block(id=row.block_id, key_hash=row.key_hash, rule=row.rule,
                              since=row.since_ms, until=row.until_ms, count=row.count,
                              seconds=(row.until_ms - row.since_ms) / 1000)
                deadline = now + (row.until_ms - now_ms) / 1000
                self._add(_Entry(block, row.key, deadline))
                self._remember(row.key, block.seconds, deadline, block.count)
            if self._by_id:
                log.info("blocks: %d still in force loaded", len(self._by_id))
        self._runner = asyncio.create_task(self._run(), name="veil-blocks")

    async def close(self) -> None:
        """Stop the background task and write what is still pending."""
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
            self._runner = None
        await self._flush()
        for task in list(self._tasks):
            task.cancel()

    # --- internals ----------------------------------------------------------------

    def _add(self, entry: _Entry) -> None:
        self._by_id[entry.block.id] = entry
        self._by_key[entry.key] = entry
        heapq.heappush(self._heap, (entry.deadline, entry.block.id))
        if len(self._heap) > 2 * len(self._by_id) + 64:
            # Lifted blocks leave stale heap entries behind; rebuild before they pile up.
            self._heap = [(e.deadline, i) for i, e in self._by_id.items()]
            heapq.heapify(self._heap)

    def _end(self, entry: _Entry, by: str) -> None:
        block = entry.block
        if self._by_id.pop(block.id, None) is None:
            return
        if self._by_key.get(entry.key) is entry:
            del self._by_key[entry.key]
        offence = self._offences.get(entry.key)
        if offence is not None and by != "expiry":
            offence.ended = min(offence.ended, self.clock())
        self._persist(block.id, None)
        log.info("block %s lifted (%s): address %s, rule %s", block.id, by,
                 block.key_hash, block.rule)
        self.events.emit(BLOCK_LIFTED, entry.key, block_id=block.id, rule=block.rule,
                         by=by, key_hash=block.key_hash)

    def _evict_soonest(self) -> None:
        while self._heap:
            deadline, block_id = heapq.heappop(self._heap)
            entry = self._by_id.get(block_id)
            if entry is not None and entry.deadline == deadline:
                self._end(entry, "capacity")
                return
        # Heap out of step (cannot happen): drop any one.
        self._end(next(iter(self._by_id.values())), "capacity")

    def _remember(self, key: str, seconds: float, ended: float, count: int) -> None:
        self._offences[key] = _Offence(seconds, ended, count)
        self._offences.move_to_end(key)
        while len(self._offences) > self.max_offenders:
            self._offences.popitem(last=False)

    def _persist(self, block_id: str, row: BlockRow | None) -> None:
        if self.storage is None:
            return
        self._pending[block_id] = row
        self._wake.set()

    def _call(self, callback: OnBlock, key: str) -> None:
        try:
            result = callback(key)
        except Exception:
            log.exception("block callback failed")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("block callback failed: %r", task.exception())

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), SWEEP_INTERVAL_S)
            except TimeoutError:
                pass
            self.sweep()
            await self._flush()

    async def _flush(self) -> None:
        self._wake.clear()
        if self.storage is None:
            return
        while self._pending:
            block_id, row = next(iter(self._pending.items()))
            try:
                if row is None:
                    await self.storage.blocks_delete(block_id)
                else:
                    await self.storage.blocks_save(row)
            except Exception:
                # Blocks work from memory; storage only carries them over a restart.
                log.exception("blocks: storage write failed for %s", block_id)
            # Done with it unless it changed meanwhile (a cancelled write stays pending:
            # close() flushes it).
            if block_id in self._pending and self._pending[block_id] is row:
                del self._pending[block_id]


__all__ = [
    "Block",
    "BlockList",
    "BlockStore",
    "OnBlock",
]
