"""Storage of the protection layers (issue 13): the audit chain and checkpoints, blocks,
runtime network rules and limiter state — on every back end (the ``storage`` fixture is
parametrised by back end, see conftest.BACKENDS), and kept across a reopen."""

from __future__ import annotations

import pytest

from tests.unit.server.rawdb import RawDatabase, declared
from tests.unit.server.test_schema import ACCOUNT, make_v1
from veil.server.errors import Conflict
from veil.server.storage.base import (
    AuditCheckpoint,
    AuditRow,
    BlockRow,
    LimiterRow,
    NetworkRule,
    Storage,
)
from veil.server.storage.migrations import SCHEMA_VERSION, UPGRADES

NOW = 1_700_000_000_000


def record(seq: int, prev: bytes = b"\0" * 32) -> AuditRow:
    return AuditRow(seq, NOW + seq, "server.start", '{"n":' + str(seq) + "}", prev,
                    bytes([seq % 256]) * 32)


async def test_audit_records_append_in_order_and_page(storage: Storage) -> None:
    assert await storage.audit_last() is None
    assert await storage.audit_rows(0, 10) == []
    await storage.audit_append([])  # nothing to do
    await storage.audit_append([record(1), record(2)])
    await storage.audit_append([record(3, b"p" * 32)])
    last = await storage.audit_last()
    assert last == record(3, b"p" * 32)
    assert [r.seq for r in await storage.audit_rows(0, 2)] == [1, 2]
    assert [r.seq for r in await storage.audit_rows(2, 10)] == [3]
    assert await storage.audit_rows(1, 1) == [record(2)]
    # The text is kept byte for byte (it is what was hashed).
    odd = AuditRow(4, NOW, "k", '{"b":1,"a":"\\u00e9"}', b"x" * 32, b"y" * 32)
    await storage.audit_append([odd])
    assert (await storage.audit_rows(3, 1)) == [odd]


async def test_a_taken_seq_refuses_the_whole_batch(storage: Storage) -> None:
    await storage.audit_append([record(1)])
    with pytest.raises(Conflict):
        await storage.audit_append([record(2), record(1)])
    assert [r.seq for r in await storage.audit_rows(0, 10)] == [1]
    await storage.audit_append([record(2)])  # the store is still usable
    assert [r.seq for r in await storage.audit_rows(0, 10)] == [1, 2]


async def test_checkpoints(storage: Storage) -> None:
    assert await storage.audit_checkpoints() == []
    second = AuditCheckpoint(200, b"h" * 32, NOW + 2, b"s" * 64, "1")
    first = AuditCheckpoint(100, b"g" * 32, NOW + 1, b"t" * 64, "1")
    await storage.audit_checkpoint_add(second)
    await storage.audit_checkpoint_add(first)
    assert await storage.audit_checkpoints() == [first, second]
    again = AuditCheckpoint(200, b"i" * 32, NOW + 3, b"u" * 64, "2")
    await storage.audit_checkpoint_add(again)
    assert await storage.audit_checkpoints() == [first, again]


async def test_blocks_are_saved_replaced_lifted_and_expire(storage: Storage) -> None:
    a = BlockRow("b1", "127.0.0.2", "aa" * 8, "auth_bruteforce", NOW, NOW + 1000, 1)
    b = BlockRow("b2", "2001:db8:1:2::/64", "bb" * 8, "route_scan", NOW + 5, NOW + 60_000, 3)
    await storage.blocks_save(a)
    await storage.blocks_save(b)
    assert await storage.blocks_load(NOW) == [a, b]
    longer = BlockRow("b1", "127.0.0.2", "aa" * 8, "auth_bruteforce", NOW, NOW + 9000, 2)
    await storage.blocks_save(longer)
    assert await storage.blocks_load(NOW) == [longer, b]
    # Ended blocks are not returned and are deleted (no address stays behind).
    assert await storage.blocks_load(NOW + 9000) == [b]
    assert await storage.blocks_load(NOW) == [b]
    assert await storage.blocks_delete("b2")
    assert not await storage.blocks_delete("b2")
    assert await storage.blocks_load(NOW) == []


