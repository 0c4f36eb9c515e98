"""The embedded storage backend: one SQLite database in WAL mode under the data directory.

Durability. Every call runs on the database thread (``sqlite_worker``), which commits
the calls waiting at a time in one transaction and resolves their futures only after
COMMIT returns, so a submission is acknowledged only once its envelope is durable. In
WAL mode COMMIT appends the transaction's pages to the ``-wal`` file with write(2):

- ``synchronous=FULL`` (default) also fsyncs the WAL on every commit, so an
  acknowledged envelope survives ``kill -9`` *and* power loss;
- ``synchronous=NORMAL`` skips that fsync. The pages are already in the kernel's page
  cache when COMMIT returns, so ``kill -9`` of the process still loses nothing (the
  kernel writes them back); only a power cut or kernel crash can lose the last commits.

Group commit keeps FULL affordable: one fsync covers every envelope that arrived while
the previous commit was in flight. ``group_commit_window_ms`` can add a short wait to
grow batches further. A failing call rolls back to its savepoint only; the others in the
batch still commit. Hot calls keep small caches of routing data, queue lengths and
queued bytes per account (the quota, issue 12 §4), owned by the database thread and
dropped whenever a commit fails. Retention (expiry, secure deletion, giving pages back)
is in ``sqlite_retention``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

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
from veil.server.storage.schema import Scope, erase_statements
from veil.server.storage.sqlite_devices import SQLiteDevicesStore
from veil.server.storage.sqlite_mls import SQLiteMlsStore
from veil.server.storage.sqlite_protection import SQLiteProtectionStore
from veil.server.storage.sqlite_retention import SQLiteRetentionStore, convert_auto_vacuum
from veil.server.storage.sqlite_worker import DatabaseThread

T = TypeVar("T")
log = logging.getLogger("veil.server.storage")

_CACHE_ENTRIES = 100_000


class SQLiteStorage(SQLiteProtectionStore, SQLiteRetentionStore, SQLiteMlsStore,
                    SQLiteDevicesStore, Storage):
    def __init__(
        self, path: Path, *, synchronous: str = "full", group_commit_window_ms: float = 0.0
    ) -> None:
        where = str(path.parent)
        self._db = DatabaseThread(
            path, synchronous=synchronous, window_s=group_commit_window_ms / 1000.0,
            setup=lambda conn: _migrate(conn, where), on_failure=self._forget,
            check=lambda conn: _check(conn, where),
        )
        # Owned by the database thread. Safe because this process is the only writer of
        # accounts, devices and envelopes; cleared whenever a commit fails.
        self._routes: dict[bytes, tuple[bytes | None, bool, frozenset[int]]] = {}
        self._queue_lengths: dict[tuple[bytes, int], int] = {}
        self._queue_bytes: dict[bytes, int] = {}
        # Acknowledgements waiting to be merged into one delete call (event-loop side).
        self._pending_deletes: list[tuple[bytes, int, Sequence[int], asyncio.Future[int]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._db.start()

    async def close(self) -> None:
        await self._db.stop()

    def _forget(self) -> None:
        self._routes.clear()
        self._queue_lengths.clear()
        self._queue_bytes.clear()

    def submit(
        self, fn: Callable[[sqlite3.Connection], T], *, savepoint: bool = True
    ) -> asyncio.Future[T]:
        return self._db.submit(fn, savepoint=savepoint)

    def submit_outside(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        return self._db.submit_outside(fn)

    def set_observer(self, observer: Callable[[str, float], None] | None) -> None:
        self._db.observer = observer

    async def _call(
        self, fn: Callable[[sqlite3.Connection], T], *, savepoint: bool = True
    ) -> T:
        return await self._db.submit(fn, savepoint=savepoint)

    # ---- schema ---------------------------------------------------------------------
    async def schema_version(self) -> int:
        def fn(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            return int(row[0] or 0)

        return await self._call(fn)

    # ---- accounts ---------------------------------------------------------------------
    async def create_account(
        self, account_id: bytes, *, username: str | None, access_key: bytes | None,
        unrestricted_sealed: bool, device: NewDevice, now_ms: int,
        invite_hash: bytes | None, max_prekeys_stored: int,
    ) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            if invite_hash is not None:
                cur = conn.execute(
                    "DELETE FROM invites WHERE token_hash = ? AND expires_at > ?",
                    (invite_hash, now_ms),
                )
                if cur.rowcount != 1:
                    raise InvalidInvite("the invite token is unknown, used or expired")
            try:
                conn.execute(
                    "INSERT INTO accounts (id, username, access_key, unrestricted_sealed, "
                    "created_at) VALUES (?, ?, ?, ?, ?)",
                    (account_id, username, access_key, int(unrestricted_sealed), now_ms),
                )
            except sqlite3.IntegrityError as exc:
                raise UsernameTaken("that username is taken") from exc
            _insert_device(conn, account_id, device, now_ms, max_prekeys_stored)

        await self._call(fn)

    async def add_device(self, account_id: bytes, device: NewDevice, now_ms: int,
                         max_devices: int, max_prekeys_stored: int) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() \
                    is None:
                raise AccountNotFound("no such account")
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM devices WHERE account_id = ?", (account_id,)
            ).fetchone()
            if count >= max_devices:
                raise LimitExceeded(f"an account has at most {max_devices} devices")
            self._routes.pop(account_id, None)
            try:
                _insert_device(conn, account_id, device, now_ms, max_prekeys_stored)
            except sqlite3.IntegrityError as exc:
                raise LimitExceeded("that device id is in use") from exc

        await self._call(fn)

    async def get_account(self, account_id: bytes) -> AccountRecord | None:
        def fn(conn: sqlite3.Connection) -> AccountRecord | None:
            row = conn.execute(
                "SELECT username, access_key, unrestricted_sealed FROM accounts WHERE id = ?",
                (account_id,),
            ).fetchone()
            if row is None:
                return None
            devices = tuple(
                r[0] for r in conn.execute(
                    "SELECT device_id FROM devices WHERE account_id = ? ORDER BY device_id",
                    (account_id,),
                )
            )
            return AccountRecord(account_id, row[0], row[1], bool(row[2]), devices)

        return await self._call(fn)

    async def find_username(self, username: str) -> bytes | None:
        def fn(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT id FROM accounts WHERE username = ?", (username,)
            ).fetchone()
            return None if row is None else bytes(row[0])

        return await self._call(fn)

    async def set_username(self, account_id: bytes, username: str | None) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            try:
                cur = conn.execute(
                    "UPDATE accounts SET username = ? WHERE id = ?", (username, account_id)
                )
            except sqlite3.IntegrityError as exc:
                raise UsernameTaken("that username is taken") from exc
            if cur.rowcount != 1:
                raise AccountNotFound("no such account")

        await self._call(fn)

    async def set_sealed_access(
        self, account_id: bytes, access_key: bytes | None, unrestricted_sealed: bool
    ) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE accounts SET access_key = ?, unrestricted_sealed = ? WHERE id = ?",
                (access_key, int(unrestricted_sealed), account_id),
            )
            if cur.rowcount != 1:
                raise AccountNotFound("no such account")
            self._routes.pop(account_id, None)

        await self._call(fn)

    async def delete_device(self, account_id: bytes, device_id: int) -> bool:
        def fn(conn: sqlite3.Connection) -> bool:
            devices = _device_ids(conn, account_id)
            if device_id not in devices:
                return False
            if len(devices) == 1:
                raise LastDevice("an account's last device cannot be removed; delete the "
                                 "account instead")
            _erase(conn, "device", (account_id, device_id))
            self._routes.pop(account_id, None)
            self._queue_lengths.pop((account_id, device_id), None)
            self._queue_bytes.pop(account_id, None)
            return True

        return await self._call(fn)

    async def delete_account(self, account_id: bytes) -> bool:
        def fn(conn: sqlite3.Connection) -> bool:
            existed = conn.execute(
                "SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is not None
            devices = _device_ids(conn, account_id)
            # Even without the account row: whatever still names it goes too.
            _erase(conn, "account", (account_id,))
            self._routes.pop(account_id, None)
            self._queue_bytes.pop(account_id, None)
            for dev in devices:
                self._queue_lengths.pop((account_id, dev), None)
            return existed

        return await self._call(fn)

    async def get_device(self, account_id: bytes, device_id: int) -> DeviceRecord | None:
        def fn(conn: sqlite3.Connection) -> DeviceRecord | None:
            row = conn.execute(
                "SELECT registration_id, token_hash, identity_key FROM devices "
                "WHERE account_id = ? AND device_id = ?",
                (account_id, device_id),
            ).fetchone()
            if row is None:
                return None
            return DeviceRecord(account_id, device_id, row[0], bytes(row[1]), bytes(row[2]))

        return await self._call(fn)

    # ---- key directory ------------------------------------------------------------------
    async def store_prekeys(
        self, account_id: bytes, device_id: int, *, signed_prekey: bytes | None,
        last_resort_kem_prekey: bytes | None, one_time_prekeys: Sequence[OneTimeKey],
        one_time_kem_prekeys: Sequence[OneTimeKey], max_stored: int,
    ) -> PreKeyCounts:
        def fn(conn: sqlite3.Connection) -> PreKeyCounts:
            if not _device_exists(conn, account_id, device_id):
                raise DeviceNotFound("no such device")
            _store_prekeys(
                conn, account_id, device_id, signed_prekey, last_resort_kem_prekey,
                one_time_prekeys, one_time_kem_prekeys, max_stored,
            )
            return _counts(conn, account_id, device_id)

        return await self._call(fn)

    async def prekey_counts(self, account_id: bytes, device_id: int) -> PreKeyCounts:
        def fn(conn: sqlite3.Connection) -> PreKeyCounts:
            if not _device_exists(conn, account_id, device_id):
                raise DeviceNotFound("no such device")
            return _counts(conn, account_id, device_id)

        return await self._call(fn)

    async def claim_bundles(
        self, account_id: bytes, device_id: int | None
    ) -> list[DeviceBundle]:
        def fn(conn: sqlite3.Connection) -> list[DeviceBundle]:
            sql = (
                "SELECT device_id, registration_id, identity_key, signed_prekey, "
                "last_resort_kem_prekey, approval FROM devices WHERE account_id = ?"
            )
            args: tuple[Any, ...] = (account_id,)
            if device_id is not None:
                sql += " AND device_id = ?"
                args = (account_id, device_id)
            rows = conn.execute(sql + " ORDER BY device_id", args).fetchall()
            bundles = []
            for dev, reg, ident, spk, lrk, approval in rows:
                ec = _take_one(conn, account_id, dev, KIND_EC)
                kem = _take_one(conn, account_id, dev, KIND_KEM)
                bundles.append(DeviceBundle(
                    dev, reg, bytes(ident), _opt(spk), _opt(lrk), ec, kem,
                    _counts(conn, account_id, dev), _opt(approval),
                ))
            return bundles

        return await self._call(fn)

    # ---- message queue --------------------------------------------------------------------
    async def enqueue(
        self, account_id: bytes, items: Sequence[tuple[int, bytes]], now_ms: int,
        authorise: Authorise,
    ) -> list[StoredEnvelope]:
        return await self.enqueue_nowait(account_id, items, now_ms, authorise)

    def enqueue_nowait(
        self, account_id: bytes, items: Sequence[tuple[int, bytes]], now_ms: int,
        authorise: Authorise,
    ) -> asyncio.Future[list[StoredEnvelope]]:
        def fn(conn: sqlite3.Connection) -> list[StoredEnvelope]:
            access_key, unrestricted, devices = self._route(conn, account_id)
            lengths = {dev: self._queue_length(conn, account_id, dev) for dev, _ in items}
            queued = self._account_bytes(conn, account_id)
            authorise(RecipientInfo(account_id, access_key, unrestricted, devices, lengths,
                                    queued))
            stored = []
            for dev, body in items:
                cur = conn.execute(
                    "INSERT INTO envelopes (account_id, device_id, ts, body) VALUES (?, ?, ?, ?)",
                    (account_id, dev, now_ms, body),
                )
                assert cur.lastrowid is not None
                stored.append(StoredEnvelope(cur.lastrowid, dev, now_ms, body))
            for dev, _ in items:
                # From the local dict: the cache may have been cleared (it is bounded)
                # while `lengths` was filled, and this runs after the INSERTs.
                self._queue_lengths[(account_id, dev)] = lengths[dev] + 1
            self._queue_bytes[account_id] = queued + sum(len(body) for _, body in items)
            return stored

        # Authorisation raises before the first INSERT; an error after a write fails
        # the whole batch (sqlite_worker checks total_changes).
        return self.submit(fn, savepoint=False)

    def _route(
        self, conn: sqlite3.Connection, account_id: bytes
    ) -> tuple[bytes | None, bool, frozenset[int]]:
        route = self._routes.get(account_id)
        if route is None:
            row = conn.execute(
                "SELECT access_key, unrestricted_sealed FROM accounts WHERE id = ?",
                (account_id,),
            ).fetchone()
            if row is None:
                raise AccountNotFound("no such account")
            devices = frozenset(
                r[0] for r in conn.execute(
                    "SELECT device_id FROM devices WHERE account_id = ?", (account_id,)
                )
            )
            if len(self._routes) >= _CACHE_ENTRIES:
                self._routes.clear()
            route = self._routes[account_id] = (_opt(row[0]), bool(row[1]), devices)
        return route

    def _queue_length(self, conn: sqlite3.Connection, account_id: bytes, device_id: int) -> int:
        key = (account_id, device_id)
        length = self._queue_lengths.get(key)
        if length is None:
            (length,) = conn.execute(
                "SELECT COUNT(*) FROM envelopes WHERE account_id = ? AND device_id = ?", key
            ).fetchone()
            if len(self._queue_lengths) >= _CACHE_ENTRIES:
                self._queue_lengths.clear()
            self._queue_lengths[key] = length
        return int(length)

    async def fetch_envelopes(
        self, account_id: bytes, device_id: int, limit: int, after_id: int = 0
    ) -> list[StoredEnvelope]:
        def fn(conn: sqlite3.Connection) -> list[StoredEnvelope]:
            return [
                StoredEnvelope(i, device_id, ts, bytes(body))
                for i, ts, body in conn.execute(
                    "SELECT id, ts, body FROM envelopes WHERE account_id = ? AND device_id = ? "
                    "AND id > ? ORDER BY id LIMIT ?",
                    (account_id, device_id, after_id, limit),
                )
            ]

        return await self._call(fn)

    def _delete(
        self, conn: sqlite3.Connection, account_id: bytes, device_id: int, ids: Sequence[int]
    ) -> int:
        if account_id in self._queue_bytes:
            # The byte count needs each deleted envelope's size.
            sizes = [row[0] for i in ids for row in conn.execute(
                "DELETE FROM envelopes WHERE id = ? AND account_id = ? AND device_id = ? "
                "RETURNING length(body)", (i, account_id, device_id))]
            deleted = len(sizes)
            self._forget_bytes(account_id, sum(sizes))
        else:
            cur = conn.executemany(
                "DELETE FROM envelopes WHERE id = ? AND account_id = ? AND device_id = ?",
                [(i, account_id, device_id) for i in ids],
            )
            deleted = cur.rowcount
        key = (account_id, device_id)
        if key in self._queue_lengths:
            self._queue_lengths[key] -= deleted
        return deleted

    async def delete_envelopes(
        self, account_id: bytes, device_id: int, ids: Sequence[int]
    ) -> int:
        return await self._call(lambda conn: self._delete(conn, account_id, device_id, ids))

    def delete_envelopes_nowait(
        self, account_id: bytes, device_id: int, ids: Sequence[int]
    ) -> asyncio.Future[int]:
        """Acknowledgements arriving in one event-loop turn become one database call."""
        if not self._db.running or self._loop is None:
            raise StorageError("storage is not open")
        fut: asyncio.Future[int] = self._loop.create_future()
        if not self._pending_deletes:
            self._loop.call_soon(self._flush_deletes)
        self._pending_deletes.append((account_id, device_id, ids, fut))
        return fut

    def _flush_deletes(self) -> None:
        pending, self._pending_deletes = self._pending_deletes, []

        def fn(conn: sqlite3.Connection) -> list[int]:
            return [self._delete(conn, a, d, ids) for a, d, ids, _ in pending]

        def done(result: asyncio.Future[list[int]]) -> None:
            error = None if result.cancelled() else result.exception()
            for i, (*_, fut) in enumerate(pending):
                if fut.done():
                    continue
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(result.result()[i])

        self.submit(fn, savepoint=False).add_done_callback(done)

    # ---- invites ---------------------------------------------------------------------------
    async def add_invite(self, token_hash: bytes, expires_at_ms: int) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO invites VALUES (?, ?)", (token_hash, expires_at_ms))

        await self._call(fn)

    async def invite_exists(self, token_hash: bytes, now_ms: int) -> bool:
        def fn(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "SELECT 1 FROM invites WHERE token_hash = ? AND expires_at > ?",
                (token_hash, now_ms),
            ).fetchone() is not None

        return await self._call(fn)


def _state(conn: sqlite3.Connection) -> DatabaseState:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_migrations" not in tables:
        return DatabaseState(0, 0)
    (version,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") \
        .fetchone()
    compat = None
    if "schema_compat_version" in tables:
        compat = conn.execute(
            "SELECT compat_version FROM schema_compat_version WHERE id = 1").fetchone()
    return DatabaseState(int(version), 0 if compat is None else int(compat[0]), True)


def _check(conn: sqlite3.Connection, where: str) -> None:
    """Read-only: raises DatabaseTooNew for a database this code must not use."""
    migrations.check(_state(conn), where, _ELSEWHERE)


def _migrate(conn: sqlite3.Connection, where: str) -> None:
    """Create an empty database, or upgrade an older one, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        state = _state(conn)
        for sql, args in migrations.plan(state, "sqlite", int(time.time() * 1000), where,
                                         _ELSEWHERE):
            conn.execute(sql, args)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    migrations.report(state)
    convert_auto_vacuum(conn)


