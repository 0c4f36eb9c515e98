"""The storage contract, run against every backend (see conftest.BACKENDS).

The erasure tests read every table directly (``rawdb``) to check that no row still
names a deleted account or device.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import veil.server.storage.sqlite as sqlite_backend
from tests.unit.server.rawdb import RawDatabase, naming
from veil.server.errors import (
    AccountNotFound,
    DeviceNotFound,
    DuplicatePreKey,
    InvalidAccessKey,
    InvalidInvite,
    LastDevice,
    LimitExceeded,
    MismatchedDevices,
    StorageError,
    UsernameTaken,
)
from veil.server.storage.base import NewDevice, OneTimeKey, RecipientInfo, Storage
from veil.server.storage.migrations import SCHEMA_VERSION
from veil.server.storage.sqlite import SQLiteStorage

NOW = 1_700_000_000_000


def device(device_id: int = 1, **kw: object) -> NewDevice:
    fields: dict[str, object] = {
        "registration_id": 42, "token_hash": os.urandom(32), "identity_key": os.urandom(33),
    }
    fields.update(kw)
    return NewDevice(device_id=device_id, **fields)  # type: ignore[arg-type]


async def new_account(storage: Storage, username: str | None = None, **kw: object) -> bytes:
    account_id = os.urandom(16)
    await storage.create_account(
        account_id, username=username, access_key=b"k" * 16, unrestricted_sealed=False,
        device=device(**kw), now_ms=NOW, invite_hash=None, max_prekeys_stored=100,
    )
    return account_id


def allow(info: RecipientInfo) -> None:
    return None


async def test_schema_is_migrated(storage: Storage):
    assert await storage.schema_version() == SCHEMA_VERSION


async def test_accounts_and_usernames(storage: Storage):
    a = await new_account(storage, "alice")
    record = await storage.get_account(a)
    assert record is not None
    assert (record.username, record.devices, record.access_key) == ("alice", (1,), b"k" * 16)
    assert await storage.find_username("alice") == a
    assert await storage.find_username("bob") is None
    with pytest.raises(UsernameTaken):
        await new_account(storage, "alice")
    b = await new_account(storage)
    with pytest.raises(UsernameTaken):
        await storage.set_username(b, "alice")
    await storage.set_username(a, None)
    await storage.set_username(b, "alice")
    assert await storage.find_username("alice") == b
    assert await storage.get_account(os.urandom(16)) is None
    with pytest.raises(AccountNotFound):
        await storage.set_username(os.urandom(16), "carol")


async def test_devices(storage: Storage):
    a = await new_account(storage)
    await storage.add_device(a, device(2), NOW, max_devices=2, max_prekeys_stored=10)
    with pytest.raises(LimitExceeded):
        await storage.add_device(a, device(3), NOW, max_devices=2, max_prekeys_stored=10)
    record = await storage.get_account(a)
    assert record is not None and record.devices == (1, 2)
    dev = await storage.get_device(a, 2)
    assert dev is not None and dev.registration_id == 42
    assert await storage.get_device(a, 3) is None


async def test_invites_are_single_use_and_expire(storage: Storage):
    await storage.add_invite(b"h" * 32, NOW + 1000)
    await storage.add_invite(b"x" * 32, NOW - 1)
    kwargs = {"username": None, "access_key": None, "unrestricted_sealed": False,
              "now_ms": NOW, "max_prekeys_stored": 10}
    await storage.create_account(os.urandom(16), device=device(), invite_hash=b"h" * 32,
                                 **kwargs)  # type: ignore[arg-type]
    for invite in (b"h" * 32, b"x" * 32, b"?" * 32):
        account_id = os.urandom(16)
        with pytest.raises(InvalidInvite):
            await storage.create_account(account_id, device=device(), invite_hash=invite,
                                         **kwargs)  # type: ignore[arg-type]
        assert await storage.get_account(account_id) is None


async def test_invite_exists_does_not_consume(storage: Storage):
    await storage.add_invite(b"h" * 32, NOW + 1000)
    await storage.add_invite(b"x" * 32, NOW - 1)
    assert await storage.invite_exists(b"h" * 32, NOW)
    assert await storage.invite_exists(b"h" * 32, NOW)  # still there
    assert not await storage.invite_exists(b"x" * 32, NOW)  # expired
    assert not await storage.invite_exists(b"?" * 32, NOW)


async def test_prekeys_are_claimed_once_then_last_resort(storage: Storage):
    a = await new_account(
        storage, signed_prekey=b"s" * 64, last_resort_kem_prekey=b"L" * 1184,
        one_time_prekeys=[OneTimeKey(1, b"a" * 32), OneTimeKey(2, b"b" * 32)],
        one_time_kem_prekeys=[OneTimeKey(7, b"K" * 1184)],
    )
    counts = await storage.prekey_counts(a, 1)
    assert (counts.one_time_prekeys, counts.one_time_kem_prekeys) == (2, 1)
    claims = [await storage.claim_bundles(a, 1) for _ in range(3)]
    assert [c[0].one_time_prekey for c in claims] == [
        OneTimeKey(1, b"a" * 32), OneTimeKey(2, b"b" * 32), None]
    assert [c[0].one_time_kem_prekey for c in claims] == [OneTimeKey(7, b"K" * 1184), None, None]
    assert all(c[0].last_resort_kem_prekey == b"L" * 1184 for c in claims)
    assert claims[-1][0].remaining.one_time_prekeys == 0
    assert await storage.claim_bundles(os.urandom(16), None) == []


async def test_concurrent_claims_never_share_a_key(storage: Storage):
    a = await new_account(storage, one_time_prekeys=[OneTimeKey(i, os.urandom(32))
                                                     for i in range(20)])
    results = await asyncio.gather(*(storage.claim_bundles(a, 1) for _ in range(40)))
    handed = [r[0].one_time_prekey.key_id for r in results if r[0].one_time_prekey]
    assert sorted(handed) == list(range(20))


async def test_prekey_uploads(storage: Storage):
    a = await new_account(storage)
    counts = await storage.store_prekeys(
        a, 1, signed_prekey=b"s" * 64, last_resort_kem_prekey=None,
        one_time_prekeys=[OneTimeKey(1, b"x" * 32)], one_time_kem_prekeys=[], max_stored=2,
    )
    assert counts.has_signed_prekey and not counts.has_last_resort_kem_prekey
    with pytest.raises(DuplicatePreKey):
        await storage.store_prekeys(a, 1, signed_prekey=None, last_resort_kem_prekey=None,
                                    one_time_prekeys=[OneTimeKey(1, b"y" * 32)],
                                    one_time_kem_prekeys=[], max_stored=5)
    with pytest.raises(LimitExceeded):
        await storage.store_prekeys(a, 1, signed_prekey=None, last_resort_kem_prekey=None,
                                    one_time_prekeys=[OneTimeKey(2, b"y" * 32),
                                                      OneTimeKey(3, b"z" * 32)],
                                    one_time_kem_prekeys=[], max_stored=2)
    assert (await storage.prekey_counts(a, 1)).one_time_prekeys == 1
    with pytest.raises(DeviceNotFound):
        await storage.prekey_counts(a, 9)


async def test_enqueue_fetch_delete(storage: Storage):
    a = await new_account(storage)
    stored = await storage.enqueue(a, [(1, b"one")], NOW, allow)
    stored += await storage.enqueue(a, [(1, b"two")], NOW + 1, allow)
    assert [s.body for s in stored] == [b"one", b"two"]
    assert stored[0].id < stored[1].id
    rows = await storage.fetch_envelopes(a, 1, 10)
    assert [(r.id, r.ts, r.body) for r in rows] == [(s.id, s.ts, s.body) for s in stored]
    assert await storage.fetch_envelopes(a, 1, 10, after_id=stored[0].id) == rows[1:]
    assert await storage.fetch_envelopes(a, 2, 10) == []
    assert await storage.delete_envelopes(a, 2, [stored[0].id]) == 0  # not that device's
    assert await storage.delete_envelopes(a, 1, [stored[0].id]) == 1
    assert await storage.delete_envelopes(a, 1, [stored[0].id]) == 0
    assert await storage.delete_envelopes_nowait(a, 1, [stored[1].id]) == 1
    assert await storage.fetch_envelopes(a, 1, 10) == []
    # Ids are never reused, even after deletion.
    again = await storage.enqueue(a, [(1, b"three")], NOW, allow)
    assert again[0].id > stored[1].id


async def test_enqueue_authorise_sees_recipient_and_can_refuse(storage: Storage):
    a = await new_account(storage)
    await storage.enqueue(a, [(1, b"x")], NOW, allow)
    seen: list[RecipientInfo] = []

    def refuse(info: RecipientInfo) -> None:
        seen.append(info)
        raise InvalidAccessKey("no")

    with pytest.raises(InvalidAccessKey):
        await storage.enqueue(a, [(1, b"y")], NOW, refuse)
    assert seen[0].devices == frozenset({1}) and seen[0].queue_lengths == {1: 1}
    assert seen[0].access_key == b"k" * 16 and seen[0].unrestricted_sealed is False
    assert len(await storage.fetch_envelopes(a, 1, 10)) == 1
    with pytest.raises(AccountNotFound):
        await storage.enqueue(os.urandom(16), [(1, b"y")], NOW, allow)


async def test_sealed_access_changes_are_seen_by_enqueue(storage: Storage):
    a = await new_account(storage)
    seen: list[RecipientInfo] = []
    await storage.enqueue(a, [(1, b"x")], NOW, seen.append)
    await storage.set_sealed_access(a, None, True)
    await storage.add_device(a, device(2), NOW, max_devices=5, max_prekeys_stored=5)
    await storage.enqueue(a, [(1, b"x")], NOW, seen.append)
    assert seen[1].access_key is None and seen[1].unrestricted_sealed is True
    assert seen[1].devices == frozenset({1, 2})


async def test_a_failing_call_does_not_spoil_its_batch(storage: Storage):
    a = await new_account(storage)

    def refuse(info: RecipientInfo) -> None:
        raise InvalidAccessKey("no")

    results = await asyncio.gather(
        *(storage.enqueue(a, [(1, bytes([i]))], NOW, refuse if i % 2 else allow)
          for i in range(20)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, InvalidAccessKey) for r in results) == 10
    assert len(await storage.fetch_envelopes(a, 1, 100)) == 10


async def test_sqlite_survives_reopen(tmp_path: Path):
    path = tmp_path / "db.sqlite3"
    first = SQLiteStorage(path)
    await first.open()
    a = await new_account(first, "persisted")
    await first.enqueue(a, [(1, b"kept")], NOW, allow)
    await first.close()
    second = SQLiteStorage(path, synchronous="normal")
    await second.open()
    assert await second.find_username("persisted") == a
    assert [r.body for r in await second.fetch_envelopes(a, 1, 5)] == [b"kept"]
    assert await second.schema_version() == SCHEMA_VERSION
    await second.close()


async def test_sqlite_queue_length_cache_cleared_during_a_submission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The bounded cache may be cleared while one multi-device submission fills it; the
    submission still succeeds (it used to raise KeyError after its INSERTs, and the
    batch committed rows its sender was told had failed) and the counts stay right."""
    monkeypatch.setattr(sqlite_backend, "_CACHE_ENTRIES", 3)
    storage = SQLiteStorage(tmp_path / "db.sqlite3")
    await storage.open()
    try:
        a = await new_account(storage)
        await storage.add_device(a, device(2), NOW, 16, 10)
        seen: list[dict[int, int]] = []

        def record(info: RecipientInfo) -> None:
            seen.append(dict(info.queue_lengths))

        for others in (b"x", b"y"):  # two entries: the second device's lookup clears
            storage._queue_lengths[(others * 16, 1)] = 0
        stored = await storage.enqueue(a, [(1, b"a"), (2, b"b")], NOW, record)
        assert [(e.device_id, e.body) for e in stored] == [(1, b"a"), (2, b"b")]
        await storage.enqueue(a, [(1, b"c"), (2, b"d")], NOW, record)
        assert seen == [{1: 0, 2: 0}, {1: 1, 2: 1}]
    finally:
        await storage.close()


