"""The data-directory blob store (veil.server.blobs.files): tus semantics without HTTP,
atomic completion, recovery after a crash, quota, expiry that deletes files.

Time is a settable clock; bodies are in-memory sources that can also fail mid-way the
way a dropped connection does.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from veil.server.blobs import BlobLimits, FileBlobStore
from veil.server.blobs.record import DATA_START, read_header
from veil.server.errors import (
    BlobNotFound,
    BlobQuotaExceeded,
    BlobTooLarge,
    InvalidBlobToken,
    UploadExceedsLength,
    UploadInterrupted,
    UploadOffsetMismatch,
)

ALICE = b"a" * 16
BOB = b"b" * 16
TOKEN = b"t" * 32
LIMITS = BlobLimits(max_blob_bytes=20 << 20, quota_bytes=24 << 20, max_blobs_per_account=5,
                    blob_ttl_ms=30_000, upload_ttl_ms=10_000)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


class Body:
    """Chunks, then either the end or an interruption (a dropped connection)."""

    def __init__(self, data: bytes, chunk: int = 65536, fail_after: int | None = None,
                 hold: asyncio.Event | None = None) -> None:
        self._chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
        self._fail_after = fail_after
        self._hold = hold
        self._interrupted = asyncio.Event()
        self.sent = 0

    async def read(self) -> bytes:
        if self._fail_after is not None and self.sent >= self._fail_after:
            raise UploadInterrupted("connection lost")
        if not self._chunks:
            if self._hold is not None:  # a client that goes silent before the end
                self._hold.set()
                await self._interrupted.wait()
                raise UploadInterrupted("superseded")
            return b""
        chunk = self._chunks.pop(0)
        self.sent += len(chunk)
        return chunk

    def interrupt(self) -> None:
        self._interrupted.set()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[FileBlobStore]:
    s = FileBlobStore(tmp_path / "blobs", LIMITS, clock)
    await s.open()
    yield s
    await s.close()


async def read_all(store: FileBlobStore, blob_id: str, token: bytes = TOKEN,
                   start: int = 0, end: int | None = None) -> bytes:
    reader = await store.open_blob(blob_id, token)
    try:
        return b"".join([c async for c in reader.chunks(start, reader.size if end is None
                                                          else end)])
    finally:
        await reader.close()


def visible(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "data").rglob("*") if p.is_file())


async def test_upload_in_pieces_becomes_visible_only_when_complete(
    store: FileBlobStore, tmp_path: Path
) -> None:
    data = os.urandom(3 << 20)
    status = await store.create(ALICE, len(data), TOKEN)
    assert (status.offset, status.length) == (0, len(data))
    status = await store.append(ALICE, status.blob_id, 0, Body(data[:1_000_000]), None)
    assert status.offset == 1_000_000 and not status.complete
    assert visible(tmp_path / "blobs") == []
    with pytest.raises(BlobNotFound):
        await store.open_blob(status.blob_id, TOKEN)
    status = await store.append(ALICE, status.blob_id, 1_000_000, Body(data[1_000_000:]),
                                len(data) - 1_000_000)
    assert status.complete
    assert visible(tmp_path / "blobs") == [status.blob_id]
    assert list((tmp_path / "blobs" / "uploads").iterdir()) == []
    assert await read_all(store, status.blob_id) == data
    assert await read_all(store, status.blob_id, start=5, end=17) == data[5:17]


async def test_wrong_offset_and_overflow_change_nothing(store: FileBlobStore) -> None:
    status = await store.create(ALICE, 100, TOKEN)
    await store.append(ALICE, status.blob_id, 0, Body(b"x" * 40), None)
    with pytest.raises(UploadOffsetMismatch) as wrong:
        await store.append(ALICE, status.blob_id, 10, Body(b"y" * 10), None)
    assert wrong.value.details == {"offset": 40}
    with pytest.raises(UploadExceedsLength):  # declared beyond the length
        await store.append(ALICE, status.blob_id, 40, Body(b"y" * 61), 61)
    with pytest.raises(UploadExceedsLength):  # undeclared, found out while reading
        await store.append(ALICE, status.blob_id, 40, Body(b"y" * 200, chunk=30), None)
    assert (await store.status(ALICE, status.blob_id)).offset == 40


async def test_an_interrupted_body_keeps_what_arrived(store: FileBlobStore) -> None:
    data = os.urandom(10 << 20)  # beyond one fsync interval (COMMIT_BYTES)
    status = await store.create(ALICE, len(data), TOKEN)
    body = Body(data, chunk=65536, fail_after=(9 << 20) + 12345)
    with pytest.raises(UploadInterrupted) as stopped:
        await store.append(ALICE, status.blob_id, 0, body, len(data))
    offset = (await store.status(ALICE, status.blob_id)).offset
    assert offset == body.sent and stopped.value.details == {"offset": offset}
    await store.append(ALICE, status.blob_id, offset, Body(data[offset:]), None)
    assert await read_all(store, status.blob_id) == data


async def test_a_body_shorter_than_its_declared_length_is_an_interruption(
    store: FileBlobStore,
) -> None:
    status = await store.create(ALICE, 100, TOKEN)
    with pytest.raises(UploadInterrupted):
        await store.append(ALICE, status.blob_id, 0, Body(b"z" * 30), 50)
    assert (await store.status(ALICE, status.blob_id)).offset == 30


async def test_a_new_request_takes_over_a_silent_patch(store: FileBlobStore) -> None:
    status = await store.create(ALICE, 100, TOKEN)
    silent = asyncio.Event()
    stuck = asyncio.create_task(
        store.append(ALICE, status.blob_id, 0, Body(b"q" * 20, hold=silent), None))
    await silent.wait()  # the first 20 bytes are in, then nothing
    assert (await store.status(ALICE, status.blob_id)).offset == 20
    with pytest.raises(UploadInterrupted):
        await stuck
    done = await store.append(ALICE, status.blob_id, 20, Body(b"r" * 80), 80)
    assert done.complete and await read_all(store, status.blob_id) == b"q" * 20 + b"r" * 80


async def test_uploads_belong_to_their_account(store: FileBlobStore) -> None:
    status = await store.create(ALICE, 10, TOKEN)
    for call in (store.status(BOB, status.blob_id), store.terminate(BOB, status.blob_id),
                 store.append(BOB, status.blob_id, 0, Body(b"1" * 10), 10)):
        with pytest.raises(BlobNotFound):
            await call
    assert (await store.status(ALICE, status.blob_id)).offset == 0


async def test_downloads_need_the_token_and_a_complete_blob(store: FileBlobStore) -> None:
    status = await store.create(ALICE, 4, TOKEN)
    with pytest.raises(BlobNotFound):
        await store.open_blob(status.blob_id, TOKEN)  # not complete yet
    await store.append(ALICE, status.blob_id, 0, Body(b"abcd"), 4)
    with pytest.raises(InvalidBlobToken):
        await store.open_blob(status.blob_id, b"u" * 32)
    with pytest.raises(BlobNotFound):
        await store.open_blob("0" * 32, TOKEN)
    assert await read_all(store, status.blob_id) == b"abcd"


async def test_an_empty_blob_is_complete_at_creation(store: FileBlobStore) -> None:
    status = await store.create(ALICE, 0, TOKEN)
    assert status.complete and await read_all(store, status.blob_id) == b""


async def test_size_and_quota(store: FileBlobStore) -> None:
    with pytest.raises(BlobTooLarge):
        await store.create(ALICE, LIMITS.max_blob_bytes + 1, TOKEN)
    first = await store.create(ALICE, 16 << 20, TOKEN)  # reserved at its declared length
    with pytest.raises(BlobQuotaExceeded) as over:
        await store.create(ALICE, 10 << 20, TOKEN)
    assert over.value.details is not None and over.value.details["used_bytes"] == 16 << 20
    await store.create(BOB, 10 << 20, TOKEN)  # another account's quota is its own
    await store.terminate(ALICE, first.blob_id)
    assert store.usage(ALICE).used_bytes == 0
    for _ in range(LIMITS.max_blobs_per_account):
        await store.create(ALICE, 1, TOKEN)
    with pytest.raises(BlobQuotaExceeded):
        await store.create(ALICE, 1, TOKEN)


async def test_expiry_deletes_files_and_frees_quota(
    store: FileBlobStore, clock: Clock, tmp_path: Path
) -> None:
    blob = await store.create(ALICE, 3, TOKEN)
    await store.append(ALICE, blob.blob_id, 0, Body(b"abc"), 3)
    unfinished = await store.create(ALICE, 10, TOKEN)
    clock.now += LIMITS.upload_ttl_ms
    with pytest.raises(BlobNotFound):  # refused at once, before the job runs
        await store.status(ALICE, unfinished.blob_id)
    report = await store.expire()
    assert (report.blobs, report.uploads) == (0, 1)
    assert list((tmp_path / "blobs" / "uploads").iterdir()) == []
    assert await read_all(store, blob.blob_id) == b"abc"  # its clock started at completion
    clock.now += LIMITS.blob_ttl_ms
    with pytest.raises(BlobNotFound):
        await store.open_blob(blob.blob_id, TOKEN)
    assert (await store.expire()).blobs == 1
    assert visible(tmp_path / "blobs") == [] and store.usage(ALICE).blobs == 0


async def test_reopening_recovers_uploads_and_drops_the_unsynced_tail(
    tmp_path: Path, clock: Clock
) -> None:
    root = tmp_path / "blobs"
    first = FileBlobStore(root, LIMITS, clock)
    await first.open()
    data = os.urandom(300_000)
    status = await first.create(ALICE, len(data), TOKEN)
    await first.append(ALICE, status.blob_id, 0, Body(data[:100_000]), None)
    path = root / "uploads" / status.blob_id
    with path.open("ab") as fh:  # bytes a crash left beyond the committed offset
        fh.write(b"garbage")
    (root / "uploads" / ("f" * 32)).write_bytes(b"\0" * 10)  # a creation that never synced
    again = FileBlobStore(root, LIMITS, clock)
    await again.open()
    assert (await again.status(ALICE, status.blob_id)).offset == 100_000
    assert path.stat().st_size == DATA_START + 100_000
    assert not (root / "uploads" / ("f" * 32)).exists()
    assert again.usage(ALICE).used_bytes == len(data)
    await again.append(ALICE, status.blob_id, 100_000, Body(data[100_000:]), None)
    assert await read_all(again, status.blob_id) == data


async def test_a_completed_upload_caught_before_its_rename_is_published(
    tmp_path: Path, clock: Clock
) -> None:
    root = tmp_path / "blobs"
    store = FileBlobStore(root, LIMITS, clock)
    await store.open()
    status = await store.create(ALICE, 5, TOKEN)
    await store.append(ALICE, status.blob_id, 0, Body(b"hello"), 5)
    published = root / "data" / status.blob_id[:2] / status.blob_id
    os.rename(published, root / "uploads" / status.blob_id)  # as if the rename never ran
    again = FileBlobStore(root, LIMITS, clock)
    await again.open()
    assert published.exists() and await read_all(again, status.blob_id) == b"hello"


async def test_a_torn_header_write_falls_back_to_the_other_slot(
    store: FileBlobStore, tmp_path: Path, clock: Clock
) -> None:
    status = await store.create(ALICE, 100, TOKEN)
    await store.append(ALICE, status.blob_id, 0, Body(b"1" * 30), None)
    path = tmp_path / "blobs" / "uploads" / status.blob_id
    fd = os.open(path, os.O_RDWR)
    try:
        header = read_header(fd)
        assert header is not None
        os.pwrite(fd, b"\xff" * 50, header.slot_offset + 20)  # tear the newest slot
    finally:
        os.close(fd)
    again = FileBlobStore(tmp_path / "blobs", LIMITS, clock)
    await again.open()
    assert (await again.status(ALICE, status.blob_id)).offset == 0  # the older slot
