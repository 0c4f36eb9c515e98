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

Rollback protection (outside review, issue 8 item 4; format 2). Sealing a record under
its name alone let an older copy of that record be written back unnoticed: an old
session (reusing message keys), an old contact (erasing a changed-identity warning), an
old prekey table (resurrecting a used one-time key). Now

- a store-wide counter in the sealed ``state`` (in ``meta``) grows with every write;
  each record and history row carries the counter value of its last write (its
  *version*) in the clear and in its AEAD associated data, so a row cannot be given
  another version without failing to open;
- ``state`` also holds, per record kind, the number of records and an incremental set
  hash: the sum mod 2**256 of HMAC(integrity key, kind, name, version) over the kind's
  records (AdHash under a secret key, so no one without the key can search for a
  subset of old rows with a matching sum). It is updated in the same transaction as
  each write;
- :meth:`Store.open` recomputes every kind's count and sum from the rows and raises
  :class:`StoreRolledBack` naming the kind on any difference: an older copy of a
  record, a removed record or a re-added deleted one.

What cannot be detected locally: a restore of the *whole* file (rows and ``state``
together) to an earlier consistent copy. Only state kept elsewhere (the server, a
second device, the user's memory of :attr:`Store.generation`) can tell that apart, so
it is out of reach here. A substitution made while a process runs is detected at the
next open (every CLI command opens the store). The file shows, in the clear, how many
records of each kind exist and in which order they were written; never what or whose.
Stores of format 1 are re-sealed in one transaction on first open.
"""

from __future__ import annotations

import hmac
import logging
import os
import sqlite3
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from veil.client.errors import (
    AlreadyInitialised,
    CorruptStore,
    NotInitialised,
    PassphraseRequired,
    StoreRolledBack,
    WrongPassphrase,
)
from veil.core import primitives as p
from veil.core.errors import DecryptionFailed

log = logging.getLogger("veil.client")
DB_FILE = "veil.db"
KEY_FILE = "store.key"
FORMAT = b"3"
_FORMAT_2 = b"2"
_CHECK = b"veil store check v1"
_STATE_AD = b"veil store state v2"
_HISTORY = ""                    # the state's key for history rows (no record kind is "")
_HISTORY_KEY = "history.key"     # message id → history seq, per conversation
_MOD = 1 << 256
_U64 = struct.Struct(">Q")
_TABLES = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, name BLOB NOT NULL, seq INTEGER NOT NULL, version INTEGER NOT NULL,
    value BLOB NOT NULL, PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, conv BLOB NOT NULL, value BLOB NOT NULL,
    version INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS history_conv ON history (conv, seq);
"""
_INDEXES = "CREATE INDEX IF NOT EXISTS records_order ON records (kind, seq);"


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


@dataclass
class _State:
    """The sealed integrity state: write counter and, per kind, [count, set hash]."""

    counter: int = 0
    kinds: dict[str, list[int]] = field(default_factory=dict)

    def add(self, kind: str, element: int) -> None:
        entry = self.kinds.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] = (entry[1] + element) % _MOD

    def remove(self, kind: str, element: int) -> None:
        entry = self.kinds.setdefault(kind, [0, 0])
        entry[0] -= 1
        entry[1] = (entry[1] - element) % _MOD
        if entry == [0, 0]:
            del self.kinds[kind]

    def encode(self) -> bytes:
        out = [_U64.pack(self.counter), struct.pack(">I", len(self.kinds))]
        for kind, (count, total) in sorted(self.kinds.items()):
            name = kind.encode()
            out += [struct.pack(">H", len(name)), name, _U64.pack(count),
                    total.to_bytes(32, "big")]
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> _State:
        try:
            (counter,) = _U64.unpack_from(data, 0)
            (n,) = struct.unpack_from(">I", data, 8)
            offset, kinds = 12, {}
            for _ in range(n):
                (size,) = struct.unpack_from(">H", data, offset)
                kind = data[offset + 2:offset + 2 + size].decode()
                offset += 2 + size
                if offset + 40 > len(data):
                    raise ValueError("truncated")
                (count,) = _U64.unpack_from(data, offset)
                total = int.from_bytes(data[offset + 8:offset + 40], "big")
                offset += 40
                kinds[kind] = [count, total]
            if offset != len(data):
                raise ValueError("trailing bytes")
        except (struct.error, ValueError, UnicodeDecodeError):
            raise CorruptStore("the store's integrity state is damaged") from None
        return cls(counter, kinds)