async def test_sqlite_a_call_failing_after_a_write_fails_its_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """Calls without their own savepoint must not commit writes their caller was told
    failed: an exception after the first write rolls the whole batch back."""
    storage = SQLiteStorage(tmp_path / "db.sqlite3")
    await storage.open()
    try:
        a = await new_account(storage)

        def write_then_fail(conn: object) -> None:
            conn.execute(  # type: ignore[attr-defined]
                "INSERT INTO envelopes (account_id, device_id, ts, body) VALUES (?, 1, 0, ?)",
                (a, b"half"),
            )
            raise KeyError("a bug after the write")

        with pytest.raises(StorageError):
            await storage.submit(write_then_fail, savepoint=False)
        assert await storage.fetch_envelopes(a, 1, 10) == []
        # Logged by type: exception text can carry identifiers.
        assert "KeyError" in caplog.text and "a bug after the write" not in caplog.text
        await storage.enqueue(a, [(1, b"fine")], NOW, allow)  # the storage still works
        assert [e.body for e in await storage.fetch_envelopes(a, 1, 10)] == [b"fine"]
    finally:
        await storage.close()


# ---- erasure: delete_device and delete_account ----------------------------------------

def unique_device(device_id: int) -> NewDevice:
    """A device whose every stored value is random, so a scan can look for each one."""
    return NewDevice(
        device_id=device_id, registration_id=7, token_hash=os.urandom(32),
        identity_key=os.urandom(33), signed_prekey=os.urandom(64),
        last_resort_kem_prekey=os.urandom(1184),
        one_time_prekeys=[OneTimeKey(1, os.urandom(32)), OneTimeKey(2, os.urandom(32))],
        one_time_kem_prekeys=[OneTimeKey(1, os.urandom(1184))],
    )


