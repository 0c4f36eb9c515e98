"""Schema versions of both back ends: what this code writes, what it can still read.

The model is Synapse's ``SCHEMA_VERSION`` / ``SCHEMA_COMPAT_VERSION``:

- :data:`SCHEMA_VERSION` is the schema this code creates and upgrades to;
- :data:`SCHEMA_COMPAT_VERSION` is the oldest code (named by the ``SCHEMA_VERSION`` it
  was built with) that can still use a database this code has written. Raise it when a
  change would break older code (a column it does not fill, a meaning it does not know).

A database records its version (``MAX(version)`` of ``schema_migrations``, one row per
step) and its compat version (``schema_compat_version``, only ever raised). On start a
back end reads both before it writes anything (:func:`check`): a database whose compat
version is above this code's ``SCHEMA_VERSION`` is refused (:class:`DatabaseTooNew`)
and left as it was; one from newer but compatible code is used as it is; an older one
is upgraded step by step, in one transaction. An empty database gets the declared
schema (``storage/schema.py``) at once, with a row for every version.

Never edit a released step: add the next version, with SQL for both dialects, and
update the declaration to the result (tests/unit/server/test_schema.py checks that an
upgraded database and a fresh one agree, on both back ends).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from veil.server.errors import DatabaseTooNew
from veil.server.storage.schema import SCHEMA_MIGRATIONS, TABLES, Dialect, create_statements

log = logging.getLogger("veil.server.storage")

SCHEMA_VERSION = 6
# 3: code before it would leave an erased device's KeyPackages behind.
SCHEMA_COMPAT_VERSION = 3


@dataclass(frozen=True, slots=True)
class Upgrade:
    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


# What each version is, for the schema_migrations rows (fresh databases get them all).
NAMES: dict[int, str] = {
    1: "accounts, devices, prekeys, envelopes, invites",
    2: "schema_compat_version: the oldest code that may use the database",
    3: "MLS delivery service: mls_key_packages, mls_groups, group_epochs, group_messages",
    4: "linked devices: devices.approval, provisioning_channels",
    5: "retention: envelopes_by_ts (queued envelopes expire)",
    6: "protection layers: audit_records, audit_checkpoints, protection_blocks, "
       "network_rules, limiter_state",
}

# Steps from version 1, the first released schema (databases before it are empty).
UPGRADES: tuple[Upgrade, ...] = (
    Upgrade(
        2, NAMES[2],
        sqlite=(
            "CREATE TABLE schema_compat_version (id INTEGER PRIMARY KEY, "
            "compat_version INTEGER NOT NULL)",
        ),
        postgres=(
            "CREATE TABLE schema_compat_version (id INTEGER NOT NULL, "
            "compat_version INTEGER NOT NULL, PRIMARY KEY (id))",
        ),
    ),
    Upgrade(
        3, NAMES[3],
        sqlite=(
            "CREATE TABLE mls_key_packages (account_id BLOB NOT NULL, device_id INTEGER "
            "NOT NULL, ref BLOB NOT NULL, cipher_suite INTEGER NOT NULL, last_resort "
            "INTEGER NOT NULL DEFAULT 0, not_after INTEGER NOT NULL, key_package BLOB NOT "
            "NULL, PRIMARY KEY (account_id, device_id, ref), FOREIGN KEY (account_id, "
            "device_id) REFERENCES devices(account_id, device_id) ON DELETE CASCADE) "
            "WITHOUT ROWID",
            "CREATE TABLE mls_groups (id BLOB NOT NULL, epoch INTEGER NOT NULL, "
            "write_verifier BLOB NOT NULL, next_seq INTEGER NOT NULL, message_count "
            "INTEGER NOT NULL, byte_count INTEGER NOT NULL, created_at INTEGER NOT NULL, "
            "last_active INTEGER NOT NULL, PRIMARY KEY (id)) WITHOUT ROWID",
            "CREATE TABLE group_epochs (group_id BLOB NOT NULL, epoch INTEGER NOT NULL, "
            "read_verifier BLOB NOT NULL, PRIMARY KEY (group_id, epoch), FOREIGN KEY "
            "(group_id) REFERENCES mls_groups(id) ON DELETE CASCADE) WITHOUT ROWID",
            "CREATE TABLE group_messages (group_id BLOB NOT NULL, seq INTEGER NOT NULL, "
            "epoch INTEGER NOT NULL, ts INTEGER NOT NULL, is_commit INTEGER NOT NULL "
            "DEFAULT 0, size INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (group_id, "
            "seq), FOREIGN KEY (group_id) REFERENCES mls_groups(id) ON DELETE CASCADE) "
            "WITHOUT ROWID",
            "CREATE INDEX group_messages_by_ts ON group_messages(ts)",
            "CREATE INDEX group_messages_by_epoch ON group_messages(group_id, epoch, seq)",
        ),
        postgres=(
            "CREATE TABLE mls_key_packages (account_id BYTEA NOT NULL, device_id INTEGER "
            "NOT NULL, ref BYTEA NOT NULL, cipher_suite INTEGER NOT NULL, last_resort "
            "BOOLEAN NOT NULL DEFAULT FALSE, not_after BIGINT NOT NULL, key_package BYTEA "
            "NOT NULL, PRIMARY KEY (account_id, device_id, ref), FOREIGN KEY (account_id, "
            "device_id) REFERENCES devices(account_id, device_id) ON DELETE CASCADE)",
            "CREATE TABLE mls_groups (id BYTEA NOT NULL, epoch BIGINT NOT NULL, "
            "write_verifier BYTEA NOT NULL, next_seq BIGINT NOT NULL, message_count BIGINT "
            "NOT NULL, byte_count BIGINT NOT NULL, created_at BIGINT NOT NULL, last_active "
            "BIGINT NOT NULL, PRIMARY KEY (id))",
            "CREATE TABLE group_epochs (group_id BYTEA NOT NULL, epoch BIGINT NOT NULL, "
            "read_verifier BYTEA NOT NULL, PRIMARY KEY (group_id, epoch), FOREIGN KEY "
            "(group_id) REFERENCES mls_groups(id) ON DELETE CASCADE)",
            "CREATE TABLE group_messages (group_id BYTEA NOT NULL, seq BIGINT NOT NULL, "
            "epoch BIGINT NOT NULL, ts BIGINT NOT NULL, is_commit BOOLEAN NOT NULL DEFAULT "
            "FALSE, size INTEGER NOT NULL, body BYTEA NOT NULL, PRIMARY KEY (group_id, "
            "seq), FOREIGN KEY (group_id) REFERENCES mls_groups(id) ON DELETE CASCADE)",
            "CREATE INDEX group_messages_by_ts ON group_messages(ts)",
            "CREATE INDEX group_messages_by_epoch ON group_messages(group_id, epoch, seq)",
        ),
    ),
    # Linked devices (docs/devices.md). Code of schema 3 can still use the result: it
    # never reads the new column or table.
    Upgrade(
        4, NAMES[4],
        sqlite=(
            "ALTER TABLE devices ADD COLUMN approval BLOB",
            "CREATE TABLE provisioning_channels (id BLOB NOT NULL, public_key BLOB NOT "
            "NULL, message BLOB, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, "
            "PRIMARY KEY (id)) WITHOUT ROWID",
            "CREATE INDEX provisioning_by_expiry ON provisioning_channels(expires_at)",
        ),
        postgres=(
            "ALTER TABLE devices ADD COLUMN approval BYTEA",
            "CREATE TABLE provisioning_channels (id BYTEA NOT NULL, public_key BYTEA NOT "
            "NULL, message BYTEA, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, "
            "PRIMARY KEY (id))",
            "CREATE INDEX provisioning_by_expiry ON provisioning_channels(expires_at)",
        ),
    ),
    # Retention (issue 12 §4): the job deletes envelopes by their stored time. Code of
    # schema 3 and 4 can still use the result (an index it does not know of). SQLite
    # databases are also converted to incremental auto-vacuum once, outside this step
    # (``sqlite_retention.convert_auto_vacuum``: VACUUM cannot run in a transaction).
    Upgrade(
        5, NAMES[5],
        sqlite=("CREATE INDEX envelopes_by_ts ON envelopes(ts)",),
        postgres=("CREATE INDEX envelopes_by_ts ON envelopes(ts)",),
    ),
    # Protection layers (issue 13): the audit log, blocks, runtime network rules and
    # limiter state. Tables of their own, none naming an account: code of schema 3 to
    # 5 can still use the result (it never reads them).
    Upgrade(
        6, NAMES[6],
        sqlite=(
            "CREATE TABLE audit_records (seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, "
            "kind TEXT NOT NULL, fields TEXT NOT NULL, prev_hash BLOB NOT NULL, hash BLOB "
            "NOT NULL)",
            "CREATE TABLE audit_checkpoints (seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, "
            "at_ms INTEGER NOT NULL, signature BLOB NOT NULL, key_id TEXT NOT NULL)",
            "CREATE TABLE protection_blocks (block_id TEXT NOT NULL, address_key TEXT NOT "
            "NULL, key_hash TEXT NOT NULL, rule TEXT NOT NULL, since_ms INTEGER NOT NULL, "
            "until_ms INTEGER NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (block_id)) "
            "WITHOUT ROWID",
            "CREATE INDEX protection_blocks_by_until ON protection_blocks(until_ms)",
            "CREATE TABLE network_rules (cidr TEXT NOT NULL, action TEXT NOT NULL, at_ms "
            "INTEGER NOT NULL, PRIMARY KEY (cidr)) WITHOUT ROWID",
            "CREATE TABLE limiter_state (name TEXT NOT NULL, key TEXT NOT NULL, tokens "
            "REAL NOT NULL, updated_ms INTEGER NOT NULL, PRIMARY KEY (name, key)) "
            "WITHOUT ROWID",
        ),
        postgres=(
            "CREATE TABLE audit_records (seq BIGINT NOT NULL, at_ms BIGINT NOT NULL, kind "
            "TEXT NOT NULL, fields TEXT NOT NULL, prev_hash BYTEA NOT NULL, hash BYTEA NOT "
            "NULL, PRIMARY KEY (seq))",
            "CREATE TABLE audit_checkpoints (seq BIGINT NOT NULL, hash BYTEA NOT NULL, "
            "at_ms BIGINT NOT NULL, signature BYTEA NOT NULL, key_id TEXT NOT NULL, "
            "PRIMARY KEY (seq))",
            "CREATE TABLE protection_blocks (block_id TEXT NOT NULL, address_key TEXT NOT "
            "NULL, key_hash TEXT NOT NULL, rule TEXT NOT NULL, since_ms BIGINT NOT NULL, "
            "until_ms BIGINT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (block_id))",
            "CREATE INDEX protection_blocks_by_until ON protection_blocks(until_ms)",
            "CREATE TABLE network_rules (cidr TEXT NOT NULL, action TEXT NOT NULL, at_ms "
            "BIGINT NOT NULL, PRIMARY KEY (cidr))",
            "CREATE TABLE limiter_state (name TEXT NOT NULL, key TEXT NOT NULL, tokens "
            "DOUBLE PRECISION NOT NULL, updated_ms BIGINT NOT NULL, PRIMARY KEY (name, "
            "key))",
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class DatabaseState:
    """What a database says about itself; ``version`` 0 is an empty database.

    ``bookkeeping``: whether ``schema_migrations`` exists (earlier SQLite code created
    it in a transaction of its own, so a crash could leave it empty and alone).
    """

    version: int
    compat_version: int
    bookkeeping: bool = False


Statement = tuple[str, tuple[object, ...]]


def check(state: DatabaseState, where: str, elsewhere: str) -> list[Upgrade]:
    """The steps to apply to a database in ``state``; raises DatabaseTooNew.

    ``where`` names the database in the message and ``elsewhere`` the way out ("another
    data directory", "another database").
    """
    if state.compat_version > SCHEMA_VERSION:
        raise DatabaseTooNew(
            f"the database in {where} was written by a newer Veil (schema "
            f"{state.version}, needs at least {state.compat_version}); upgrade Veil or "
            f"use {elsewhere}",
            state.version, state.compat_version,
        )
    return [step for step in UPGRADES if step.version > state.version]


_RECORD = {
    "sqlite": "INSERT INTO schema_migrations VALUES (?, ?, ?)",
    "postgres": "INSERT INTO schema_migrations VALUES ($1, $2, $3)",
}
_COMPAT = {
    "sqlite": "INSERT INTO schema_compat_version VALUES (1, ?) ON CONFLICT (id) "
              "DO UPDATE SET compat_version = excluded.compat_version",
    "postgres": "INSERT INTO schema_compat_version VALUES (1, $1) ON CONFLICT (id) "
                "DO UPDATE SET compat_version = excluded.compat_version",
}


def plan(
    state: DatabaseState, dialect: Dialect, now_ms: int, where: str, elsewhere: str
) -> list[Statement]:
    """Every statement (with its arguments) that brings the database to this code's
    schema, to run in one transaction; raises DatabaseTooNew."""
    steps = check(state, where, elsewhere)
    record = _RECORD[dialect]
    out: list[Statement] = []
    if state.version == 0:
        tables = tuple(t for t in TABLES
                       if not (state.bookkeeping and t is SCHEMA_MIGRATIONS))
        out += [(sql, ()) for sql in create_statements(dialect, tables)]
        out += [(record, (v, name, now_ms)) for v, name in sorted(NAMES.items())]
    else:
        for step in steps:
            out += [(sql, ()) for sql in (step.sqlite if dialect == "sqlite" else step.postgres)]
            out.append((record, (step.version, step.name, now_ms)))
    # Only ever raised: newer code may have set it higher than this code would.
    compat = max(state.compat_version, SCHEMA_COMPAT_VERSION)
    if compat != state.compat_version:
        out.append((_COMPAT[dialect], (compat,)))
    return out


def report(state: DatabaseState) -> None:
    """Log what opening a database in ``state`` did (after the commit)."""
    if state.version == 0:
        log.info("created the database at schema %d", SCHEMA_VERSION)
    elif state.version < SCHEMA_VERSION:
        log.info("upgraded the database from schema %d to %d", state.version, SCHEMA_VERSION)
    elif state.version > SCHEMA_VERSION:
        log.warning("the database is at schema %d, newer than this code's %d; it says code "
                    "of schema %d can use it", state.version, SCHEMA_VERSION,
                    state.compat_version)

__all__ = [
    "NAMES",
    "SCHEMA_COMPAT_VERSION",
    "SCHEMA_VERSION",
    "UPGRADES",
    "DatabaseState",
    "check",
    "plan",
    "report",
]