async def test_network_rules(storage: Storage) -> None:
    assert await storage.network_rules() == []
    await storage.network_rules_add("10.0.0.0/8", "deny", NOW)
    await storage.network_rules_add("2001:db8::/32", "allow", NOW + 1)
    await storage.network_rules_add("10.0.0.0/8", "allow", NOW + 2)  # replaces
    assert await storage.network_rules() == [
        NetworkRule("2001:db8::/32", "allow", NOW + 1), NetworkRule("10.0.0.0/8", "allow", NOW + 2)]
    with pytest.raises(ValueError, match="deny"):
        await storage.network_rules_add("10.1.0.0/16", "maybe", NOW)
    assert await storage.network_rules_remove("10.0.0.0/8")
    assert not await storage.network_rules_remove("10.0.0.0/8")
    assert await storage.network_rules() == [NetworkRule("2001:db8::/32", "allow", NOW + 1)]


async def test_limiter_state_replaces_one_name_only(storage: Storage) -> None:
    assert await storage.limiter_load("register.address") == []
    await storage.limiter_save("register.address", [
        LimiterRow("127.0.0.2", 3.25, NOW), LimiterRow("127.0.0.3", 0.0, NOW + 1)])
    await storage.limiter_save("other", [LimiterRow("127.0.0.2", 1.5, NOW)])
    assert await storage.limiter_load("register.address") == [
        LimiterRow("127.0.0.2", 3.25, NOW), LimiterRow("127.0.0.3", 0.0, NOW + 1)]
    await storage.limiter_save("register.address", [LimiterRow("127.0.0.9", 19.5, NOW + 2)])
    assert await storage.limiter_load("register.address") == [
        LimiterRow("127.0.0.9", 19.5, NOW + 2)]
    assert await storage.limiter_load("other") == [LimiterRow("127.0.0.2", 1.5, NOW)]
    await storage.limiter_save("register.address", [])
    assert await storage.limiter_load("register.address") == []


async def test_everything_survives_a_reopen(raw: RawDatabase) -> None:
    storage = raw.storage()
    await storage.open()
    try:
        await storage.audit_append([record(1), record(2)])
        await storage.audit_checkpoint_add(AuditCheckpoint(2, b"h" * 32, NOW, b"s" * 64, "1"))
        await storage.blocks_save(BlockRow("b", "127.0.0.2", "ab" * 8, "r", NOW, NOW + 10, 1))
        await storage.network_rules_add("192.0.2.0/24", "deny", NOW)
        await storage.limiter_save("n", [LimiterRow("k", 2.0, NOW)])
    finally:
        await storage.close()
    again = raw.storage()
    await again.open()
    try:
        assert [r.seq for r in await again.audit_rows(0, 10)] == [1, 2]
        assert [c.seq for c in await again.audit_checkpoints()] == [2]
        assert [b.key for b in await again.blocks_load(NOW)] == ["127.0.0.2"]
        assert [r.cidr for r in await again.network_rules()] == ["192.0.2.0/24"]
        assert await again.limiter_load("n") == [LimiterRow("k", 2.0, NOW)]
    finally:
        await again.close()


async def test_a_schema_5_database_upgrades_and_keeps_its_data(raw: RawDatabase) -> None:
    """The frozen steps up to 5 (as the code before issue 13 left a database), then
    this code's upgrade: the new tables exist, as declared, and work."""
    await make_v1(raw)
    for step in UPGRADES:
        if step.version > 5:
            break
        sql = step.sqlite if raw.dialect == "sqlite" else step.postgres
        await raw.execute(*sql, ("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                                 (step.version, step.name, NOW)))
    await raw.execute(("INSERT INTO schema_compat_version VALUES (1, ?)", (3,)))
    storage = raw.storage()
    await storage.open()
    try:
        assert await storage.schema_version() == SCHEMA_VERSION
        record_v1 = await storage.get_account(ACCOUNT)
        assert record_v1 is not None and record_v1.username == "olduser"
        await storage.audit_append([record(1)])
        assert await storage.audit_last() == record(1)
    finally:
        await storage.close()
    assert await raw.describe() == declared(raw.dialect)
