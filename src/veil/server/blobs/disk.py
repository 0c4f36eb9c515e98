"""The blob directory's file operations, synchronous (the store runs them in worker
threads): creating an upload's file, publishing a complete one with one atomic rename,
recovering the directory after a stop or a crash, and reading a blob.

Layout (docs/attachments.md, "Storage")::

    DATA/blobs/uploads/<id>        unfinished uploads (tus 1.0 creation and core)
    DATA/blobs/data/<id[:2]>/<id>  complete blobs, the only files downloads read

Every file is :mod:`veil.server.blobs.record`'s two header slots, then the bytes. A
complete upload is fsynced and marked complete, then renamed from ``uploads/`` into
``data/`` (the same file system, so the rename is atomic), and both directories are
fsynced: a blob is never visible in part, and one that is visible survives a power cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from veil.server.blobs.base import BlobReader, UploadStatus
from veil.server.blobs.record import DATA_START, Header, is_blob_id, read_header, write_header
from veil.server.encoding import log_id

log = logging.getLogger("veil.server.blobs")

READ_BYTES = 256 << 10  # one download chunk


@dataclass(slots=True)
class Stored:
    """One blob or upload: its header in force and where its file is."""

    header: Header
    path: Path

    def status(self, blob_id: str) -> UploadStatus:
        h = self.header
        return UploadStatus(blob_id, h.committed, h.length, h.expires_ms)


def pwrite_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_then_write(fd: int, header: Header) -> None:
    """The bytes a header is about to name are made durable first, then the header."""
    os.fdatasync(fd)
    write_header(fd, header)


@contextlib.contextmanager
def opened(path: Path, flags: int) -> Iterator[int]:
    fd = os.open(path, flags)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def borrowed(fd: int) -> Iterator[int]:
    yield fd


class BlobDirectory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploads = root / "uploads"
        self.data = root / "data"

    def upload_path(self, blob_id: str) -> Path:
        return self.uploads / blob_id

    def blob_path(self, blob_id: str) -> Path:
        return self.data / blob_id[:2] / blob_id

    def create(self, blob_id: str, header: Header) -> Path:
        """An upload's file with its first header, durable before it is acknowledged."""
        path = self.upload_path(blob_id)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            raw = header.encode()
            pwrite_all(fd, raw + bytes(DATA_START - len(raw)), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.uploads)
        return path

    def publish(self, blob_id: str, fd: int, source: Path) -> Stored:
        """Rename a synced, complete upload into ``data/``: the moment it appears."""
        header = read_header(fd)
        if header is None or not header.complete:
            raise OSError("publishing an upload that is not marked complete")
        target = self.blob_path(blob_id)
        if not target.parent.exists():
            target.parent.mkdir(mode=0o700)
            fsync_dir(self.data)
        os.rename(source, target)
        fsync_dir(target.parent)
        fsync_dir(self.uploads)
        return Stored(header, target)

    def complete(self, blob_id: str, stored: Stored, header: Header, fd: int | None) -> Stored:
        """Mark an upload complete (``header``) and publish it."""
        with opened(stored.path, os.O_RDWR) if fd is None else borrowed(fd) as f:
            sync_then_write(f, header)
            return self.publish(blob_id, f, stored.path)

    # ---- recovery: the directory is the truth ----------------------------------------
    def scan(self, now: int) -> dict[str, Stored]:
        """Every live upload and blob; on the way, what was never acknowledged or has
        expired is deleted, bytes beyond a committed offset are cut off, and a complete
        upload a crash kept from its rename is published."""
        for path in (self.root, self.uploads, self.data):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        found: dict[str, Stored] = {}
        for path in sorted(self.uploads.iterdir()):
            stored = self._recover_upload(path, now)
            if stored is not None:
                found[path.name] = stored
        for shard in sorted(self.data.iterdir()):
            for path in sorted(shard.iterdir()) if shard.is_dir() else ():
                stored = self._check_blob(path, now)
                if stored is not None:
                    found[path.name] = stored
        return found

    def _recover_upload(self, path: Path, now: int) -> Stored | None:
        if not is_blob_id(path.name) or not path.is_file():
            log.warning("ignoring a stray file in the uploads directory")
            return None
        with opened(path, os.O_RDWR) as fd:
            header = read_header(fd)
            if header is None:  # created, never acknowledged: its header was not synced
                path.unlink()
                return None
            if header.expires_ms <= now:
                path.unlink()
                return None
            if header.complete:
                return self.publish(path.name, fd, path)
            if os.fstat(fd).st_size != DATA_START + header.committed:
                os.ftruncate(fd, DATA_START + header.committed)
                os.fsync(fd)
        return Stored(header, path)

    def _check_blob(self, path: Path, now: int) -> Stored | None:
        if not is_blob_id(path.name) or path.parent.name != path.name[:2]:
            log.warning("ignoring a stray file in the blobs directory")
            return None
        with opened(path, os.O_RDONLY) as fd:
            header = read_header(fd)
            size = os.fstat(fd).st_size
        if header is None or not header.complete or size != DATA_START + header.length:
            log.warning("blob %s is damaged; left in place, not served", log_id(path.name))
            return None
        if header.expires_ms <= now:
            path.unlink()
            return None
        return Stored(header, path)


class FileReader(BlobReader):
    """An open blob file: it stays readable if the blob is deleted meanwhile."""

    def __init__(self, fd: int, size: int, expires_ms: int) -> None:
        self._fd = fd
        self.size = size
        self.expires_ms = expires_ms

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        pos = start
        while pos < end:
            chunk = await asyncio.to_thread(os.pread, self._fd, min(READ_BYTES, end - pos),
                                            DATA_START + pos)
            if not chunk:  # shorter than its header says: damaged under our feet
                raise OSError(f"blob file ends early at {pos} of {self.size}")
            pos += len(chunk)
            yield chunk

    async def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            await asyncio.to_thread(os.close, fd)


__all__ = [
    "BlobDirectory",
    "FileReader",
    "Stored",
    "pwrite_all",
    "sync_then_write",
]
