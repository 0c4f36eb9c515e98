from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from veil.server.storage.base import Storage
from veil.server.storage.sqlite import SQLiteStorage

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """Every storage backend; each must pass the same suite (test_storage.py)."""
    if request.param == "sqlite":
        backend: Storage = SQLiteStorage(tmp_path / "veil.sqlite3")
        await backend.open()
        yield backend
        await backend.close()
        return
    dsn = os.environ.get("VEIL_TEST_POSTGRES")
    if not dsn:
        pytest.skip("postgres: VEIL_TEST_POSTGRES is not set")
    asyncpg = pytest.importorskip("asyncpg")
    from veil.server.storage.postgres import PostgresStorage

    # A schema of its own per test: other suites may share the database.
    schema = "veil_test_" + os.urandom(6).hex()
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE SCHEMA {schema}")
    backend = PostgresStorage(dsn, schema=schema)
    try:
        await backend.open()
        yield backend
    finally:
        await backend.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
