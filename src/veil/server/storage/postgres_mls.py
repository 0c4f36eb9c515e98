"""The PostgreSQL side of the MLS Delivery Service: KeyPackages and group mailboxes.

A mixin of :class:`veil.server.storage.postgres.PostgresStorage`. Concurrency across
server nodes is the database's: a claim takes a one-time KeyPackage with
``DELETE ... (SELECT ... FOR UPDATE SKIP LOCKED)``; an append locks the group's row
(``SELECT ... FOR UPDATE``), so appends to one group are serialised and the commit that
ends an epoch is first-wins; the ``group_epochs`` primary key refuses a second commit
for one epoch even without the lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]

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


class PostgresMlsStore:
    """KeyPackage directory and group mailboxes (storage/base.py has the contract)."""

    if TYPE_CHECKING:
        def _p(self) -> asyncpg.Pool: ...

    # ---- KeyPackages ------------------------------------------------------------------
    async def store_key_packages(
        self, account_id: bytes, device_id: int, packages: Sequence[KeyPackageRecord],
        max_stored: int,
    ) -> KeyPackageCounts:
        async with self._p().acquire() as conn, conn.transaction():
            # The device row lock serialises uploads of one device (the stock cap holds).
            if await conn.fetchval(
                "SELECT 1 FROM devices WHERE account_id = $1 AND device_id = $2 FOR UPDATE",
                account_id, device_id) is None:
                raise DeviceNotFound("no such device")
            fresh = sum(1 for p in packages if not p.last_resort)
            if (await _kp_counts(conn, account_id, device_id)).one_time + fresh > max_stored:
                raise LimitExceeded(f"a device stores at most {max_stored} one-time "
                                    "KeyPackages")
            for p in packages:
                if p.last_resort:
                    await conn.execute(
                        "DELETE FROM mls_key_packages WHERE account_id = $1 AND device_id = $2 "
                        "AND last_resort AND cipher_suite = $3",
                        account_id, device_id, p.cipher_suite)
            try:
                async with conn.transaction():
                    await conn.executemany(
                        "INSERT INTO mls_key_packages (account_id, device_id, ref, "
                        "cipher_suite, last_resort, not_after, key_package) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        [(account_id, device_id, p.ref, p.cipher_suite, p.last_resort,
                          p.not_after, p.data) for p in packages])
            except asyncpg.UniqueViolationError as exc:
                raise DuplicateKeyPackage("a KeyPackage with that reference is already "
                                          "stored") from exc
            return await _kp_counts(conn, account_id, device_id)

    async def key_package_counts(self, account_id: bytes, device_id: int) -> KeyPackageCounts:
        async with self._p().acquire() as conn:
            if await conn.fetchval("SELECT 1 FROM devices WHERE account_id = $1 AND "
                                   "device_id = $2", account_id, device_id) is None:
                raise DeviceNotFound("no such device")
            return await _kp_counts(conn, account_id, device_id)

    async def claim_key_packages(
        self, account_id: bytes, cipher_suite: int, now_s: int
    ) -> list[ClaimedKeyPackage]:
        async with self._p().acquire() as conn, conn.transaction():
            devices = [r[0] for r in await conn.fetch(
                "SELECT device_id FROM devices WHERE account_id = $1 ORDER BY device_id",
                account_id)]
            out = []
            for dev in devices:
                row = await conn.fetchrow(
                    "DELETE FROM mls_key_packages WHERE (account_id, device_id, ref) = ("
                    "SELECT account_id, device_id, ref FROM mls_key_packages "
                    "WHERE account_id = $1 AND device_id = $2 AND cipher_suite = $3 "
                    "AND NOT last_resort AND not_after >= $4 ORDER BY not_after, ref "
                    "LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING key_package",
                    account_id, dev, cipher_suite, now_s)
                last_resort = row is None
                if row is None:
                    row = await conn.fetchrow(
                        "SELECT key_package FROM mls_key_packages WHERE account_id = $1 "
                        "AND device_id = $2 AND cipher_suite = $3 AND last_resort "
                        "AND not_after >= $4 LIMIT 1", account_id, dev, cipher_suite, now_s)
                if row is None:
                    continue
                out.append(ClaimedKeyPackage(dev, bytes(row[0]), last_resort,
                                             await _kp_counts(conn, account_id, dev)))
            return out

    # ---- group mailboxes ----------------------------------------------------------------
    async def create_group(
        self, group_id: bytes, read_verifier: bytes, write_verifier: bytes, now_ms: int,
        max_groups: int,
    ) -> None:
        async with self._p().acquire() as conn, conn.transaction():
            # Nodes may race past the count by a few; the bound is on disk, not exact.
            if await conn.fetchval("SELECT COUNT(*) FROM mls_groups") >= max_groups:
                raise LimitExceeded(f"this server holds its limit of {max_groups} groups")
            try:
                await conn.execute(
                    "INSERT INTO mls_groups (id, epoch, write_verifier, next_seq, "
                    "message_count, byte_count, created_at, last_active) "
                    "VALUES ($1, 0, $2, 1, 0, 0, $3, $3)", group_id, write_verifier, now_ms)
            except asyncpg.UniqueViolationError as exc:
                raise GroupExists("a group with that id exists") from exc
            await conn.execute("INSERT INTO group_epochs VALUES ($1, 0, $2)",
                               group_id, read_verifier)

    async def group_view(self, group_id: bytes, epoch: int) -> GroupView | None:
        row = await self._p().fetchrow(
            "SELECT g.epoch, g.next_seq, e.read_verifier FROM mls_groups g "
            "LEFT JOIN group_epochs e ON e.group_id = g.id AND e.epoch = $2 "
            "WHERE g.id = $1", group_id, epoch)
        if row is None:
            return None
        return GroupView(int(row[0]), int(row[1]) - 1,
                         None if row[2] is None else bytes(row[2]))

    async def append_group_message(
        self, group_id: bytes, body: bytes, now_ms: int, authorise: GroupAuthorise,
        next_epoch: NextEpoch | None = None,
    ) -> GroupMessage:
        async with self._p().acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT epoch, write_verifier, next_seq, message_count, byte_count "
                "FROM mls_groups WHERE id = $1 FOR UPDATE", group_id)
            if row is None:
                raise GroupNotFound("no such group")
            group = GroupRecord(group_id, int(row[0]), bytes(row[1]), int(row[2]),
                                int(row[3]), int(row[4]))
            authorise(group)
            seq, epoch = group.next_seq, group.epoch
            commit = next_epoch is not None
            await conn.execute(
                "INSERT INTO group_messages (group_id, seq, epoch, ts, is_commit, size, body) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                group_id, seq, epoch, now_ms, commit, len(body), body)
            if next_epoch is None:
                status = await conn.execute(
                    "UPDATE mls_groups SET next_seq = $1, message_count = message_count + 1, "
                    "byte_count = byte_count + $2, last_active = $3 WHERE id = $4 "
                    "AND epoch = $5", seq + 1, len(body), now_ms, group_id, epoch)
            else:
                try:
                    async with conn.transaction():
                        await conn.execute("INSERT INTO group_epochs VALUES ($1, $2, $3)",
                                           group_id, epoch + 1, next_epoch.read_verifier)
                except asyncpg.UniqueViolationError as exc:
                    raise _conflict(epoch + 1) from exc
                status = await conn.execute(
                    "UPDATE mls_groups SET next_seq = $1, message_count = message_count + 1, "
                    "byte_count = byte_count + $2, last_active = $3, epoch = $4, "
                    "write_verifier = $5 WHERE id = $6 AND epoch = $7",
                    seq + 1, len(body), now_ms, epoch + 1, next_epoch.write_verifier,
                    group_id, epoch)
            if status.endswith(" 0"):
                raise _conflict(epoch + 1)
            return GroupMessage(seq, epoch, now_ms, commit, body)

    async def fetch_group_messages(
        self, group_id: bytes, epoch: int, after_seq: int, limit: int
    ) -> list[GroupMessage]:
        rows = await self._p().fetch(
            "SELECT seq, ts, is_commit, body FROM group_messages WHERE group_id = $1 "
            "AND epoch = $2 AND seq > $3 ORDER BY seq LIMIT $4",
            group_id, epoch, after_seq, limit)
        return [GroupMessage(int(r[0]), epoch, int(r[1]), bool(r[2]), bytes(r[3]))
                for r in rows]

    async def expire(
        self, *, group_messages_before_ms: int, groups_idle_before_ms: int, now_s: int
    ) -> ExpiryReport:
        async with self._p().acquire() as conn, conn.transaction():
            idle = [r[0] for r in await conn.fetch(
                "SELECT id FROM mls_groups WHERE last_active < $1 FOR UPDATE",
                groups_idle_before_ms)]
            if idle:
                await conn.execute("DELETE FROM group_messages WHERE group_id = ANY($1)", idle)
                await conn.execute("DELETE FROM group_epochs WHERE group_id = ANY($1)", idle)
                await conn.execute("DELETE FROM mls_groups WHERE id = ANY($1)", idle)
            touched = [r[0] for r in await conn.fetch(
                "SELECT DISTINCT group_id FROM group_messages WHERE ts < $1",
                group_messages_before_ms)]
            messages = _count(await conn.execute(
                "DELETE FROM group_messages WHERE ts < $1", group_messages_before_ms))
            if touched:
                # Lock order as appends (the group row first) would be nicer; these rows
                # are only updated, never waited on while holding message rows.
                await conn.execute(
                    "UPDATE mls_groups g SET message_count = (SELECT COUNT(*) FROM "
                    "group_messages m WHERE m.group_id = g.id), byte_count = (SELECT "
                    "COALESCE(SUM(size), 0) FROM group_messages m WHERE m.group_id = g.id) "
                    "WHERE g.id = ANY($1)", touched)
            epochs = _count(await conn.execute(
                "DELETE FROM group_epochs e USING mls_groups g WHERE g.id = e.group_id "
                "AND e.epoch < g.epoch AND NOT EXISTS (SELECT 1 FROM group_messages m "
                "WHERE m.group_id = e.group_id AND m.epoch = e.epoch)"))
            packages = _count(await conn.execute(
                "DELETE FROM mls_key_packages WHERE not_after < $1", now_s))
            return ExpiryReport(messages, epochs, len(idle), packages)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


def _conflict(current_epoch: int) -> EpochConflict:
    return EpochConflict("another commit ended this epoch first; fetch and process it",
                         {"current_epoch": current_epoch})


async def _kp_counts(conn: Any, account_id: bytes, device_id: int) -> KeyPackageCounts:
    counts = {bool(r[0]): int(r[1]) for r in await conn.fetch(
        "SELECT last_resort, COUNT(*) FROM mls_key_packages WHERE account_id = $1 "
        "AND device_id = $2 GROUP BY last_resort", account_id, device_id)}
    return KeyPackageCounts(counts.get(False, 0), counts.get(True, 0))

__all__ = [
    "PostgresMlsStore",
]
