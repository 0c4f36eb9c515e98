"""The tamper-evident audit log (issue 13 §5): the chain and its signed checkpoints,
tampering done directly in the database (edits, deletions, reordering, a re-hashed
chain, bad signatures, tail truncation) found with the right first broken record, the
rotating keyed hashes, the JSON lines export, and verification of a stopped server's
data directory. Storage tests run on every back end (conftest.BACKENDS)."""

from __future__ import annotations

import itertools
import json
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.server.rawdb import RawDatabase
from veil.server.certificates import CertificateAuthority
from veil.server.config import ServerConfig
from veil.server.protection import events as ev
from veil.server.protection.audit import AuditLog, ServerKeySigner, verify_offline
from veil.server.protection.audit_chain import (
    GENESIS,
    head_path,
    make_row,
    read_head,
    row_is_sound,
)
from veil.server.protection.audit_keys import DAY_MS, KEYS_FILE
from veil.server.protection.settings import AuditSettings
from veil.server.runner import start
from veil.server.storage import DATABASE_FILE
from veil.server.storage.base import AuditRow, Storage

NOW = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ms = NOW

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    CertificateAuthority(data, NOW)  # the server key a real server has
    return data


async def open_log(storage: Storage, data_dir: Path, clock: Callable[[], int] | None = None,
                   **settings: Any) -> AuditLog:
    defaults: dict[str, Any] = {"checkpoint_every": 10, "checkpoint_interval_s": 3600}
    defaults.update(settings)
    log = AuditLog(storage, ServerKeySigner(data_dir), AuditSettings(**defaults), data_dir,
                   clock or Clock())
    await log.open()
    return log


@pytest.fixture
async def audit(storage: Storage, data_dir: Path) -> AsyncIterator[AuditLog]:
    log = await open_log(storage, data_dir)
    try:
        yield log
    finally:
        await log.close()


async def rows(storage: Storage) -> list[AuditRow]:
    return await storage.audit_rows(0, 10_000)


async def fill(log: AuditLog, n: int = 25) -> list[AuditRow]:
    for i in range(n):
        log.record("test.event", n=i, rule="auth_bruteforce")
    await log.flush()
    return await rows(log.storage)


# --- the chain ---------------------------------------------------------------------------

