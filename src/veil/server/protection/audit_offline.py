"""Reading a data directory's audit log without its server (issue 13 §5:
``veil admin audit verify`` on a stopped server).

Only reads: SQLite through a ``mode=ro`` connection of its own (no migration, no
checkpoint of a WAL into the file), PostgreSQL in a read-only session. A database from
before the audit tables (schema < 6) reads as an empty log.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any, Protocol

from veil.server.config import ServerConfig
from veil.server.errors import NotAServerDirectory, StorageError
from veil.server.storage import DATABASE_FILE
from veil.server.storage.base import AuditCheckpoint, AuditRow

_ROWS = ("SELECT seq, at_ms, kind, fields, prev_hash, hash FROM audit_records "
         "WHERE seq > {a} ORDER BY seq LIMIT {b}")
_CHECKPOINTS = "SELECT seq, hash, at_ms, signature, key_id FROM audit_checkpoints ORDER BY seq"


class AuditReader(Protocol):
    async def audit_rows(self, after_seq: int, limit: int) -> list[AuditRow]: ...

    async def audit_checkpoints(self) -> list[AuditCheckpoint]: ...

    async def close(self) -> None: ...


def _row(r: Any) -> AuditRow:
    return AuditRow(int(r[0]), int(r[1]), str(r[2]), str(r[3]), bytes(r[4]), bytes(r[5]))


def _checkpoint(r: Any) -> AuditCheckpoint:
    return AuditCheckpoint(int(r[0]), bytes(r[1]), int(r[2]), bytes(r[3]), str(r[4]))


class SQLiteAuditReader:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._tables: bool | None = None

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        conn = sqlite3.connect(f"{self._path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            if self._tables is None:
                self._tables = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                    "'audit_records'").fetchone() is not None
            if not self._tables:
                return []
            return conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the database in {self._path.parent}: "
                               f"{exc}") from exc
        finally:
            conn.close()

    async def audit_rows(self, after_seq: int, limit: int) -> list[AuditRow]:
        rows = await asyncio.to_thread(self._query, _ROWS.format(a="?", b="?"),
                                       (after_seq, limit))
        return [_row(r) for r in rows]

    async def audit_checkpoints(self) -> list[AuditCheckpoint]:
        return [_checkpoint(r) for r in await asyncio.to_thread(self._query, _CHECKPOINTS, ())]

    async def close(self) -> None:
        return None


class PostgresAuditReader:
    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._tables: bool | None = None

    @classmethod
    async def connect(cls, dsn: str) -> PostgresAuditReader:
        import asyncpg  # type: ignore[import-untyped]  # only when used

        try:
            conn = await asyncpg.connect(dsn, server_settings={
                "default_transaction_read_only": "on"})
        except (OSError, asyncpg.PostgresError) as exc:
            raise StorageError(f"cannot open the PostgreSQL database: {exc}") from exc
        return cls(conn)

    async def _has_tables(self) -> bool:
        if self._tables is None:
            self._tables = await self._conn.fetchval(
                "SELECT to_regclass('audit_records')") is not None
        return self._tables

    async def audit_rows(self, after_seq: int, limit: int) -> list[AuditRow]:
        if not await self._has_tables():
            return []
        rows = await self._conn.fetch(_ROWS.format(a="$1", b="$2"), after_seq, limit)
        return [_row(r) for r in rows]

    async def audit_checkpoints(self) -> list[AuditCheckpoint]:
        if not await self._has_tables():
            return []
        return [_checkpoint(r) for r in await self._conn.fetch(_CHECKPOINTS)]

    async def close(self) -> None:
        await self._conn.close()


async def open_reader(config: ServerConfig) -> AuditReader:
    """The reader of ``config``'s database. Raises NotAServerDirectory for a data
    directory without a database (SQLite) and StorageError when it cannot be read."""
    if config.database_url:
        return await PostgresAuditReader.connect(config.database_url)
    path = config.data_dir / DATABASE_FILE
    if not path.is_file():
        raise NotAServerDirectory(f"{config.data_dir} holds no Veil server database")
    return SQLiteAuditReader(path)


__all__ = [
    "AuditReader",
    "PostgresAuditReader",
    "SQLiteAuditReader",
    "open_reader",
]
