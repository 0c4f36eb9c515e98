from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from veil.client.content import Content
from veil.client.errors import (
    AlreadyInitialised,
    CorruptStore,
    NotInitialised,
    PassphraseRequired,
    WrongPassphrase,
)
from veil.client.store import DB_FILE, FAST, KEY_FILE, Store
from veil.core.errors import MalformedMessage

SECRET = b"identity-private-key-bytes-0123456789"


def _scan(home: Path, needle: bytes) -> bool:
    return any(needle in f.read_bytes() for f in home.iterdir() if f.is_file())


def test_passphrase_store_round_trip_and_nothing_in_clear(tmp_path: Path) -> None:
    store = Store.create(tmp_path, "correct horse", FAST)
    with store.transaction():
        store.put("self", "identity", SECRET)
        store.put("contact", "bob-account", b"contact record")
    store.append_history("bob-account", b"hello bob, in clear?")
    store.close()
    assert not _scan(tmp_path, SECRET)
    assert not _scan(tmp_path, b"bob-account")
    assert not _scan(tmp_path, b"hello bob")
    again = Store.open(tmp_path, "correct horse")
    assert again.get("self", "identity") == SECRET
    assert again.values("contact") == [b"contact record"]
    assert again.history("bob-account", 10) == [b"hello bob, in clear?"]
    again.close()


def test_wrong_and_missing_passphrase(tmp_path: Path) -> None:
    Store.create(tmp_path, "right", FAST).close()
    with pytest.raises(WrongPassphrase):
        Store.open(tmp_path, "wrong")
    with pytest.raises(PassphraseRequired):
        Store.open(tmp_path, None)


def test_key_file_mode(tmp_path: Path) -> None:
    store = Store.create(tmp_path, None)
    store.put("self", "identity", SECRET)
    store.close()
    mode = stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / DB_FILE).st_mode) == 0o600
    assert Store.open(tmp_path, None).get("self", "identity") == SECRET
    (tmp_path / KEY_FILE).write_bytes(os.urandom(32))
    with pytest.raises(CorruptStore):
        Store.open(tmp_path, None)


def test_corruption_and_lifecycle_errors(tmp_path: Path) -> None:
    with pytest.raises(NotInitialised):
        Store.open(tmp_path / "none", "x")
    Store.create(tmp_path, "pw", FAST).close()
    with pytest.raises(AlreadyInitialised):
        Store.create(tmp_path, "pw", FAST)
    (tmp_path / DB_FILE).write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / (DB_FILE + suffix)).unlink(missing_ok=True)
    with pytest.raises(CorruptStore):
        Store.open(tmp_path, "pw")


def test_tampered_record_is_reported(tmp_path: Path) -> None:
    import sqlite3
    store = Store.create(tmp_path, "pw", FAST)
    store.put("session", "peer.1", b"state")
    store.close()
    db = sqlite3.connect(tmp_path / DB_FILE)
    (blob,) = db.execute("SELECT value FROM records").fetchone()
    db.execute("UPDATE records SET value = ?", (blob[:-1] + bytes([blob[-1] ^ 1]),))
    db.commit()
    db.close()
    again = Store.open(tmp_path, "pw")
    with pytest.raises(CorruptStore):
        again.get("session", "peer.1")


def test_transaction_rolls_back(tmp_path: Path) -> None:
    store = Store.create(tmp_path, None)
    with pytest.raises(RuntimeError), store.transaction():
        store.put("self", "a", b"1")
        raise RuntimeError("crash in the middle")
    assert store.get("self", "a") is None


def test_content_codec() -> None:
    content = Content.text_message("hi", 5, b"k" * 32)
    assert Content.decode(content.encode()) == content
    for bad in (b"", b"[]", b'{"v":2}', b'{"v":1,"id":"x","ts":1,"kind":"text","text":"t"}'):
        with pytest.raises(MalformedMessage):
            Content.decode(bad)
