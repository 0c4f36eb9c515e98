"""Storage backends behind one interface (:class:`~veil.server.storage.base.Storage`)."""

from __future__ import annotations

from veil.server.config import ServerConfig
from veil.server.storage.base import Storage
from veil.server.storage.sqlite import SQLiteStorage

DATABASE_FILE = "veil.sqlite3"


def storage_for(config: ServerConfig) -> Storage:
    """PostgreSQL when ``database_url`` is set, else the embedded SQLite database."""
    if config.database_url:
        from veil.server.storage.postgres import PostgresStorage  # asyncpg only when used

        return PostgresStorage(config.database_url)
    return SQLiteStorage(
        config.data_dir / DATABASE_FILE,
        synchronous=config.sqlite_synchronous,
        group_commit_window_ms=config.group_commit_window_ms,
    )


__all__ = [
    "DATABASE_FILE",
    "SQLiteStorage",
    "Storage",
    "base",
    "migrations",
    "schema",
    "sqlite",
    "sqlite_worker",
    "storage_for",
]
