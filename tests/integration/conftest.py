"""Fixtures every integration suite may use: a server process on PostgreSQL, in a
schema of its own (other suites share the database), skipped by name when
``VEIL_TEST_POSTGRES`` is unset."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.integration.server.harness import ServerProcess

DSN = os.environ.get("VEIL_TEST_POSTGRES", "")


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    if not DSN:
        pytest.skip("postgres: VEIL_TEST_POSTGRES is not set")
    asyncpg = pytest.importorskip("asyncpg")
    name = "veil_srv_" + os.urandom(6).hex()
    admin = await asyncpg.connect(DSN)
    await admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        await admin.execute(f"DROP SCHEMA {name} CASCADE")
        await admin.close()


@pytest.fixture
def pg_server(schema: str, tmp_path: Path) -> Iterator[ServerProcess]:
    sep = "&" if "?" in DSN else "?"
    proc = ServerProcess(tmp_path / "data",
                         {"database_url": f"{DSN}{sep}search_path={schema}"}).start()
    yield proc
    proc.stop()