def values_of(dev: NewDevice) -> list[bytes]:
    assert dev.signed_prekey is not None and dev.last_resort_kem_prekey is not None
    return [dev.token_hash, dev.identity_key, dev.signed_prekey, dev.last_resort_kem_prekey,
            *(k.key for k in (*dev.one_time_prekeys, *dev.one_time_kem_prekeys))]


async def account_with_two_devices(
    storage: Storage, username: str | None = None
) -> tuple[bytes, NewDevice, NewDevice, list[bytes]]:
    """Both devices hold every kind of key and two queued envelopes (bodies returned)."""
    account_id = os.urandom(16)
    first, second = unique_device(1), unique_device(2)
    await storage.create_account(
        account_id, username=username, access_key=os.urandom(16), unrestricted_sealed=False,
        device=first, now_ms=NOW, invite_hash=None, max_prekeys_stored=100,
    )
    await storage.add_device(account_id, second, NOW, max_devices=5, max_prekeys_stored=100)
    bodies = [os.urandom(48) for _ in range(4)]
    await storage.enqueue(account_id, [(1, bodies[0]), (2, bodies[1])], NOW, allow)
    await storage.enqueue(account_id, [(1, bodies[2]), (2, bodies[3])], NOW, allow)
    return account_id, first, second, bodies


