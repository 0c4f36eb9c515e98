"""The data-directory blob store: one file per blob under ``DATA/blobs``
(:mod:`veil.server.blobs.disk` has the layout and the file operations).

An upload is written in place in ``uploads/``, which no download ever reads; its
header's ``committed`` offset moves only after the bytes below it were fsynced (at the
end of each PATCH, and every ``COMMIT_BYTES`` of a long one). The last byte completes
it: synced, marked complete and renamed into ``data/`` at once, so a blob is never
visible in part (tus 1.0 leaves that to the server; issue 12 asks for it). At start the
directory is the truth (:meth:`BlobDirectory.scan`) and the per-account accounting is
rebuilt from the headers. The index lives in memory: one server process owns a data
directory (``datadir_lock.py``).

Requests for one upload are serialised (a lock per id); a new one interrupts a PATCH
still running for it (:meth:`BodySource.interrupt`), whose connection may be dead
without the server knowing yet (tus 1.0 leaves concurrent PATCHes to the server).
File I/O runs in worker threads; bodies pass through a bounded buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from veil.server.blobs.base import (
    BlobLimits,
    BlobReader,
    BlobStore,
    BodySource,
    ExpiryReport,
    UploadStatus,
    Usage,
)
from veil.server.blobs.disk import (
    BlobDirectory,
    FileReader,
    Stored,
    pwrite_all,
    sync_then_write,
)
from veil.server.blobs.record import DATA_START, Header, new_blob_id, token_hash
from veil.server.errors import (
    BlobNotFound,
    BlobQuotaExceeded,
    BlobTooLarge,
    InvalidBlobToken,
    StorageError,
    UploadExceedsLength,
    UploadInterrupted,
    UploadOffsetMismatch,
)

log = logging.getLogger("veil.server.blobs")

_T = TypeVar("_T")
WRITE_BYTES = 1 << 20  # bytes gathered before one write
COMMIT_BYTES = 8 << 20  # bytes written between two fsyncs of a long PATCH


async def _to_end(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` in a worker thread, awaited to its end even if the caller is
    cancelled meanwhile (the cancellation is raised after): a file change of one upload
    never runs on after its lock was released, and the bookkeeping ``fn`` does itself
    follows what reached the disk."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    """A failing disk (full, read-only, gone) is the server's 503, not a bug's 500."""
    try:
        yield
    except OSError as exc:
        log.error("blob store: %s", exc.strerror or type(exc).__name__)
        raise StorageError(f"the blob store cannot write: {exc.strerror or 'I/O error'}"
                           ) from None


@dataclass(slots=True)
class _Turn:
    """The lock of one upload id, and the body of the PATCH holding it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    body: BodySource | None = None
    users: int = 0


