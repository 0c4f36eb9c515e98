"""TokenBuckets (issue 13 §2): refill, burst, retry_after, the LRU bound, and the
property that no more than burst + rate × t requests pass in t seconds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from veil.server.protection.limiter import TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refused_with_the_time_to_the_next_token() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=2.0, burst=5, max_keys=10, clock=clock)
    assert [buckets.take("a") for _ in range(5)] == [0.0] * 5
    wait = buckets.take("a")
    assert abs(wait - 0.5) < 1e-9
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0.0


def test_refill_never_goes_beyond_the_burst() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=1.0, burst=3, max_keys=10, clock=clock)
    for _ in range(3):
        buckets.take("a")
    clock.now += 3600
    assert [buckets.take("a") for _ in range(4)][:3] == [0.0] * 3
    assert buckets.take("a") > 0.0


def test_keys_are_independent_and_refund_gives_back() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=1.0, burst=1, max_keys=10, clock=clock)
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0.0
    assert buckets.take("b") == 0.0
    buckets.refund("b")
    assert buckets.take("b") == 0.0


def test_peek_takes_nothing() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=1.0, burst=1, max_keys=10, clock=clock)
    assert buckets.peek("a") == 0.0
    assert len(buckets) == 0
    buckets.take("a")
    assert buckets.peek("a") > 0.0
    assert buckets.peek("a") > 0.0


def test_the_number_of_keys_is_bounded_least_recently_used_first() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=1.0, burst=1, max_keys=100, clock=clock)
    buckets.take("keep")
    for i in range(10_000):
        buckets.take(f"k{i}")
        if i % 50 == 0:
            buckets.take("keep")  # recently used: stays
    assert len(buckets) == 100
    assert buckets.take("keep") > 0.0  # still remembered, still empty


def test_rows_and_restore_carry_the_level_over_wall_clock_time() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=1 / 60, burst=2, max_keys=10, clock=clock)
    buckets.take("a")
    buckets.take("a")
    rows = buckets.rows(wall_ms=1_000_000)
    assert [r[0] for r in rows] == ["a"]
    fresh = TokenBuckets(rate_per_s=1 / 60, burst=2, max_keys=10, clock=Clock())
    assert fresh.restore(rows, wall_ms=1_000_000 + 30_000) == 1  # half a token back
    assert fresh.take("a") > 0.0
    later = TokenBuckets(rate_per_s=1 / 60, burst=2, max_keys=10, clock=Clock())
    later.restore(rows, wall_ms=1_000_000 + 60_000)
    assert later.take("a") == 0.0
    assert later.take("a") > 0.0


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(0.1, 50), burst=st.integers(1, 50),
       gaps=st.lists(st.floats(0, 2), min_size=1, max_size=300))
def test_never_more_than_burst_plus_rate_times_t(rate: float, burst: int,
                                                 gaps: list[float]) -> None:
    clock = Clock()
    start = clock.now
    buckets = TokenBuckets(rate_per_s=rate, burst=burst, max_keys=4, clock=clock)
    passed = 0
    for gap in gaps:
        clock.now += gap
        if buckets.take("k") == 0.0:
            passed += 1
        assert passed <= burst + rate * (clock.now - start) + 1e-6


@settings(max_examples=100, deadline=None)
@given(rate=st.floats(0.1, 50), burst=st.integers(1, 50),
       gaps=st.lists(st.floats(0, 2), min_size=1, max_size=100))
def test_a_refused_request_passes_after_the_wait_it_was_told(rate: float, burst: int,
                                                             gaps: list[float]) -> None:
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=rate, burst=burst, max_keys=4, clock=clock)
    for gap in gaps:
        clock.now += gap
        wait = buckets.take("k")
        if wait > 0.0:
            clock.now += wait + 1e-9
            assert buckets.take("k") == 0.0
