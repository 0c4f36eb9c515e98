"""The client's encrypted local store: keys, sessions, contacts and history.

One SQLite file. Every value is sealed with AES-256-GCM under a key derived from the
master key; record names (account ids, usernames) are replaced by HMACs so not even
who one talks to is readable from the file. The master key comes from

- a passphrase, through Argon2id (64 MiB, 3 passes, 4 lanes; salt and parameters in
  the file's clear ``meta`` table), or
- a random key file ``store.key`` created with mode 0600 when the user chooses no
  passphrase.

A sealed check value tells a wrong passphrase (or key file) from a corrupt store.
Writes happen in SQLite transactions, so a crash leaves either the old or the new
state (the client relies on this to save a session and its decrypted message together
before it acknowledges the envelope to the server).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from veil.client.errors import (
    AlreadyInitialised,
    CorruptStore,
    NotInitialised,
    PassphraseRequired,
    WrongPassphrase,
)
from veil.core import primitives as p
from veil.core.errors import DecryptionFailed

DB_FILE = "veil.db"
KEY_FILE = "store.key"
_CHECK = b"veil store check v1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, conv BLOB NOT NULL, value BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS history_conv ON history (conv, seq);
"""


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost. ``FAST`` exists for tests only; files record what they used."""

    memory_kib: int = 65536
    iterations: int = 3
    lanes: int = 4


DEFAULT_KDF = KdfParams()
FAST = KdfParams(memory_kib=1024, iterations=1, lanes=1)


def _derive(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    return Argon2id(salt=salt, length=32, iterations=params.iterations, lanes=params.lanes,
                    memory_cost=params.memory_kib).derive(passphrase.encode())


class Store:
    """Open with :meth:`create` or :meth:`open`; close with :meth:`close`."""

    def __init__(self, db: sqlite3.Connection, master: bytes) -> None:
        self._db = db
        self._depth = 0
        keys = p.hkdf(master, None, b"veil store keys v1", 64)
        self._enc, self._index = keys[:32], keys[32:]

    # opening ------------------------------------------------------------------------

    @staticmethod
    def exists(home: Path) -> bool:
        return (home / DB_FILE).exists()

    @classmethod
    def create(cls, home: Path, passphrase: str | None,
               params: KdfParams = DEFAULT_KDF) -> Store:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(home, 0o700)
        if cls.exists(home):
            raise AlreadyInitialised(f"{home} already holds a Veil identity")
        db = _connect(home / DB_FILE)
        if passphrase:
            salt = os.urandom(16)
            master = _derive(passphrase, salt, params)
            meta = {"kdf": b"argon2id", "salt": salt,
                    "params": f"{params.memory_kib},{params.iterations},{params.lanes}".encode()}
        else:
            master = os.urandom(32)
            fd = os.open(home / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(master)
            meta = {"kdf": b"keyfile"}
        store = cls(db, master)
        with store.transaction():
            for name, value in meta.items():
                db.execute("INSERT INTO meta VALUES (?, ?)", (name, value))
            db.execute("INSERT INTO meta VALUES ('check', ?)",
                       (p.seal_random_nonce(store._enc, _CHECK, b"check"),))
        os.chmod(home / DB_FILE, 0o600)
        return store

    @classmethod
    def open(cls, home: Path, passphrase: str | None) -> Store:
        if not cls.exists(home):
            raise NotInitialised(f"no Veil identity in {home}; run 'veil init' first")
        db = _connect(home / DB_FILE)
        try:
            meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise CorruptStore(f"store {home / DB_FILE} is unreadable: {exc}") from None
        kind = meta.get("kdf")
        if kind == b"keyfile":
            try:
                master = (home / KEY_FILE).read_bytes()
            except FileNotFoundError:
                raise CorruptStore(f"key file {home / KEY_FILE} is missing") from None
            if len(master) != 32:
                raise CorruptStore(f"key file {home / KEY_FILE} is damaged")
        elif kind == b"argon2id":
            if not passphrase:
                raise PassphraseRequired("this store is locked with a passphrase "
                                         "(set VEIL_PASSPHRASE or type it when asked)")
            try:
                mem, its, lanes = (int(x) for x in meta["params"].decode().split(","))
                master = _derive(passphrase, meta["salt"], KdfParams(mem, its, lanes))
            except (KeyError, ValueError):
                raise CorruptStore("store key-derivation parameters are damaged") from None
        else:
            raise CorruptStore("store metadata is damaged")
        store = cls(db, master)
        try:
            ok = p.open_random_nonce(store._enc, meta.get("check", b""), b"check") == _CHECK
        except DecryptionFailed:
            ok = False
        if not ok:
            db.close()
            if kind == b"keyfile":
                raise CorruptStore("key file does not match this store")
            raise WrongPassphrase("wrong passphrase")
        return store

    def close(self) -> None:
        self._db.close()

    # records ------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Reads and writes that belong together: all durable at once, or none.

        ``BEGIN IMMEDIATE`` takes SQLite's write lock at the start, so a read-modify-write
        of a session here cannot interleave with another process on the same home (a
        ``veil recv -f`` next to a ``veil send``); the other one waits (busy timeout).
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    def _name(self, kind: str, name: str) -> bytes:
        return p.hmac_sha256(self._index, kind.encode() + b"\x00" + name.encode())

    def _seal(self, kind: str, name: bytes, value: bytes) -> bytes:
        return p.seal_random_nonce(self._enc, value, kind.encode() + b"\x00" + name)

    def _open(self, kind: str, name: bytes, value: bytes) -> bytes:
        try:
            return p.open_random_nonce(self._enc, value, kind.encode() + b"\x00" + name)
        except DecryptionFailed:
            raise CorruptStore(f"a stored {kind} record is damaged") from None

    def put(self, kind: str, name: str, value: bytes) -> None:
        hname = self._name(kind, name)
        self._db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?)",
                         (kind, hname, self._seal(kind, hname, value)))

    def get(self, kind: str, name: str) -> bytes | None:
        hname = self._name(kind, name)
        row = self._db.execute("SELECT value FROM records WHERE kind = ? AND name = ?",
                               (kind, hname)).fetchone()
        return None if row is None else self._open(kind, hname, row[0])

    def delete(self, kind: str, name: str) -> None:
        self._db.execute("DELETE FROM records WHERE kind = ? AND name = ?",
                         (kind, self._name(kind, name)))

    def values(self, kind: str) -> list[bytes]:
        rows = self._db.execute("SELECT name, value FROM records WHERE kind = ?",
                                (kind,)).fetchall()
        return [self._open(kind, name, value) for name, value in rows]

    # history ------------------------------------------------------------------------

    def append_history(self, conversation: str, value: bytes) -> None:
        conv = self._name("conv", conversation)
        self._db.execute("INSERT INTO history (conv, value) VALUES (?, ?)",
                         (conv, self._seal("history", conv, value)))

    def history(self, conversation: str, limit: int) -> list[bytes]:
        conv = self._name("conv", conversation)
        rows = self._db.execute(
            "SELECT value FROM history WHERE conv = ? ORDER BY seq DESC LIMIT ?",
            (conv, limit)).fetchall()
        return [self._open("history", conv, row[0]) for row in reversed(rows)]


def _connect(path: Path) -> sqlite3.Connection:
    old_umask = os.umask(0o077)          # the WAL and shared-memory files too: owner only
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise CorruptStore(f"store {path} is unreadable: {exc}") from None
    finally:
        os.umask(old_umask)
    return db
