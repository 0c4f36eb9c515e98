"""The PostgreSQL side of server retention (issue 12 §4): expiry of queued envelopes.

A mixin of :class:`veil.server.storage.postgres.PostgresStorage`; driver errors of its
methods become StorageError there, as for the class's own. The rows to delete are taken
``FOR UPDATE SKIP LOCKED``, so the jobs of several nodes running at once share the work
instead of waiting for each other (or for an acknowledgement deleting the same row).

PostgreSQL never overwrites a deleted row in place: the tuple stays in its page until
(auto)vacuum marks the space reusable and later rows overwrite it, and the WAL segments
keep it until they are recycled. ``reclaim`` is therefore the interface's no-op here;
docs/server.md ("Retention") says what an operator can do about it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg  # type: ignore[import-untyped]

from veil.server.storage.base import EnvelopeExpiry


class PostgresRetentionStore:
    """storage/base.py has the contract."""

    if TYPE_CHECKING:
        def _p(self) -> asyncpg.Pool: ...

    async def expire_envelopes(self, *, before_ms: int, limit: int) -> EnvelopeExpiry:
        row = await self._p().fetchrow(
            "WITH d AS (DELETE FROM envelopes WHERE id IN (SELECT id FROM envelopes "
            "WHERE ts < $1 ORDER BY ts LIMIT $2 FOR UPDATE SKIP LOCKED) "
            "RETURNING octet_length(body) AS size) "
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM d",
            before_ms, limit,
        )
        return EnvelopeExpiry(int(row[0]), int(row[1]))

    async def queued_envelopes(self) -> int:
        return int(await self._p().fetchval("SELECT COUNT(*) FROM envelopes"))


__all__ = [
    "PostgresRetentionStore",
]
