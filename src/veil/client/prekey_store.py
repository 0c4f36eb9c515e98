"""The device's secret prekeys in the encrypted store, one record per key (outside
review, issue 8 item 9), and the uploads their rotation calls for (item 3).

Before, every one-time prekey and every remembered base key lived in one record that
was read and parsed on every envelope: under mass claiming it grew to about 14 MB and
took 0.43 s per envelope. Now :class:`veil.core.prekeys.PreKeys` keeps only the
identity, the signed prekeys and the last-resort ML-KEM keys in ``self/prekeys`` (a few
KB); one-time keys and the replay memory are :class:`~veil.core.prekeys.PreKeyTables`
over the store:

- kind ``opk`` and ``pqopk``: one record per one-time key (name: its key id; value: its
  key id then the core's encoding), in the order they were made, so the oldest comes
  first as the core expects; ``len`` is the store's per-kind count, no scan;
- kind ``replay.<signed prekey id>``: one empty record per remembered base key, so
  forgetting a rotated-out signed prekey's memory is one delete.

Prekeys are loaded only for initial (prekey) messages, and answering one reads and
deletes a few records whatever the stock. A home whose prekeys are still one version-1
blob is migrated into this layout on first open (``PreKeys.from_bytes`` reads version 1
into the tables it is given).

Rotation (``PreKeys.maintain``) replaces the signed prekey and the last-resort key; the
new public records must reach the server before the replaced keys are deleted a week
later, so they are first written to ``self/prekey_upload`` in the same transaction and
removed only once the server has them: a failed upload is retried on the next connect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, MutableMapping

import msgspec
from msgspec import UNSET

from veil.client.api import Api
from veil.client.errors import ClientError, CorruptStore
from veil.client.store import Store
from veil.core import keys
from veil.core.errors import CoreError
from veil.core.prekeys import PreKeys, PreKeyTables, Rotation
from veil.protocol import ProtocolError, decode_value, encode
from veil.protocol import requests as rq
from veil.protocol import responses as rs

log = logging.getLogger("veil.client")

ONE_TIME_BATCH = 100
REPLENISH_BELOW = 20
ROTATION_RECHECK_S = 600.0       # the rotation timer re-reads the clock at least this often
RETRY_MS = 60_000                # after a failed rotation or top-up

_BLOB = ("self", "prekeys")
_PENDING = ("self", "prekey_upload")
_BATCHES = (1, 16, 256)          # the first key is often all a caller wants


class StoreTable(MutableMapping[int, bytes]):
    """``key id → core encoding`` as records of one kind, oldest first."""

    def __init__(self, store: Store, kind: str) -> None:
        self._store = store
        self._kind = kind

    def __getitem__(self, key_id: int) -> bytes:
        raw = self._store.get(self._kind, str(key_id))
        if raw is None:
            raise KeyError(key_id)
        return raw[4:]

    def __setitem__(self, key_id: int, value: bytes) -> None:
        self._store.put(self._kind, str(key_id), key_id.to_bytes(4, "big") + value)

    def __delitem__(self, key_id: int) -> None:
        if not self._store.delete(self._kind, str(key_id)):
            raise KeyError(key_id)

    def __len__(self) -> int:
        return self._store.count(self._kind)

    def __iter__(self) -> Iterator[int]:
        after, batch = 0, 0
        while True:
            rows = self._store.scan(self._kind, after, _BATCHES[batch])
            for position, value in rows:
                after = position
                yield int.from_bytes(value[:4], "big")
            if len(rows) < _BATCHES[batch]:
                return
            batch = min(batch + 1, len(_BATCHES) - 1)


class StoreReplay:
    """:class:`veil.core.prekeys.ReplayMemory` as one record kind per signed prekey."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @staticmethod
    def _kind(signed_prekey_id: int) -> str:
        return f"replay.{signed_prekey_id}"

    def seen(self, signed_prekey_id: int, base_key: bytes) -> bool:
        return self._store.get(self._kind(signed_prekey_id), base_key.hex()) is not None

    def add(self, signed_prekey_id: int, base_key: bytes) -> None:
        self._store.put(self._kind(signed_prekey_id), base_key.hex(), b"")

    def count(self, signed_prekey_id: int) -> int:
        return self._store.count(self._kind(signed_prekey_id))

    def forget(self, signed_prekey_id: int) -> None:
        self._store.delete_kind(self._kind(signed_prekey_id))


