"""The bounded replay-tag store a Sphinx hop keeps for one key.

Sphinx paper, section 3.3: a hop records h_tau(s) for every packet it processes and drops
a packet whose tag it has seen. Tags only need keeping while the key that produced them
is live, so the store is reset when the node rotates its key. The store is bounded:
when it is full it refuses new packets (fail closed) instead of forgetting old tags,
which would reopen replays; the node answers by rotating its key early.
"""

from __future__ import annotations

from veil.core.sphinx.errors import SphinxReplay, SphinxReplayStoreFull

DEFAULT_CAPACITY = 1 << 20


class ReplayTagStore:
    """A set of 16-byte tags with a hard size bound."""

    __slots__ = ("_capacity", "_tags")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._tags: set[bytes] = set()

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._tags)

    def __contains__(self, tag: object) -> bool:
        return tag in self._tags

    @property
    def full(self) -> bool:
        return len(self._tags) >= self._capacity

    def add(self, tag: bytes) -> None:
        """Record ``tag``; raise if it was seen already or the store is full."""
        if tag in self._tags:
            raise SphinxReplay("replayed packet")
        if len(self._tags) >= self._capacity:
            raise SphinxReplayStoreFull("replay-tag store full; rotate the node key")
        self._tags.add(tag)

    def reset(self) -> None:
        self._tags.clear()

__all__ = [
    "ReplayTagStore",
]