_ELSEWHERE = "another data directory"
_ERASE: dict[Scope, list[str]] = {
    "account": erase_statements("account", "sqlite"),
    "device": erase_statements("device", "sqlite"),
}


def _erase(conn: sqlite3.Connection, scope: Scope, args: tuple[Any, ...]) -> None:
    # secure_delete zeroes the deleted cells and freed pages, so an erased account's
    # bytes do not stay readable in the file's free space (its older WAL frames are
    # overwritten once the log restarts after a checkpoint).
    (before,) = conn.execute("PRAGMA secure_delete").fetchone()
    conn.execute("PRAGMA secure_delete = ON")
    try:
        for statement in _ERASE[scope]:
            conn.execute(statement, args)
    finally:
        conn.execute(f"PRAGMA secure_delete = {int(before)}")


def _device_ids(conn: sqlite3.Connection, account_id: bytes) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT device_id FROM devices WHERE account_id = ?", (account_id,))]


def _opt(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _device_exists(conn: sqlite3.Connection, account_id: bytes, device_id: int) -> bool:
    return conn.execute(
        "SELECT 1 FROM devices WHERE account_id = ? AND device_id = ?", (account_id, device_id)
    ).fetchone() is not None


def _insert_device(
    conn: sqlite3.Connection, account_id: bytes, device: NewDevice, now_ms: int,
    max_stored: int,
) -> None:
    conn.execute(
        "INSERT INTO devices (account_id, device_id, registration_id, token_hash, "
        "identity_key, created_at, approval) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (account_id, device.device_id, device.registration_id, device.token_hash,
         device.identity_key, now_ms, device.approval),
    )
    _store_prekeys(
        conn, account_id, device.device_id, device.signed_prekey,
        device.last_resort_kem_prekey, device.one_time_prekeys, device.one_time_kem_prekeys,
        max_stored,
    )