def tables(store: Store) -> PreKeyTables:
    return PreKeyTables(StoreTable(store, "opk"), StoreTable(store, "pqopk"),
                        StoreReplay(store))


def load(store: Store) -> PreKeys:
    """The device's prekeys over the store's tables; use inside a store transaction."""
    raw = store.get(*_BLOB)
    if raw is None:
        raise CorruptStore("this home holds no prekeys")
    return PreKeys.from_bytes(raw, verify=False, tables=tables(store))


def save(store: Store, prekeys: PreKeys) -> None:
    store.put(*_BLOB, prekeys.to_bytes())


def migrate(store: Store) -> bool:
    """Move prekeys kept in one blob (version 1, before issue 8) into per-record tables,
    in one transaction. True when something was migrated."""
    if not _inline(store.get(*_BLOB)):
        return False                     # the common case: no write lock taken
    with store.transaction():
        raw = store.get(*_BLOB)
        if raw is None or not _inline(raw):
            return False                 # another process migrated meanwhile
        store_new(store, PreKeys.from_bytes(raw, verify=False))
        return True


def _inline(raw: bytes | None) -> bool:
    """Whether a stored blob holds its one-time tables itself (the version-1 layout)."""
    return raw is not None and raw[:1] == b"\x01"


def store_new(store: Store, prekeys: PreKeys) -> None:
    """Write prekeys whose tables are in memory (a new device's, or a migrated blob's)
    into the store: each one-time key and replay entry becomes its own record."""
    with store.transaction():
        prekeys.adopt(tables(store))
        store.put(*_BLOB, prekeys.to_bytes())


# --- uploads that must not be lost ------------------------------------------------------

def remember_rotation(store: Store, rotation: Rotation) -> None:
    """Merge a rotation's new public records into the pending upload (newest wins)."""
    if not rotation:
        return
    body = pending_upload(store) or rq.PrekeyUpload()
    if rotation.signed_prekey is not None:
        body = msgspec.structs.replace(body, signed_prekey=rotation.signed_prekey.to_bytes())
    if rotation.last_resort_kem is not None:
        body = msgspec.structs.replace(
            body, last_resort_kem_prekey=rotation.last_resort_kem.to_bytes())
    # Saved as the request's JSON (``PUT /v1/keys``), which the store has always held.
    store.put(*_PENDING, encode(body))


def pending_upload(store: Store) -> rq.PrekeyUpload | None:
    raw = store.get(*_PENDING)
    if raw is None:
        return None
    try:
        return decode_value(raw, rq.PrekeyUpload, "pending upload")
    except ProtocolError:
        raise CorruptStore("the stored pending prekey upload is damaged") from None


def uploaded(store: Store, body: rq.PrekeyUpload) -> None:
    """The server has ``body``: forget it, unless a newer rotation replaced it meanwhile."""
    with store.transaction():
        if pending_upload(store) == body:
            store.delete(*_PENDING)


# --- rotation and top-up ----------------------------------------------------------------

def one_time_body(ec: list[tuple[int, bytes]], kem: list[tuple[int, bytes]],
                  pending: rq.PrekeyUpload | None = None) -> rq.PrekeyUpload:
    """``PUT /v1/keys`` with these one-time keys (and the slots of ``pending``)."""
    return rq.PrekeyUpload(
        signed_prekey=UNSET if pending is None else pending.signed_prekey,
        last_resort_kem_prekey=UNSET if pending is None else pending.last_resort_kem_prekey,
        one_time_prekeys=[rq.OneTimePrekey(key_id=k, key=v) for k, v in ec],
        one_time_kem_prekeys=[rq.OneTimeKemPrekey(key_id=k, key=v) for k, v in kem],
    )


