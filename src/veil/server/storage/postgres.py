"""The PostgreSQL backend (asyncpg), for deployments of several server nodes.

Same contract as the SQLite backend (``storage/base.py``), same test suite. Every method
is one transaction; a commit is durable when it returns (PostgreSQL's default
``synchronous_commit = on``). One-time prekeys are claimed with
``DELETE ... WHERE key = (SELECT ... FOR UPDATE SKIP LOCKED)``, so concurrent claims on
several nodes never hand out the same key. Envelope ids come from a sequence: increasing
and never reused.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg  # type: ignore[import-untyped]

from veil.server.errors import (
    AccountNotFound,
    DeviceNotFound,
    DuplicatePreKey,
    InvalidInvite,
    LastDevice,
    LimitExceeded,
    StorageError,
    UsernameTaken,
)
from veil.server.storage import migrations
from veil.server.storage.base import (
    KIND_EC,
    KIND_KEM,
    AccountRecord,
    Authorise,
    DeviceBundle,
    DeviceRecord,
    NewDevice,
    OneTimeKey,
    PreKeyCounts,
    RecipientInfo,
    Storage,
    StoredEnvelope,
)
from veil.server.storage.migrations import DatabaseState
from veil.server.storage.postgres_devices import PostgresDevicesStore
from veil.server.storage.postgres_mls import PostgresMlsStore
from veil.server.storage.postgres_protection import PostgresProtectionStore
from veil.server.storage.postgres_retention import PostgresRetentionStore
from veil.server.storage.schema import Scope, erase_statements

log = logging.getLogger("veil.server.storage")

_MIGRATION_LOCK = 0x7E11_5E7E  # advisory lock id: "veil server"
_DRIVER_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _storage_errors(cls: type[PostgresStorage]) -> type[PostgresStorage]:
    """Turn driver and network failures of every public coroutine into StorageError
    (the class's own and its mixin's, ``postgres_mls``)."""
    methods = {**vars(PostgresMlsStore), **vars(PostgresDevicesStore),
               **vars(PostgresRetentionStore), **vars(PostgresProtectionStore), **vars(cls)}
    for name, method in list(methods.items()):
        if name.startswith("_") or name in ("open", "close"):
            continue
        if not callable(method):
            continue

        def wrap(fn: Any) -> Any:
            @functools.wraps(fn)
            async def wrapped(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(*args, **kwargs)
                except _DRIVER_ERRORS as exc:
                    log.error("postgres call %s failed: %s", fn.__name__, type(exc).__name__)
                    raise StorageError("the database call failed") from exc

            return wrapped

        setattr(cls, name, wrap(method))
    return cls


@_storage_errors
class PostgresStorage(PostgresProtectionStore, PostgresRetentionStore, PostgresMlsStore,
                      PostgresDevicesStore, Storage):
    def __init__(self, dsn: str, *, schema: str | None = None, max_connections: int = 10) -> None:
        self._dsn = dsn
        self._schema = schema
        self._max = max_connections
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        settings = {"search_path": self._schema} if self._schema else None
        opened = False
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._max, server_settings=settings
            )
            # One transaction under a lock: several nodes starting at once upgrade
            # once, and a refused database is only read (the rollback undoes nothing).
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                state = await _migrate(conn, _describe(self._dsn, self._schema))
            migrations.report(state)
            opened = True
        except (OSError, asyncpg.PostgresError) as exc:
            raise StorageError(f"cannot open the PostgreSQL database: {exc}") from exc
        finally:
            if not opened:
                await self.close()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageError("storage is not open")
        return self._pool

    async def schema_version(self) -> int:
        return int(await self._p().fetchval("SELECT MAX(version) FROM schema_migrations") or 0)

    # ---- accounts -------------------------------------------------------------------------
    async def create_account(
        self, account_id: bytes, *, username: str | None, access_key: bytes | None,
        unrestricted_sealed: bool, device: NewDevice, now_ms: int,
        invite_hash: bytes | None, max_prekeys_stored: int,
    ) -> None:
        async with self._p().acquire() as conn, conn.transaction():
            if invite_hash is not None:
                used = await conn.fetchval(
                    "DELETE FROM invites WHERE token_hash = $1 AND expires_at > $2 "
                    "RETURNING 1", invite_hash, now_ms,
                )
                if used is None:
                    raise InvalidInvite("the invite token is unknown, used or expired")
            try:
                await conn.execute(
                    "INSERT INTO accounts (id, username, access_key, unrestricted_sealed, "
                    "created_at) VALUES ($1, $2, $3, $4, $5)",
                    account_id, username, access_key, unrestricted_sealed, now_ms,
                )
            except asyncpg.UniqueViolationError as exc:
                raise UsernameTaken("that username is taken") from exc
            await _insert_device(conn, account_id, device, now_ms, max_prekeys_stored)

    async def add_device(self, account_id: bytes, device: NewDevice, now_ms: int,
                         max_devices: int, max_prekeys_stored: int) -> None:
        async with self._p().acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE",
                                   account_id) is None:
                raise AccountNotFound("no such account")
            count = await conn.fetchval(
                "SELECT COUNT(*) FROM devices WHERE account_id = $1", account_id)
            if count >= max_devices:
                raise LimitExceeded(f"an account has at most {max_devices} devices")
            try:
                await _insert_device(conn, account_id, device, now_ms, max_prekeys_stored)
            except asyncpg.UniqueViolationError as exc:
                raise LimitExceeded("that device id is in use") from exc

    async def get_account(self, account_id: bytes) -> AccountRecord | None:
        async with self._p().acquire() as conn:
            row = await conn.fetchrow(
                "SELECT username, access_key, unrestricted_sealed FROM accounts WHERE id = $1",
                account_id,
            )
            if row is None:
                return None
            devices = await conn.fetch(
                "SELECT device_id FROM devices WHERE account_id = $1 ORDER BY device_id",
                account_id,
            )
        return AccountRecord(account_id, row[0], _opt(row[1]), row[2],
                             tuple(r[0] for r in devices))

    async def find_username(self, username: str) -> bytes | None:
        found = await self._p().fetchval("SELECT id FROM accounts WHERE username = $1", username)
        return None if found is None else bytes(found)

    async def set_username(self, account_id: bytes, username: str | None) -> None:
        try:
            status = await self._p().execute(
                "UPDATE accounts SET username = $1 WHERE id = $2", username, account_id)
        except asyncpg.UniqueViolationError as exc:
            raise UsernameTaken("that username is taken") from exc
        if status.endswith(" 0"):
            raise AccountNotFound("no such account")

    async def set_sealed_access(
        self, account_id: bytes, access_key: bytes | None, unrestricted_sealed: bool
    ) -> None:
        status = await self._p().execute(
            "UPDATE accounts SET access_key = $1, unrestricted_sealed = $2 WHERE id = $3",
            access_key, unrestricted_sealed, account_id,
        )
        if status.endswith(" 0"):
            raise AccountNotFound("no such account")

    async def delete_device(self, account_id: bytes, device_id: int) -> bool:
        async with self._p().acquire() as conn, conn.transaction():
            devices = await _lock_account(conn, account_id)
            if devices is None or device_id not in devices:
                return False
            if len(devices) == 1:
                raise LastDevice("an account's last device cannot be removed; delete the "
                                 "account instead")
            for statement in _ERASE["device"]:
                await conn.execute(statement, account_id, device_id)
            return True

    async def delete_account(self, account_id: bytes) -> bool:
        async with self._p().acquire() as conn, conn.transaction():
            existed = await _lock_account(conn, account_id) is not None
            # Even without the account row: whatever still names it goes too.
            for statement in _ERASE["account"]:
                await conn.execute(statement, account_id)
            return existed

    async def get_device(self, account_id: bytes, device_id: int) -> DeviceRecord | None:
        row = await self._p().fetchrow(
            "SELECT registration_id, token_hash, identity_key FROM devices "
            "WHERE account_id = $1 AND device_id = $2", account_id, device_id,
        )
        if row is None:
            return None
        return DeviceRecord(account_id, device_id, row[0], bytes(row[1]), bytes(row[2]))

    # ---- key directory ---------------------------------------------------------------------
    async def store_prekeys(
        self, account_id: bytes, device_id: int, *, signed_prekey: bytes | None,
        last_resort_kem_prekey: bytes | None, one_time_prekeys: Sequence[OneTimeKey],
        one_time_kem_prekeys: Sequence[OneTimeKey], max_stored: int,
    ) -> PreKeyCounts:
        async with self._p().acquire() as conn, conn.transaction():
            if not await _lock_device(conn, account_id, device_id):
                raise DeviceNotFound("no such device")
            await _store_prekeys(conn, account_id, device_id, signed_prekey,
                                 last_resort_kem_prekey, one_time_prekeys,
                                 one_time_kem_prekeys, max_stored)
            return await _counts(conn, account_id, device_id)

    async def prekey_counts(self, account_id: bytes, device_id: int) -> PreKeyCounts:
        async with self._p().acquire() as conn:
            if await conn.fetchval("SELECT 1 FROM devices WHERE account_id = $1 AND "
                                   "device_id = $2", account_id, device_id) is None:
                raise DeviceNotFound("no such device")
            return await _counts(conn, account_id, device_id)

    async def claim_bundles(
        self, account_id: bytes, device_id: int | None
    ) -> list[DeviceBundle]:
        async with self._p().acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT device_id, registration_id, identity_key, signed_prekey, "
                "last_resort_kem_prekey, approval FROM devices WHERE account_id = $1 "
                "AND ($2::integer IS NULL OR device_id = $2) ORDER BY device_id",
                account_id, device_id,
            )
            bundles = []
            for dev, reg, ident, spk, lrk, approval in rows:
                ec = await _take_one(conn, account_id, dev, KIND_EC)
                kem = await _take_one(conn, account_id, dev, KIND_KEM)
                bundles.append(DeviceBundle(dev, reg, bytes(ident), _opt(spk), _opt(lrk), ec,
                                            kem, await _counts(conn, account_id, dev),
                                            _opt(approval)))
            return bundles

    # ---- message queue ----------------------------------------------------------------------
    async def enqueue(
        self, account_id: bytes, items: Sequence[tuple[int, bytes]], now_ms: int,
        authorise: Authorise,
    ) -> list[StoredEnvelope]:
        async with self._p().acquire() as conn, conn.transaction():
            # FOR SHARE: the device list cannot change under a submission being checked.
            row = await conn.fetchrow(
                "SELECT access_key, unrestricted_sealed FROM accounts WHERE id = $1 FOR SHARE",
                account_id,
            )
            if row is None:
                raise AccountNotFound("no such account")
            devices = frozenset(r[0] for r in await conn.fetch(
                "SELECT device_id FROM devices WHERE account_id = $1", account_id))
            # The byte quota reads the sizes with the counts. octet_length of a TOASTed
            # body comes from its pointer, without fetching the value. Like the count
            # limit it is checked, not locked: concurrent submissions to one account may
            # each pass and overshoot the quota by at most their own sizes.
            queue = await conn.fetch(
                "SELECT device_id, COUNT(*), COALESCE(SUM(octet_length(body)), 0) "
                "FROM envelopes WHERE account_id = $1 GROUP BY device_id", account_id)
            lengths = {r[0]: r[1] for r in queue}
            queued = sum(int(r[2]) for r in queue)
            authorise(RecipientInfo(account_id, _opt(row[0]), row[1], devices, lengths,
                                    queued))
            stored = []
            for dev, body in items:
                new_id = await conn.fetchval(
                    "INSERT INTO envelopes (account_id, device_id, ts, body) "
                    "VALUES ($1, $2, $3, $4) RETURNING id", account_id, dev, now_ms, body,
                )
                stored.append(StoredEnvelope(new_id, dev, now_ms, body))
            return stored

    async def fetch_envelopes(
        self, account_id: bytes, device_id: int, limit: int, after_id: int = 0
    ) -> list[StoredEnvelope]:
        rows = await self._p().fetch(
            "SELECT id, ts, body FROM envelopes WHERE account_id = $1 AND device_id = $2 "
            "AND id > $3 ORDER BY id LIMIT $4", account_id, device_id, after_id, limit,
        )
        return [StoredEnvelope(r[0], device_id, r[1], bytes(r[2])) for r in rows]

    async def delete_envelopes(
        self, account_id: bytes, device_id: int, ids: Sequence[int]
    ) -> int:
        deleted = await self._p().fetchval(
            "WITH d AS (DELETE FROM envelopes WHERE account_id = $1 AND device_id = $2 "
            "AND id = ANY($3::bigint[]) RETURNING 1) SELECT COUNT(*) FROM d",
            account_id, device_id, list(ids),
        )
        return int(deleted)

    async def add_invite(self, token_hash: bytes, expires_at_ms: int) -> None:
        await self._p().execute("INSERT INTO invites VALUES ($1, $2)", token_hash,
                                expires_at_ms)

    async def invite_exists(self, token_hash: bytes, now_ms: int) -> bool:
        return await self._p().fetchval(
            "SELECT 1 FROM invites WHERE token_hash = $1 AND expires_at > $2",
            token_hash, now_ms,
        ) is not None


async def _state(conn: Any) -> DatabaseState:
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return DatabaseState(0, 0)
    version = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    compat = None
    if await conn.fetchval("SELECT to_regclass('schema_compat_version')") is not None:
        compat = await conn.fetchval(
            "SELECT compat_version FROM schema_compat_version WHERE id = 1")
    return DatabaseState(int(version), int(compat or 0), True)


async def _migrate(conn: Any, where: str) -> DatabaseState:
    """Create an empty database or upgrade an older one (in the caller's transaction)."""
    state = await _state(conn)
    for sql, args in migrations.plan(state, "postgres", int(time.time() * 1000), where,
                                     "another database"):
        await conn.execute(sql, *args)
    return state


def _describe(dsn: str, schema: str | None) -> str:
    """The database for messages: host, port, name and schema, never the password."""
    try:
        url = urlsplit(dsn)
        where = f"postgresql://{url.hostname or 'localhost'}"
        where += f":{url.port}" if url.port else ""
        where += url.path
        schema = schema or parse_qs(url.query).get("search_path", [""])[0]
    except ValueError:
        where = "PostgreSQL"
    return f"{where} (schema {schema})" if schema else where


_ERASE: dict[Scope, list[str]] = {
    "account": erase_statements("account", "postgres"),
    "device": erase_statements("device", "postgres"),
}


async def _lock_account(conn: Any, account_id: bytes) -> list[int] | None:
    """The account's device ids, or None; holds the account and its devices for update.

    Submissions hold the account row FOR SHARE, so none commits an envelope for a
    device after it is gone. Prekey uploads lock their device row only: taking every
    device row before deleting anything means an erasure waits for an upload instead
    of deadlocking with it (on a key id both touch).
    """
    if await conn.fetchval("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE",
                           account_id) is None:
        return None
    return [r[0] for r in await conn.fetch(
        "SELECT device_id FROM devices WHERE account_id = $1 FOR UPDATE", account_id)]


def _opt(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


async def _lock_device(conn: Any, account_id: bytes, device_id: int) -> bool:
    # Serialises uploads of one device, so the stock cap holds under concurrency.
    return await conn.fetchval(
        "SELECT 1 FROM devices WHERE account_id = $1 AND device_id = $2 FOR UPDATE",
        account_id, device_id,
    ) is not None


async def _insert_device(
    conn: Any, account_id: bytes, device: NewDevice, now_ms: int, max_stored: int
) -> None:
    await conn.execute(
        "INSERT INTO devices (account_id, device_id, registration_id, token_hash, "
        "identity_key, created_at, approval) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        account_id, device.device_id, device.registration_id, device.token_hash,
        device.identity_key, now_ms, device.approval,
    )
    await _store_prekeys(conn, account_id, device.device_id, device.signed_prekey,
                         device.last_resort_kem_prekey, device.one_time_prekeys,
                         device.one_time_kem_prekeys, max_stored)


async def _store_prekeys(
    conn: Any, account_id: bytes, device_id: int, signed_prekey: bytes | None,
    last_resort: bytes | None, one_time: Sequence[OneTimeKey],
    one_time_kem: Sequence[OneTimeKey], max_stored: int,
) -> None:
    if signed_prekey is not None:
        await conn.execute("UPDATE devices SET signed_prekey = $1 WHERE account_id = $2 "
                           "AND device_id = $3", signed_prekey, account_id, device_id)
    if last_resort is not None:
        await conn.execute("UPDATE devices SET last_resort_kem_prekey = $1 WHERE "
                           "account_id = $2 AND device_id = $3", last_resort, account_id,
                           device_id)
    for kind, keys in ((KIND_EC, one_time), (KIND_KEM, one_time_kem)):
        if not keys:
            continue
        have = await conn.fetchval(
            "SELECT COUNT(*) FROM one_time_prekeys WHERE account_id = $1 AND device_id = $2 "
            "AND kind = $3", account_id, device_id, kind,
        )
        if have + len(keys) > max_stored:
            raise LimitExceeded(f"a device stores at most {max_stored} one-time keys per kind")
        try:
            async with conn.transaction():  # a savepoint: the violation stays contained
                await conn.executemany(
                    "INSERT INTO one_time_prekeys VALUES ($1, $2, $3, $4, $5)",
                    [(account_id, device_id, kind, k.key_id, k.key) for k in keys],
                )
        except asyncpg.UniqueViolationError as exc:
            raise DuplicatePreKey("a one-time prekey with that key id is already stored") \
                from exc


async def _take_one(conn: Any, account_id: bytes, device_id: int, kind: int) -> OneTimeKey | None:
    row = await conn.fetchrow(
        "DELETE FROM one_time_prekeys WHERE (account_id, device_id, kind, key_id) = ("
        "SELECT account_id, device_id, kind, key_id FROM one_time_prekeys "
        "WHERE account_id = $1 AND device_id = $2 AND kind = $3 "
        "ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING key_id, key",
        account_id, device_id, kind,
    )
    return None if row is None else OneTimeKey(int(row[0]), bytes(row[1]))


async def _counts(conn: Any, account_id: bytes, device_id: int) -> PreKeyCounts:
    counts = {r[0]: r[1] for r in await conn.fetch(
        "SELECT kind, COUNT(*) FROM one_time_prekeys WHERE account_id = $1 AND device_id = $2 "
        "GROUP BY kind", account_id, device_id)}
    row = await conn.fetchrow(
        "SELECT signed_prekey IS NOT NULL, last_resort_kem_prekey IS NOT NULL FROM devices "
        "WHERE account_id = $1 AND device_id = $2", account_id, device_id,
    )
    return PreKeyCounts(counts.get(KIND_EC, 0), counts.get(KIND_KEM, 0), bool(row[0]),
                        bool(row[1]))

__all__ = [
    "PostgresStorage",
]
