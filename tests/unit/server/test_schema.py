"""Schema declaration and versions, on every backend (see conftest.BACKENDS).

- The catalogue of a real database, fresh or upgraded from the released version 1,
  matches ``veil.server.storage.schema`` (columns with their dialect's types, keys,
  unique constraints, indexes, foreign keys): so both back ends agree with each other.
- A database written by a newer, incompatible Veil is refused and left untouched
  (byte for byte on SQLite, every row and the catalogue on PostgreSQL); a newer but
  compatible one is used as it is; an older one is upgraded and keeps its data.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.server import schema_v1
from tests.unit.server.rawdb import RawDatabase, RawSQLite, declared
from veil.server.errors import DatabaseTooNew, StorageError
from veil.server.storage import migrations
from veil.server.storage.base import NewDevice, OneTimeKey, RecipientInfo, Storage
from veil.server.storage.migrations import (
    NAMES,
    SCHEMA_COMPAT_VERSION,
    SCHEMA_VERSION,
    UPGRADES,
    DatabaseState,
)
from veil.server.storage.schema import TABLES, Type, create_statements, erase_statements

NOW = 1_700_000_000_000
ACCOUNT = b"A" * 16


def allow(info: RecipientInfo) -> None:
    return None


async def versions(raw: RawDatabase) -> tuple[list[int], list[int]]:
    rows = await raw.rows()
    return (sorted(r["version"] for r in rows["schema_migrations"]),
            [r["compat_version"] for r in rows.get("schema_compat_version", [])])


async def make_v1(raw: RawDatabase) -> None:
    """A database exactly as the released code (schema 1) left it, with some data."""
    sql = schema_v1.SQLITE if raw.dialect == "sqlite" else schema_v1.POSTGRES
    bookkeeping = (schema_v1.SQLITE_BOOKKEEPING if raw.dialect == "sqlite"
                   else schema_v1.POSTGRES_BOOKKEEPING)
    await raw.execute(bookkeeping)
    false = "0" if raw.dialect == "sqlite" else "FALSE"
    await raw.execute(
        *(s for s in sql.split(";") if s.strip()),
        ("INSERT INTO schema_migrations VALUES (1, ?, ?)", (schema_v1.NAME, NOW)),
        (f"INSERT INTO accounts VALUES (?, 'olduser', ?, {false}, ?)",
         (ACCOUNT, b"k" * 16, NOW)),
        ("INSERT INTO devices VALUES (?, 1, 42, ?, ?, ?, NULL, ?)",
         (ACCOUNT, b"t" * 32, b"i" * 33, b"s" * 64, NOW)),
        ("INSERT INTO one_time_prekeys VALUES (?, 1, 0, 5, ?)", (ACCOUNT, b"o" * 32)),
        ("INSERT INTO envelopes (account_id, device_id, ts, body) VALUES (?, 1, ?, ?)",
         (ACCOUNT, NOW, b"queued before the upgrade")),
        ("INSERT INTO invites VALUES (?, ?)", (b"h" * 32, NOW + 1000)),
    )


async def stamp(raw: RawDatabase, version: int, compat: int) -> None:
    """Make a database look as if a later Veil of ``version`` had written it."""
    await raw.execute(
        ("INSERT INTO schema_migrations VALUES (?, 'from the future', ?)", (version, NOW)),
        ("UPDATE schema_compat_version SET compat_version = ? WHERE id = 1", (compat,)),
    )


async def fresh_with_data(raw: RawDatabase) -> bytes:
    storage = raw.storage()
    await storage.open()
    account_id = os.urandom(16)
    await storage.create_account(
        account_id, username="present", access_key=None, unrestricted_sealed=True,
        device=NewDevice(1, 7, os.urandom(32), os.urandom(33),
                         one_time_prekeys=[OneTimeKey(1, os.urandom(32))]),
        now_ms=NOW, invite_hash=None, max_prekeys_stored=10,
    )
    await storage.enqueue(account_id, [(1, b"waiting")], NOW, allow)
    await storage.close()
    return account_id


# ---- the declaration and the real catalogues -----------------------------------------

async def test_a_fresh_database_matches_the_declaration(raw: RawDatabase, storage: Storage):
    assert await raw.describe() == declared(raw.dialect)
    assert await versions(raw) == (list(range(1, SCHEMA_VERSION + 1)), [SCHEMA_COMPAT_VERSION])
    assert await storage.schema_version() == SCHEMA_VERSION


async def test_a_released_v1_database_upgrades_and_keeps_its_data(raw: RawDatabase):
    await make_v1(raw)
    storage = raw.storage()
    await storage.open()
    try:
        assert await storage.schema_version() == SCHEMA_VERSION
        record = await storage.get_account(ACCOUNT)
        assert record is not None and record.username == "olduser" and record.devices == (1,)
        old = await storage.fetch_envelopes(ACCOUNT, 1, 10)
        assert [e.body for e in old] == [b"queued before the upgrade"]
        (bundle,) = await storage.claim_bundles(ACCOUNT, 1)
        assert bundle.one_time_prekey == OneTimeKey(5, b"o" * 32)
        assert bundle.signed_prekey == b"s" * 64
        assert await storage.invite_exists(b"h" * 32, NOW)
        new = await storage.enqueue(ACCOUNT, [(1, b"after")], NOW, allow)
        assert new[0].id > old[0].id
    finally:
        await storage.close()
    # The same catalogue as a fresh database of this code, and the same bookkeeping.
    assert await raw.describe() == declared(raw.dialect)
    assert await versions(raw) == (list(range(1, SCHEMA_VERSION + 1)), [SCHEMA_COMPAT_VERSION])
    reopened = raw.storage()
    await reopened.open()  # nothing left to do, nothing fails
    await reopened.close()
    assert await versions(raw) == (list(range(1, SCHEMA_VERSION + 1)), [SCHEMA_COMPAT_VERSION])


# ---- versions ----------------------------------------------------------------------

async def test_a_database_from_a_newer_incompatible_veil_is_refused_untouched(
    raw: RawDatabase,
):
    await fresh_with_data(raw)
    await stamp(raw, SCHEMA_VERSION + 3, SCHEMA_VERSION + 1)
    before = await raw.snapshot()
    storage = raw.storage()
    with pytest.raises(DatabaseTooNew) as caught:
        await storage.open()
    message = str(caught.value)
    assert message == (
        f"the database in {raw.where} was written by a newer Veil (schema "
        f"{SCHEMA_VERSION + 3}, needs at least {SCHEMA_VERSION + 1}); upgrade Veil or use "
        + ("another data directory" if raw.dialect == "sqlite" else "another database"))
    assert "\n" not in message
    assert isinstance(caught.value, StorageError) and caught.value.code == "database_too_new"
    assert await raw.snapshot() == before
    with pytest.raises(StorageError):  # not half open
        await storage.get_account(ACCOUNT)
    await storage.close()  # and closing it is harmless


async def test_a_database_from_a_newer_compatible_veil_is_used_as_it_is(raw: RawDatabase):
    account_id = await fresh_with_data(raw)
    await stamp(raw, SCHEMA_VERSION + 1, SCHEMA_VERSION)
    storage = raw.storage()
    await storage.open()
    try:
        assert await storage.schema_version() == SCHEMA_VERSION + 1
        assert [e.body for e in await storage.fetch_envelopes(account_id, 1, 10)] == [b"waiting"]
    finally:
        await storage.close()
    # Neither lowered nor rewritten: the newer code's own record stays.
    assert await versions(raw) == (
        [*range(1, SCHEMA_VERSION + 1), SCHEMA_VERSION + 1], [SCHEMA_VERSION])


async def test_sqlite_refusal_happens_before_any_write(tmp_path: Path):
    """Even a database not in WAL mode (``journal_mode=WAL`` would rewrite its header)
    stays byte for byte as it was."""
    raw = RawSQLite(tmp_path / "veil.sqlite3")
    await fresh_with_data(raw)
    await raw.execute(("UPDATE schema_compat_version SET compat_version = ?",
                       (SCHEMA_VERSION + 1,)))
    conn = sqlite3.connect(raw.path)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    before = raw.path.read_bytes()
    with pytest.raises(DatabaseTooNew):
        await raw.storage().open()
    assert raw.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["veil.sqlite3"]


async def test_sqlite_refusal_leaves_a_crashed_writers_wal_unapplied(tmp_path: Path):
    """A newer Veil killed after its commit leaves that commit in the WAL. The refusal
    reads it (so refuses) but never checkpoints it into the file, as closing a
    read-write connection would."""
    raw = RawSQLite(tmp_path / "veil.sqlite3")
    await fresh_with_data(raw)
    crash = (
        "import os, sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('PRAGMA wal_autocheckpoint=0')\n"
        "conn.execute('UPDATE schema_compat_version SET compat_version = ?', "
        "(int(sys.argv[2]),))\n"
        "os._exit(0)\n"  # no close: the commit stays in the WAL
    )
    subprocess.run([sys.executable, "-c", crash, str(raw.path), str(SCHEMA_VERSION + 1)],
                   check=True, timeout=60)
    wal = raw.path.with_name(raw.path.name + "-wal")
    assert wal.stat().st_size > 0
    before = raw.path.read_bytes(), wal.read_bytes()
    with pytest.raises(DatabaseTooNew):
        await raw.storage().open()
    assert (raw.path.read_bytes(), wal.read_bytes()) == before


async def test_sqlite_empty_bookkeeping_left_by_the_released_code_is_completed(
    tmp_path: Path,
):
    """The released code created schema_migrations in a transaction of its own before
    migration 1: a crash in between left the table empty, and that database starts."""
    raw = RawSQLite(tmp_path / "veil.sqlite3")
    await raw.execute(schema_v1.SQLITE_BOOKKEEPING)
    storage = raw.storage()
    await storage.open()
    await storage.close()
    assert await raw.describe() == declared("sqlite")


def test_refusal_names_the_database_and_the_way_out():
    with pytest.raises(DatabaseTooNew, match=re.escape(
            "the database in /srv/veil was written by a newer Veil (schema 9, needs at "
            "least 7); upgrade Veil or use another data directory")):
        migrations.check(DatabaseState(9, 7), "/srv/veil", "another data directory")
    assert migrations.check(DatabaseState(9, SCHEMA_VERSION), "x", "y") == []
    assert migrations.check(DatabaseState(1, 0), "x", "y") == list(UPGRADES)


def test_compat_version_is_written_once_and_only_ever_raised():
    def compat_writes(state: DatabaseState) -> list[tuple[object, ...]]:
        return [args for sql, args in migrations.plan(state, "sqlite", NOW, "x", "y")
                if "schema_compat_version VALUES" in sql]

    assert compat_writes(DatabaseState(0, 0)) == [(SCHEMA_COMPAT_VERSION,)]
    assert compat_writes(DatabaseState(1, 0, True)) == [(SCHEMA_COMPAT_VERSION,)]
    assert compat_writes(DatabaseState(SCHEMA_VERSION, SCHEMA_COMPAT_VERSION, True)) == []
    # Newer compatible code said more than this code would: left as it is.
    assert compat_writes(DatabaseState(SCHEMA_VERSION + 1, SCHEMA_VERSION, True)) == []
    assert migrations.plan(DatabaseState(SCHEMA_VERSION + 1, SCHEMA_VERSION, True),
                           "postgres", NOW, "x", "y") == []


def test_versions_are_consistent():
    assert sorted(NAMES) == list(range(1, SCHEMA_VERSION + 1))
    assert [u.version for u in UPGRADES] == list(range(2, SCHEMA_VERSION + 1))
    assert all(u.name == NAMES[u.version] for u in UPGRADES)
    assert 1 <= SCHEMA_COMPAT_VERSION <= SCHEMA_VERSION


# ---- the declaration itself --------------------------------------------------------

def test_tables_come_after_what_they_reference():
    seen: set[str] = set()
    for table in TABLES:
        assert {fk.table for fk in table.foreign_keys} <= seen, table.name
        seen.add(table.name)


def test_every_table_naming_an_account_declares_it():
    """Erasure deletes by the declared owner columns; a column that looks like an
    account id in a table without an owner would be missed."""
    for table in TABLES:
        names = {c.name for c in table.columns}
        if "account_id" in names:
            assert table.account == "account_id", table.name
        if "device_id" in names:
            assert table.device == "device_id", table.name
        for column in (table.account, table.device):
            assert column is None or column in names


def test_rendered_ddl_uses_each_dialects_types():
    sqlite, postgres = create_statements("sqlite"), create_statements("postgres")
    envelopes = next(s for s in sqlite if s.startswith("CREATE TABLE envelopes"))
    assert "id INTEGER PRIMARY KEY AUTOINCREMENT" in envelopes
    assert "WITHOUT ROWID" not in envelopes
    assert "BIGSERIAL" in next(s for s in postgres if s.startswith("CREATE TABLE envelopes"))
    assert all("BLOB" not in s for s in postgres) and all("BYTEA" not in s for s in sqlite)
    assert Type.BOOL.spelled("postgres") == "BOOLEAN"


def test_erasure_statements_cover_every_owned_table():
    owned = [t.name for t in TABLES if t.account]
    account = erase_statements("account", "sqlite")
    assert [s.split()[2] for s in account] == owned[::-1]  # children first
    device = erase_statements("device", "postgres")
    assert [s.split()[2] for s in device] == [t.name for t in TABLES if t.device][::-1]
    assert all(s.endswith("= $1 AND device_id = $2") for s in device)
