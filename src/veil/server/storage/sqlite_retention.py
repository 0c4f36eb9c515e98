"""The SQLite side of server retention (issue 12 §4): expiry of queued envelopes, the
per-account byte count behind the queue quota, and giving deleted pages back.

A mixin of :class:`veil.server.storage.sqlite.SQLiteStorage`. How deleted ciphertext
leaves the files:

- every connection deletes with ``secure_delete`` on (``sqlite_worker``): the cells of a
  deleted envelope and the overflow pages it freed are overwritten with zeros;
- the database uses incremental auto-vacuum (set before a new file's header is written;
  an older file is converted once by ``VACUUM`` when it is opened,
  :func:`convert_auto_vacuum`), so :meth:`SQLiteRetentionStore.reclaim` can move the
  free pages to the end of the file and truncate them;
- ``reclaim`` then runs a TRUNCATE checkpoint, which copies the WAL into the file and
  empties the ``-wal`` file: its older frames still held the envelopes as they were
  written (a PASSIVE checkpoint restarts the log but leaves old frames until they are
  overwritten).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from veil.server.storage.base import EnvelopeExpiry, Reclaimed

T = TypeVar("T")
log = logging.getLogger("veil.server.storage")

# Pages one incremental-vacuum step moves (4 KiB each: 8 MiB), so that the database
# thread is back to submissions between steps.
VACUUM_STEP_PAGES = 2048
# A TRUNCATE checkpoint waits for readers of the log; it runs on the database thread,
# so it waits at most this long (and the next pass tries again).
CHECKPOINT_WAIT_MS = 200
_BUSY_TIMEOUT_MS = 10_000  # sqlite_worker's setting, restored after the checkpoint
AUTO_VACUUM_INCREMENTAL = 2  # PRAGMA auto_vacuum: 0 none, 1 full, 2 incremental


class SQLiteRetentionStore:
    """storage/base.py has the contract."""

    if TYPE_CHECKING:
        _queue_lengths: dict[tuple[bytes, int], int]
        _queue_bytes: dict[bytes, int]

        async def _call(
            self, fn: Callable[[sqlite3.Connection], T], *, savepoint: bool = True
        ) -> T: ...

        def submit_outside(
            self, fn: Callable[[sqlite3.Connection], T]
        ) -> asyncio.Future[T]: ...

    def _account_bytes(self, conn: sqlite3.Connection, account_id: bytes) -> int:
        """Bytes queued for the account: cached (this process is the only writer),
        else summed. ``length()`` of a BLOB reads the record header only, never the
        overflow pages of large envelopes."""
        total = self._queue_bytes.get(account_id)
        if total is None:
            (total,) = conn.execute(
                "SELECT COALESCE(SUM(length(body)), 0) FROM envelopes WHERE account_id = ?",
                (account_id,),
            ).fetchone()
            if len(self._queue_bytes) >= _CACHE_ENTRIES:
                self._queue_bytes.clear()
            self._queue_bytes[account_id] = int(total)
        return int(total)

    def _forget_bytes(self, account_id: bytes, size: int) -> None:
        """``size`` bytes of the account's queue were deleted."""
        if account_id in self._queue_bytes:
            self._queue_bytes[account_id] -= size

    async def expire_envelopes(self, *, before_ms: int, limit: int) -> EnvelopeExpiry:
        def fn(conn: sqlite3.Connection) -> EnvelopeExpiry:
            rows = conn.execute(
                "DELETE FROM envelopes WHERE id IN (SELECT id FROM envelopes WHERE ts < ? "
                "ORDER BY ts LIMIT ?) RETURNING account_id, device_id, length(body)",
                (before_ms, limit),
            ).fetchall()
            total = 0
            for account_id, device_id, size in rows:
                key = (bytes(account_id), int(device_id))
                if key in self._queue_lengths:
                    self._queue_lengths[key] -= 1
                self._forget_bytes(key[0], int(size))
                total += int(size)
            return EnvelopeExpiry(len(rows), total)

        return await self._call(fn)

    async def queued_envelopes(self) -> int:
        def fn(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT COUNT(*) FROM envelopes").fetchone()[0])

        return await self._call(fn)

    async def reclaim(self) -> Reclaimed:
        pages = 0
        while True:
            freed = await self.submit_outside(_vacuum_step)
            pages += freed
            if freed < VACUUM_STEP_PAGES:
                break
        truncated = await self.submit_outside(_truncate_log)
        return Reclaimed(pages, truncated)


_CACHE_ENTRIES = 100_000


def _freelist(conn: sqlite3.Connection) -> int:
    (count,) = conn.execute("PRAGMA freelist_count").fetchone()
    return int(count)


def _vacuum_step(conn: sqlite3.Connection) -> int:
    """Up to VACUUM_STEP_PAGES free pages back to the file system; how many went."""
    before = _freelist(conn)
    if not before:
        return 0
    # executescript, not execute: the sqlite3 module steps a statement without result
    # columns once, and each step of incremental_vacuum frees one page only.
    conn.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP_PAGES});")
    return before - _freelist(conn)


def _truncate_log(conn: sqlite3.Connection) -> bool:
    """Checkpoint the whole WAL into the file and truncate it to zero bytes."""
    conn.execute(f"PRAGMA busy_timeout={CHECKPOINT_WAIT_MS}")
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    if busy:
        log.info("the write-ahead log is in use; it is emptied at the next retention pass")
    return not busy


def convert_auto_vacuum(conn: sqlite3.Connection) -> None:
    """Once, for a database created before schema 5: incremental auto-vacuum needs a
    ``VACUUM`` (which rewrites the whole file, so it also drops whatever old free pages
    held). Runs at open, outside any transaction."""
    (mode,) = conn.execute("PRAGMA auto_vacuum").fetchone()
    if mode == AUTO_VACUUM_INCREMENTAL:
        return
    log.info("converting the database to incremental auto-vacuum (a one-time VACUUM)")
    conn.execute(f"PRAGMA auto_vacuum={AUTO_VACUUM_INCREMENTAL}")
    conn.execute("VACUUM")


__all__ = [
    "AUTO_VACUUM_INCREMENTAL",
    "CHECKPOINT_WAIT_MS",
    "VACUUM_STEP_PAGES",
    "SQLiteRetentionStore",
    "convert_auto_vacuum",
]
