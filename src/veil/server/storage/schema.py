"""The server's tables, declared once and rendered as SQLite and PostgreSQL DDL.

Both back ends create a fresh database from :data:`TABLES` (``create_statements``);
databases written by earlier code reach the same shape through the upgrade steps of
``storage/migrations.py``. ``tests/unit/server/test_schema.py`` introspects both real
databases, fresh and upgraded, and compares them with this declaration.

Each table also says which of its columns name the owning account and device
(``account``, ``device``): ``delete_account`` and ``delete_device`` erase by them
(``erase_statements``), so a new table that holds an account's data is erased as soon
as it declares its owner. A table without an owner holds no account's data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

Dialect = Literal["sqlite", "postgres"]
Scope = Literal["account", "device"]


class Type(enum.Enum):
    """Logical column types and how each dialect spells them."""

    BYTES = ("BLOB", "BYTEA")
    TEXT = ("TEXT", "TEXT")
    BOOL = ("INTEGER", "BOOLEAN")  # SQLite stores 0 or 1
    INT16 = ("INTEGER", "SMALLINT")
    INT32 = ("INTEGER", "INTEGER")
    INT64 = ("INTEGER", "BIGINT")
    FLOAT = ("REAL", "DOUBLE PRECISION")  # 8-byte IEEE in both
    # Increasing ids that are never reused, even after deletion: SQLite's AUTOINCREMENT
    # (plain rowids may reuse the highest one) and a PostgreSQL sequence.
    SERIAL = ("INTEGER", "BIGSERIAL")

    def spelled(self, dialect: Dialect) -> str:
        return self.value[0] if dialect == "sqlite" else self.value[1]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: Type
    nullable: bool = False
    default: bool | int | None = None
    unique: bool = False


@dataclass(frozen=True, slots=True)
class ForeignKey:
    """Always ``ON DELETE CASCADE``: a child row never outlives what it belongs to."""

    columns: tuple[str, ...]
    table: str
    referenced: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    indexes: tuple[Index, ...] = ()
    account: str | None = None  # the column naming the owning account
    device: str | None = None  # with ``account``, the column naming the owning device

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def rowid(self) -> bool:
        """Whether SQLite keeps it as a rowid table: a single integer primary key is the
        rowid itself; any other key is stored best ``WITHOUT ROWID`` (one B-tree)."""
        return len(self.primary_key) == 1 and self.column(self.primary_key[0]).type in (
            Type.INT16, Type.INT32, Type.INT64, Type.SERIAL)


# Bookkeeping: which upgrade steps ran, and the oldest code that may use the database.
SCHEMA_MIGRATIONS = Table("schema_migrations", (
    Column("version", Type.INT32),
    Column("name", Type.TEXT),
    Column("applied_at", Type.INT64),
), primary_key=("version",))

SCHEMA_COMPAT_VERSION = Table("schema_compat_version", (
    Column("id", Type.INT32),  # always 1: the table has one row
    Column("compat_version", Type.INT32),
), primary_key=("id",))

ACCOUNTS = Table("accounts", (
    Column("id", Type.BYTES),
    Column("username", Type.TEXT, nullable=True, unique=True),
    Column("access_key", Type.BYTES, nullable=True),
    Column("unrestricted_sealed", Type.BOOL, default=False),
    Column("created_at", Type.INT64),
), primary_key=("id",), account="id")

DEVICES = Table("devices", (
    Column("account_id", Type.BYTES),
    Column("device_id", Type.INT32),
    Column("registration_id", Type.INT32),
    Column("token_hash", Type.BYTES),
    Column("identity_key", Type.BYTES),
    Column("signed_prekey", Type.BYTES, nullable=True),
    Column("last_resort_kem_prekey", Type.BYTES, nullable=True),
    Column("created_at", Type.INT64),
    # Linked devices (schema 4): the identity-signed approval (veil.core.devices),
    # opaque to the server; NULL for first devices registered before approvals.
    Column("approval", Type.BYTES, nullable=True),
), primary_key=("account_id", "device_id"),
    foreign_keys=(ForeignKey(("account_id",), "accounts", ("id",)),),
    account="account_id", device="device_id")

ONE_TIME_PREKEYS = Table("one_time_prekeys", (
    Column("account_id", Type.BYTES),
    Column("device_id", Type.INT32),
    Column("kind", Type.INT16),
    Column("key_id", Type.INT64),
    Column("key", Type.BYTES),
), primary_key=("account_id", "device_id", "kind", "key_id"),
    foreign_keys=(ForeignKey(("account_id", "device_id"), "devices",
                             ("account_id", "device_id")),),
    account="account_id", device="device_id")

# No foreign key to devices on purpose: every submission would pay for its check.
# The envelope has no sender column (sealed sender: routed by recipient only).
ENVELOPES = Table("envelopes", (
    Column("id", Type.SERIAL),
    Column("account_id", Type.BYTES),
    Column("device_id", Type.INT32),
    Column("ts", Type.INT64),
    Column("body", Type.BYTES),
), primary_key=("id",),
    # ``ts`` is when the envelope was stored (ms); envelopes_by_ts (schema 5) lets the
    # retention job find the expired ones without reading the whole queue.
    indexes=(Index("envelopes_by_device", ("account_id", "device_id", "id")),
             Index("envelopes_by_ts", ("ts",))),
    account="account_id", device="device_id")

# Minted by the operator, consumed at registration: an invite never names an account.
INVITES = Table("invites", (
    Column("token_hash", Type.BYTES),
    Column("expires_at", Type.INT64),
), primary_key=("token_hash",))

# MLS KeyPackages a device published (issue 11 §1): one-time ones are deleted when
# claimed; at most one last-resort one per device and cipher suite stays. ``ref`` is the
# KeyPackageRef (RFC 9420 §5.2); ``not_after`` the end of its lifetime (seconds).
MLS_KEY_PACKAGES = Table("mls_key_packages", (
    Column("account_id", Type.BYTES),
    Column("device_id", Type.INT32),
    Column("ref", Type.BYTES),
    Column("cipher_suite", Type.INT32),
    Column("last_resort", Type.BOOL, default=False),
    Column("not_after", Type.INT64),
    Column("key_package", Type.BYTES),
), primary_key=("account_id", "device_id", "ref"),
    foreign_keys=(ForeignKey(("account_id", "device_id"), "devices",
                             ("account_id", "device_id")),),
    account="account_id", device="device_id")

# Group mailboxes (the MLS Delivery Service). A group is a random id and an epoch; no
# column names an account, a device or a sender. ``write_verifier`` is SHA-256 of the
# current epoch's write capability; ``next_seq`` only grows (sequence numbers are never
# reused, even after expiry); the counts back the quotas.
GROUPS = Table("mls_groups", (
    Column("id", Type.BYTES),
    Column("epoch", Type.INT64),
    Column("write_verifier", Type.BYTES),
    Column("next_seq", Type.INT64),
    Column("message_count", Type.INT64),
    Column("byte_count", Type.INT64),
    Column("created_at", Type.INT64),
    Column("last_active", Type.INT64),
), primary_key=("id",))

# SHA-256 of each kept epoch's read capability. The primary key is also what makes a
# commit first-wins: the commit that ends epoch e inserts the row of epoch e + 1.
GROUP_EPOCHS = Table("group_epochs", (
    Column("group_id", Type.BYTES),
    Column("epoch", Type.INT64),
    Column("read_verifier", Type.BYTES),
), primary_key=("group_id", "epoch"),
    foreign_keys=(ForeignKey(("group_id",), "mls_groups", ("id",)),))

# One row per group message (not per member); ``is_commit`` marks the commit that ends
# its epoch. The body is the opaque MLS message.
GROUP_MESSAGES = Table("group_messages", (
    Column("group_id", Type.BYTES),
    Column("seq", Type.INT64),
    Column("epoch", Type.INT64),
    Column("ts", Type.INT64),
    Column("is_commit", Type.BOOL, default=False),
    Column("size", Type.INT32),
    Column("body", Type.BYTES),
), primary_key=("group_id", "seq"),
    foreign_keys=(ForeignKey(("group_id",), "mls_groups", ("id",)),),
    indexes=(Index("group_messages_by_ts", ("ts",)),
             Index("group_messages_by_epoch", ("group_id", "epoch", "seq"))))

# --- linked devices (schema 4) ---------------------------------------------------------
# Anonymous provisioning channels (docs/devices.md): a new device's ephemeral public
# key and, once the approving device posted it, one opaque encrypted message. No column
# names an account or device; rows expire after minutes and go after one read.
PROVISIONING_CHANNELS = Table("provisioning_channels", (
    Column("id", Type.BYTES),
    Column("public_key", Type.BYTES),
    Column("message", Type.BYTES, nullable=True),
    Column("created_at", Type.INT64),
    Column("expires_at", Type.INT64),
), primary_key=("id",), indexes=(Index("provisioning_by_expiry", ("expires_at",)),))
# --- end of linked devices -------------------------------------------------------------

# --- protection layers (schema 6, issue 13) ----------------------------------------------
# None of these tables names an account or a device: the audit log holds identifiers only
# as keyed hashes, and the rest is keyed by client addresses.
#
# The tamper-evident audit log (issue 13 §5, protection/audit.py): ``fields`` is the
# canonical JSON text exactly as hashed (TEXT, not JSONB, which would reorder it);
# ``hash`` is SHA-256 of ``prev_hash`` and the canonical encoding of the record.
AUDIT_RECORDS = Table("audit_records", (
    Column("seq", Type.INT64),
    Column("at_ms", Type.INT64),
    Column("kind", Type.TEXT),
    Column("fields", Type.TEXT),
    Column("prev_hash", Type.BYTES),
    Column("hash", Type.BYTES),
), primary_key=("seq",))

# The chain head at ``seq`` signed with the server key (Ed25519) named by ``key_id``.
AUDIT_CHECKPOINTS = Table("audit_checkpoints", (
    Column("seq", Type.INT64),
    Column("hash", Type.BYTES),
    Column("at_ms", Type.INT64),
    Column("signature", Type.BYTES),
    Column("key_id", Type.TEXT),
), primary_key=("seq",))

# Blocks in force (detection layer). ``address_key`` is the raw address key (an IPv4
# address or an IPv6 /64), kept so a block still applies after a restart; the row goes
# when the block ends or is lifted. ``key_hash`` is its keyed hash, what operators see.
PROTECTION_BLOCKS = Table("protection_blocks", (
    Column("block_id", Type.TEXT),
    Column("address_key", Type.TEXT),
    Column("key_hash", Type.TEXT),
    Column("rule", Type.TEXT),
    Column("since_ms", Type.INT64),
    Column("until_ms", Type.INT64),
    Column("count", Type.INT32),
), primary_key=("block_id",), indexes=(Index("protection_blocks_by_until", ("until_ms",)),))

# Network rules added at run time (``veil admin deny``), on top of the config file's.
NETWORK_RULES = Table("network_rules", (
    Column("cidr", Type.TEXT),
    Column("action", Type.TEXT),  # 'deny' or 'allow'
    Column("at_ms", Type.INT64),
), primary_key=("cidr",))

# Token buckets that must hold across a restart (registration): one row per key of a
# bucket table ``name``, replaced as a whole by each save.
LIMITER_STATE = Table("limiter_state", (
    Column("name", Type.TEXT),
    Column("key", Type.TEXT),
    Column("tokens", Type.FLOAT),
    Column("updated_ms", Type.INT64),
), primary_key=("name", "key"))
# --- end of protection layers ------------------------------------------------------------

# In dependency order: a table comes after every table it references.
TABLES: tuple[Table, ...] = (
    SCHEMA_MIGRATIONS, SCHEMA_COMPAT_VERSION, ACCOUNTS, DEVICES, ONE_TIME_PREKEYS,
    ENVELOPES, INVITES, MLS_KEY_PACKAGES, GROUPS, GROUP_EPOCHS, GROUP_MESSAGES,
    PROVISIONING_CHANNELS, AUDIT_RECORDS, AUDIT_CHECKPOINTS, PROTECTION_BLOCKS,
    NETWORK_RULES, LIMITER_STATE,
)
PROTECTION_TABLES: tuple[Table, ...] = (
    AUDIT_RECORDS, AUDIT_CHECKPOINTS, PROTECTION_BLOCKS, NETWORK_RULES, LIMITER_STATE)
GROUP_TABLES: tuple[Table, ...] = (GROUPS, GROUP_EPOCHS, GROUP_MESSAGES)


def _column_sql(table: Table, column: Column, dialect: Dialect) -> str:
    parts = [column.name, column.type.spelled(dialect)]
    rowid_alias = dialect == "sqlite" and table.rowid and table.primary_key == (column.name,)
    if rowid_alias:
        # SQLite's rowid alias is written as a column constraint; it is never NULL (a
        # NULL insert picks the next id), and saying NOT NULL would change nothing.
        parts.append("PRIMARY KEY")
        if column.type is Type.SERIAL:
            parts.append("AUTOINCREMENT")
    elif not column.nullable:
        parts.append("NOT NULL")
    if column.default is not None:
        if isinstance(column.default, bool) and dialect == "postgres":
            parts.append("DEFAULT " + ("TRUE" if column.default else "FALSE"))
        else:
            parts.append(f"DEFAULT {int(column.default)}")
    if column.unique:
        parts.append("UNIQUE")
    return " ".join(parts)


def create_table(table: Table, dialect: Dialect) -> str:
    lines = [_column_sql(table, c, dialect) for c in table.columns]
    if not (dialect == "sqlite" and table.rowid):
        lines.append(f"PRIMARY KEY ({', '.join(table.primary_key)})")
    for fk in table.foreign_keys:
        lines.append(f"FOREIGN KEY ({', '.join(fk.columns)}) REFERENCES "
                     f"{fk.table}({', '.join(fk.referenced)}) ON DELETE CASCADE")
    suffix = " WITHOUT ROWID" if dialect == "sqlite" and not table.rowid else ""
    body = ",\n    ".join(lines)
    return f"CREATE TABLE {table.name} (\n    {body}\n){suffix}"


def create_statements(dialect: Dialect, tables: tuple[Table, ...] = TABLES) -> list[str]:
    """Every statement that creates ``tables`` (all of them by default) and indexes."""
    statements = []
    for table in tables:
        statements.append(create_table(table, dialect))
        statements.extend(
            f"CREATE INDEX {index.name} ON {table.name}({', '.join(index.columns)})"
            for index in table.indexes
        )
    return statements


def erase_statements(scope: Scope, dialect: Dialect) -> list[str]:
    """``DELETE`` statements removing every row of one account, or of one of its devices.

    Parameters: the account id, then (scope ``device``) the device id. Children come
    before the tables they reference, so the result does not rely on ``ON DELETE
    CASCADE`` being enforced (SQLite enforces it only with ``PRAGMA foreign_keys``).
    """
    first, second = ("?", "?") if dialect == "sqlite" else ("$1", "$2")
    statements = []
    for table in reversed(TABLES):
        if table.account is None:
            continue
        where = f"{table.account} = {first}"
        if scope == "device":
            if table.device is None:
                continue
            where += f" AND {table.device} = {second}"
        # Names come from the declaration above, never from input.
        statements.append(f"DELETE FROM {table.name} WHERE {where}")  # noqa: S608
    return statements

__all__ = [
    "AUDIT_CHECKPOINTS",
    "AUDIT_RECORDS",
    "GROUP_TABLES",
    "LIMITER_STATE",
    "MLS_KEY_PACKAGES",
    "NETWORK_RULES",
    "PROTECTION_BLOCKS",
    "PROTECTION_TABLES",
    "PROVISIONING_CHANNELS",
    "SCHEMA_MIGRATIONS",
    "TABLES",
    "Dialect",
    "Scope",
    "Type",
    "create_statements",
    "erase_statements",
]