def upload_body(up: keys.PreKeyUpload, full: bool) -> rq.PrekeyUpload:
    """``PUT /v1/keys`` (and the prekeys of a registration) for an upload."""
    body = one_time_body(up.one_time_prekeys, up.one_time_kem_prekeys)
    if full:
        body = msgspec.structs.replace(body, signed_prekey=up.signed_prekey,
                                       last_resort_kem_prekey=up.last_resort_kem)
    return body


class PrekeyMaintenance:
    """Rotation of the signed prekey and last-resort key on their timer
    (``PreKeys.maintain``), top-up of one-time keys when the server runs low, and the
    uploads both call for.

    No lock is held across the network: the store transactions (synchronous) are the
    only serialisation, so decryption goes on while an upload waits for the server.
    One run at a time: a run asked for while one is under way is covered by it and
    returns at once (two would both see the server low and top up twice)."""

    def __init__(self, store: Store, api: Api, identity: keys.IdentityKeyPair,
                 clock: Callable[[], int],
                 on_low: Callable[[int, int], None] | None = None) -> None:
        self._store = store
        self._api = api
        self._identity = identity
        self._clock = clock
        self._on_low = on_low                # told (ec, kem) when the server runs low
        self._running = False
        self.next_rotation_ms = 0            # unknown until the first run
        self.recheck_s = ROTATION_RECHECK_S

    def due(self) -> bool:
        return self._clock() >= self.next_rotation_ms

    async def timer(self) -> None:
        """Runs maintenance when ``PreKeys.next_rotation_ms`` comes. It re-reads the clock
        at least every ``recheck_s``, so a suspended machine (or a test's clock) is
        caught up with soon after."""
        while True:
            if self.due():
                await self.run_quietly()
            wait_s = (self.next_rotation_ms - self._clock()) / 1000
            floor = min(1.0, self.recheck_s)
            await asyncio.sleep(min(max(wait_s, floor), self.recheck_s))

    async def run_quietly(self) -> None:
        """:meth:`run`; housekeeping must not stop message delivery, so failures are
        logged and retried a minute later."""
        try:
            await self.run()
        except (ClientError, CoreError) as exc:
            self.next_rotation_ms = self._clock() + RETRY_MS
            log.warning("could not maintain prekeys: %s", exc.code)

    async def run(self) -> None:
        """Rotate what is due (committed with its pending upload before anything goes to
        the server), top up one-time keys if the server is low, upload."""
        if self._running:
            return
        self._running = True
        try:
            await self._run()
        finally:
            self._running = False

    async def _run(self) -> None:
        with self._store.transaction():
            prekeys = load(self._store)
            rotation = prekeys.maintain(self._identity, now_ms=self._clock())
            if rotation:
                save(self._store, prekeys)
                remember_rotation(self._store, rotation)
            self.next_rotation_ms = prekeys.next_rotation_ms()
        if rotation:
            log.info("rotated the signed prekey or last-resort key")
        status = await self._api.call("GET", "/v1/keys/status", rs.PrekeyStatus)
        ec_left, kem_left = status.one_time_prekeys, status.one_time_kem_prekeys
        ec: list[keys.OneTimePreKeyPublic] = []
        kem: list[keys.KemPreKeyPublic] = []
        low = min(ec_left, kem_left) < REPLENISH_BELOW
        if low and self._on_low is not None:
            self._on_low(ec_left, kem_left)
        with self._store.transaction():
            if low:
                prekeys = load(self._store)
                ec, kem = prekeys.add_one_time(self._identity, ONE_TIME_BATCH)
                save(self._store, prekeys)       # its next key id moved on
            pending = pending_upload(self._store)
        if pending is None and not ec:
            return
        body = one_time_body([(r.key_id, r.to_bytes()) for r in ec],
                             [(r.key_id, r.to_bytes()) for r in kem], pending)
        await self._api.call("PUT", "/v1/keys", rs.PrekeyStatus, body)
        if pending is not None:
            uploaded(self._store, pending)

__all__ = [
    "ONE_TIME_BATCH",
    "PrekeyMaintenance",
    "StoreTable",
    "load",
    "migrate",
    "pending_upload",
    "remember_rotation",
    "save",
    "store_new",
    "tables",
    "upload_body",
    "uploaded",
]
