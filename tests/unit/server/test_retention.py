"""Retention on the server (issue 12 §4), on every backend (see conftest.BACKENDS).

- queued envelopes expire ``envelope_ttl_s`` after they were stored, in bounded batches,
  and the retention job deletes them (with a line for the operator);
- an account's queued envelopes total at most ``max_queued_bytes_per_account``: a
  submission beyond is refused whole with ``queue_quota_exceeded`` (429), sealed or not,
  and nothing else is affected;
- SQLite gives the pages back: after a pass no byte of an expired ciphertext is left in
  the database file or its WAL, and the file shrinks (tests scan the files).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from tests.unit.server.rawdb import RawDatabase, RawSQLite
from tests.unit.server.test_schema import ACCOUNT, make_v1
from tests.unit.server.test_storage import device, new_account
from veil.server.bus import InProcessBus
from veil.server.config import ServerConfig
from veil.server.errors import ConfigError, QueueFull, QueueQuotaExceeded
from veil.server.lines import LINES
from veil.server.services import messages as messages_module
from veil.server.services.groups import GroupService
from veil.server.services.messages import (
    DeviceSender,
    MessageService,
    Outgoing,
    SealedSender,
)
from veil.server.services.retention import RetentionReport, RetentionService, run_retention
from veil.server.storage import migrations
from veil.server.storage.base import (
    EnvelopeExpiry,
    ExpiryReport,
    RecipientInfo,
    Reclaimed,
    Storage,
)
from veil.server.storage.migrations import SCHEMA_VERSION, UPGRADES
from veil.server.storage.sqlite import SQLiteStorage
from veil.server.storage.sqlite_retention import AUTO_VACUUM_INCREMENTAL

NOW = 1_700_000_000_000
DAY_MS = 24 * 3600 * 1000


class Clock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def allow(info: RecipientInfo) -> None:
    return None


def messages_for(storage: Storage, clock: Clock, **settings: object) -> MessageService:
    config = ServerConfig(**settings)  # type: ignore[arg-type]
    return MessageService(storage, InProcessBus(), config, clock)


# ---- the storage contract ---------------------------------------------------------------

async def test_expire_envelopes_deletes_the_old_ones_in_batches(storage: Storage):
    a = await new_account(storage)
    b = await new_account(storage)
    old = [await storage.enqueue(acc, [(1, bytes([i]) * (10 + i))], NOW - DAY_MS + i, allow)
           for i, acc in enumerate((a, b, a))]
    fresh = await storage.enqueue(a, [(1, b"fresh")], NOW, allow)
    first = await storage.expire_envelopes(before_ms=NOW - 1000, limit=2)
    assert first == EnvelopeExpiry(2, 10 + 11)  # the two oldest
    second = await storage.expire_envelopes(before_ms=NOW - 1000, limit=2)
    assert second == EnvelopeExpiry(1, 12)
    assert await storage.expire_envelopes(before_ms=NOW - 1000, limit=2) == EnvelopeExpiry(0, 0)
    assert await storage.fetch_envelopes(a, 1, 10) == fresh
    assert await storage.fetch_envelopes(b, 1, 10) == []
    assert len(old) == 3


async def test_authorise_sees_the_accounts_queued_bytes(storage: Storage):
    a = await new_account(storage)
    await storage.add_device(a, device(2), NOW, max_devices=4, max_prekeys_stored=10)
    seen: list[int] = []

    def record(info: RecipientInfo) -> None:
        seen.append(info.queued_bytes)

    await storage.enqueue(a, [(1, b"x" * 100), (2, b"y" * 50)], NOW, record)
    stored = await storage.enqueue(a, [(1, b"z" * 7)], NOW, record)
    await storage.enqueue(a, [(2, b"")], NOW, record)
    assert seen == [0, 150, 157]
    await storage.delete_envelopes(a, 1, [stored[0].id])
    await storage.enqueue(a, [(2, b"")], NOW, record)
    assert seen[-1] == 150
    await storage.expire_envelopes(before_ms=NOW + 1, limit=100)
    await storage.enqueue(a, [(1, b"q" * 3)], NOW + 5, record)
    assert seen[-1] == 0
    await storage.delete_device(a, 2)
    await storage.enqueue(a, [(1, b"")], NOW + 5, record)
    assert seen[-1] == 3
    # Other accounts count their own.
    b = await new_account(storage)
    await storage.enqueue(b, [(1, b"")], NOW, record)
    assert seen[-1] == 0


async def test_sqlite_queued_bytes_survive_a_reopen_and_a_cache_loss(tmp_path: Path):
    storage = SQLiteStorage(tmp_path / "db.sqlite3")
    await storage.open()
    a = await new_account(storage)
    await storage.enqueue(a, [(1, b"x" * 40)], NOW, allow)
    await storage.close()
    storage = SQLiteStorage(tmp_path / "db.sqlite3")
    await storage.open()
    seen: list[int] = []
    try:
        await storage.enqueue(a, [(1, b"y" * 2)], NOW, lambda i: seen.append(i.queued_bytes))
        storage._forget()  # as after a failed commit
        await storage.enqueue(a, [(1, b"")], NOW, lambda i: seen.append(i.queued_bytes))
        # An acknowledgement without a cached count, then with one.
        ids = [e.id for e in await storage.fetch_envelopes(a, 1, 10)]
        storage._forget()
        await storage.delete_envelopes(a, 1, ids[:1])
        await storage.enqueue(a, [(1, b"")], NOW, lambda i: seen.append(i.queued_bytes))
        await storage.delete_envelopes(a, 1, ids[1:2])
        await storage.enqueue(a, [(1, b"")], NOW, lambda i: seen.append(i.queued_bytes))
    finally:
        await storage.close()
    assert seen == [40, 42, 2, 0]


# ---- the quota and the TTL in the message service ----------------------------------------

async def test_a_submission_over_the_byte_quota_is_refused_whole(storage: Storage):
    clock = Clock()
    service = messages_for(storage, clock, max_envelope_bytes=1000,
                           max_ws_frame_bytes=1000, max_queued_bytes_per_account=2500)
    bob = await new_account(storage)
    await storage.add_device(bob, device(2), NOW, max_devices=4, max_prekeys_stored=10)
    await storage.set_sealed_access(bob, b"k" * 16, False)
    carol = await new_account(storage)
    sealed = SealedSender(b"k" * 16)
    pair = [Outgoing(1, b"a" * 600), Outgoing(2, b"b" * 600)]
    await service.submit(bob, pair, sealed)
    await service.submit(bob, pair, DeviceSender(carol, 1))  # 2400 of 2500 bytes
    for sender in (sealed, DeviceSender(carol, 1)):
        with pytest.raises(QueueQuotaExceeded) as refused:
            await service.submit(bob, [Outgoing(1, b"c" * 100), Outgoing(2, b"d")], sender)
        assert refused.value.code == "queue_quota_exceeded"
        assert refused.value.status == 429 and isinstance(refused.value, QueueFull)
        assert refused.value.details == {"quota_bytes": 2500}  # never what bob has queued
    # Nothing of the refused submissions was stored; what fits still goes in.
    assert [len(e.body) for e in await storage.fetch_envelopes(bob, 1, 10)] == [600, 600]
    assert [len(e.body) for e in await storage.fetch_envelopes(bob, 2, 10)] == [600, 600]
    await service.submit(bob, [Outgoing(1, b"e" * 50), Outgoing(2, b"f" * 50)], sealed)
    # Another account is not affected.
    await service.submit(carol, [Outgoing(1, b"g" * 1000)], DeviceSender(bob, 1))
    # Fetching and acknowledging gives the space back.
    first = await storage.fetch_envelopes(bob, 1, 1)
    await service.acknowledge(bob, 1, [first[0].id])
    await service.submit(bob, [Outgoing(1, b"h" * 500), Outgoing(2, b"i" * 50)], sealed)


async def test_the_access_key_is_checked_before_the_quota(storage: Storage):
    from veil.server.errors import InvalidAccessKey

    service = messages_for(storage, Clock(), max_envelope_bytes=100, max_ws_frame_bytes=100,
                           max_queued_bytes_per_account=100)
    bob = await new_account(storage)  # access key b"k" * 16
    await service.submit(bob, [Outgoing(1, b"x" * 100)], SealedSender(b"k" * 16))
    with pytest.raises(InvalidAccessKey):  # a stranger learns nothing about the queue
        await service.submit(bob, [Outgoing(1, b"x")], SealedSender(b"w" * 16))


async def test_the_service_expires_envelopes_after_the_ttl(storage: Storage):
    clock = Clock()
    service = messages_for(storage, clock, envelope_ttl_s=3600)
    bob = await new_account(storage)
    await storage.set_sealed_access(bob, None, True)
    await service.submit(bob, [Outgoing(1, b"old")], SealedSender(None))
    clock.now += 1800 * 1000
    await service.submit(bob, [Outgoing(1, b"newer")], SealedSender(None))
    assert await service.expire() == EnvelopeExpiry(0, 0)
    clock.now += 1801 * 1000
    assert await service.expire() == EnvelopeExpiry(1, 3)
    assert [e.body for e in await storage.fetch_envelopes(bob, 1, 10)] == [b"newer"]


async def test_the_service_expires_a_backlog_larger_than_one_batch(
    storage: Storage, monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(messages_module, "EXPIRY_BATCH", 3)
    a = await new_account(storage)
    await asyncio.gather(*(storage.enqueue(a, [(1, b"o" * i)], NOW - DAY_MS, allow)
                           for i in range(8)))
    service = messages_for(storage, Clock(), envelope_ttl_s=3600)
    assert await service.expire() == EnvelopeExpiry(8, sum(range(8)))
    assert await storage.fetch_envelopes(a, 1, 10) == []


def test_a_quota_below_one_envelope_is_a_config_error():
    with pytest.raises(ConfigError, match="max_queued_bytes_per_account"):
        ServerConfig(max_queued_bytes_per_account=1000, max_envelope_bytes=2000)
    assert ServerConfig().max_queued_bytes_per_account == 256 << 20
    assert ServerConfig().envelope_ttl_s == 30 * 24 * 3600


# ---- the retention job ---------------------------------------------------------------

async def test_a_retention_pass_expires_envelopes_and_group_data(storage: Storage):
    clock = Clock()
    config = ServerConfig(envelope_ttl_s=60)
    messages = MessageService(storage, InProcessBus(), config, clock)
    groups = GroupService(storage, InProcessBus(), config, clock)
    retention = RetentionService(storage, messages, groups)
    bob = await new_account(storage)
    await storage.enqueue(bob, [(1, b"e" * 33)], NOW, allow)
    idle = await retention.run_once()
    assert not idle.deleted and idle.reclaimed == Reclaimed()
    clock.now += 61_000
    report = await retention.run_once()
    assert report.deleted and report.envelopes == EnvelopeExpiry(1, 33)
    text = str(report.line())
    assert text.startswith("retention: deleted 1 queued envelopes (33 bytes), 0 group")
    assert await storage.fetch_envelopes(bob, 1, 10) == []


async def test_the_job_runs_at_once_announces_and_survives_failures():
    passes: list[int] = []
    heard: list[str] = []
    announced = asyncio.Event()

    class Groups:
        async def expire(self) -> ExpiryReport:
            from veil.server.errors import StorageError

            raise StorageError("the database is away")

    class Messages:
        async def expire(self) -> EnvelopeExpiry:
            passes.append(1)
            return EnvelopeExpiry(len(passes) - 1, 10)  # nothing on the first pass

    class Store:
        async def reclaim(self) -> Reclaimed:
            return Reclaimed(4, True)

    service = RetentionService(Store(), Messages(), Groups())  # type: ignore[arg-type]

    def announce(said: object) -> None:
        heard.append(str(said))
        announced.set()

    job = asyncio.create_task(run_retention(service, 0.001, announce))
    await asyncio.wait_for(announced.wait(), 10)
    job.cancel()
    assert heard[0] == ("retention: deleted 1 queued envelopes (10 bytes), 0 group messages, "
                        "0 idle groups and 0 KeyPackages; 4 free database pages given back")
    assert len(passes) >= 2


def test_the_operator_line_has_every_field_of_a_report():
    report = RetentionReport(EnvelopeExpiry(2, 9), ExpiryReport(3, 1, 1, 4), Reclaimed(7))
    assert str(report.line()) == (
        "retention: deleted 2 queued envelopes (9 bytes), 3 group messages, 1 idle groups "
        "and 4 KeyPackages; 7 free database pages given back")
    assert "expired" in LINES


# ---- SQLite: the bytes really go -----------------------------------------------------

def _file_bytes(path: Path) -> bytes:
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def _pragma(path: Path, name: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        conn.close()


async def test_sqlite_expired_ciphertext_leaves_the_files_and_the_file_shrinks(
    tmp_path: Path,
):
    path = tmp_path / "db.sqlite3"
    storage = SQLiteStorage(path)
    await storage.open()
    try:
        a = await new_account(storage)
        # Random bytes stand for ciphertext; 6 KiB each spills into overflow pages.
        bodies = [os.urandom(6 * 1024) for _ in range(150)]
        for body in bodies:
            await storage.enqueue(a, [(1, body)], NOW - DAY_MS, allow)
        kept = os.urandom(300)
        await storage.enqueue(a, [(1, kept)], NOW, allow)
        await storage.submit_outside(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        pieces = [b[i:i + 16] for b in bodies for i in range(0, len(b) - 15, 512)]
        data = _file_bytes(path)
        # The scan below is not vacuous (a piece may straddle two pages: most do not).
        assert sum(p in data for p in pieces) > 0.9 * len(pieces)
        size_before = path.stat().st_size
        assert _pragma(path, "auto_vacuum") == AUTO_VACUUM_INCREMENTAL

        done = await storage.expire_envelopes(before_ms=NOW - 1000, limit=1000)
        assert done == EnvelopeExpiry(150, 150 * 6 * 1024)
        assert _pragma(path, "freelist_count") > 200  # deleted, not yet given back
        reclaimed = await storage.reclaim()
        assert reclaimed.pages > 200 and reclaimed.log_truncated
        # Read while the server still runs: this is what a copy of the disk would show.
        assert _pragma(path, "freelist_count") == 0
        data = _file_bytes(path)
        assert [p for p in pieces if p in data] == []
        assert kept[:16] in data
        assert path.stat().st_size < size_before - 150 * 6 * 1024 * 0.9
        assert [e.body for e in await storage.fetch_envelopes(a, 1, 10)] == [kept]
    finally:
        await storage.close()


async def test_sqlite_reclaim_with_nothing_free_is_cheap_and_harmless(tmp_path: Path):
    storage = SQLiteStorage(tmp_path / "db.sqlite3")
    await storage.open()
    try:
        await new_account(storage)
        assert (await storage.reclaim()).pages == 0
    finally:
        await storage.close()


async def test_sqlite_connections_delete_securely(tmp_path: Path):
    storage = SQLiteStorage(tmp_path / "db.sqlite3")
    await storage.open()
    try:
        mode = await storage.submit(lambda c: c.execute("PRAGMA secure_delete").fetchone()[0])
        assert mode == 1
    finally:
        await storage.close()


# ---- schema 5: the index, and the one-time conversion of older SQLite files -----------

async def make_v4(raw: RawDatabase) -> None:
    """A database as schema-4 code left it: the released v1 and the frozen steps 2-4."""
    await make_v1(raw)
    for step in UPGRADES:
        if step.version > 4:
            break
        sql = step.sqlite if raw.dialect == "sqlite" else step.postgres
        await raw.execute(*sql, ("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                                 (step.version, step.name, NOW)))
    await raw.execute(("INSERT INTO schema_compat_version VALUES (1, ?)", (3,)))


async def test_a_schema_4_database_upgrades_and_its_old_envelopes_expire(raw: RawDatabase):
    await make_v4(raw)
    storage = raw.storage()
    await storage.open()
    try:
        assert await storage.schema_version() == SCHEMA_VERSION >= 5
        (old,) = await storage.fetch_envelopes(ACCOUNT, 1, 10)
        assert old.body == b"queued before the upgrade" and old.ts == NOW
        assert await storage.expire_envelopes(before_ms=NOW + 1, limit=10) == EnvelopeExpiry(
            1, len(old.body))
        assert await storage.fetch_envelopes(ACCOUNT, 1, 10) == []
    finally:
        await storage.close()
    description = await raw.describe()
    assert description["envelopes"]["indexes"]["envelopes_by_ts"] == (("ts",), False)
    rows = await raw.rows()
    assert sorted(r["version"] for r in rows["schema_migrations"]) == list(
        range(1, SCHEMA_VERSION + 1))
    assert [r["compat_version"] for r in rows["schema_compat_version"]] == [
        migrations.SCHEMA_COMPAT_VERSION]


async def test_sqlite_an_older_file_is_converted_to_incremental_auto_vacuum(tmp_path: Path):
    raw = RawSQLite(tmp_path / "veil.sqlite3")
    await make_v4(raw)
    assert _pragma(raw.path, "auto_vacuum") == 0
    storage = raw.storage()
    await storage.open()
    await storage.close()
    assert _pragma(raw.path, "auto_vacuum") == AUTO_VACUUM_INCREMENTAL
    assert _pragma(raw.path, "freelist_count") == 0
    storage = raw.storage()  # once: a second open has nothing to convert
    await storage.open()
    try:
        (old,) = await storage.fetch_envelopes(ACCOUNT, 1, 10)
        assert old.body == b"queued before the upgrade"
    finally:
        await storage.close()


async def test_sqlite_outside_calls_run_between_batches_in_order(tmp_path: Path):
    """``submit_outside`` (reclaim's incremental vacuum and checkpoint): after the calls
    queued before it committed, outside any transaction; one that fails leaves none open
    and does not disturb the calls after it."""
    from veil.server.errors import StorageError

    storage = SQLiteStorage(tmp_path / "db.sqlite3")
    await storage.open()
    order: list[tuple[str, bool]] = []

    def failing(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        raise RuntimeError("a bug")

    try:
        first = storage.submit(lambda c: order.append(("in", c.in_transaction)))
        outside = storage.submit_outside(lambda c: order.append(("out", c.in_transaction)))
        broken = storage.submit_outside(failing)
        last = storage.submit(lambda c: order.append(("in", c.in_transaction)))
        await first
        await outside
        with pytest.raises(StorageError):
            await broken
        await last
        assert order == [("in", True), ("out", False), ("in", True)]
        await new_account(storage)  # the thread still works
    finally:
        await storage.close()
