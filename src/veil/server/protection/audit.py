"""The tamper-evident audit log (issue 13 §5; docs/protection.md, "Audit log").

What is recorded: the server's start and stop, configuration reloads, rule firings
(``alert``, with the block they applied), lifted blocks, device revocations, admin
actions (``admin.*``, recorded by the admin API), registrations as one count per
``registration_interval_s`` (never one record per account), and the log's own
housekeeping (``audit.key`` certificates, ``audit.key_rotated``, ``audit.dropped``, and
``audit.head_*`` when the head file disagreed with the database at start). Never
message content; identifiers only as :meth:`AuditLog.keyed` hashes — a string field
that parses as an IP address or a narrow network is replaced by its keyed hash before
it is stored, whatever the caller meant.

How: :meth:`AuditLog.record` only appends to a bounded in-memory queue (it never waits:
it runs inside request handlers and event callbacks); one writer task takes what is
queued, chains it (``audit_chain``: SHA-256 over the previous hash and the canonical
record), appends it to storage in one transaction and updates the head file. Every
``checkpoint_every`` records or ``checkpoint_interval_s`` seconds it signs the head with
the server key (a checkpoint). :meth:`AuditLog.verify` and :func:`verify_offline` (a
stopped server's data directory) read everything back and name the first broken
record.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from veil import __version__
from veil.server.config import ServerConfig
from veil.server.errors import Conflict
from veil.server.protection import events as ev
from veil.server.protection.audit_chain import (
    AUDIT_DIR,
    GENESIS,
    KEY_RECORD,
    AuditReport,
    Head,
    ServerKeySigner,
    Signer,
    checkpoint_message,
    known_keys,
    make_row,
    read_head,
    trust_root,
    verify_chain,
    write_head,
)
from veil.server.protection.audit_keys import KEYS_FILE, AuditKeys
from veil.server.protection.audit_offline import open_reader
from veil.server.protection.settings import AuditSettings
from veil.server.storage.base import AuditCheckpoint, AuditRow, Storage

log = logging.getLogger("veil.server.protection")

BATCH = 500  # records per storage call
MAX_FIELDS = 32
MAX_TEXT = 200
_RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)


def _narrow(text: str) -> bool:
    """Whether ``text`` names one host or a network small enough to stand for one."""
    try:
        if "/" not in text:
            ipaddress.ip_address(text)
            return True
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return net.prefixlen >= (24 if net.version == 4 else 48)


class AuditLog:
    def __init__(self, storage: Storage, signer: Signer, settings: AuditSettings,
                 data_dir: Path, clock_ms: Callable[[], int], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.storage = storage
        self.signer = signer
        self.settings = settings
        self.data_dir = data_dir
        self.clock_ms = clock_ms
        self.clock = clock
        self.keys = AuditKeys(data_dir / AUDIT_DIR / KEYS_FILE, settings.key_rotation_days,
                              clock_ms, on_rotate=self._rotated)
        self._queue: deque[tuple[int, str, dict[str, Any]]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._head = Head()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.dropped = 0  # records refused by a full queue since the last audit.dropped
        self._since_checkpoint = 0
        self._checkpoint_at = clock()
        self._registrations = 0
        self._registrations_since = clock_ms()
        self._registrations_at = clock()
        self._signer_warned = False
        self._signer_retry_at = 0.0  # no server key yet: when to try again
        self._lock = asyncio.Lock()  # the writer and checkpoint() change the head

    # --- recording ---------------------------------------------------------------------
    def keyed(self, value: str | bytes) -> str:
        """The keyed hash standing for an identifier (``audit_keys``)."""
        return self.keys.keyed(value)

    def record(self, kind: str, **fields: Any) -> None:
        """Queue one record; never waits. Counted, not stored, when the queue is full."""
        if len(self._queue) >= self.settings.max_queue:
            self.dropped += 1
            return
        self._queue.append((self.clock_ms(), kind[:MAX_TEXT], self._clean(fields)))
        self._idle.clear()
        self._wake.set()

    def _clean(self, fields: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in list(fields.items())[:MAX_FIELDS]:
            if value is None or isinstance(value, bool | int):
                out[name] = value
            elif isinstance(value, float):
                out[name] = value if math.isfinite(value) else None
            elif isinstance(value, bytes):
                out[name] = self.keyed(value)
            else:
                text = str(value)
                out[name] = self.keyed(text) if _narrow(text) else text[:MAX_TEXT]
        return out

    def attach(self, events: ev.EventHub) -> None:
        events.subscribe(self._on_event, (ev.ALERT, ev.BLOCK_LIFTED, ev.REGISTRATION))

    def _on_event(self, event: ev.SecurityEvent) -> None:
        f = event.fields
        if event.kind == ev.ALERT:
            source = f.get("source_hash") or (self.keyed(event.source) if event.source
                                              else None)
            self.record("alert", rule=f.get("rule"), hits=f.get("hits"),
                        window_s=f.get("window_s"), blocked_s=f.get("blocked_s"),
                        scope=f.get("scope"), source=source, block_id=f.get("block_id"),
                        alert_id=f.get("alert_id"))
        elif event.kind == ev.BLOCK_LIFTED:
            source = f.get("key_hash") or (self.keyed(event.source) if event.source
                                           else None)
            self.record("block.lifted", block_id=f.get("block_id"), rule=f.get("rule"),
                        by=f.get("by"), source=source)
        elif event.kind == ev.REGISTRATION:
            self._registrations += event.count  # the writer records the sum per interval

    def _rotated(self, epoch: int) -> None:
        self.record("audit.key_rotated", epoch=epoch)

    # --- life cycle ----------------------------------------------------------------------
    async def open(self) -> None:
        """Load the chain's head, compare it with the head file, start the writer."""
        last = await self.storage.audit_last()
        cps = await self.storage.audit_checkpoints()
        db = Head(0 if last is None else last.seq, GENESIS if last is None else last.hash,
                  cps[-1].seq if cps else 0)
        saved = await asyncio.to_thread(read_head, self.data_dir)
        self._head = Head(db.seq, db.hash, db.checkpoint_seq,
                          saved.key_ids if saved is not None else ())
        # What the head file says and the database no longer holds stays on record:
        # the next start must not quietly overwrite the evidence.
        if saved is None and last is not None:
            log.warning("audit: the head file is missing; tail truncation before this start "
                        "cannot be found")
            self.record("audit.head_missing", seq=db.seq)
        elif saved is not None and saved.seq > db.seq:
            log.error("audit: the log ends at record %d but the head file says %d: records "
                      "were removed", db.seq, saved.seq)
            self.record("audit.head_ahead", seq=db.seq, head_seq=saved.seq)
        elif saved is not None and saved.seq == db.seq and saved.hash != db.hash:
            log.error("audit: record %d differs from the head file", db.seq)
            self.record("audit.head_mismatch", seq=db.seq)
        self.record("server.start", version=__version__)
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def close(self) -> None:
        """Record the stop, write everything queued, sign a final checkpoint."""
        if self._task is None:
            return
        self._flush_registrations()
        self.record("server.stop")
        self._stopping = True
        self._wake.set()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("audit: the writer stopped with an error")
        self._task = None

    async def flush(self) -> None:
        """Wait until every record queued so far is stored."""
        if self._task is not None and not self._task.done():
            self._wake.set()
            await self._idle.wait()

    # --- the writer ------------------------------------------------------------------------
    def _flush_registrations(self) -> None:
        if self._registrations:
            self.record("registrations", count=self._registrations,
                        since_ms=self._registrations_since,
                        interval_s=self.settings.registration_interval_s)
        self._registrations = 0
        self._registrations_since = self.clock_ms()
        self._registrations_at = self.clock()

    def _checkpoint_due(self, now: float) -> bool:
        if self._stopping:  # a last try even after a failure: the key may exist now
            return self._head.seq != self._head.checkpoint_seq
        if now < self._signer_retry_at:
            return False
        return self._since_checkpoint >= self.settings.checkpoint_every or bool(
            self._since_checkpoint
            and now - self._checkpoint_at >= self.settings.checkpoint_interval_s)

    async def _run(self) -> None:
        while True:
            try:
                if await self._step():
                    return
            except Exception:
                # Never let the writer die: what failed is logged, the queue waits.
                log.exception("audit: the writer failed; retrying")
                await asyncio.sleep(_RETRY_S[-1] if not self._stopping else 0)
                if self._stopping:
                    self._idle.set()
                    return

    async def _step(self) -> bool:
        """One turn of the writer; True when it is done (stopping, nothing left)."""
        now = self.clock()
        if now - self._registrations_at >= self.settings.registration_interval_s:
            self._flush_registrations()
        if self._queue:
            async with self._lock:
                await self._write_batch()
            return False
        if self._checkpoint_due(now):
            await self.checkpoint()
        if self._stopping:
            if not self._queue:
                self._idle.set()
                return True
            return False
        self._idle.set()
        self._wake.clear()
        timeout = self._registrations_at + self.settings.registration_interval_s - now
        if self._since_checkpoint:
            timeout = min(timeout, max(self._signer_retry_at, self._checkpoint_at
                                       + self.settings.checkpoint_interval_s) - now)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(timeout, 0.01))
        return False

    async def _write_batch(self) -> None:
        items = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
        if self.dropped:
            items.insert(0, (self.clock_ms(), "audit.dropped", {"count": self.dropped}))
            self.dropped = 0
        for attempt in range(len(_RETRY_S) + 1):
            rows = self._chain(items)
            try:
                await self.storage.audit_append(rows)
                break
            except Conflict:
                # Another writer appended first (a second node): chain after its records.
                last = await self.storage.audit_last()
                if last is not None:
                    self._head = Head(last.seq, last.hash, self._head.checkpoint_seq,
                                      self._head.key_ids)
            except Exception:
                if attempt == len(_RETRY_S) or (self._stopping and attempt >= 2):
                    log.exception("audit: %d records could not be stored", len(items))
                    self.dropped += len(items)
                    return
                await asyncio.sleep(_RETRY_S[attempt])
        else:
            self.dropped += len(items)
            return
        self._head = Head(rows[-1].seq, rows[-1].hash, self._head.checkpoint_seq,
                          self._head.key_ids)
        self._since_checkpoint += len(rows)
        await self._save_head()

    def _chain(self, items: list[tuple[int, str, dict[str, Any]]]) -> list[AuditRow]:
        rows: list[AuditRow] = []
        prev, seq = self._head.hash, self._head.seq
        for at_ms, kind, fields in items:
            seq += 1
            row = make_row(prev, seq, at_ms, kind, fields)
            rows.append(row)
            prev = row.hash
        return rows

    async def _save_head(self) -> None:
        try:
            await asyncio.to_thread(write_head, self.data_dir, self._head)
        except OSError:
            log.exception("audit: the head file could not be written")

    async def checkpoint(self) -> AuditCheckpoint | None:
        """Sign the current head now (the writer also does on its own schedule)."""
        async with self._lock:
            return await self._checkpoint()

    async def _checkpoint(self) -> AuditCheckpoint | None:
        try:
            key_id = self.signer.key_id
            if key_id not in self._head.key_ids:
                # The certificate goes into the chain first, so a verifier can still
                # trust this key once a newer one replaced it.
                cert = self.signer.certificate()
                self._queue.appendleft((self.clock_ms(), KEY_RECORD, {
                    "key_id": key_id, "certificate": cert.hex() if cert else None}))
                await self._write_batch()
                self._head = Head(self._head.seq, self._head.hash, self._head.checkpoint_seq,
                                  (*self._head.key_ids, key_id))
            head = self._head
            if head.seq == 0 or head.seq == head.checkpoint_seq:
                return None
            at_ms = self.clock_ms()
            signature = self.signer.sign(checkpoint_message(head.seq, head.hash, at_ms, key_id))
        except OSError as exc:  # no server key yet (a first start) or unreadable
            if not self._signer_warned:
                log.warning("audit: no checkpoint: the server key is unreadable (%s)",
                            type(exc).__name__)
                self._signer_warned = True
            self._signer_retry_at = self.clock() + min(
                30.0, float(self.settings.checkpoint_interval_s))
            return None
        cp = AuditCheckpoint(head.seq, head.hash, at_ms, signature, key_id)
        await self.storage.audit_checkpoint_add(cp)
        self._head = Head(head.seq, head.hash, head.seq, self._head.key_ids)
        self._since_checkpoint = 0
        self._checkpoint_at = self.clock()
        await self._save_head()
        return cp

    # --- reading back ------------------------------------------------------------------
    async def verify(self) -> AuditReport:
        """Check the whole chain, every checkpoint and the head file."""
        await self.flush()
        head = await asyncio.to_thread(read_head, self.data_dir)
        return await verify_chain(self.storage, known_keys(self.data_dir, self.signer),
                                  trust_root(self.data_dir), head)

    async def export_jsonl(self, after_seq: int = 0) -> AsyncIterator[str]:
        """The records after ``after_seq`` as JSON lines (each ends with a newline), for
        a SIEM: seq, at_ms, kind, fields, prev_hash and hash (hex)."""
        await self.flush()
        async for line in export_rows(self.storage, after_seq):
            yield line


async def export_rows(source: Any, after_seq: int = 0) -> AsyncIterator[str]:
    after = after_seq
    while rows := await source.audit_rows(after, 1000):
        for r in rows:
            try:
                fields: Any = json.loads(r.fields)
            except ValueError:  # a damaged record is exported as it is stored
                fields = r.fields
            yield json.dumps({"seq": r.seq, "at_ms": r.at_ms, "kind": r.kind,
                              "fields": fields, "prev_hash": r.prev_hash.hex(),
                              "hash": r.hash.hex()}, ensure_ascii=False,
                             sort_keys=True) + "\n"
        after = rows[-1].seq


async def verify_offline(config: ServerConfig) -> AuditReport:
    """Verify the audit log of a stopped server's data directory (no server needed; the
    database is only read: SQLite through a read-only connection)."""
    reader = await open_reader(config)
    try:
        head = read_head(config.data_dir)
        return await verify_chain(reader, known_keys(config.data_dir, None),
                                  trust_root(config.data_dir), head)
    finally:
        await reader.close()


__all__ = [
    "AuditLog",
    "AuditReport",
    "ServerKeySigner",
    "export_rows",
    "verify_offline",
]