class Store:
    """Open with :meth:`create` or :meth:`open`; close with :meth:`close`."""

    def __init__(self, db: sqlite3.Connection, master: bytes) -> None:
        self._db = db
        self._depth = 0
        keys = p.hkdf(master, None, b"veil store keys v1", 64)
        self._enc, self._index = keys[:32], keys[32:]
        self._mac = p.hkdf(master, None, b"veil store integrity v2", 32)
        self._state: _State | None = None        # loaded inside a transaction when needed
        self._dirty = False

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
        db.execute(_INDEXES)
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
            db.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
            store._write_state(_State())
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
        try:
            if meta.get("format") is None:
                store._migrate_v1()
            if meta.get("format") in (None, _FORMAT_2):
                store._migrate_v2()
            elif meta["format"] != FORMAT:
                raise CorruptStore("this store was written by a newer version of Veil")
            store.verify()
        except BaseException:
            db.close()
            raise
        return store

    def close(self) -> None:
        self._db.close()

    # integrity ----------------------------------------------------------------------

    def _element(self, kind: str, name: bytes, version: int) -> int:
        data = kind.encode() + b"\x00" + name + _U64.pack(version)
        return int.from_bytes(hmac.digest(self._mac, data, "sha256"), "big")

    def _read_state(self) -> _State:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'state'").fetchone()
        if row is None:
            raise CorruptStore("the store's integrity state is missing")
        try:
            return _State.decode(p.open_random_nonce(self._enc, row[0], _STATE_AD))
        except DecryptionFailed:
            raise CorruptStore("the store's integrity state is damaged") from None

    def _write_state(self, state: _State) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('state', ?)",
                         (p.seal_random_nonce(self._enc, state.encode(), _STATE_AD),))

    def _writable(self) -> _State:
        """The state to update; only inside a transaction (it is written at commit)."""
        assert self._depth, "store writes happen inside a transaction"
        if self._state is None:
            self._state = self._read_state()
        self._dirty = True
        return self._state

    def _current_state(self) -> _State:
        return self._state if self._state is not None else self._read_state()

    @property
    def generation(self) -> int:
        """How many writes this store has seen: grows with every write, never goes back
        (a number a user or app can keep elsewhere to notice a whole-file restore)."""
        return self._current_state().counter

    def verify(self) -> None:
        """Recompute every kind's count and set hash from the rows; raise
        :class:`StoreRolledBack` naming the first kind that differs from the state."""
        state = self._read_state()
        found = _State(state.counter)
        newest = 0
        for kind, name, version in self._db.execute(
                "SELECT kind, name, version FROM records"):
            found.add(kind, self._element(kind, name, version))
            newest = max(newest, version)
        for conv, seq, version in self._db.execute("SELECT conv, seq, version FROM history"):
            found.add(_HISTORY, self._history_element(conv, seq, version))
            newest = max(newest, seq, version)
        for kind in sorted(set(found.kinds) | set(state.kinds)):
            if found.kinds.get(kind) != state.kinds.get(kind):
                what = "history" if kind == _HISTORY else f"'{kind}'"
                raise StoreRolledBack(
                    f"the local store was rolled back: a {what} record is older than the "
                    "last one written (or was removed or re-added); restore a newer copy "
                    "or start a new home")
        if newest > state.counter:
            raise StoreRolledBack("the local store was rolled back: its integrity state "
                                  "is older than its records")

    def _migrate_v1(self) -> None:
        """Format 1 → 2 in one transaction: add the version columns and re-seal every
        record and history row with its version bound in."""
        with self.transaction():
            if self._db.execute("SELECT value FROM meta WHERE name = 'format'"
                                ).fetchone() in ((_FORMAT_2,), (FORMAT,)):
                return                       # another process migrated meanwhile
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(records)")}
            for column in ("seq", "version"):
                if column not in columns:
                    self._db.execute(f"ALTER TABLE records ADD COLUMN {column} "
                                     "INTEGER NOT NULL DEFAULT 0")
            self._db.execute(_INDEXES)
            state = _State()
            rows = self._db.execute("SELECT seq, conv, value FROM history ORDER BY seq"
                                    ).fetchall()
            state.counter = rows[-1][0] if rows else 0
            for seq, conv, value in rows:
                plain = self._open_v1("history", conv, value)
                self._db.execute("UPDATE history SET value = ? WHERE seq = ?",
                                 (self._seal_history(conv, seq, plain), seq))
                state.add(_HISTORY, self._element(_HISTORY, conv, seq))
            for kind, name, value in self._db.execute(
                    "SELECT kind, name, value FROM records ORDER BY rowid").fetchall():
                plain = self._open_v1(kind, name, value)
                state.counter += 1
                version = state.counter
                self._db.execute(
                    "UPDATE records SET seq = ?, version = ?, value = ? "
                    "WHERE kind = ? AND name = ?",
                    (version, version, self._seal(kind, name, version, plain), kind, name))
                state.add(kind, self._element(kind, name, version))
            self._write_state(state)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)",
                             (_FORMAT_2,))
            self._state, self._dirty = None, False

    def _migrate_v2(self) -> None:
        """Format 2 → 3: history rows gain a version (0: as written by format 2, sealed
        under their seq alone), so a row can be replaced in place (an edit, a reaction)
        or deleted. Nothing is re-sealed."""
        with self.transaction():
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(history)")}
            if "version" not in columns:
                self._db.execute("ALTER TABLE history ADD COLUMN version INTEGER NOT NULL "
                                 "DEFAULT 0")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (FORMAT,))

    def _open_v1(self, kind: str, name: bytes, value: bytes) -> bytes:
        try:
            return p.open_random_nonce(self._enc, value, kind.encode() + b"\x00" + name)
        except DecryptionFailed:
            raise CorruptStore(f"a stored {kind} record is damaged") from None

    # records ------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Reads and writes that belong together: all durable at once, or none.

        ``BEGIN IMMEDIATE`` takes SQLite's write lock at the start, so a read-modify-write
        of a session here cannot interleave with another process on the same home (a
        ``veil recv -f`` next to a ``veil send``); the other one waits (busy timeout).
        The integrity state is read fresh in each transaction and written before COMMIT.
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
            if self._dirty and self._state is not None:
                self._write_state(self._state)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0
            self._state, self._dirty = None, False

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def _name(self, kind: str, name: str) -> bytes:
        return p.hmac_sha256(self._index, kind.encode() + b"\x00" + name.encode())

    def _seal(self, kind: str, name: bytes, version: int, value: bytes) -> bytes:
        ad = b"r2\x00" + kind.encode() + b"\x00" + name + _U64.pack(version)
        return p.seal_random_nonce(self._enc, value, ad)

    def _open(self, kind: str, name: bytes, version: int, value: bytes) -> bytes:
        ad = b"r2\x00" + kind.encode() + b"\x00" + name + _U64.pack(version)
        try:
            return p.open_random_nonce(self._enc, value, ad)
        except DecryptionFailed:
            raise CorruptStore(f"a stored {kind} record is damaged") from None

    @staticmethod
    def _history_ad(conv: bytes, seq: int, version: int) -> bytes:
        # Version 0: a row as format 2 wrote it, bound to its seq alone.
        if version == 0:
            return b"h2\x00" + conv + _U64.pack(seq)
        return b"h3\x00" + conv + _U64.pack(seq) + _U64.pack(version)

    def _history_element(self, conv: bytes, seq: int, version: int) -> int:
        if version == 0:
            return self._element(_HISTORY, conv, seq)
        return self._element(_HISTORY, conv + _U64.pack(seq), version)

    def _seal_history(self, conv: bytes, seq: int, value: bytes, version: int = 0) -> bytes:
        return p.seal_random_nonce(self._enc, value, self._history_ad(conv, seq, version))

    def _open_history(self, conv: bytes, seq: int, value: bytes, version: int = 0) -> bytes:
        try:
            return p.open_random_nonce(self._enc, value, self._history_ad(conv, seq, version))
        except DecryptionFailed:
            raise CorruptStore("a stored history record is damaged") from None

    def put(self, kind: str, name: str, value: bytes) -> None:
        if not kind:
            raise ValueError("a record kind must not be empty")
        hname = self._name(kind, name)
        with self.transaction():
            state = self._writable()
            row = self._db.execute("SELECT seq, version FROM records WHERE kind = ? AND "
                                   "name = ?", (kind, hname)).fetchone()
            state.counter += 1
            version = state.counter
            sealed = self._seal(kind, hname, version, value)
            if row is None:
                # Named columns: a migrated table has them in another order.
                self._db.execute("INSERT INTO records (kind, name, seq, version, value) "
                                 "VALUES (?, ?, ?, ?, ?)", (kind, hname, version, version,
                                                            sealed))
            else:
                state.remove(kind, self._element(kind, hname, row[1]))
                self._db.execute("UPDATE records SET version = ?, value = ? WHERE kind = ? "
                                 "AND name = ?", (version, sealed, kind, hname))
            state.add(kind, self._element(kind, hname, version))

    def get(self, kind: str, name: str) -> bytes | None:
        hname = self._name(kind, name)
        row = self._db.execute("SELECT version, value FROM records WHERE kind = ? AND "
                               "name = ?", (kind, hname)).fetchone()
        return None if row is None else self._open(kind, hname, row[0], row[1])

    def delete(self, kind: str, name: str) -> bool:
        """Remove one record; False when there was none."""
        hname = self._name(kind, name)
        with self.transaction():
            row = self._db.execute("SELECT version FROM records WHERE kind = ? AND name = ?",
                                   (kind, hname)).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM records WHERE kind = ? AND name = ?", (kind, hname))
            self._writable().remove(kind, self._element(kind, hname, row[0]))
            return True

    def delete_oldest(self, kind: str, n: int) -> int:
        """Remove the ``n`` records of ``kind`` written first; returns how many went."""
        with self.transaction():
            rows = self._db.execute("SELECT name, version FROM records WHERE kind = ? "
                                    "ORDER BY seq LIMIT ?", (kind, n)).fetchall()
            state = self._writable()
            for hname, version in rows:
                self._db.execute("DELETE FROM records WHERE kind = ? AND name = ?",
                                 (kind, hname))
                state.remove(kind, self._element(kind, hname, version))
            return len(rows)

    def delete_kind(self, kind: str) -> None:
        """Remove every record of ``kind`` at once."""
        with self.transaction():
            self._db.execute("DELETE FROM records WHERE kind = ?", (kind,))
            self._writable().kinds.pop(kind, None)

    def count(self, kind: str) -> int:
        """Records of ``kind``, from the integrity state: no scan."""
        entry = self._current_state().kinds.get(kind)
        return 0 if entry is None else entry[0]

    def values(self, kind: str) -> list[bytes]:
        rows = self._db.execute("SELECT name, version, value FROM records WHERE kind = ? "
                                "ORDER BY seq", (kind,)).fetchall()
        return [self._open(kind, name, version, value) for name, version, value in rows]

    def scan(self, kind: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        """``(position, value)`` of up to ``limit`` records of ``kind`` in the order they
        were first written, starting after position ``after`` (0: from the oldest)."""
        rows = self._db.execute(
            "SELECT seq, name, version, value FROM records WHERE kind = ? AND seq > ? "
            "ORDER BY seq LIMIT ?", (kind, after, limit)).fetchall()
        return [(seq, self._open(kind, name, version, value))
                for seq, name, version, value in rows]

    # history ------------------------------------------------------------------------

    def append_history(self, conversation: str, value: bytes, key: str | None = None) -> int:
        """Add a line to ``conversation``; its position (``seq``) is returned. With
        ``key`` (a message id), :meth:`find_history` finds it again by that key."""
        conv = self._name("conv", conversation)
        with self.transaction():
            state = self._writable()
            state.counter += 1
            seq = state.counter        # history rows are ordered by, and bound to, it
            self._db.execute("INSERT INTO history (seq, conv, value) VALUES (?, ?, ?)",
                             (seq, conv, self._seal_history(conv, seq, value)))
            state.add(_HISTORY, self._element(_HISTORY, conv, seq))
            if key is not None:
                self.put(_HISTORY_KEY, self._key(conversation, key), _U64.pack(seq))
        return seq

    @staticmethod
    def _key(conversation: str, key: str) -> str:
        return f"{conversation}\x00{key}"

    def find_history(self, conversation: str, key: str) -> tuple[int, bytes] | None:
        """The line stored under ``key`` in ``conversation``: ``(seq, value)``."""
        raw = self.get(_HISTORY_KEY, self._key(conversation, key))
        if raw is None or len(raw) != 8:
            return None
        seq = _U64.unpack(raw)[0]
        conv = self._name("conv", conversation)
        row = self._db.execute("SELECT value, version FROM history WHERE seq = ? AND "
                               "conv = ?", (seq, conv)).fetchone()
        return None if row is None else (seq, self._open_history(conv, seq, row[0], row[1]))

    def replace_history(self, conversation: str, seq: int, value: bytes) -> None:
        """Write ``value`` over the line at ``seq``, which keeps its place (an edit, a
        reaction, a receipt, content dropped by a deletion)."""
        conv = self._name("conv", conversation)
        with self.transaction():
            row = self._db.execute("SELECT version FROM history WHERE seq = ? AND conv = ?",
                                   (seq, conv)).fetchone()
            if row is None:
                raise CorruptStore("a history line to update is missing")
            state = self._writable()
            state.remove(_HISTORY, self._history_element(conv, seq, row[0]))
            state.counter += 1
            version = state.counter
            self._db.execute("UPDATE history SET value = ?, version = ? WHERE seq = ?",
                             (self._seal_history(conv, seq, value, version), version, seq))
            state.add(_HISTORY, self._history_element(conv, seq, version))

    def delete_history(self, conversation: str, seq: int, key: str | None = None) -> bool:
        """Remove the line at ``seq`` (and its key); False when there was none."""
        conv = self._name("conv", conversation)
        with self.transaction():
            row = self._db.execute("SELECT version FROM history WHERE seq = ? AND conv = ?",
                                   (seq, conv)).fetchone()
            if key is not None:
                self.delete(_HISTORY_KEY, self._key(conversation, key))
            if row is None:
                return False
            self._db.execute("DELETE FROM history WHERE seq = ?", (seq,))
            self._writable().remove(_HISTORY, self._history_element(conv, seq, row[0]))
            return True

    def history(self, conversation: str, limit: int) -> list[bytes]:
        return [value for _, value in self.history_rows(conversation, limit)]

    def history_rows(self, conversation: str, limit: int,
                     before: int | None = None) -> list[tuple[int, bytes]]:
        """``(seq, value)`` of the last ``limit`` lines (before ``before``), oldest first."""
        conv = self._name("conv", conversation)
        rows = self._db.execute(
            "SELECT seq, value, version FROM history WHERE conv = ? AND seq < ? "
            "ORDER BY seq DESC LIMIT ?",
            (conv, before if before is not None else 1 << 62, limit)).fetchall()
        return [(seq, self._open_history(conv, seq, value, version))
                for seq, value, version in reversed(rows)]

    def forget_deleted(self) -> None:
        """After deleting what must not stay (expired messages): fold the write-ahead
        log into the file and empty it, so no copy of the deleted pages is left in it
        (``secure_delete`` has already zeroed them in the file itself)."""
        if self._depth:
            raise RuntimeError("forget_deleted runs outside a transaction")
        busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy is not None and busy[0]:
            # Another process on this home reads right now: the next checkpoint (any
            # later deletion, or SQLite's own) empties the log.
            log.info("the store's write-ahead log could not be emptied yet")


def _connect(path: Path) -> sqlite3.Connection:
    old_umask = os.umask(0o077)          # the WAL and shared-memory files too: owner only
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        # Deleted records (expired or deleted messages) are overwritten, not left in
        # free pages (issue 12 §2).
        db.execute("PRAGMA secure_delete=ON")
        db.executescript(_TABLES)
    except sqlite3.DatabaseError as exc:
        raise CorruptStore(f"store {path} is unreadable: {exc}") from None
    finally:
        os.umask(old_umask)
    return db

__all__ = [
    "DB_FILE",
    "DEFAULT_KDF",
    "FAST",
    "KEY_FILE",
    "KdfParams",
    "Store",
]
