"""The server process refuses a database written by a newer, incompatible Veil: one
line on standard error, exit status 1, and the database and the data directory's keys
untouched. SQLite always; PostgreSQL when VEIL_TEST_POSTGRES names a database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.server.harness import free_port
from veil.server.storage import DATABASE_FILE
from veil.server.storage.migrations import SCHEMA_VERSION
from veil.server.storage.sqlite import SQLiteStorage

DSN = os.environ.get("VEIL_TEST_POSTGRES", "")
NEWER, NEEDS = SCHEMA_VERSION + 2, SCHEMA_VERSION + 1


def run_server(data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil.server", "--data", str(data), "--port",
         str(free_port()), *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )


def assert_refused(proc: subprocess.CompletedProcess[str], where: str, elsewhere: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"veil: the database in {where} was written by a newer Veil (schema {NEWER}, "
        f"needs at least {NEEDS}); upgrade Veil or use {elsewhere}")


async def test_sqlite_database_from_a_newer_veil_is_refused_untouched(tmp_path: Path):
    data = tmp_path / "data"
    storage = SQLiteStorage(data / DATABASE_FILE)
    await storage.open()
    await storage.close()
    conn = sqlite3.connect(data / DATABASE_FILE)
    with conn:
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'future', 0)", (NEWER,))
        conn.execute("UPDATE schema_compat_version SET compat_version = ?", (NEEDS,))
    conn.close()
    before = (data / DATABASE_FILE).read_bytes()

    assert_refused(run_server(data), str(data), "another data directory")
    assert (data / DATABASE_FILE).read_bytes() == before
    # Refused before the server key or trust root was made.
    assert not (data / "server_signing.key").exists()


@pytest.fixture
async def pg_schema() -> AsyncIterator[tuple[str, object]]:
    if not DSN:
        pytest.skip("postgres: VEIL_TEST_POSTGRES is not set")
    asyncpg = pytest.importorskip("asyncpg")
    name = "veil_refuse_" + os.urandom(6).hex()
    admin = await asyncpg.connect(DSN)
    await admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield name, admin
    finally:
        await admin.execute(f"DROP SCHEMA {name} CASCADE")
        await admin.close()


@pytest.mark.postgres
async def test_postgres_database_from_a_newer_veil_is_refused_untouched(
    pg_schema: tuple[str, object], tmp_path: Path
):
    from urllib.parse import urlsplit

    from veil.server.storage.postgres import PostgresStorage

    schema, admin = pg_schema
    storage = PostgresStorage(DSN, schema=schema)
    await storage.open()
    await storage.close()
    await admin.execute(  # type: ignore[attr-defined]
        f"INSERT INTO {schema}.schema_migrations VALUES ($1, 'future', 0)", NEWER)
    await admin.execute(  # type: ignore[attr-defined]
        f"UPDATE {schema}.schema_compat_version SET compat_version = $1", NEEDS)

    async def rows() -> list[object]:
        return [list(await admin.fetch(  # type: ignore[attr-defined]
            f"SELECT * FROM {schema}.{t} ORDER BY 1"))
            for t in ("schema_migrations", "schema_compat_version", "accounts")]

    before = await rows()
    sep = "&" if "?" in DSN else "?"
    config = tmp_path / "server.toml"
    config.write_text(f'database_url = "{DSN}{sep}search_path={schema}"\n')
    url = urlsplit(DSN)
    where = f"postgresql://{url.hostname}{':' + str(url.port) if url.port else ''}{url.path}"
    assert_refused(run_server(tmp_path / "data", "--config", str(config)),
                   f"{where} (schema {schema})", "another database")
    assert await rows() == before
