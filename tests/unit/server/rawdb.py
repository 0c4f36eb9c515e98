"""Direct access to a test database of either back end, beside the storage under test.

The tests use it to build databases as other code would have left them (the released
version 1, a newer Veil), to read every row of every table, and to describe the schema
the database really has (SQLite pragmas; PostgreSQL's catalogue), normalised so that
it can be compared with what ``veil.server.storage.schema`` declares.
"""

from __future__ import annotations

import abc
import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from veil.server.storage.base import Storage
from veil.server.storage.schema import TABLES, Dialect, Type
from veil.server.storage.sqlite import SQLiteStorage

# table -> {"columns": [(name, type, not null, default)], "primary_key": (...),
#           "unique": {(...)}, "indexes": {name: (...)}, "foreign_keys": {(...)}, ...}
Description = dict[str, dict[str, Any]]
Rows = dict[str, list[dict[str, Any]]]


class RawDatabase(abc.ABC):
    dialect: Dialect
    # How an upgrade should say where the database is ("in …" of DatabaseTooNew).
    where: str

    @abc.abstractmethod
    def storage(self) -> Storage:
        """A new, unopened storage on this database."""

    @abc.abstractmethod
    async def execute(self, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
        """Run statements (``?`` placeholders) in one transaction."""

    @abc.abstractmethod
    async def rows(self) -> Rows:
        """Every row of every table, as column -> value."""

    @abc.abstractmethod
    async def describe(self) -> Description: ...

    @abc.abstractmethod
    async def snapshot(self) -> object:
        """Something equal before and after only if nothing in the database changed."""


class RawSQLite(RawDatabase):
    dialect: Dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path.parent)

    def storage(self) -> Storage:
        return SQLiteStorage(self.path)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None)

    async def execute(self, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in statements:
                sql, args = (item, ()) if isinstance(item, str) else item
                conn.execute(sql, args)
            conn.execute("COMMIT")
        finally:
            conn.close()

    async def rows(self) -> Rows:
        conn = self._connect()
        try:
            out: Rows = {}
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                cur = conn.execute(f'SELECT * FROM "{table}"')
                names = [d[0] for d in cur.description]
                out[table] = [dict(zip(names, row, strict=True)) for row in cur]
            return out
        finally:
            conn.close()

    async def describe(self) -> Description:
        conn = self._connect()
        try:
            return {
                table: _describe_sqlite_table(conn, table, sql)
                for table, sql in conn.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'")
            }
        finally:
            conn.close()

    async def snapshot(self) -> object:
        return self.path.read_bytes()


def _describe_sqlite_table(conn: sqlite3.Connection, table: str, sql: str) -> dict[str, Any]:
    info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
    unique, indexes = set(), {}
    for _, name, is_unique, origin, _ in conn.execute(f'PRAGMA index_list("{table}")'):
        columns = tuple(r[2] for r in conn.execute(f'PRAGMA index_info("{name}")'))
        if origin == "u":
            unique.add(columns)
        elif origin == "c":
            indexes[name] = (columns, bool(is_unique))
    fks: dict[int, list[Any]] = {}
    for fk_id, _, parent, src, dst, _, on_delete, _ in conn.execute(
            f'PRAGMA foreign_key_list("{table}")'):
        entry = fks.setdefault(fk_id, [[], parent, [], on_delete])
        entry[0].append(src)
        entry[2].append(dst)
    upper = sql.upper()
    return {
        "columns": [(c[1], c[2].upper(), bool(c[3]), c[4]) for c in info],
        "primary_key": tuple(c[1] for c in sorted(info, key=lambda c: c[5]) if c[5]),
        "unique": unique,
        "indexes": indexes,
        "foreign_keys": {(tuple(a), p, tuple(b), d) for a, p, b, d in fks.values()},
        "without_rowid": "WITHOUT ROWID" in upper,
        "autoincrement": "AUTOINCREMENT" in upper,
    }


class RawPostgres(RawDatabase):
    dialect: Dialect = "postgres"

    def __init__(self, dsn: str, schema: str, conn: Any) -> None:
        self.dsn, self.schema, self.conn = dsn, schema, conn
        url = urlsplit(dsn)  # the message names host, port, database and schema only
        port = f":{url.port}" if url.port else ""
        self.where = f"postgresql://{url.hostname}{port}{url.path} (schema {schema})"

    def storage(self) -> Storage:
        from veil.server.storage.postgres import PostgresStorage

        return PostgresStorage(self.dsn, schema=self.schema)

    async def execute(self, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
        async with self.conn.transaction():
            for item in statements:
                sql, args = (item, ()) if isinstance(item, str) else item
                await self.conn.execute(_numbered(sql), *args)

    async def _tables(self) -> list[str]:
        return [r[0] for r in await self.conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 "
            "AND table_type = 'BASE TABLE' ORDER BY table_name", self.schema)]

    async def rows(self) -> Rows:
        return {t: [dict(r) for r in await self.conn.fetch(f'SELECT * FROM "{t}"')]
                for t in await self._tables()}

    async def snapshot(self) -> object:
        described = await self.describe()
        rows = await self.rows()
        return described, {t: sorted(map(repr, r)) for t, r in rows.items()}

    async def describe(self) -> Description:
        out: Description = {}
        for table in await self._tables():
            columns = await self.conn.fetch(
                "SELECT column_name, data_type, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 "
                "ORDER BY ordinal_position", self.schema, table)
            constraints = await self.conn.fetch(
                "SELECT c.contype::text, pg_get_constraintdef(c.oid) FROM pg_constraint c "
                "WHERE c.conrelid = $1::regclass", f"{self.schema}.{table}")
            indexes = await self.conn.fetch(
                "SELECT i.relname, ix.indisunique, ARRAY(SELECT a.attname FROM "
                "unnest(ix.indkey) WITH ORDINALITY k(attnum, n) JOIN pg_attribute a "
                "ON a.attrelid = ix.indrelid AND a.attnum = k.attnum ORDER BY k.n) "
                "FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid "
                "WHERE ix.indrelid = $1::regclass AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid)",
                f"{self.schema}.{table}")
            pk: tuple[str, ...] = ()
            unique, fks = set(), set()
            for kind, definition in constraints:
                if kind == "p":
                    pk = _names(definition)
                elif kind == "u":
                    unique.add(_names(definition))
                elif kind == "f":
                    m = re.fullmatch(r"FOREIGN KEY \((.*?)\) REFERENCES (\w+)\((.*?)\)(.*)",
                                     definition)
                    assert m is not None, definition
                    on_delete = "CASCADE" if "ON DELETE CASCADE" in m[4] else "NO ACTION"
                    fks.add((_split(m[1]), m[2], _split(m[3]), on_delete))
            out[table] = {
                "columns": [(c[0], c[1].upper(), c[2] == "NO", _pg_default(c[3]))
                            for c in columns],
                "primary_key": pk,
                "unique": unique,
                "indexes": {r[0]: (tuple(r[2]), r[1]) for r in indexes},
                "foreign_keys": fks,
            }
        return out


def _numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...``."""
    first, *rest = sql.split("?")
    return first + "".join(f"${i}{part}" for i, part in enumerate(rest, 1))


def _split(names: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in names.split(","))


def _names(definition: str) -> tuple[str, ...]:
    m = re.search(r"\((.*?)\)", definition)
    assert m is not None, definition
    return _split(m[1])


def _pg_default(default: str | None) -> str | None:
    if default is not None and default.startswith("nextval("):
        return "nextval"
    return default


def declared(dialect: Dialect) -> Description:
    """What the declaration says each back end's catalogue should show."""
    out: Description = {}
    for table in TABLES:
        columns = []
        for c in table.columns:
            alias = dialect == "sqlite" and table.rowid and table.primary_key == (c.name,)
            spelled = c.type.spelled(dialect)
            default: str | None = None
            if c.type is Type.SERIAL and dialect == "postgres":
                spelled, default = "BIGINT", "nextval"
            elif isinstance(c.default, bool) and dialect == "postgres":
                default = "true" if c.default else "false"
            elif c.default is not None:
                default = str(int(c.default))
            not_null = not alias and (not c.nullable or c.name in table.primary_key)
            columns.append((c.name, spelled, not_null, default))
        entry: dict[str, Any] = {
            "columns": columns,
            "primary_key": table.primary_key,
            "unique": {(c.name,) for c in table.columns if c.unique},
            "indexes": {i.name: (i.columns, False) for i in table.indexes},
            "foreign_keys": {(fk.columns, fk.table, fk.referenced, "CASCADE")
                             for fk in table.foreign_keys},
        }
        if dialect == "sqlite":
            entry["without_rowid"] = not table.rowid
            entry["autoincrement"] = any(c.type is Type.SERIAL for c in table.columns)
        out[table.name] = entry
    return out


def naming(rows: Rows, needle: bytes | str) -> list[tuple[str, dict[str, Any]]]:
    """Every (table, row) with a value that contains ``needle``."""
    found = []
    for table, table_rows in rows.items():
        for row in table_rows:
            for value in row.values():
                if isinstance(value, memoryview):
                    value = bytes(value)
                if isinstance(value, type(needle)) and needle in value:
                    found.append((table, row))
                    break
    return found
