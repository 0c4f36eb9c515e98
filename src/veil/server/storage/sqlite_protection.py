"""The SQLite side of the protection layers (issue 13): the audit chain and its
checkpoints (§5), blocks in force (§3), runtime network rules (§1) and the limiter
state that outlives a restart (§2).

A mixin of :class:`veil.server.storage.sqlite.SQLiteStorage`. Every call runs on the
database thread, which serialises them, so each read-check-write here is atomic; a call
that raises rolls back to its own savepoint (an ``audit_append`` refused for a taken seq
stores none of its rows).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from veil.server.errors import Conflict
from veil.server.storage.base import (
    AuditCheckpoint,
    AuditRow,
    BlockRow,
    LimiterRow,
    NetworkRule,
)

T = TypeVar("T")
NETWORK_ACTIONS = ("deny", "allow")



class SQLiteProtectionStore:
    """storage/base.py has the contract."""

    if TYPE_CHECKING:
        async def _call(
            self, fn: Callable[[sqlite3.Connection], T], *, savepoint: bool = True
        ) -> T: ...

    # ---- audit log ------------------------------------------------------------------
    async def audit_append(self, rows: Sequence[AuditRow]) -> None:
        values = [(r.seq, r.at_ms, r.kind, r.fields, r.prev_hash, r.hash) for r in rows]

        def fn(conn: sqlite3.Connection) -> None:
            try:
                conn.executemany(
                    "INSERT INTO audit_records (seq, at_ms, kind, fields, prev_hash, hash) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    values)
            except sqlite3.IntegrityError as exc:
                raise Conflict("an audit record with that sequence number exists") from exc

        if values:
            await self._call(fn)

    async def audit_last(self) -> AuditRow | None:
        def fn(conn: sqlite3.Connection) -> AuditRow | None:
            row = conn.execute(
                "SELECT seq, at_ms, kind, fields, prev_hash, hash FROM audit_records ORDER BY "
                "seq DESC LIMIT 1"
            ).fetchone()
            return None if row is None else _audit_row(row)

        return await self._call(fn)

    async def audit_rows(self, after_seq: int, limit: int) -> list[AuditRow]:
        def fn(conn: sqlite3.Connection) -> list[AuditRow]:
            return [_audit_row(r) for r in conn.execute(
                "SELECT seq, at_ms, kind, fields, prev_hash, hash FROM audit_records WHERE seq "
                "> ? ORDER BY seq "
                "LIMIT ?", (after_seq, limit))]

        return await self._call(fn)

    async def audit_checkpoint_add(self, checkpoint: AuditCheckpoint) -> None:
        c = checkpoint

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO audit_checkpoints (seq, hash, at_ms, signature, key_id) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (seq) DO UPDATE SET hash = excluded.hash, "
                "at_ms = excluded.at_ms, signature = excluded.signature, "
                "key_id = excluded.key_id", (c.seq, c.hash, c.at_ms, c.signature, c.key_id))

        await self._call(fn)

    async def audit_checkpoints(self) -> list[AuditCheckpoint]:
        def fn(conn: sqlite3.Connection) -> list[AuditCheckpoint]:
            return [AuditCheckpoint(int(seq), bytes(h), int(at), bytes(sig), str(key))
                    for seq, h, at, sig, key in conn.execute(
                        "SELECT seq, hash, at_ms, signature, key_id FROM audit_checkpoints "
                        "ORDER BY seq")]

        return await self._call(fn)

    # ---- blocks ---------------------------------------------------------------------
    async def blocks_save(self, row: BlockRow) -> None:
        r = row

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO protection_blocks (block_id, address_key, key_hash, "
                "rule, since_ms, until_ms, count) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (r.block_id, r.key, r.key_hash, r.rule, r.since_ms, r.until_ms, r.count))

        await self._call(fn)

    async def blocks_delete(self, block_id: str) -> bool:
        def fn(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM protection_blocks WHERE block_id = ?", (block_id,))
            return cur.rowcount > 0

        return await self._call(fn)

    async def blocks_load(self, now_ms: int) -> list[BlockRow]:
        def fn(conn: sqlite3.Connection) -> list[BlockRow]:
            conn.execute("DELETE FROM protection_blocks WHERE until_ms <= ?", (now_ms,))
            return [BlockRow(*r) for r in conn.execute(
                "SELECT block_id, address_key, key_hash, rule, since_ms, until_ms, count FROM "
                "protection_blocks ORDER BY since_ms, block_id")]

        return await self._call(fn)

    # ---- runtime network rules --------------------------------------------------------
    async def network_rules_add(self, cidr: str, action: str, now_ms: int) -> None:
        _check_action(action)

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO network_rules (cidr, action, at_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (cidr) DO UPDATE SET action = excluded.action, "
                "at_ms = excluded.at_ms", (cidr, action, now_ms))

        await self._call(fn)

    async def network_rules_remove(self, cidr: str) -> bool:
        def fn(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM network_rules WHERE cidr = ?",
                                (cidr,)).rowcount > 0

        return await self._call(fn)

    async def network_rules(self) -> list[NetworkRule]:
        def fn(conn: sqlite3.Connection) -> list[NetworkRule]:
            return [NetworkRule(*r) for r in conn.execute(
                "SELECT cidr, action, at_ms FROM network_rules ORDER BY at_ms, cidr")]

        return await self._call(fn)

    # ---- limiter state ------------------------------------------------------------------
    async def limiter_save(self, name: str, rows: Sequence[LimiterRow]) -> None:
        values = [(name, r.key, float(r.tokens), r.updated_ms) for r in rows]

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM limiter_state WHERE name = ?", (name,))
            conn.executemany("INSERT OR REPLACE INTO limiter_state (name, key, tokens, "
                             "updated_ms) VALUES (?, ?, ?, ?)", values)

        await self._call(fn)

    async def limiter_load(self, name: str) -> list[LimiterRow]:
        def fn(conn: sqlite3.Connection) -> list[LimiterRow]:
            return [LimiterRow(str(k), float(t), int(u)) for k, t, u in conn.execute(
                "SELECT key, tokens, updated_ms FROM limiter_state WHERE name = ? "
                "ORDER BY key", (name,))]

        return await self._call(fn)


def _audit_row(r: Any) -> AuditRow:
    return AuditRow(int(r[0]), int(r[1]), str(r[2]), str(r[3]), bytes(r[4]), bytes(r[5]))


def _check_action(action: str) -> None:
    if action not in NETWORK_ACTIONS:
        raise ValueError(f"a network rule's action is 'deny' or 'allow', not {action!r}")


__all__ = [
    "NETWORK_ACTIONS",
    "SQLiteProtectionStore",
]
