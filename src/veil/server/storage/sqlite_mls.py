"""The SQLite side of the MLS Delivery Service: KeyPackages and group mailboxes.

A mixin of :class:`veil.server.storage.sqlite.SQLiteStorage` (kept apart so neither
module grows past a screenful of screens). Every call runs on the database thread, which
serialises them, so a read-check-write inside one call is atomic; the primary keys of
``group_messages`` and ``group_epochs`` enforce one commit per epoch and one message per
sequence number on top of that.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from veil.server.errors import (
    DeviceNotFound,
    DuplicateKeyPackage,
    EpochConflict,
    GroupExists,
    GroupNotFound,
    LimitExceeded,
)
from veil.server.storage.base import (
    ClaimedKeyPackage,
    ExpiryReport,
    GroupAuthorise,
    GroupMessage,
    GroupRecord,
    GroupView,
    KeyPackageCounts,
    KeyPackageRecord,
    NextEpoch,
)

T = TypeVar("T")


class SQLiteMlsStore:
    """KeyPackage directory and group mailboxes (storage/base.py has the contract)."""

    if TYPE_CHECKING:
        async def _call(
            self, fn: Callable[[sqlite3.Connection], T], *, savepoint: bool = True
        ) -> T: ...

    # ---- KeyPackages ------------------------------------------------------------------
    async def store_key_packages(
        self, account_id: bytes, device_id: int, packages: Sequence[KeyPackageRecord],
        max_stored: int,
    ) -> KeyPackageCounts:
        def fn(conn: sqlite3.Connection) -> KeyPackageCounts:
            if conn.execute("SELECT 1 FROM devices WHERE account_id = ? AND device_id = ?",
                            (account_id, device_id)).fetchone() is None:
                raise DeviceNotFound("no such device")
            fresh = sum(1 for p in packages if not p.last_resort)
            if _kp_counts(conn, account_id, device_id).one_time + fresh > max_stored:
                raise LimitExceeded(f"a device stores at most {max_stored} one-time "
                                    "KeyPackages")
            for p in packages:
                if p.last_resort:
                    conn.execute(
                        "DELETE FROM mls_key_packages WHERE account_id = ? AND device_id = ? "
                        "AND last_resort = 1 AND cipher_suite = ?",
                        (account_id, device_id, p.cipher_suite))
            try:
                conn.executemany(
                    "INSERT INTO mls_key_packages (account_id, device_id, ref, cipher_suite, "
                    "last_resort, not_after, key_package) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(account_id, device_id, p.ref, p.cipher_suite, int(p.last_resort),
                      p.not_after, p.data) for p in packages])
            except sqlite3.IntegrityError as exc:
                raise DuplicateKeyPackage("a KeyPackage with that reference is already "
                                          "stored") from exc
            return _kp_counts(conn, account_id, device_id)

        return await self._call(fn)

    async def key_package_counts(self, account_id: bytes, device_id: int) -> KeyPackageCounts:
        def fn(conn: sqlite3.Connection) -> KeyPackageCounts:
            if conn.execute("SELECT 1 FROM devices WHERE account_id = ? AND device_id = ?",
                            (account_id, device_id)).fetchone() is None:
                raise DeviceNotFound("no such device")
            return _kp_counts(conn, account_id, device_id)

        return await self._call(fn)

    async def claim_key_packages(
        self, account_id: bytes, cipher_suite: int, now_s: int
    ) -> list[ClaimedKeyPackage]:
        def fn(conn: sqlite3.Connection) -> list[ClaimedKeyPackage]:
            devices = [r[0] for r in conn.execute(
                "SELECT device_id FROM devices WHERE account_id = ? ORDER BY device_id",
                (account_id,))]
            out = []
            for dev in devices:
                # One-time first (the soonest to expire), else the last-resort one.
                row = conn.execute(
                    "SELECT ref, key_package, last_resort FROM mls_key_packages "
                    "WHERE account_id = ? AND device_id = ? AND cipher_suite = ? "
                    "AND not_after >= ? ORDER BY last_resort, not_after, ref LIMIT 1",
                    (account_id, dev, cipher_suite, now_s)).fetchone()
                if row is None:
                    continue
                if not row[2]:
                    conn.execute("DELETE FROM mls_key_packages WHERE account_id = ? AND "
                                 "device_id = ? AND ref = ?", (account_id, dev, row[0]))
                out.append(ClaimedKeyPackage(dev, bytes(row[1]), bool(row[2]),
                                             _kp_counts(conn, account_id, dev)))
            return out

        return await self._call(fn)

    # ---- group mailboxes ----------------------------------------------------------------
    async def create_group(
        self, group_id: bytes, read_verifier: bytes, write_verifier: bytes, now_ms: int,
        max_groups: int,
    ) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT COUNT(*) FROM mls_groups").fetchone()[0] >= max_groups:
                raise LimitExceeded(f"this server holds its limit of {max_groups} groups")
            try:
                conn.execute(
                    "INSERT INTO mls_groups (id, epoch, write_verifier, next_seq, "
                    "message_count, byte_count, created_at, last_active) "
                    "VALUES (?, 0, ?, 1, 0, 0, ?, ?)",
                    (group_id, write_verifier, now_ms, now_ms))
            except sqlite3.IntegrityError as exc:
                raise GroupExists("a group with that id exists") from exc
            conn.execute("INSERT INTO group_epochs VALUES (?, 0, ?)", (group_id, read_verifier))

        await self._call(fn)

    async def group_view(self, group_id: bytes, epoch: int) -> GroupView | None:
        def fn(conn: sqlite3.Connection) -> GroupView | None:
            row = conn.execute("SELECT epoch, next_seq FROM mls_groups WHERE id = ?",
                               (group_id,)).fetchone()
            if row is None:
                return None
            verifier = conn.execute(
                "SELECT read_verifier FROM group_epochs WHERE group_id = ? AND epoch = ?",
                (group_id, epoch)).fetchone()
            return GroupView(int(row[0]), int(row[1]) - 1,
                             None if verifier is None else bytes(verifier[0]))

        return await self._call(fn)

    async def append_group_message(
        self, group_id: bytes, body: bytes, now_ms: int, authorise: GroupAuthorise,
        next_epoch: NextEpoch | None = None,
    ) -> GroupMessage:
        def fn(conn: sqlite3.Connection) -> GroupMessage:
            row = conn.execute(
                "SELECT epoch, write_verifier, next_seq, message_count, byte_count "
                "FROM mls_groups WHERE id = ?", (group_id,)).fetchone()
            if row is None:
                raise GroupNotFound("no such group")
            group = GroupRecord(group_id, int(row[0]), bytes(row[1]), int(row[2]),
                                int(row[3]), int(row[4]))
            authorise(group)
            seq, epoch = group.next_seq, group.epoch
            conn.execute(
                "INSERT INTO group_messages (group_id, seq, epoch, ts, is_commit, size, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (group_id, seq, epoch, now_ms, int(next_epoch is not None), len(body), body))
            if next_epoch is None:
                cur = conn.execute(
                    "UPDATE mls_groups SET next_seq = ?, message_count = message_count + 1, "
                    "byte_count = byte_count + ?, last_active = ? WHERE id = ? AND epoch = ?",
                    (seq + 1, len(body), now_ms, group_id, epoch))
            else:
                try:
                    conn.execute("INSERT INTO group_epochs VALUES (?, ?, ?)",
                                 (group_id, epoch + 1, next_epoch.read_verifier))
                except sqlite3.IntegrityError as exc:
                    raise _conflict(epoch + 1) from exc
                cur = conn.execute(
                    "UPDATE mls_groups SET next_seq = ?, message_count = message_count + 1, "
                    "byte_count = byte_count + ?, last_active = ?, epoch = ?, "
                    "write_verifier = ? WHERE id = ? AND epoch = ?",
                    (seq + 1, len(body), now_ms, epoch + 1, next_epoch.write_verifier,
                     group_id, epoch))
            if cur.rowcount != 1:
                raise _conflict(epoch + 1)
            return GroupMessage(seq, epoch, now_ms, next_epoch is not None, body)

        return await self._call(fn)

    async def fetch_group_messages(
        self, group_id: bytes, epoch: int, after_seq: int, limit: int
    ) -> list[GroupMessage]:
        def fn(conn: sqlite3.Connection) -> list[GroupMessage]:
            return [
                GroupMessage(int(seq), epoch, int(ts), bool(commit), bytes(body))
                for seq, ts, commit, body in conn.execute(
                    "SELECT seq, ts, is_commit, body FROM group_messages WHERE group_id = ? "
                    "AND epoch = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (group_id, epoch, after_seq, limit))
            ]

        return await self._call(fn)

    async def expire(
        self, *, group_messages_before_ms: int, groups_idle_before_ms: int, now_s: int
    ) -> ExpiryReport:
        def fn(conn: sqlite3.Connection) -> ExpiryReport:
            idle = [bytes(r[0]) for r in conn.execute(
                "SELECT id FROM mls_groups WHERE last_active < ?", (groups_idle_before_ms,))]
            for gid in idle:
                conn.execute("DELETE FROM group_messages WHERE group_id = ?", (gid,))
                conn.execute("DELETE FROM group_epochs WHERE group_id = ?", (gid,))
                conn.execute("DELETE FROM mls_groups WHERE id = ?", (gid,))
            touched = [bytes(r[0]) for r in conn.execute(
                "SELECT DISTINCT group_id FROM group_messages WHERE ts < ?",
                (group_messages_before_ms,))]
            messages = conn.execute("DELETE FROM group_messages WHERE ts < ?",
                                    (group_messages_before_ms,)).rowcount
            for gid in touched:
                conn.execute(
                    "UPDATE mls_groups SET message_count = (SELECT COUNT(*) FROM "
                    "group_messages WHERE group_id = ?), byte_count = (SELECT "
                    "COALESCE(SUM(size), 0) FROM group_messages WHERE group_id = ?) "
                    "WHERE id = ?", (gid, gid, gid))
            epochs = conn.execute(
                "DELETE FROM group_epochs WHERE epoch < (SELECT g.epoch FROM mls_groups g "
                "WHERE g.id = group_epochs.group_id) AND NOT EXISTS (SELECT 1 FROM "
                "group_messages m WHERE m.group_id = group_epochs.group_id "
                "AND m.epoch = group_epochs.epoch)").rowcount
            packages = conn.execute("DELETE FROM mls_key_packages WHERE not_after < ?",
                                    (now_s,)).rowcount
            return ExpiryReport(messages, epochs, len(idle), packages)

        return await self._call(fn)


def _conflict(current_epoch: int) -> EpochConflict:
    return EpochConflict("another commit ended this epoch first; fetch and process it",
                         {"current_epoch": current_epoch})


def _kp_counts(conn: sqlite3.Connection, account_id: bytes, device_id: int) -> KeyPackageCounts:
    counts = dict(conn.execute(
        "SELECT last_resort, COUNT(*) FROM mls_key_packages WHERE account_id = ? "
        "AND device_id = ? GROUP BY last_resort", (account_id, device_id)).fetchall())
    return KeyPackageCounts(int(counts.get(0, 0)), int(counts.get(1, 0)))

__all__ = [
    "SQLiteMlsStore",
]
