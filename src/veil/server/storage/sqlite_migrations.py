"""Numbered schema migrations of the SQLite backend.

A migration is applied once, in order, inside one transaction together with its row in
``schema_migrations``. Never edit a released migration: add the next number.
The envelope table deliberately has no sender column (sealed sender: the server routes by
recipient only).
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "accounts, devices, prekeys, envelopes, invites",
        """
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
        """,
    ),
)
