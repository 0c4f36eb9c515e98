"""The MLS Delivery Service's storage calls, on every backend (SQLite, and PostgreSQL
with VEIL_TEST_POSTGRES): KeyPackages, group mailboxes, first-wins commits, retention."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.unit.server.rawdb import RawDatabase
from tests.unit.server.test_storage import NOW, device, new_account
from veil.server.errors import (
    DeviceNotFound,
    DuplicateKeyPackage,
    EpochConflict,
    GroupExists,
    GroupNotFound,
    LimitExceeded,
)
from veil.server.storage.base import (
    GroupRecord,
    KeyPackageCounts,
    KeyPackageRecord,
    NextEpoch,
    Storage,
)
from veil.server.storage.schema import GROUP_TABLES

NOW_S = NOW // 1000
DAY_MS = 24 * 3600 * 1000


def kp(suite: int = 1, last_resort: bool = False, not_after: int = NOW_S + 3600,
       ref: bytes | None = None) -> KeyPackageRecord:
    ref = ref or os.urandom(32)
    return KeyPackageRecord(ref, suite, last_resort, not_after, b"kp:" + ref)


def allow(group: GroupRecord) -> None:
    pass


def at_epoch(epoch: int):  # type: ignore[no-untyped-def]
    def check(group: GroupRecord) -> None:
        if group.epoch != epoch:
            raise EpochConflict("stale", {"current_epoch": group.epoch})
    return check


def next_epoch() -> NextEpoch:
    return NextEpoch(os.urandom(32), os.urandom(32))


# ---- KeyPackages -------------------------------------------------------------------------
async def test_key_packages_are_claimed_once_then_last_resort(storage: Storage):
    account = await new_account(storage)
    await storage.add_device(account, device(2), NOW, 16, 100)
    one, two, last = kp(), kp(), kp(last_resort=True)
    counts = await storage.store_key_packages(account, 1, [one, two, last], 10)
    assert counts == KeyPackageCounts(one_time=2, last_resort=1)
    await storage.store_key_packages(account, 2, [kp()], 10)
    first = await storage.claim_key_packages(account, 1, NOW_S)
    assert [c.device_id for c in first] == [1, 2]
    assert not any(c.last_resort for c in first)
    second = await storage.claim_key_packages(account, 1, NOW_S)
    assert [c.device_id for c in second] == [1]  # device 2 has nothing left
    handed = {first[0].data, second[0].data}
    assert handed == {one.data, two.data}  # each one-time KeyPackage once
    assert second[0].remaining == KeyPackageCounts(0, 1)
    for _ in range(2):  # then the last-resort one, again and again
        (again,) = await storage.claim_key_packages(account, 1, NOW_S)
        assert again.last_resort and again.data == last.data
    assert await storage.claim_key_packages(account, 3, NOW_S) == []  # another suite
    assert await storage.claim_key_packages(os.urandom(16), 1, NOW_S) == []


async def test_expired_key_packages_are_never_handed_out(storage: Storage):
    account = await new_account(storage)
    await storage.store_key_packages(account, 1, [kp(not_after=NOW_S - 1)], 10)
    assert await storage.claim_key_packages(account, 1, NOW_S) == []
    report = await storage.expire(group_messages_before_ms=0, groups_idle_before_ms=0,
                                  now_s=NOW_S)
    assert report.key_packages == 1
    assert await storage.key_package_counts(account, 1) == KeyPackageCounts(0, 0)


async def test_concurrent_claims_never_share_a_key_package(storage: Storage):
    account = await new_account(storage)
    await storage.store_key_packages(account, 1, [kp() for _ in range(20)], 100)
    claims = await asyncio.gather(*(storage.claim_key_packages(account, 1, NOW_S)
                                    for _ in range(30)))
    handed = [c[0].data for c in claims if c]
    assert len(handed) == 20 and len(set(handed)) == 20


async def test_key_package_uploads_are_bounded_and_unique(storage: Storage):
    account = await new_account(storage)
    same = kp()
    await storage.store_key_packages(account, 1, [same], 3)
    with pytest.raises(DuplicateKeyPackage):
        await storage.store_key_packages(account, 1, [kp(), same], 3)
    assert (await storage.key_package_counts(account, 1)).one_time == 1  # nothing stored
    with pytest.raises(LimitExceeded):
        await storage.store_key_packages(account, 1, [kp(), kp(), kp()], 3)
    # A last-resort KeyPackage replaces the one of its suite, and is not counted.
    await storage.store_key_packages(account, 1, [kp(last_resort=True)], 3)
    await storage.store_key_packages(account, 1, [kp(last_resort=True)], 3)
    await storage.store_key_packages(account, 1, [kp(suite=3, last_resort=True)], 3)
    assert await storage.key_package_counts(account, 1) == KeyPackageCounts(1, 2)
    with pytest.raises(DeviceNotFound):
        await storage.store_key_packages(account, 9, [kp()], 3)


async def test_erasing_a_device_erases_its_key_packages(raw: RawDatabase, storage: Storage):
    account = await new_account(storage)
    await storage.add_device(account, device(2), NOW, 16, 100)
    await storage.store_key_packages(account, 2, [kp(), kp(last_resort=True)], 10)
    await storage.delete_device(account, 2)
    assert [r for r in (await raw.rows())["mls_key_packages"] if r["device_id"] == 2] == []
    await storage.store_key_packages(account, 1, [kp()], 10)
    await storage.delete_account(account)
    assert (await raw.rows())["mls_key_packages"] == []


# ---- group mailboxes ----------------------------------------------------------------------
async def test_groups_start_at_epoch_zero_and_ids_are_unique(storage: Storage):
    gid = os.urandom(16)
    await storage.create_group(gid, b"r" * 32, b"w" * 32, NOW, 1000)
    view = await storage.group_view(gid, 0)
    assert view is not None and (view.epoch, view.last_seq, view.read_verifier) == \
        (0, 0, b"r" * 32)
    assert (await storage.group_view(gid, 1)).read_verifier is None  # type: ignore[union-attr]
    assert await storage.group_view(os.urandom(16), 0) is None
    with pytest.raises(GroupExists):
        await storage.create_group(gid, b"x" * 32, b"y" * 32, NOW, 1000)


async def test_anonymous_creation_stops_at_the_servers_group_limit(storage: Storage):
    for _ in range(3):
        await storage.create_group(os.urandom(16), b"r" * 32, b"w" * 32, NOW, 3)
    late = os.urandom(16)
    with pytest.raises(LimitExceeded, match="limit of 3 groups"):
        await storage.create_group(late, b"r" * 32, b"w" * 32, NOW, 3)
    assert await storage.group_view(late, 0) is None       # nothing of it was kept


async def test_messages_get_sequence_numbers_and_commits_move_the_epoch(storage: Storage):
    gid = os.urandom(32)
    await storage.create_group(gid, b"r" * 32, b"w" * 32, NOW, 1000)
    seen: list[GroupRecord] = []
    a = await storage.append_group_message(gid, b"m1", NOW, seen.append)
    b = await storage.append_group_message(gid, b"m2", NOW + 1, allow)
    nxt = next_epoch()
    c = await storage.append_group_message(gid, b"c0", NOW + 2, at_epoch(0), nxt)
    d = await storage.append_group_message(gid, b"m3", NOW + 3, at_epoch(1))
    assert [(m.seq, m.epoch, m.commit) for m in (a, b, c, d)] == \
        [(1, 0, False), (2, 0, False), (3, 0, True), (4, 1, False)]
    assert seen[0].write_verifier == b"w" * 32 and seen[0].next_seq == 1
    view = await storage.group_view(gid, 1)
    assert view is not None and view.epoch == 1 and view.last_seq == 4
    assert view.read_verifier == nxt.read_verifier
    epoch0 = await storage.fetch_group_messages(gid, 0, 0, 10)
    assert [(m.seq, m.body, m.commit) for m in epoch0] == \
        [(1, b"m1", False), (2, b"m2", False), (3, b"c0", True)]
    assert [m.seq for m in await storage.fetch_group_messages(gid, 0, 1, 1)] == [2]
    assert [m.body for m in await storage.fetch_group_messages(gid, 1, 0, 10)] == [b"m3"]
    with pytest.raises(GroupNotFound):
        await storage.append_group_message(os.urandom(16), b"x", NOW, allow)


async def test_one_commit_per_epoch_even_when_they_race(storage: Storage):
    gid = os.urandom(16)
    await storage.create_group(gid, b"r" * 32, b"w" * 32, NOW, 1000)
    results = await asyncio.gather(
        *(storage.append_group_message(gid, b"commit %d" % i, NOW, at_epoch(0), next_epoch())
          for i in range(12)),
        return_exceptions=True)
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 11
    assert all(isinstance(e, EpochConflict) and e.details == {"current_epoch": 1}
               for e in lost)
    assert [m.body for m in await storage.fetch_group_messages(gid, 0, 0, 100)] == \
        [won[0].body]  # type: ignore[union-attr]


async def test_the_epochs_key_refuses_a_second_commit_without_the_check(
    raw: RawDatabase, storage: Storage
):
    """Even if the group's row said epoch 0 again (a bug, a stale read), the primary key
    of group_epochs refuses a second commit of epoch 0: the group cannot fork."""
    gid = os.urandom(16)
    await storage.create_group(gid, b"r" * 32, b"w" * 32, NOW, 1000)
    await storage.append_group_message(gid, b"c0", NOW, allow, next_epoch())
    await raw.execute("UPDATE mls_groups SET epoch = 0")
    with pytest.raises(EpochConflict):
        await storage.append_group_message(gid, b"fork", NOW, allow, next_epoch())
    assert [m.body for m in await storage.fetch_group_messages(gid, 0, 0, 10)] == [b"c0"]


async def test_retention_deletes_old_messages_and_unused_verifiers(storage: Storage):
    gid, idle = os.urandom(16), os.urandom(16)
    await storage.create_group(gid, b"r" * 32, b"w" * 32, NOW, 1000)
    await storage.create_group(idle, b"r" * 32, b"w" * 32, NOW - 100 * DAY_MS, 1000)
    await storage.append_group_message(gid, b"old", NOW - 40 * DAY_MS, allow)
    await storage.append_group_message(gid, b"commit", NOW - 40 * DAY_MS, allow, next_epoch())
    await storage.append_group_message(gid, b"new", NOW, allow)
    report = await storage.expire(group_messages_before_ms=NOW - 30 * DAY_MS,
                                  groups_idle_before_ms=NOW - 90 * DAY_MS, now_s=NOW_S)
    assert (report.group_messages, report.group_epochs, report.groups) == (2, 1, 1)
    assert await storage.group_view(idle, 0) is None
    assert (await storage.group_view(gid, 0)).read_verifier is None  # type: ignore[union-attr]
    assert [m.body for m in await storage.fetch_group_messages(gid, 1, 0, 10)] == [b"new"]
    counts: list[GroupRecord] = []
    nxt = await storage.append_group_message(gid, b"next", NOW, counts.append)
    assert (counts[0].message_count, counts[0].byte_count) == (1, 3)  # recounted
    assert nxt.seq == 4  # sequence numbers are never reused
    # The current epoch's verifier stays even when it holds no message.
    await storage.expire(group_messages_before_ms=NOW + 1, groups_idle_before_ms=0,
                         now_s=NOW_S)
    assert (await storage.group_view(gid, 1)).read_verifier is not None  # type: ignore[union-attr]


async def test_group_tables_name_no_account_and_hold_only_opaque_bytes(
    raw: RawDatabase, storage: Storage
):
    account = await new_account(storage)
    gid = os.urandom(16)
    await storage.create_group(gid, b"r" * 32, b"w" * 32, NOW, 1000)
    await storage.append_group_message(gid, b"ciphertext", NOW, allow)
    rows = await raw.rows()
    names = {t.name for t in GROUP_TABLES}
    for table in GROUP_TABLES:
        assert not {"account_id", "device_id", "sender"} & {c.name for c in table.columns}
        for row in rows[table.name]:
            for value in row.values():
                if isinstance(value, bytes | bytearray | memoryview):
                    assert account not in bytes(value)
    assert names <= set(rows)