def exact_devices(info: RecipientInfo, items: list[tuple[int, bytes]]) -> None:
    if {dev for dev, _ in items} != info.devices:
        raise MismatchedDevices("not the current devices")


async def test_delete_device_erases_everything_it_names(raw: RawDatabase, storage: Storage):
    a, _, second, bodies = await account_with_two_devices(storage, "alice")
    other, *_ = await account_with_two_devices(storage)  # also has a device 2: kept
    others_rows = naming(await raw.rows(), other)
    assert await storage.delete_device(a, 2) is True

    rows = await raw.rows()
    for value in [*values_of(second), bodies[1], bodies[3]]:
        assert naming(rows, value) == []
    for table, row in naming(rows, a):  # what still names the account is device 1's
        assert row.get("device_id", 1) == 1, table
    assert naming(rows, other) == others_rows
    assert [e.body for e in await storage.fetch_envelopes(a, 1, 10)] == [bodies[0], bodies[2]]
    assert len(await storage.fetch_envelopes(other, 2, 10)) == 2
    record = await storage.get_account(a)
    assert record is not None and record.devices == (1,) and record.username == "alice"
    assert await storage.get_device(a, 2) is None
    assert [b.device_id for b in await storage.claim_bundles(a, None)] == [1]
    with pytest.raises(DeviceNotFound):
        await storage.prekey_counts(a, 2)
    # Submissions see the device gone at once (SQLite caches the device list).
    seen: list[RecipientInfo] = []
    await storage.enqueue(a, [(1, b"after")], NOW, seen.append)
    assert seen[0].devices == frozenset({1}) and seen[0].queue_lengths == {1: 2}
    # Idempotent: a second call, or an unknown device or account, deletes nothing.
    assert await storage.delete_device(a, 2) is False
    assert await storage.delete_device(a, 9) is False
    assert await storage.delete_device(os.urandom(16), 1) is False


async def test_a_deleted_device_id_starts_afresh(storage: Storage):
    a, *_ = await account_with_two_devices(storage)
    await storage.delete_device(a, 2)
    await storage.add_device(a, device(2), NOW, max_devices=5, max_prekeys_stored=10)
    counts = await storage.prekey_counts(a, 2)
    assert (counts.one_time_prekeys, counts.has_signed_prekey) == (0, False)
    assert await storage.fetch_envelopes(a, 2, 10) == []
    seen: list[RecipientInfo] = []
    await storage.enqueue(a, [(2, b"new")], NOW, seen.append)
    assert seen[0].queue_lengths.get(2, 0) == 0  # not the old device's queue


async def test_the_last_device_goes_only_with_its_account(storage: Storage):
    a = await new_account(storage)
    await storage.enqueue(a, [(1, b"kept")], NOW, allow)
    with pytest.raises(LastDevice):
        await storage.delete_device(a, 1)
    assert await storage.get_device(a, 1) is not None
    assert [e.body for e in await storage.fetch_envelopes(a, 1, 10)] == [b"kept"]


