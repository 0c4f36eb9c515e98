"""The secret half of a device's prekeys, and their rotation (PQXDH §3.2, §4.2, §4.6).

A device holds, next to its identity:

- its signed X25519 prekeys (SPK): the current one and, for a grace period, the one it
  replaced, so initial messages already in flight still open;
- its last-resort ML-KEM prekeys (PQSPK), kept the same way;
- its one-time X25519 and ML-KEM prekeys (OPK, PQOPK), deleted once used;
- the base keys of accepted initial messages that used no one-time key, for as long as
  the signed prekey they name is held, so a replay is refused (§4.2).

Rotation is on a timer: the current SPK and PQSPK are replaced every
``ROTATE_AFTER_MS`` (a week), and a replaced one is deleted ``GRACE_MS`` after its
successor appeared, so no prekey's private key lives longer than two weeks and a
session set up without one-time keys gains forward secrecy within that bound.
Time is passed in (milliseconds since the Unix epoch); nothing here reads a clock.

One-time keys and the replay memory may be many (an attacker can claim bundles to make
a device pile them up), so they live in tables the caller passes in, as libsignal
passes its stores: a client keeps each key as its own record and answering an initial
message costs the same whatever the stock. Without tables, plain in-memory ones are
used and serialised with the rest.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from veil.core import primitives as p
from veil.core.encoding import Reader, Writer
from veil.core.errors import MalformedMessage, UnknownPreKey, UnsupportedVersion
from veil.core.keys import (
    IdentityKeyPair,
    IdentityPublicKey,
    KemPreKeyPublic,
    OneTimePreKeyPublic,
    PreKeyBundle,
    PreKeyUpload,
    SignedPreKeyPublic,
)

_SECRET_VERSION = 2
MAX_ONE_TIME = 10_000
# At this many remembered base keys per signed prekey the device rotates it early;
# past twice as many it refuses such messages rather than forget one.
SEEN_BASE_KEYS_ROTATE = 50_000
DAY_MS = 24 * 3600 * 1000
ROTATE_AFTER_MS = 7 * DAY_MS
GRACE_MS = 7 * DAY_MS
_MAX_HELD = 8        # signed or last-resort keys held at once, whatever the clock did


class ReplayMemory(Protocol):
    """Base keys of accepted initial messages without one-time keys, per signed prekey."""

    def seen(self, signed_prekey_id: int, base_key: bytes) -> bool: ...

    def add(self, signed_prekey_id: int, base_key: bytes) -> None: ...

    def count(self, signed_prekey_id: int) -> int: ...

    def forget(self, signed_prekey_id: int) -> None: ...


class MemoryReplay:
    """The in-memory :class:`ReplayMemory`."""

    def __init__(self) -> None:
        self.entries: dict[int, set[bytes]] = {}

    def seen(self, signed_prekey_id: int, base_key: bytes) -> bool:
        return base_key in self.entries.get(signed_prekey_id, ())

    def add(self, signed_prekey_id: int, base_key: bytes) -> None:
        self.entries.setdefault(signed_prekey_id, set()).add(base_key)

    def count(self, signed_prekey_id: int) -> int:
        return len(self.entries.get(signed_prekey_id, ()))

    def forget(self, signed_prekey_id: int) -> None:
        self.entries.pop(signed_prekey_id, None)


@dataclass
class PreKeyTables:
    """Where the many small secrets live. Mappings iterate oldest first; values are the
    encodings of :func:`encode_one_time` and :func:`encode_kem`."""

    one_time: MutableMapping[int, bytes] = field(default_factory=dict)
    one_time_kem: MutableMapping[int, bytes] = field(default_factory=dict)
    replay: ReplayMemory = field(default_factory=MemoryReplay)


def encode_one_time(private: x25519.X25519PrivateKey, record: OneTimePreKeyPublic) -> bytes:
    return private.private_bytes_raw() + record.to_bytes()


def decode_one_time(data: bytes) -> tuple[x25519.X25519PrivateKey, OneTimePreKeyPublic]:
    if len(data) < 32:
        raise MalformedMessage("one-time prekey secret is truncated")
    return p.x25519_private(data[:32]), OneTimePreKeyPublic.from_bytes(data[32:])


def encode_kem(seed: bytes, record: KemPreKeyPublic) -> bytes:
    return seed + record.to_bytes()


def decode_kem(data: bytes, identity: IdentityPublicKey,
               verify: bool = False) -> tuple[bytes, KemPreKeyPublic]:
    if len(data) < p.MLKEM768_SEED_LEN:
        raise MalformedMessage("ML-KEM prekey secret is truncated")
    return (data[:p.MLKEM768_SEED_LEN],
            KemPreKeyPublic.from_bytes(data[p.MLKEM768_SEED_LEN:], identity, verify))


@dataclass(frozen=True, slots=True)
class _Held:
    """A signed or last-resort prekey with the time it was made."""

    secret: bytes                   # X25519 private key, or ML-KEM seed
    record: SignedPreKeyPublic | KemPreKeyPublic
    created_ms: int


@dataclass(frozen=True, slots=True)
class Rotation:
    """What :meth:`PreKeys.maintain` replaced: upload these (None: unchanged)."""

    signed_prekey: SignedPreKeyPublic | None
    last_resort_kem: KemPreKeyPublic | None

    def __bool__(self) -> bool:
        return self.signed_prekey is not None or self.last_resort_kem is not None


class PreKeys:
    """A device's secret prekeys: :mod:`veil.core.pqxdh` reads them through the methods
    under "use by the responder"; one-time keys are deleted by :meth:`consume` once an
    initial message that used them authenticated."""

    def __init__(self, identity: IdentityPublicKey, tables: PreKeyTables | None = None) -> None:
        self.identity = identity
        self._next_id = 1
        self.signed_prekeys: dict[int, _Held] = {}
        self.last_resort: dict[int, _Held] = {}
        self._external_tables = tables is not None
        self.tables = tables or PreKeyTables()

    def adopt(self, tables: PreKeyTables) -> None:
        """Move the one-time keys and replay memory into the caller's ``tables`` and keep
        them there from now on (a new device's keys, or a blob read from an old layout)."""
        if self._external_tables:
            raise ValueError("these prekeys already live in the caller's tables")
        for source, target in ((self.one_time, tables.one_time),
                               (self.one_time_kem, tables.one_time_kem)):
            for key_id, value in source.items():
                target[key_id] = value
        replay = self.tables.replay
        assert isinstance(replay, MemoryReplay)
        for spk_id, seen in replay.entries.items():
            for base_key in sorted(seen):
                tables.replay.add(spk_id, base_key)
        self.tables, self._external_tables = tables, True

    @property
    def inline_tables(self) -> bool:
        """True while the one-time keys are this object's own (and serialised with it)."""
        return not self._external_tables

    @property
    def one_time(self) -> MutableMapping[int, bytes]:
        return self.tables.one_time

    @property
    def one_time_kem(self) -> MutableMapping[int, bytes]:
        return self.tables.one_time_kem

    # generation ---------------------------------------------------------------------

    @classmethod
    def generate(cls, identity: IdentityKeyPair, *, now_ms: int, one_time: int = 100,
                 tables: PreKeyTables | None = None) -> PreKeys:
        keys = cls(identity.public, tables)
        keys.rotate_signed_prekey(identity, now_ms=now_ms)
        keys.rotate_last_resort(identity, now_ms=now_ms)
        keys.add_one_time(identity, one_time)
        return keys

    def _take_id(self) -> int:
        key_id = self._next_id
        # Ids stay below 2**31 so every directory (and signed 32-bit field) can hold them.
        self._next_id = (self._next_id % 0x7FFFFFFF) + 1
        return key_id

    def rotate_signed_prekey(self, identity: IdentityKeyPair, *, now_ms: int
                             ) -> SignedPreKeyPublic:
        """A new current SPK; the older ones stay until :meth:`maintain` expires them."""
        private = p.x25519_generate()
        record = SignedPreKeyPublic.create(identity, self._take_id(),
                                           private.public_key().public_bytes_raw())
        self.signed_prekeys[record.key_id] = _Held(private.private_bytes_raw(), record, now_ms)
        self._bound(self.signed_prekeys)
        return record

    def rotate_last_resort(self, identity: IdentityKeyPair, *, now_ms: int) -> KemPreKeyPublic:
        seed, record = self._new_kem(identity, last_resort=True)
        self.last_resort[record.key_id] = _Held(seed, record, now_ms)
        self._bound(self.last_resort)
        return record

    def _bound(self, table: dict[int, _Held]) -> None:
        while len(table) > _MAX_HELD:
            self._drop(table, next(iter(table)))

    def _drop(self, table: dict[int, _Held], key_id: int) -> None:
        del table[key_id]
        if table is self.signed_prekeys:
            self.tables.replay.forget(key_id)

    def maintain(self, identity: IdentityKeyPair, *, now_ms: int) -> Rotation:
        """Rotate what is due and delete what outlived its grace period.

        The current SPK is replaced after ``ROTATE_AFTER_MS`` or once its replay memory
        is large; the current PQSPK after ``ROTATE_AFTER_MS``. A replaced key is deleted
        ``GRACE_MS`` after its successor was made. A clock that jumps backwards only
        delays this; ``_MAX_HELD`` bounds what is kept whatever the clock does."""
        spk: SignedPreKeyPublic | None = None
        kem: KemPreKeyPublic | None = None
        current = self._current(self.signed_prekeys)
        if (_age(current, now_ms) >= ROTATE_AFTER_MS
                or self.tables.replay.count(current.record.key_id) >= SEEN_BASE_KEYS_ROTATE):
            spk = self.rotate_signed_prekey(identity, now_ms=now_ms)
        if _age(self._current(self.last_resort), now_ms) >= ROTATE_AFTER_MS:
            kem = self.rotate_last_resort(identity, now_ms=now_ms)
        for table in (self.signed_prekeys, self.last_resort):
            held = list(table.values())
            for older, newer in pairwise(held):
                if _age(newer, now_ms) >= GRACE_MS:
                    self._drop(table, older.record.key_id)
        return Rotation(spk, kem)

    def next_rotation_ms(self) -> int:
        """When :meth:`maintain` next has work (for the caller's timer)."""
        times = [self._current(t).created_ms + ROTATE_AFTER_MS
                 for t in (self.signed_prekeys, self.last_resort)]
        for table in (self.signed_prekeys, self.last_resort):
            held = list(table.values())
            times += [newer.created_ms + GRACE_MS for newer in held[1:]]
        return min(times)

    def _new_kem(self, identity: IdentityKeyPair, last_resort: bool) -> tuple[bytes,
                                                                               KemPreKeyPublic]:
        private = mlkem.MLKEM768PrivateKey.generate()
        public = private.public_key().public_bytes_raw()
        record = KemPreKeyPublic.create(identity, self._take_id(), last_resort, public)
        return private.private_bytes_raw(), record

    def add_one_time(self, identity: IdentityKeyPair, count: int) -> tuple[
            list[OneTimePreKeyPublic], list[KemPreKeyPublic]]:
        """Top up ``count`` one-time X25519 and ``count`` one-time ML-KEM prekeys.

        At most ``MAX_ONE_TIME`` of each are kept: the oldest go first. They are the ones
        a directory handed out earliest, so the ones most likely claimed by someone who
        never wrote (anyone can claim keys to make a device pile them up)."""
        if not 0 <= count <= MAX_ONE_TIME:
            raise ValueError(f"one-time prekeys are capped at {MAX_ONE_TIME}")
        for table in (self.one_time, self.one_time_kem):
            while len(table) + count > MAX_ONE_TIME:
                del table[next(iter(table))]
        new_ec: list[OneTimePreKeyPublic] = []
        new_kem: list[KemPreKeyPublic] = []
        for _ in range(count):
            private = p.x25519_generate()
            record = OneTimePreKeyPublic(self._take_id(), private.public_key().public_bytes_raw())
            self.one_time[record.key_id] = encode_one_time(private, record)
            new_ec.append(record)
            seed, kem_record = self._new_kem(identity, last_resort=False)
            self.one_time_kem[kem_record.key_id] = encode_kem(seed, kem_record)
            new_kem.append(kem_record)
        return new_ec, new_kem

    # public views -------------------------------------------------------------------

    @staticmethod
    def _current(table: dict[int, _Held]) -> _Held:
        return next(reversed(table.values()))

    def current_signed_prekey(self) -> SignedPreKeyPublic:
        record = self._current(self.signed_prekeys).record
        assert isinstance(record, SignedPreKeyPublic)
        return record

    def current_last_resort(self) -> KemPreKeyPublic:
        record = self._current(self.last_resort).record
        assert isinstance(record, KemPreKeyPublic)
        return record

    def bundle(self) -> PreKeyBundle:
        """A bundle with the oldest unused one-time keys (a directory normally does this)."""
        opk = decode_one_time(self.one_time[next(iter(self.one_time))])[1] \
            if self.one_time else None
        pqopk = decode_kem(self.one_time_kem[next(iter(self.one_time_kem))], self.identity)[1] \
            if self.one_time_kem else None
        return PreKeyBundle(self.identity, self.current_signed_prekey(),
                            self.current_last_resort(), opk, pqopk)

    def upload(self) -> PreKeyUpload:
        return PreKeyUpload(
            self.identity.to_bytes(), self.current_signed_prekey().to_bytes(),
            self.current_last_resort().to_bytes(),
            [(k, v[32:]) for k, v in self.one_time.items()],
            [(k, v[p.MLKEM768_SEED_LEN:]) for k, v in self.one_time_kem.items()],
        )

    # use by the responder -----------------------------------------------------------

    def signed_prekey_private(self, key_id: int) -> x25519.X25519PrivateKey:
        entry = self.signed_prekeys.get(key_id)
        if entry is None:
            raise UnknownPreKey(f"signed prekey {key_id} is not held (rotated out?)")
        return p.x25519_private(entry.secret)

    def one_time_private(self, key_id: int) -> x25519.X25519PrivateKey:
        entry = self.one_time.get(key_id)
        if entry is None:
            raise UnknownPreKey(f"one-time prekey {key_id} was already used or never issued")
        return decode_one_time(entry)[0]

    def kem_private(self, key_id: int, last_resort: bool) -> mlkem.MLKEM768PrivateKey:
        if last_resort:
            held = self.last_resort.get(key_id)
            seed = None if held is None else held.secret
        else:
            entry = self.one_time_kem.get(key_id)
            seed = None if entry is None else entry[:p.MLKEM768_SEED_LEN]
        if seed is None:
            kind = "last-resort" if last_resort else "one-time"
            raise UnknownPreKey(f"{kind} ML-KEM prekey {key_id} was already used or never issued")
        return p.mlkem_private(seed)

    def base_key_seen(self, signed_prekey_id: int, base_key: bytes) -> bool:
        return self.tables.replay.seen(signed_prekey_id, base_key)

    def check_replay_capacity(self, signed_prekey_id: int) -> None:
        """Refuse (rather than forget) once a signed prekey's replay memory is full."""
        if self.tables.replay.count(signed_prekey_id) >= 2 * SEEN_BASE_KEYS_ROTATE:
            raise UnknownPreKey(f"signed prekey {signed_prekey_id} has answered too many "
                                "initial messages without one-time keys; fetch a new bundle")

    def consume(self, base_key: bytes, signed_prekey_id: int, one_time_id: int | None,
                kem_id: int, kem_last_resort: bool) -> None:
        """Forget the one-time keys an accepted initial message used. Without any, its
        base key is remembered while the signed prekey lives, so a replay is refused."""
        if one_time_id is not None:
            self.one_time.pop(one_time_id, None)
        if not kem_last_resort:
            self.one_time_kem.pop(kem_id, None)
        if one_time_id is None and kem_last_resort:
            self.tables.replay.add(signed_prekey_id, base_key)

    @property
    def one_time_count(self) -> int:
        return min(len(self.one_time), len(self.one_time_kem))

    # persistence --------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The signed and last-resort keys; the tables too unless the caller keeps them."""
        w = Writer().u8(_SECRET_VERSION).var(self.identity.to_bytes()).u32(self._next_id)
        for table in (self.signed_prekeys, self.last_resort):
            w.u32(len(table))
            for held in table.values():
                w.var(held.secret).u64(held.created_ms).var(held.record.to_bytes())
        w.u8(0 if self._external_tables else 1)
        if not self._external_tables:
            for mapping in (self.one_time, self.one_time_kem):
                w.u32(len(mapping))
                for key_id, value in mapping.items():
                    w.u32(key_id).var(value)
            replay = self.tables.replay
            assert isinstance(replay, MemoryReplay)
            w.u32(len(replay.entries))
            for spk_id, seen in replay.entries.items():
                w.u32(spk_id).u32(len(seen))
                for base_key in sorted(seen):
                    w.raw(base_key)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes, *, verify: bool = True,
                   tables: PreKeyTables | None = None) -> PreKeys:
        """``verify=False`` for the device's own authenticated store, whose records were
        signed here. With ``tables``, the one-time keys and replay memory are the
        caller's and must not be in ``data``."""
        r = Reader(data, "prekeys")
        version = r.u8()
        if version == 1:
            return cls._from_v1(r, verify, tables)
        if version != _SECRET_VERSION:
            raise UnsupportedVersion("prekeys: unknown version")
        keys = cls(IdentityPublicKey.from_bytes(r.var(256)), tables)
        keys._next_id = r.u32()
        ident = keys.identity
        for _ in range(r.count(_MAX_HELD)):
            private = p.x25519_private(r.var(32))
            created = r.u64()
            spk = SignedPreKeyPublic.from_bytes(r.var(256), ident, verify)
            keys.signed_prekeys[spk.key_id] = _Held(private.private_bytes_raw(), spk, created)
        for _ in range(r.count(_MAX_HELD)):
            seed, created = r.var(p.MLKEM768_SEED_LEN), r.u64()
            kem = KemPreKeyPublic.from_bytes(r.var(4096), ident, verify)
            if not kem.last_resort or len(seed) != p.MLKEM768_SEED_LEN:
                raise MalformedMessage("prekeys: a one-time ML-KEM key is in the wrong table")
            keys.last_resort[kem.key_id] = _Held(seed, kem, created)
        inline = r.flag()
        if inline == (tables is not None):
            raise MalformedMessage("prekeys: one-time tables are not where the caller keeps them")
        if inline:
            for mapping in (keys.one_time, keys.one_time_kem):
                for _ in range(r.count(MAX_ONE_TIME)):
                    key_id = r.u32()
                    mapping[key_id] = r.var(4096)
            replay = keys.tables.replay
            for _ in range(r.count(_MAX_HELD)):
                spk_id = r.u32()
                for _ in range(r.count(2 * SEEN_BASE_KEYS_ROTATE)):
                    replay.add(spk_id, r.raw(32))
        r.done()
        if not keys.signed_prekeys or not keys.last_resort:
            raise MalformedMessage("prekeys: no signed prekey or last-resort key")
        return keys


    @classmethod
    def _from_v1(cls, r: Reader, verify: bool, tables: PreKeyTables | None) -> PreKeys:
        """Version 1 (one blob, no creation times): its signed and last-resort keys count
        as made at time 0, so the first :meth:`maintain` rotates them."""
        keys = cls(IdentityPublicKey.from_bytes(r.var(256)), tables)
        keys._next_id = r.u32()
        ident = keys.identity
        for _ in range(r.count(64)):
            private = p.x25519_private(r.raw(32))
            spk = SignedPreKeyPublic.from_bytes(r.var(256), ident, verify)
            keys.signed_prekeys[spk.key_id] = _Held(private.private_bytes_raw(), spk, 0)
        for _ in range(r.count(MAX_ONE_TIME)):
            private = p.x25519_private(r.raw(32))
            opk = OneTimePreKeyPublic.from_bytes(r.var(256))
            keys.one_time[opk.key_id] = encode_one_time(private, opk)
        for last_resort in (False, True):
            for _ in range(r.count(MAX_ONE_TIME)):
                seed = r.raw(p.MLKEM768_SEED_LEN)
                kem = KemPreKeyPublic.from_bytes(r.var(4096), ident, verify)
                if kem.last_resort != last_resort:
                    raise MalformedMessage("prekeys: an ML-KEM key is in the wrong table")
                if last_resort:
                    keys.last_resort[kem.key_id] = _Held(seed, kem, 0)
                else:
                    keys.one_time_kem[kem.key_id] = encode_kem(seed, kem)
        for _ in range(r.count(64)):
            spk_id = r.u32()
            for _ in range(r.count(2 * SEEN_BASE_KEYS_ROTATE)):
                keys.tables.replay.add(spk_id, r.raw(32))
        r.done()
        for table in (keys.signed_prekeys, keys.last_resort):
            while len(table) > _MAX_HELD:
                del table[next(iter(table))]
        if not keys.signed_prekeys or not keys.last_resort:
            raise MalformedMessage("prekeys: no signed prekey or last-resort key")
        return keys


def _age(held: _Held, now_ms: int) -> int:
    return now_ms - held.created_ms

__all__ = [
    "DAY_MS",
    "GRACE_MS",
    "MAX_ONE_TIME",
    "ROTATE_AFTER_MS",
    "SEEN_BASE_KEYS_ROTATE",
    "PreKeyTables",
    "PreKeys",
    "Rotation",
    "decode_kem",
    "decode_one_time",
]