def _store_prekeys(
    conn: sqlite3.Connection, account_id: bytes, device_id: int,
    signed_prekey: bytes | None, last_resort: bytes | None,
    one_time: Sequence[OneTimeKey], one_time_kem: Sequence[OneTimeKey], max_stored: int,
) -> None:
    if signed_prekey is not None:
        conn.execute(
            "UPDATE devices SET signed_prekey = ? WHERE account_id = ? AND device_id = ?",
            (signed_prekey, account_id, device_id),
        )
    if last_resort is not None:
        conn.execute(
            "UPDATE devices SET last_resort_kem_prekey = ? WHERE account_id = ? AND device_id = ?",
            (last_resort, account_id, device_id),
        )
    for kind, keys in ((KIND_EC, one_time), (KIND_KEM, one_time_kem)):
        if not keys:
            continue
        (have,) = conn.execute(
            "SELECT COUNT(*) FROM one_time_prekeys WHERE account_id = ? AND device_id = ? "
            "AND kind = ?",
            (account_id, device_id, kind),
        ).fetchone()
        if have + len(keys) > max_stored:
            raise LimitExceeded(f"a device stores at most {max_stored} one-time keys per kind")
        try:
            conn.executemany(
                "INSERT INTO one_time_prekeys VALUES (?, ?, ?, ?, ?)",
                [(account_id, device_id, kind, k.key_id, k.key) for k in keys],
            )
        except sqlite3.IntegrityError as exc:
            raise DuplicatePreKey("a one-time prekey with that key id is already stored") \
                from exc