class FileBlobStore(BlobStore):
    def __init__(self, root: Path, limits: BlobLimits, clock_ms: Callable[[], int]) -> None:
        self.root = root
        self.limits = limits
        self._clock_ms = clock_ms
        self._dir = BlobDirectory(root)
        self._entries: dict[str, Stored] = {}
        self._usage: dict[bytes, list[int]] = {}  # account -> [bytes, blobs]
        self._turns: dict[str, _Turn] = {}

    # ---- opening: the directory is the truth -----------------------------------------
    async def open(self) -> None:
        entries = await asyncio.to_thread(self._dir.scan, self._clock_ms())
        for blob_id, entry in entries.items():
            self._add(blob_id, entry)

    async def close(self) -> None:
        for turn in self._turns.values():
            if turn.body is not None:
                turn.body.interrupt()

    # ---- accounting ----------------------------------------------------------------
    def _add(self, blob_id: str, entry: Stored) -> None:
        self._entries[blob_id] = entry
        used = self._usage.setdefault(entry.header.account, [0, 0])
        used[0] += entry.header.length
        used[1] += 1

    def _drop(self, blob_id: str) -> Stored | None:
        entry = self._entries.pop(blob_id, None)
        if entry is not None:
            used = self._usage[entry.header.account]
            used[0] -= entry.header.length
            used[1] -= 1
            if used[1] == 0:
                del self._usage[entry.header.account]
        return entry

    def usage(self, account: bytes) -> Usage:
        used = self._usage.get(account, [0, 0])
        return Usage(used[0], used[1])

    def _owned(self, account: bytes, blob_id: str) -> Stored:
        entry = self._entries.get(blob_id)
        if (entry is None or not hmac.compare_digest(entry.header.account, account)
                or entry.header.expires_ms <= self._clock_ms()):
            raise BlobNotFound("no upload with that id for this account")
        return entry

    @contextlib.asynccontextmanager
    async def _turn(self, blob_id: str, body: BodySource | None = None) -> AsyncIterator[None]:
        turn = self._turns.setdefault(blob_id, _Turn())
        if turn.body is not None:
            turn.body.interrupt()
        turn.users += 1
        try:
            async with turn.lock:
                turn.body = body
                try:
                    yield
                finally:
                    turn.body = None
        finally:
            turn.users -= 1
            if turn.users == 0:
                del self._turns[blob_id]

    # ---- tus creation, core and termination ---------------------------------------------
    async def create(self, account: bytes, length: int, token: bytes) -> UploadStatus:
        limits = self.limits
        if length > limits.max_blob_bytes:
            raise BlobTooLarge(f"an upload is at most {limits.max_blob_bytes} bytes",
                               {"max_blob_bytes": limits.max_blob_bytes})
        used = self.usage(account)
        if (used.used_bytes + length > limits.quota_bytes
                or used.blobs + 1 > limits.max_blobs_per_account):
            raise BlobQuotaExceeded(
                "this account's blobs and unfinished uploads would exceed its quota",
                {"used_bytes": used.used_bytes, "quota_bytes": limits.quota_bytes,
                 "blobs": used.blobs, "max_blobs": limits.max_blobs_per_account})
        blob_id = new_blob_id()
        now = self._clock_ms()
        header = Header(account, length, 0, now, now + limits.upload_ttl_ms,
                        token_hash(token))
        entry = Stored(header, self._dir.upload_path(blob_id))
        self._add(blob_id, entry)  # reserved before any await: quota holds under races
        try:
            with _disk_errors():
                async with self._turn(blob_id):
                    await _to_end(self._dir.create, blob_id, header)
                    if length == 0:
                        await self._complete(blob_id, entry, None)
        except BaseException:
            self._drop(blob_id)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(entry.path.unlink)
            raise
        return entry.status(blob_id)

    async def status(self, account: bytes, blob_id: str) -> UploadStatus:
        self._owned(account, blob_id)
        async with self._turn(blob_id):
            return self._owned(account, blob_id).status(blob_id)

    async def terminate(self, account: bytes, blob_id: str) -> None:
        self._owned(account, blob_id)
        async with self._turn(blob_id):
            entry = self._owned(account, blob_id)
            with _disk_errors():
                await self._remove(blob_id, entry)

    async def _remove(self, blob_id: str, entry: Stored) -> None:
        self._drop(blob_id)
        with contextlib.suppress(FileNotFoundError):
            await _to_end(entry.path.unlink)

    async def append(self, account: bytes, blob_id: str, offset: int,
                     body: BodySource, declared: int | None) -> UploadStatus:
        self._owned(account, blob_id)
        async with self._turn(blob_id, body):
            entry = self._owned(account, blob_id)
            h = entry.header
            if offset != h.committed:
                raise UploadOffsetMismatch(
                    f"the upload is at offset {h.committed}, not {offset}: resume there",
                    {"offset": h.committed})
            if declared is not None and offset + declared > h.length:
                raise UploadExceedsLength(
                    f"the body goes beyond the upload's length of {h.length} bytes",
                    {"offset": h.committed, "length": h.length})
            if h.complete:
                if await body.read():
                    raise UploadExceedsLength("the upload is complete")
                return entry.status(blob_id)
            with _disk_errors():
                fd = await _to_end(os.open, entry.path, os.O_RDWR)
                try:
                    await self._receive(blob_id, entry, fd, body, declared)
                finally:
                    await _to_end(os.close, fd)
            return entry.status(blob_id)

    async def _receive(self, blob_id: str, entry: Stored, fd: int, body: BodySource,
                       declared: int | None) -> None:
        start = entry.header.committed
        length = entry.header.length
        await _to_end(os.ftruncate, fd, DATA_START + start)  # bytes no header names
        pos = start
        buf = bytearray()
        interrupted: UploadInterrupted | None = None
        while True:
            try:
                chunk = await body.read()
            except UploadInterrupted as exc:
                interrupted = exc
                break
            if not chunk:
                break
            if pos + len(buf) + len(chunk) > length:
                await self._rollback(entry, fd, start)
                raise UploadExceedsLength(
                    f"the body goes beyond the upload's length of {length} bytes; "
                    f"nothing of it was kept", {"offset": start, "length": length})
            buf += chunk
            if len(buf) >= WRITE_BYTES:
                await _to_end(pwrite_all, fd, buf, DATA_START + pos)
                pos += len(buf)
                buf.clear()
                if pos - entry.header.committed >= COMMIT_BYTES:
                    await self._commit(entry, fd, pos)
        if buf:
            await _to_end(pwrite_all, fd, buf, DATA_START + pos)
            pos += len(buf)
        if interrupted is None and declared is not None and pos - start < declared:
            interrupted = UploadInterrupted("the body ended before its Content-Length")
        if pos != entry.header.committed:
            await self._commit(entry, fd, pos)
        if interrupted is not None:
            interrupted.details = {"offset": pos}
            raise interrupted
        if pos == length:
            await self._complete(blob_id, entry, fd)

    async def _commit(self, entry: Stored, fd: int, pos: int) -> None:
        header = entry.header.next(committed=pos)

        def commit() -> None:
            sync_then_write(fd, header)
            entry.header = header

        await _to_end(commit)

    async def _rollback(self, entry: Stored, fd: int, start: int) -> None:
        if entry.header.committed != start:
            await self._commit(entry, fd, start)
        await _to_end(os.ftruncate, fd, DATA_START + start)

    async def _complete(self, blob_id: str, entry: Stored, fd: int | None) -> None:
        now = self._clock_ms()
        header = entry.header.next(complete=True, committed=entry.header.length,
                                   expires_ms=now + self.limits.blob_ttl_ms)

        def complete() -> None:
            published = self._dir.complete(blob_id, entry, header, fd)
            entry.header, entry.path = published.header, published.path

        await _to_end(complete)

    # ---- downloads and expiry --------------------------------------------------------
    async def open_blob(self, blob_id: str, token: bytes) -> BlobReader:
        entry = self._entries.get(blob_id)
        if (entry is None or not entry.header.complete
                or entry.header.expires_ms <= self._clock_ms()):
            raise BlobNotFound("no blob with that id")
        if not hmac.compare_digest(token_hash(token), entry.header.token_hash):
            raise InvalidBlobToken("this is not the blob's download token")
        try:
            fd = await asyncio.to_thread(os.open, entry.path, os.O_RDONLY)
        except FileNotFoundError:  # deleted between the lookup and the open
            raise BlobNotFound("no blob with that id") from None
        return FileReader(fd, entry.header.length, entry.header.expires_ms)

    async def expire(self) -> ExpiryReport:
        now = self._clock_ms()
        due = [i for i, e in self._entries.items() if e.header.expires_ms <= now]
        blobs = uploads = total = 0
        for blob_id in due:
            async with self._turn(blob_id):
                entry = self._entries.get(blob_id)
                if entry is None or entry.header.expires_ms > now:
                    continue
                await self._remove(blob_id, entry)
                total += entry.header.length
                if entry.header.complete:
                    blobs += 1
                else:
                    uploads += 1
        return ExpiryReport(blobs, uploads, total)


async def run_blob_expiry(store: BlobStore, interval_s: float) -> None:
    """The blob retention job: :meth:`BlobStore.expire` now and every ``interval_s``."""
    while True:
        try:
            report = await store.expire()
        except OSError as exc:
            log.warning("blob expiry failed: %s", exc.strerror or type(exc).__name__)
        else:
            if report.blobs or report.uploads:
                log.info("expired %d blobs and %d unfinished uploads (%d bytes)",
                         report.blobs, report.uploads, report.bytes)
        await asyncio.sleep(interval_s)


__all__ = [
    "COMMIT_BYTES",
    "FileBlobStore",
    "run_blob_expiry",
]
