"""The storage contract, run against every backend (see conftest.BACKENDS)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import veil.server.storage.sqlite as sqlite_backend
from veil.server.errors import (
    AccountNotFound,
    DeviceNotFound,
    DuplicatePreKey,
    InvalidAccessKey,
    InvalidInvite,
    LimitExceeded,
    StorageError,
    UsernameTaken,
)
from veil.server.storage.base import NewDevice, OneTimeKey, RecipientInfo, Storage
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
    assert await storage.schema_version() == 1


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
    assert await second.schema_version() == 1
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
