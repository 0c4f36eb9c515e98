"""History lines that change in place or go (store format 3; issue 12 §2, §3): edits,
reactions and receipts replace a line where it stands, deletions and expiry remove it
and leave no copy in the file, and the rollback protection covers both."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from veil.client.errors import StoreRolledBack
from veil.client.store import DB_FILE, FAST, Store


def _rows(home: Path) -> list[tuple[object, ...]]:
    db = sqlite3.connect(home / DB_FILE)
    try:
        return db.execute("SELECT * FROM history ORDER BY seq").fetchall()
    finally:
        db.close()


def _put_back(home: Path, rows: list[tuple[object, ...]]) -> None:
    db = sqlite3.connect(home / DB_FILE)
    with db:
        db.execute("DELETE FROM history")
        for row in rows:
            db.execute(f"INSERT INTO history VALUES ({', '.join('?' * len(row))})", row)
    db.close()


def _file_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.iterdir() if p.name.startswith(DB_FILE))


def test_a_line_is_found_by_its_key_replaced_in_place_and_deleted(tmp_path: Path) -> None:
    store = Store.create(tmp_path, "pw", FAST)
    first = store.append_history("bob", b"one", key="m1")
    second = store.append_history("bob", b"two", key="m2")
    store.append_history("carol", b"other conversation", key="m1")
    assert store.find_history("bob", "m2") == (second, b"two")
    store.replace_history("bob", first, b"one (edited)")
    assert store.history("bob", 10) == [b"one (edited)", b"two"]      # same place
    assert store.delete_history("bob", second, key="m2")
    assert store.find_history("bob", "m2") is None
    assert not store.delete_history("bob", second)
    assert store.history("bob", 10) == [b"one (edited)"]
    assert store.history("carol", 10) == [b"other conversation"]
    assert [v for _, v in store.history_rows("bob", 10, before=first)] == []
    store.close()
    again = Store.open(tmp_path, "pw")                                  # verifies
    assert again.find_history("bob", "m1") == (first, b"one (edited)")
    again.close()


def test_an_older_copy_of_a_changed_line_or_a_deleted_one_is_refused(tmp_path: Path) -> None:
    store = Store.create(tmp_path, "pw", FAST)
    seq = store.append_history("bob", b"hello", key="m1")
    store.append_history("bob", b"secret plan", key="m2")
    before = _rows(tmp_path)
    store.replace_history("bob", seq, b"[deleted]")        # deleted for everyone
    store.close()
    _put_back(tmp_path, before)                            # the text comes back
    with pytest.raises(StoreRolledBack, match="history"):
        Store.open(tmp_path, "pw")


def test_a_format_2_store_is_upgraded_and_its_lines_can_change(tmp_path: Path) -> None:
    store = Store.create(tmp_path, "pw", FAST)
    store.append_history("bob", b"written by format 2")
    store.close()
    db = sqlite3.connect(tmp_path / DB_FILE)         # what format 2 left on disk
    with db:
        db.execute("ALTER TABLE history DROP COLUMN version")
        db.execute("UPDATE meta SET value = ? WHERE name = 'format'", (b"2",))
    db.close()
    store = Store.open(tmp_path, "pw")
    [(seq, value)] = store.history_rows("bob", 10)
    assert value == b"written by format 2"
    store.replace_history("bob", seq, b"now changed")
    store.close()
    again = Store.open(tmp_path, "pw")
    assert again.history("bob", 10) == [b"now changed"]
    again.close()


def test_a_deleted_line_leaves_no_copy_in_the_files(tmp_path: Path) -> None:
    store = Store.create(tmp_path, "pw", FAST)
    store.append_history("bob", b"keep me", key="k")
    seq = store.append_history("bob", b"x" * 3000, key="gone")
    [sealed] = [row[2] for row in _rows(tmp_path) if row[0] == seq]
    assert isinstance(sealed, bytes) and sealed in _file_bytes(tmp_path)
    store.delete_history("bob", seq, key="gone")
    store.forget_deleted()
    assert sealed not in _file_bytes(tmp_path)           # neither in the file nor the WAL
    assert sealed[100:200] not in _file_bytes(tmp_path)
    assert store.history("bob", 10) == [b"keep me"]
    store.close()
