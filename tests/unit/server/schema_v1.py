"""The first released schema (version 1), as the released code created it.

Copied from ``sqlite_migrations.py`` and ``postgres_migrations.py`` of that code, with
the bookkeeping table it made first, so the tests can build a database exactly as an
existing deployment has it and check that it upgrades to the declared schema.
"""

from __future__ import annotations

SQLITE_BOOKKEEPING = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
)
POSTGRES_BOOKKEEPING = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY "
    "KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
)
NAME = "accounts, devices, prekeys, envelopes, invites"

SQLITE = """
        CREATE TABLE accounts (
            id BLOB PRIMARY KEY,
            username TEXT UNIQUE,
            access_key BLOB,
            unrestricted_sealed INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL
        ) WITHOUT ROWID;

        CREATE TABLE devices (
            account_id BLOB NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            device_id INTEGER NOT NULL,
            registration_id INTEGER NOT NULL,
            token_hash BLOB NOT NULL,
            identity_key BLOB NOT NULL,
            signed_prekey BLOB,
            last_resort_kem_prekey BLOB,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (account_id, device_id)
        ) WITHOUT ROWID;

        CREATE TABLE one_time_prekeys (
            account_id BLOB NOT NULL,
            device_id INTEGER NOT NULL,
            kind INTEGER NOT NULL,
            key_id INTEGER NOT NULL,
            key BLOB NOT NULL,
            PRIMARY KEY (account_id, device_id, kind, key_id),
            FOREIGN KEY (account_id, device_id)
                REFERENCES devices(account_id, device_id) ON DELETE CASCADE
        ) WITHOUT ROWID;

        CREATE TABLE envelopes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            account_id BLOB NOT NULL,
            device_id INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            body BLOB NOT NULL
        );
        CREATE INDEX envelopes_by_device ON envelopes(account_id, device_id, id);

        CREATE TABLE invites (
            token_hash BLOB PRIMARY KEY,
            expires_at INTEGER NOT NULL
        ) WITHOUT ROWID;
"""

POSTGRES = """
        CREATE TABLE accounts (
            id BYTEA PRIMARY KEY,
            username TEXT UNIQUE,
            access_key BYTEA,
            unrestricted_sealed BOOLEAN NOT NULL DEFAULT FALSE,
            created_at BIGINT NOT NULL
        );
        CREATE TABLE devices (
            account_id BYTEA NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            device_id INTEGER NOT NULL,
            registration_id INTEGER NOT NULL,
            token_hash BYTEA NOT NULL,
            identity_key BYTEA NOT NULL,
            signed_prekey BYTEA,
            last_resort_kem_prekey BYTEA,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (account_id, device_id)
        );
        CREATE TABLE one_time_prekeys (
            account_id BYTEA NOT NULL,
            device_id INTEGER NOT NULL,
            kind SMALLINT NOT NULL,
            key_id BIGINT NOT NULL,
            key BYTEA NOT NULL,
            PRIMARY KEY (account_id, device_id, kind, key_id),
            FOREIGN KEY (account_id, device_id)
                REFERENCES devices(account_id, device_id) ON DELETE CASCADE
        );
        CREATE TABLE envelopes (
            id BIGSERIAL PRIMARY KEY,
            account_id BYTEA NOT NULL,
            device_id INTEGER NOT NULL,
            ts BIGINT NOT NULL,
            body BYTEA NOT NULL
        );
        CREATE INDEX envelopes_by_device ON envelopes(account_id, device_id, id);
        CREATE TABLE invites (
            token_hash BYTEA PRIMARY KEY,
            expires_at BIGINT NOT NULL
        );
"""