def _take_one(
    conn: sqlite3.Connection, account_id: bytes, device_id: int, kind: int
) -> OneTimeKey | None:
    # The database thread serialises every call, so select-then-delete is atomic.
    row = conn.execute(
        "SELECT key_id, key FROM one_time_prekeys WHERE account_id = ? AND device_id = ? "
        "AND kind = ? ORDER BY key_id LIMIT 1",
        (account_id, device_id, kind),
    ).fetchone()
    if row is None:
        return None
    conn.execute(
        "DELETE FROM one_time_prekeys WHERE account_id = ? AND device_id = ? AND kind = ? "
        "AND key_id = ?",
        (account_id, device_id, kind, row[0]),
    )
    return OneTimeKey(row[0], bytes(row[1]))


def _counts(conn: sqlite3.Connection, account_id: bytes, device_id: int) -> PreKeyCounts:
    counts = dict(conn.execute(
        "SELECT kind, COUNT(*) FROM one_time_prekeys WHERE account_id = ? AND device_id = ? "
        "GROUP BY kind",
        (account_id, device_id),
    ).fetchall())
    spk, lrk = conn.execute(
        "SELECT signed_prekey IS NOT NULL, last_resort_kem_prekey IS NOT NULL FROM devices "
        "WHERE account_id = ? AND device_id = ?",
        (account_id, device_id),
    ).fetchone()
    return PreKeyCounts(counts.get(KIND_EC, 0), counts.get(KIND_KEM, 0), bool(spk), bool(lrk))

__all__ = [
    "SQLiteStorage",
]