async def test_delete_account_leaves_no_row_naming_it(raw: RawDatabase, storage: Storage):
    a, first, second, bodies = await account_with_two_devices(storage, "alice")
    other, *_ = await account_with_two_devices(storage, "bob")
    await storage.add_invite(b"i" * 32, NOW + 1000)
    before = naming(await raw.rows(), other)
    assert await storage.delete_account(a) is True

    rows = await raw.rows()
    assert naming(rows, a) == []
    assert naming(rows, "alice") == []
    for value in [*values_of(first), *values_of(second), *bodies]:
        assert naming(rows, value) == []
    assert naming(rows, other) == before  # another account's rows are untouched
    assert await storage.invite_exists(b"i" * 32, NOW)
    assert await storage.get_account(a) is None
    assert await storage.find_username("alice") is None
    assert await storage.claim_bundles(a, None) == []
    with pytest.raises(AccountNotFound):  # SQLite caches routes: dropped too
        await storage.enqueue(a, [(1, b"late")], NOW, allow)
    assert await storage.delete_account(a) is False  # idempotent
    assert await storage.delete_account(os.urandom(16)) is False
    await new_account(storage, "alice")  # the username is free again


async def test_an_erasure_that_fails_midway_changes_nothing(
    raw: RawDatabase, storage: Storage, monkeypatch: pytest.MonkeyPatch
):
    a, *_ = await account_with_two_devices(storage, "alice")
    before = await raw.rows()
    module = sqlite_backend if raw.dialect == "sqlite" else pytest.importorskip(
        "veil.server.storage.postgres")
    param = "?" if raw.dialect == "sqlite" else "$1"
    for scope, args in (("account", (a,)), ("device", (a, 2))):
        statements = module._ERASE[scope]
        # A failure after the first DELETE (envelopes) has run.
        broken = [statements[0], f"SELECT no_such_column FROM accounts WHERE id = {param}",
                  *statements[1:]]
        monkeypatch.setitem(module._ERASE, scope, broken)
        with pytest.raises(StorageError):
            if scope == "account":
                await storage.delete_account(*args)
            else:
                await storage.delete_device(*args)
        assert await raw.rows() == before
    monkeypatch.undo()
    assert len(await storage.fetch_envelopes(a, 2, 10)) == 2
    assert await storage.delete_device(a, 2) is True


async def test_submissions_racing_a_device_deletion_leave_it_nothing(
    raw: RawDatabase, storage: Storage
):
    a, *_ = await account_with_two_devices(storage)
    deleted = False

    async def submit(i: int) -> object:
        items = [(1, bytes([i]))] if deleted else [(1, bytes([i])), (2, bytes([i]))]
        return await storage.enqueue(a, items, NOW,
                                     lambda info: exact_devices(info, items))

    async def delete() -> bool:
        nonlocal deleted
        try:
            return await storage.delete_device(a, 2)
        finally:
            deleted = True

    jobs = [submit(i) for i in range(20)]
    jobs.insert(10, delete())
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert True in results
    assert all(isinstance(r, list | bool | MismatchedDevices) for r in results), results
    assert await storage.fetch_envelopes(a, 2, 100) == []
    rows = await raw.rows()
    assert [r for r in rows["envelopes"] if r["device_id"] == 2 and bytes(r["account_id"]) == a
            ] == []


async def test_sqlite_erased_account_leaves_no_bytes_in_the_file(tmp_path: Path):
    """secure_delete: the deleted cells are zeroed, not just unlinked, so the erased
    values cannot be read back out of the database file's free space (on a database
    this small; see docs/server.md for what a large one may keep)."""
    path = tmp_path / "db.sqlite3"
    storage = SQLiteStorage(path)
    await storage.open()
    a, first, second, bodies = await account_with_two_devices(storage, "erasable_name")
    await storage.close()
    values = [a, b"erasable_name", *values_of(first), *values_of(second), *bodies]
    # Long keys are split between a page and its overflow page: look for 16-byte pieces.
    pieces = [v[i:i + 16] for v in values for i in range(0, len(v) - 15, 16)]
    data = path.read_bytes()
    assert all(v[:16] in data for v in values)  # the check below is not vacuous
    storage = SQLiteStorage(path)
    await storage.open()
    # Some SQLite builds (Debian's) turn secure_delete on by default; others do not.
    await storage.submit(lambda conn: conn.execute("PRAGMA secure_delete = OFF"))
    await storage.delete_account(a)
    await storage.close()  # checkpoints the WAL into the file and truncates it
    data = path.read_bytes()
    assert [p for p in pieces if p in data] == []
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or a not in wal.read_bytes()
