"""The PostgreSQL side of the protection layers (issue 13): the audit chain and its
checkpoints (§5), blocks in force (§3), runtime network rules (§1) and the limiter
state that outlives a restart (§2).

A mixin of :class:`veil.server.storage.postgres.PostgresStorage`; driver errors of its
methods become StorageError there, as for the class's own. Audit records are appended
in one transaction: a seq another node took first (its primary key) refuses the whole
batch (Conflict), so the chain never forks silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]

from veil.server.errors import Conflict
from veil.server.storage.base import (
    AuditCheckpoint,
    AuditRow,
    BlockRow,
    LimiterRow,
    NetworkRule,
)
from veil.server.storage.sqlite_protection import NETWORK_ACTIONS


class PostgresProtectionStore:
    """storage/base.py has the contract."""

    if TYPE_CHECKING:
        def _p(self) -> asyncpg.Pool: ...

    # ---- audit log ------------------------------------------------------------------
    async def audit_append(self, rows: Sequence[AuditRow]) -> None:
        if not rows:
            return
        values = [(r.seq, r.at_ms, r.kind, r.fields, r.prev_hash, r.hash) for r in rows]
        async with self._p().acquire() as conn, conn.transaction():
            try:
                await conn.executemany(
                    "INSERT INTO audit_records (seq, at_ms, kind, fields, prev_hash, hash) VALUES "
                    "($1, $2, $3, $4, $5, $6)", values)
            except asyncpg.UniqueViolationError as exc:
                raise Conflict("an audit record with that sequence number exists") from exc

    async def audit_last(self) -> AuditRow | None:
        row = await self._p().fetchrow(
            "SELECT seq, at_ms, kind, fields, prev_hash, hash FROM audit_records ORDER BY seq "
            "DESC LIMIT 1")
        return None if row is None else _audit_row(row)

    async def audit_rows(self, after_seq: int, limit: int) -> list[AuditRow]:
        rows = await self._p().fetch(
            "SELECT seq, at_ms, kind, fields, prev_hash, hash FROM audit_records WHERE seq > $1 "
            "ORDER BY seq "
            "LIMIT $2", after_seq, limit)
        return [_audit_row(r) for r in rows]

    async def audit_checkpoint_add(self, checkpoint: AuditCheckpoint) -> None:
        c = checkpoint
        await self._p().execute(
            "INSERT INTO audit_checkpoints (seq, hash, at_ms, signature, key_id) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO UPDATE SET hash = "
            "excluded.hash, at_ms = excluded.at_ms, signature = excluded.signature, "
            "key_id = excluded.key_id", c.seq, c.hash, c.at_ms, c.signature, c.key_id)

    async def audit_checkpoints(self) -> list[AuditCheckpoint]:
        rows = await self._p().fetch(
            "SELECT seq, hash, at_ms, signature, key_id FROM audit_checkpoints ORDER BY seq")
        return [AuditCheckpoint(int(r[0]), bytes(r[1]), int(r[2]), bytes(r[3]), str(r[4]))
                for r in rows]

    # ---- blocks ---------------------------------------------------------------------
    async def blocks_save(self, row: BlockRow) -> None:
        r = row
        await self._p().execute(
            "INSERT INTO protection_blocks (block_id, address_key, key_hash, rule, since_ms, "
            "until_ms, count) "
            "VALUES ($1, $2, $3, $4, $5, "
            "$6, $7) ON CONFLICT (block_id) DO UPDATE SET address_key = excluded.address_key, "
            "key_hash = excluded.key_hash, rule = excluded.rule, since_ms = excluded.since_ms, "
            "until_ms = excluded.until_ms, count = excluded.count",
            r.block_id, r.key, r.key_hash, r.rule, r.since_ms, r.until_ms, r.count)

    async def blocks_delete(self, block_id: str) -> bool:
        status = await self._p().execute(
            "DELETE FROM protection_blocks WHERE block_id = $1", block_id)
        return not status.endswith(" 0")

    async def blocks_load(self, now_ms: int) -> list[BlockRow]:
        async with self._p().acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM protection_blocks WHERE until_ms <= $1", now_ms)
            rows = await conn.fetch(
                "SELECT block_id, address_key, key_hash, rule, since_ms, until_ms, count FROM "
                "protection_blocks ORDER BY since_ms, "
                'block_id COLLATE "C"')
        return [BlockRow(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]),
                         int(r[6])) for r in rows]

    # ---- runtime network rules --------------------------------------------------------
    async def network_rules_add(self, cidr: str, action: str, now_ms: int) -> None:
        if action not in NETWORK_ACTIONS:
            raise ValueError(f"a network rule's action is 'deny' or 'allow', not {action!r}")
        await self._p().execute(
            "INSERT INTO network_rules (cidr, action, at_ms) VALUES ($1, $2, $3) "
            "ON CONFLICT (cidr) DO UPDATE SET action = excluded.action, "
            "at_ms = excluded.at_ms", cidr, action, now_ms)

    async def network_rules_remove(self, cidr: str) -> bool:
        status = await self._p().execute("DELETE FROM network_rules WHERE cidr = $1", cidr)
        return not status.endswith(" 0")

    async def network_rules(self) -> list[NetworkRule]:
        rows = await self._p().fetch(
            "SELECT cidr, action, at_ms FROM network_rules ORDER BY at_ms, cidr COLLATE \"C\"")
        return [NetworkRule(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    # ---- limiter state ------------------------------------------------------------------
    async def limiter_save(self, name: str, rows: Sequence[LimiterRow]) -> None:
        # Later rows of one key win, as on SQLite (INSERT OR REPLACE). Text keys sort
        # as bytes ("C"), as SQLite sorts them.
        latest = {r.key: r for r in rows}
        values = [(name, r.key, float(r.tokens), r.updated_ms) for r in latest.values()]
        async with self._p().acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM limiter_state WHERE name = $1", name)
            if values:
                await conn.executemany(
                    "INSERT INTO limiter_state (name, key, tokens, updated_ms) "
                    "VALUES ($1, $2, $3, $4)", values)

    async def limiter_load(self, name: str) -> list[LimiterRow]:
        rows = await self._p().fetch(
            "SELECT key, tokens, updated_ms FROM limiter_state WHERE name = $1 "
            'ORDER BY key COLLATE "C"',
            name)
        return [LimiterRow(str(r[0]), float(r[1]), int(r[2])) for r in rows]


def _audit_row(r: Any) -> AuditRow:
    return AuditRow(int(r[0]), int(r[1]), str(r[2]), str(r[3]), bytes(r[4]), bytes(r[5]))


__all__ = [
    "PostgresProtectionStore",
]
