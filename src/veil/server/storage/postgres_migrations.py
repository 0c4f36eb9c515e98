"""Numbered schema migrations of the PostgreSQL backend (same model as SQLite's).

Applied in order under a transaction-scoped advisory lock, so several server nodes
starting at once migrate exactly once. Never edit a released migration: add the next.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "accounts, devices, prekeys, envelopes, invites",
        """
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
        """,
    ),
)
