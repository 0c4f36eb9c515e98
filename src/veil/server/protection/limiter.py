"""Token buckets keyed by text, with a bound on the number of keys (issue 13 §2).

A bucket holds at most ``burst`` tokens and gains ``rate_per_s`` tokens a second; a
request takes ``cost`` tokens or is refused with the seconds until it could be taken.
Each key costs one small fixed-size record (two floats) — O(1) memory per key — and a
table keeps at most ``max_keys`` of them, dropping the least recently used: a dropped
key comes back with a full bucket, which only ever errs on the side of the client, and
an attacker who cycles through more keys than the table holds gains nothing he could
not get from fresh addresses anyway (the per-address and per-target tables are separate).

Time is the injected monotonic ``clock``; persistence (:meth:`TokenBuckets.rows` /
:meth:`TokenBuckets.restore`) converts to wall-clock milliseconds, since a monotonic
clock starts again with each process.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable

# One persisted bucket: (key, tokens, wall-clock ms when it held them).
Row = tuple[str, float, int]


class TokenBuckets:
    """One table of token buckets (one limit class and dimension)."""

    __slots__ = ("_buckets", "burst", "clock", "max_keys", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: float, max_keys: int,
                 clock: Callable[[], float]) -> None:
        if rate_per_s <= 0 or burst <= 0 or max_keys <= 0:
            raise ValueError("rate, burst and max_keys must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        # key -> [tokens, monotonic time of that count]; a list, not an object, to keep
        # each key at a few dozen bytes.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, key: str, now: float) -> list[float] | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        tokens = bucket[0] + (now - bucket[1]) * self.rate_per_s
        bucket[0] = min(self.burst, tokens)
        bucket[1] = now
        return bucket

    def take(self, key: str, cost: float = 1.0, now: float | None = None) -> float:
        """Take ``cost`` tokens of ``key``'s bucket: 0.0 if they were there (taken), else
        the seconds until they will be (nothing taken). A cost above ``burst`` is never
        possible; it is answered with the time to fill the whole bucket. ``now`` (the
        clock's reading) saves a caller that takes from several tables the calls."""
        if now is None:
            now = self.clock()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = [self.burst, now]
            if len(buckets) > self.max_keys:
                buckets.popitem(last=False)
        else:  # refilled in line (_level): this runs for every request and send frame
            tokens = bucket[0] + (now - bucket[1]) * self.rate_per_s
            bucket[0] = tokens if tokens < self.burst else self.burst
            bucket[1] = now
            buckets.move_to_end(key)
        if bucket[0] >= cost:
            bucket[0] -= cost
            return 0.0
        missing = min(cost, self.burst) - bucket[0]
        return max(missing / self.rate_per_s, 1e-3)

    def peek(self, key: str, cost: float = 1.0) -> float:
        """Like :meth:`take`, but takes nothing (and leaves an unknown key unknown)."""
        bucket = self._level(key, self.clock())
        if bucket is None or bucket[0] >= cost:
            return 0.0
        return max((min(cost, self.burst) - bucket[0]) / self.rate_per_s, 1e-3)

    def refund(self, key: str, cost: float = 1.0) -> None:
        """Give back tokens taken for a request another limit then refused."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket[0] = min(self.burst, bucket[0] + cost)

    def rows(self, wall_ms: int) -> list[Row]:
        """The buckets that are not full, for saving (a full bucket is the default)."""
        now = self.clock()
        out: list[Row] = []
        for key in list(self._buckets):
            bucket = self._level(key, now)
            if bucket is not None and bucket[0] < self.burst:
                out.append((key, bucket[0], wall_ms))
        return out

    def restore(self, rows: Iterable[Row], wall_ms: int) -> int:
        """Load saved buckets, refilled for the wall-clock time since they were saved
        (a clock that went backwards refills nothing). Returns the rows loaded."""
        now = self.clock()
        loaded = 0
        for key, tokens, at_ms in rows:
            if not isinstance(key, str) or not math.isfinite(tokens):
                continue
            elapsed = max(0.0, (wall_ms - at_ms) / 1000)
            level = min(self.burst, max(0.0, tokens) + elapsed * self.rate_per_s)
            if level >= self.burst:
                continue
            self._buckets[key] = [level, now]
            self._buckets.move_to_end(key)
            loaded += 1
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return loaded


__all__ = [
    "Row",
    "TokenBuckets",
]
