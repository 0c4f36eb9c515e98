from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.server.rawdb import RawDatabase, RawPostgres, RawSQLite
from veil.server.storage.base import Storage

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def raw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RawDatabase]:
    """A database of each backend, reached directly (``storage`` opens the same one)."""
    if request.param == "sqlite":
        yield RawSQLite(tmp_path / "veil.sqlite3")
        return
    dsn = os.environ.get("VEIL_TEST_POSTGRES")
    if not dsn:
        pytest.skip("postgres: VEIL_TEST_POSTGRES is not set")
    asyncpg = pytest.importorskip("asyncpg")
    # A schema of its own per test: other suites may share the database.
    schema = "veil_test_" + os.urandom(6).hex()
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE SCHEMA {schema}")
    await admin.execute(f"SET search_path TO {schema}")
    try:
        yield RawPostgres(dsn, schema, admin)
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@pytest.fixture
async def storage(raw: RawDatabase) -> AsyncIterator[Storage]:
    """Every storage backend; each must pass the same suite (test_storage.py)."""
    backend = raw.storage()
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