async def test_records_are_chained_and_checkpointed(audit: AuditLog) -> None:
    stored = await fill(audit)
    assert [r.seq for r in stored] == list(range(1, len(stored) + 1))
    assert stored[0].kind == "server.start" and stored[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(stored):
        assert after.prev_hash == before.hash
    assert all(row_is_sound(r) for r in stored)
    # The certificate of the signing key is in the chain before its first checkpoint.
    key = next(r for r in stored if r.kind == "audit.key")
    checkpoints = await audit.storage.audit_checkpoints()
    assert checkpoints and key.seq <= checkpoints[0].seq
    assert all(c.key_id == "1" and len(c.signature) == 64 for c in checkpoints)
    report = await audit.verify()
    assert report.ok, report
    assert (report.records, report.checkpoints) == (len(stored), len(checkpoints))
    assert report.head_checked and report.first_broken is None
    head = read_head(audit.data_dir)
    assert head is not None and head.seq == stored[-1].seq and head.hash == stored[-1].hash


async def test_a_final_checkpoint_at_close_and_chain_continues_after_reopen(
    storage: Storage, data_dir: Path
) -> None:
    log = await open_log(storage, data_dir)
    log.record("test.event", n=1)
    await log.close()
    stored = await rows(storage)
    assert "server.stop" in [r.kind for r in stored[-2:]]  # then perhaps the key record
    assert (await storage.audit_checkpoints())[-1].seq == stored[-1].seq
    again = await open_log(storage, data_dir)
    try:
        report = await again.verify()
        assert report.ok, report
        more = await rows(storage)
        assert more[len(stored)].kind == "server.start"
        assert more[len(stored)].prev_hash == stored[-1].hash
        # The key was recorded once: the head file remembers it.
        assert [r.kind for r in more].count("audit.key") == 1
    finally:
        await again.close()


# --- tampering, found with the first broken record ------------------------------------

async def _tampered(raw: RawDatabase, data_dir: Path, tamper: str) -> tuple[Any, list[int]]:
    storage = raw.storage()
    await storage.open()
    log = await open_log(storage, data_dir)
    try:
        await fill(log, 25)
        await log.checkpoint()
        for i in range(3):  # after the last checkpoint: only the head file vouches
            log.record("test.tail", n=i)
        await log.flush()
        stored = await rows(storage)
        checkpoints = [c.seq for c in await storage.audit_checkpoints()]
        await TAMPER[tamper](raw, stored)
        return await log.verify(), checkpoints
    finally:
        log._stopping = True  # no stop record into a tampered log
        await log.close()
        await storage.close()


async def _edit(raw: RawDatabase, stored: list[AuditRow]) -> None:
    await raw.execute(("UPDATE audit_records SET fields = ? WHERE seq = 5",
                       ('{"n":999,"rule":"auth_bruteforce"}',)))


async def _edit_time(raw: RawDatabase, stored: list[AuditRow]) -> None:
    await raw.execute("UPDATE audit_records SET at_ms = at_ms + 1 WHERE seq = 7")


async def _delete(raw: RawDatabase, stored: list[AuditRow]) -> None:
    await raw.execute("DELETE FROM audit_records WHERE seq = 5")


async def _reorder(raw: RawDatabase, stored: list[AuditRow]) -> None:
    await raw.execute("UPDATE audit_records SET seq = -1 WHERE seq = 5",
                      "UPDATE audit_records SET seq = 5 WHERE seq = 6",
                      "UPDATE audit_records SET seq = 6 WHERE seq = -1")


async def _rehash(raw: RawDatabase, stored: list[AuditRow]) -> None:
    """An edit of record 5 with the whole chain after it re-hashed: each record is
    sound, only the signed checkpoints (and the head file) disagree."""
    prev = stored[3].hash
    statements: list[str | tuple[str, tuple[Any, ...]]] = []
    for row in stored[4:]:
        fields = json.loads(row.fields)
        if row.seq == 5:
            fields["n"] = 999
        new = make_row(prev, row.seq, row.at_ms, row.kind, fields)
        statements.append(("UPDATE audit_records SET fields = ?, prev_hash = ?, hash = ? "
                           "WHERE seq = ?", (new.fields, new.prev_hash, new.hash, row.seq)))
        prev = new.hash
    await raw.execute(*statements)


async def _bad_signature(raw: RawDatabase, stored: list[AuditRow]) -> None:
    await raw.execute(("UPDATE audit_checkpoints SET signature = ? WHERE seq = "
                       "(SELECT MIN(seq) FROM audit_checkpoints)", (b"\x01" * 64,)))


async def _truncate_tail(raw: RawDatabase, stored: list[AuditRow]) -> None:
    await raw.execute(("DELETE FROM audit_records WHERE seq > ?", (stored[-1].seq - 2,)))


async def _truncate_to_checkpoint(raw: RawDatabase, stored: list[AuditRow]) -> None:
    await raw.execute("DELETE FROM audit_records WHERE seq > 12")


TAMPER = {"edit": _edit, "edit_time": _edit_time, "delete": _delete, "reorder": _reorder,
          "rehash": _rehash, "bad_signature": _bad_signature, "truncate_tail": _truncate_tail,
          "truncate_to_checkpoint": _truncate_to_checkpoint}


@pytest.mark.parametrize(("tamper", "reason"), [
    ("edit", "edited"), ("edit_time", "edited"), ("delete", "deleted"),
    ("reorder", "reordered"), ("rehash", "rewritten"), ("bad_signature", "bad_signature"),
    ("truncate_tail", "truncated"), ("truncate_to_checkpoint", "truncated"),
])
async def test_tampering_in_the_database_is_found(raw: RawDatabase, data_dir: Path,
                                                  tamper: str, reason: str) -> None:
    report, checkpoints = await _tampered(raw, data_dir, tamper)
    assert not report.ok and report.reason == reason, report
    expected = {
        "edit": 5, "edit_time": 7, "delete": 5, "reorder": 5,
        # Somewhere after the last checkpoint before the edit: the lower bound.
        "rehash": max([0, *(c for c in checkpoints if c < 5)]) + 1,
        "bad_signature": checkpoints[0],
        "truncate_tail": None, "truncate_to_checkpoint": 13,
    }[tamper]
    if tamper == "truncate_tail":
        assert report.first_broken == report.last_seq + 1
    else:
        assert report.first_broken == expected, report
    assert report.detail and "\n" not in report.detail


async def test_a_truncation_while_stopped_stays_on_record(storage: Storage,
                                                          data_dir: Path) -> None:
    log = await open_log(storage, data_dir)
    await fill(log, 5)
    await log.close()
    last = (await storage.audit_last())
    assert last is not None
    # Removed while the server was down, then started again: the restart records it.
    await _delete_after(storage, last.seq - 3)
    again = await open_log(storage, data_dir)
    try:
        report = await again.verify()
        assert not report.ok and report.reason == "truncated"
        assert report.first_broken == last.seq - 2
        assert any(r.kind == "audit.head_ahead" for r in await rows(storage))
    finally:
        await again.close()


async def _delete_after(storage: Storage, seq: int) -> None:
    """Storage offers no deletion of audit records: go around it like an attacker."""
    from veil.server.storage.sqlite import SQLiteStorage

    if isinstance(storage, SQLiteStorage):
        await storage.submit(lambda c: c.execute("DELETE FROM audit_records WHERE seq > ?",
                                                 (seq,)))
    else:
        await storage._p().execute(  # type: ignore[attr-defined]
            "DELETE FROM audit_records WHERE seq > $1", seq)


async def test_a_missing_head_file_is_noted(storage: Storage, data_dir: Path) -> None:
    log = await open_log(storage, data_dir)
    await fill(log, 3)
    await log.close()
    head_path(data_dir).unlink()
    assert not (await log.verify()).head_checked
    again = await open_log(storage, data_dir)
    try:
        report = await again.verify()
        assert report.ok and report.head_checked
        assert any("head file was missing" in n for n in report.notes)
    finally:
        await again.close()


# --- what is recorded ----------------------------------------------------------------

async def test_events_become_records_without_addresses(audit: AuditLog) -> None:
    hub = ev.EventHub(lambda: 0.0)
    audit.attach(hub)
    hub.emit(ev.ALERT, "127.0.0.2", rule="auth_bruteforce", hits=20, window_s=60.0,
             blocked_s=600.0, source_hash=audit.keyed("127.0.0.2"), key="source",
             block_id="b1", alert_id=1)
    hub.emit(ev.BLOCK_LIFTED, "127.0.0.2", block_id="b1", rule="auth_bruteforce",
             by="operator", key_hash=audit.keyed("127.0.0.2"))
    for _ in range(5):
        hub.emit(ev.REGISTRATION, "127.0.0.3")
    hub.emit(ev.AUTH_FAILURE, "127.0.0.2")  # not an audit event
    audit.record("admin.deny", cidr="127.0.0.4/32", wide="10.0.0.0/8", raw=b"\x01\x02",
                 note="x" * 1000)
    await audit.close()  # flushes the registrations count
    stored = await rows(audit.storage)
    kinds = [r.kind for r in stored]
    assert "auth_failure" not in kinds
    alert = json.loads(next(r for r in stored if r.kind == "alert").fields)
    assert alert["rule"] == "auth_bruteforce" and alert["source"] == audit.keyed("127.0.0.2")
    lifted = json.loads(next(r for r in stored if r.kind == "block.lifted").fields)
    assert lifted["by"] == "operator" and lifted["source"] == audit.keyed("127.0.0.2")
    (registrations,) = [json.loads(r.fields) for r in stored if r.kind == "registrations"]
    assert registrations["count"] == 5
    deny = json.loads(next(r for r in stored if r.kind == "admin.deny").fields)
    assert deny["cidr"] == audit.keyed("127.0.0.4/32") and deny["wide"] == "10.0.0.0/8"
    assert deny["raw"] == audit.keyed(b"\x01\x02") and len(deny["note"]) == 200
    text = " ".join(r.fields for r in stored)
    assert "127.0.0" not in text


async def test_a_full_queue_counts_what_it_refused(storage: Storage, data_dir: Path) -> None:
    log = await open_log(storage, data_dir, max_queue=5)
    try:
        for i in range(20):  # without yielding: the writer cannot drain in between
            log.record("test.event", n=i)
        await log.flush()
        log.record("test.after")
        await log.flush()
        stored = await rows(storage)
        dropped = [json.loads(r.fields)["count"] for r in stored if r.kind == "audit.dropped"]
        kept = sum(r.kind == "test.event" for r in stored)
        assert kept + sum(dropped) == 20 and sum(dropped) > 0
    finally:
        await log.close()
    assert (await log.verify()).ok


async def test_device_removal_is_recorded_with_keyed_ids(audit: AuditLog) -> None:
    from tests.unit.server.test_storage import NOW as SNOW
    from tests.unit.server.test_storage import device, new_account
    from veil.server.bus import InProcessBus
    from veil.server.services.accounts import AccountService
    from veil.server.services.devices import DeviceService

    storage = audit.storage
    config = ServerConfig(data_dir=audit.data_dir)
    account = await new_account(storage)
    await storage.add_device(account, device(2), SNOW, max_devices=5, max_prekeys_stored=10)
    service = DeviceService(storage, InProcessBus(), AccountService(storage, config, Clock()),
                            config, Clock(), audit=audit)
    await service.remove(account, 2)
    await audit.flush()
    (revoked,) = [json.loads(r.fields) for r in await rows(storage)
                  if r.kind == "device.revoked"]
    assert revoked == {"account": audit.keyed(account), "device_id": 2}
    assert account.hex() not in " ".join(r.fields for r in await rows(storage))


# --- keyed hashes ---------------------------------------------------------------------

async def test_keyed_hashes_rotate_and_old_keys_go(storage: Storage, data_dir: Path) -> None:
    clock = Clock()
    log = await open_log(storage, data_dir, clock, key_rotation_days=30)
    try:
        first = log.keyed("192.0.2.7")
        assert len(first) == 16 and int(first, 16) >= 0
        assert log.keyed("192.0.2.7") == first != log.keyed("192.0.2.8")
        assert log.keyed(b"\xab\xcd") == log.keyed("abcd")
        path = data_dir / "audit" / KEYS_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        clock.ms += 30 * DAY_MS
        second = log.keyed("192.0.2.7")
        assert second != first
        assert log.keys.keyed_all("192.0.2.7") == [second, first]  # one period more
        clock.ms += 30 * DAY_MS
        third = log.keyed("192.0.2.7")
        assert log.keys.keyed_all("192.0.2.7") == [third, second]  # the first key is gone
        assert len(json.loads(path.read_text())["keys"]) == 2
        assert first not in path.read_text()
        # A server down for longer than a period keeps no old key at all.
        clock.ms += 90 * DAY_MS
        assert len(log.keys.keyed_all("192.0.2.7")) == 1
        await log.flush()
        rotated = [json.loads(r.fields)["epoch"] for r in await rows(storage)
                   if r.kind == "audit.key_rotated"]
        assert rotated == [2, 3, 4]
    finally:
        await log.close()
    # The key survives a restart (hashes stay comparable within a period).
    again = AuditLog(storage, ServerKeySigner(data_dir), AuditSettings(), data_dir, clock)
    assert again.keyed("192.0.2.7") == log.keyed("192.0.2.7")


# --- export and offline verification --------------------------------------------------

async def test_export_is_json_lines(audit: AuditLog) -> None:
    stored = await fill(audit, 5)
    lines = [line async for line in audit.export_jsonl()]
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    parsed = [json.loads(line) for line in lines]
    assert [p["seq"] for p in parsed] == [r.seq for r in stored]
    assert parsed[1]["prev_hash"] == parsed[0]["hash"] == stored[0].hash.hex()
    assert isinstance(parsed[-1]["fields"], dict) and parsed[-1]["kind"] == "test.event"
    assert set(parsed[0]) == {"seq", "at_ms", "kind", "fields", "prev_hash", "hash"}
    later = [json.loads(line) async for line in audit.export_jsonl(stored[-2].seq)]
    assert [p["seq"] for p in later] == [stored[-1].seq]


async def test_verify_offline_on_a_stopped_servers_data_directory(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path / "data", port=0, log_to_file=False)
    running = await start(config)
    running.context.protection.audit.record("test.event", n=1)
    await running.close()
    report = await verify_offline(config)
    assert report.ok, report
    assert report.records >= 3 and report.checkpoints >= 1 and report.head_checked
    conn = sqlite3.connect(config.data_dir / DATABASE_FILE)
    try:
        kinds = [k for (k,) in conn.execute("SELECT kind FROM audit_records ORDER BY seq")]
        assert kinds[0] == "server.start" and "server.stop" in kinds[-2:]
        conn.execute("UPDATE audit_records SET kind = 'nothing' WHERE seq = 2")
        conn.commit()
    finally:
        conn.close()
    before = (config.data_dir / DATABASE_FILE).read_bytes()
    broken = await verify_offline(config)
    assert (broken.ok, broken.first_broken, broken.reason) == (False, 2, "edited")
    assert (config.data_dir / DATABASE_FILE).read_bytes() == before  # only read


async def test_verify_offline_refuses_a_directory_without_a_server(tmp_path: Path) -> None:
    from veil.server.errors import NotAServerDirectory

    with pytest.raises(NotAServerDirectory):
        await verify_offline(ServerConfig(data_dir=tmp_path / "empty"))
    assert not (tmp_path / "empty").exists()


async def test_files_under_data_are_private(audit: AuditLog) -> None:
    audit.keyed("x")
    await fill(audit, 1)
    for path in (head_path(audit.data_dir), audit.data_dir / "audit" / KEYS_FILE):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((audit.data_dir / "audit").stat().st_mode) == 0o700


async def test_a_checkpoint_after_the_interval(storage: Storage, data_dir: Path) -> None:
    now = [0.0]
    log = AuditLog(storage, ServerKeySigner(data_dir),
                   AuditSettings(checkpoint_every=1000, checkpoint_interval_s=60), data_dir,
                   Clock(), clock=lambda: now[0])
    await log.open()
    try:
        log.record("test.event", n=1)
        await log.flush()
        assert await storage.audit_checkpoints() == []  # neither 1000 records nor 60 s
        now[0] += 61
        log.record("test.event", n=2)
        await log.flush()
        (cp,) = await storage.audit_checkpoints()
        last = await storage.audit_last()
        assert last is not None and (cp.seq, cp.hash) == (last.seq, last.hash)
    finally:
        await log.close()


async def test_checkpoints_of_a_replaced_server_key_still_verify(storage: Storage,
                                                                  tmp_path: Path) -> None:
    """The chain holds each signing key's root-signed certificate (``audit.key``), so
    checkpoints stay verifiable after ``veil server keys certify`` replaced the key;
    a key the trust root did not sign is not trusted."""
    from veil.core.sealed import TrustRoot
    from veil.server.certificates import certify
    from veil.server.protection.audit_chain import known_keys, trust_root, verify_chain

    data = tmp_path / "rotated"
    root = TrustRoot.generate()
    certify(data, root, NOW, days=365)
    first = await open_log(storage, data)
    await fill(first, 3)
    await first.close()
    certify(data, root, NOW, days=365, revoke_older=True)  # key 2 replaces key 1
    second = await open_log(storage, data)
    await fill(second, 3)
    await second.close()
    assert {c.key_id for c in await storage.audit_checkpoints()} == {"1", "2"}
    keys = known_keys(data, None)
    assert set(keys) == {"2"}  # the data directory holds only the new key
    report = await verify_chain(storage, keys, trust_root(data), read_head(data))
    assert report.ok, report
    # Without the trust root nothing vouches for key 1.
    untrusted = await verify_chain(storage, keys, None, read_head(data))
    assert (untrusted.ok, untrusted.reason) == (False, "bad_signature")
    assert untrusted.first_broken == min(c.seq for c in await storage.audit_checkpoints())


async def test_backup_and_restore_carry_the_audit_log(tmp_path: Path) -> None:
    """The tables travel in the database copy; the head file does not (a copy taken
    while the server writes could claim more than the snapshot holds), so the restored
    log verifies, and its first start notes that the head file was missing."""
    from veil.server.backup import backup, restore

    config = ServerConfig(data_dir=tmp_path / "data", port=0, log_to_file=False)
    running = await start(config)
    running.context.protection.audit.record("test.event", n=1)
    await running.close()
    archive = tmp_path / "backup.tar.gz"
    backup(config, archive)
    target = tmp_path / "restored"
    restore(archive, target)
    restored = config.replace(data_dir=target)
    report = await verify_offline(restored)
    assert report.ok and report.records >= 3 and not report.head_checked, report
    again = await start(restored)
    await again.close()
    report = await verify_offline(restored)
    assert report.ok and report.head_checked, report
    assert any("head file was missing" in n for n in report.notes)


async def test_verify_offline_reads_postgres_too(raw: RawDatabase, data_dir: Path) -> None:
    """Through a read-only session of its own (SQLite: see the stopped-server test)."""
    if raw.dialect != "postgres":
        pytest.skip("postgres: the SQLite side is the stopped-server test")
    from tests.unit.server.rawdb import RawPostgres

    assert isinstance(raw, RawPostgres)
    storage = raw.storage()
    await storage.open()
    try:
        log = await open_log(storage, data_dir)
        await fill(log, 4)
        await log.close()
    finally:
        await storage.close()
    url = f"{raw.dsn}{'&' if '?' in raw.dsn else '?'}search_path={raw.schema}"
    config = ServerConfig(data_dir=data_dir, database_url=url)
    report = await verify_offline(config)
    assert report.ok and report.records >= 6 and report.checkpoints >= 1, report
    await raw.execute("UPDATE audit_records SET kind = 'x' WHERE seq = 3")
    broken = await verify_offline(config)
    assert (broken.first_broken, broken.reason) == (3, "edited")
