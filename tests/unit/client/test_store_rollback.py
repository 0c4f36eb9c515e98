"""Rollback of the local store (outside review, issue 8 item 4), written as the attacks.

Someone with write access to ``veil.db`` (a sync tool, a backup restore, malware) puts
an older copy of a record back, removes one, or re-adds a deleted one. Each was
accepted silently before records were bound to a version. A restore of the whole file
cannot be told locally (the last test shows it, as the docs say).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from veil.client.errors import CorruptStore, StoreError, StoreRolledBack
from veil.client.store import DB_FILE, FAST, Store

DATA = Path(__file__).parent / "data"


def _rows(home: Path, table: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(home / DB_FILE)
    try:
        return db.execute(f"SELECT * FROM {table}").fetchall()
    finally:
        db.close()


def _replace_rows(home: Path, table: str, rows: list[tuple[object, ...]]) -> None:
    """What an attacker with the file does: put saved rows back, byte for byte."""
    db = sqlite3.connect(home / DB_FILE)
    with db:
        db.execute(f"DELETE FROM {table}")
        for row in rows:
            db.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)
    db.close()


def test_an_older_copy_of_a_session_is_refused(tmp_path: Path) -> None:
    store = Store.create(tmp_path, "pw", FAST)
    store.put("sessions", "peer.1", b"state after message 1")
    old = _rows(tmp_path, "records")
    store.put("sessions", "peer.1", b"state after message 2")
    store.close()
    _replace_rows(tmp_path, "records", old)      # message keys of message 2 come back
    with pytest.raises(StoreRolledBack, match="'sessions' record is older"):
        Store.open(tmp_path, "pw")


def test_one_record_rolled_back_among_others_is_named(tmp_path: Path) -> None:
    store = Store.create(tmp_path, "pw", FAST)
    with store.transaction():
        store.put("contact", "bob", b"verified=false identity_changed=false")
        store.put("sessions", "bob.1", b"s1")
    old_contact = [r for r in _rows(tmp_path, "records") if r[0] == "contact"]
    with store.transaction():
        store.put("contact", "bob", b"verified=false identity_changed=true")   # a warning
        store.put("sessions", "bob.1", b"s2")
    store.close()
    rows = [r for r in _rows(tmp_path, "records") if r[0] != "contact"] + old_contact
    _replace_rows(tmp_path, "records", rows)      # the warning is erased
    with pytest.raises(StoreRolledBack, match="'contact'"):
        Store.open(tmp_path, "pw")


def test_a_removed_record_and_a_re_added_one_are_noticed(tmp_path: Path) -> None:
    store = Store.create(tmp_path, "pw", FAST)
    store.put("opk", "1", b"one-time key 1")
    store.put("opk", "2", b"one-time key 2")
    before = _rows(tmp_path, "records")
    assert store.delete("opk", "1")              # used: must never come back
    store.close()
    _replace_rows(tmp_path, "records", before)
    with pytest.raises(StoreRolledBack, match="'opk'"):
        Store.open(tmp_path, "pw")
    _replace_rows(tmp_path, "records", [])
    with pytest.raises(StoreRolledBack):         # every record gone
        Store.open(tmp_path, "pw")


def test_history_rows_cannot_be_removed_or_reordered(tmp_path: Path) -> None:
    store = Store.create(tmp_path, "pw", FAST)
    for text in (b"first", b"second", b"third"):
        store.append_history("bob", text)
    store.close()
    rows = _rows(tmp_path, "history")
    _replace_rows(tmp_path, "history", rows[:1] + rows[2:])
    with pytest.raises(StoreRolledBack, match="history"):
        Store.open(tmp_path, "pw")
    # Same rows, values swapped between positions: the order is bound too.
    swapped = [(rows[0][0], *rows[1][1:]), (rows[1][0], *rows[0][1:]), rows[2]]
    _replace_rows(tmp_path, "history", swapped)
    with pytest.raises(StoreError):
        Store.open(tmp_path, "pw").history("bob", 10)


def test_honest_use_and_concurrent_handles_verify(tmp_path: Path) -> None:
    one = Store.create(tmp_path, "pw", FAST)
    two = Store.open(tmp_path, "pw")
    for i in range(20):
        (one if i % 2 else two).put("sessions", f"peer.{i % 3}", bytes([i]))
        (two if i % 2 else one).append_history("peer", bytes([i]))
    assert two.delete("sessions", "peer.0") and not one.delete("sessions", "peer.0")
    one.delete_kind("nothing-here")
    assert one.count("sessions") == 2 and one.generation == two.generation
    one.close()
    two.close()
    again = Store.open(tmp_path, "pw")
    assert again.get("sessions", "peer.1") == bytes([19])
    assert len(again.history("peer", 100)) == 20
    again.close()


def test_a_rolled_back_transaction_leaves_the_state_consistent(tmp_path: Path) -> None:
    store = Store.create(tmp_path, None)
    store.put("self", "a", b"0")
    with pytest.raises(RuntimeError), store.transaction():
        store.put("self", "a", b"1")
        store.put("self", "b", b"2")
        raise RuntimeError("crash in the middle")
    store.close()
    again = Store.open(tmp_path, None)
    assert again.get("self", "a") == b"0" and again.get("self", "b") is None
    again.close()


def test_a_whole_file_restore_is_not_detected_locally(tmp_path: Path) -> None:
    # The documented limit: rows and integrity state restored together are consistent.
    # Only the generation (kept elsewhere by a user or an app) can tell.
    home, copy = tmp_path / "home", tmp_path / "copy"
    store = Store.create(home, "pw", FAST)
    store.put("sessions", "peer.1", b"old")
    old_generation = store.generation
    store.close()
    shutil.copytree(home, copy)
    store = Store.open(home, "pw")
    store.put("sessions", "peer.1", b"new")
    store.close()
    shutil.rmtree(home)
    shutil.copytree(copy, home)
    restored = Store.open(home, "pw")
    assert restored.get("sessions", "peer.1") == b"old"
    assert restored.generation == old_generation
    restored.close()


def test_a_format_1_store_is_migrated_and_then_protected(tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(DATA / "v1_home", home)        # written by the pre-review client
    store = Store.open(home, "pw")
    assert store.get("self", "me") is not None
    history = store.history("a1" * 16, 10)
    assert len(history) == 2 and b"hello from v1" in history[0]
    assert store.count("self") == 3
    store.close()
    old = _rows(home, "records")
    store = Store.open(home, "pw")                 # opens again: migrated once
    store.put("contact", "a1" * 16, b"changed")
    store.close()
    _replace_rows(home, "records", old)
    with pytest.raises(StoreRolledBack, match="'contact'"):
        Store.open(home, "pw")


def test_a_damaged_integrity_state_is_a_clear_error(tmp_path: Path) -> None:
    Store.create(tmp_path, "pw", FAST).close()
    db = sqlite3.connect(tmp_path / DB_FILE)
    with db:
        db.execute("UPDATE meta SET value = x'00' WHERE name = 'state'")
    db.close()
    with pytest.raises(CorruptStore, match="integrity state"):
        Store.open(tmp_path, "pw")
