"""Attachments through a real server process: encrypted, padded, resumable in both
directions through dropped connections, a killed client and a restarted server
(issue 12 §1, §5, §6; docs/attachments.md)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.client.conftest import new_client
from tests.integration.client.cutting_proxy import CuttingProxy
from tests.integration.server.harness import ServerProcess
from veil.client import Client
from veil.client.attachments import Attachments, TransferProgress
from veil.client.blob_http import BlobHttp
from veil.client.errors import AttachmentRefused, FileChanged, ServerRejected
from veil.core import attachments as cipher
from veil.server.blobs.record import DATA_START

MIB = 1 << 20


@pytest.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[CuttingProxy]:
    cutting = await CuttingProxy(server.port).start()
    yield cutting
    await cutting.close()


def _file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def _attachments(client: Client, url: str) -> tuple[Attachments, BlobHttp]:
    http = BlobHttp(url, client._ctx.api.authorization)
    return Attachments(client._ctx.store, http), http


def _blob_files(server: ServerProcess) -> list[Path]:
    return [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()]


async def test_a_file_goes_up_encrypted_and_comes_down_bit_identical(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    alice = await new_client(clients, tmp_path, server, "alice")
    bob = await new_client(clients, tmp_path, server, "bob")
    source = _file(tmp_path / "holiday photo.jpg", 3 * MIB + 123)
    up, up_http = _attachments(alice, server.url)
    down, down_http = _attachments(bob, server.url)
    try:
        seen: list[TransferProgress] = []
        pointer = await up.upload(up.new_upload(source), seen.append)
        assert pointer.size == source.stat().st_size and pointer.media_type == "image/jpeg"
        assert seen and seen[-1].done == seen[-1].total == pointer.size
        # What the server holds: padded ciphertext, no name, no plaintext.
        plain = source.read_bytes()
        for stored in _blob_files(server):
            data = stored.read_bytes()
            assert plain[:4096] not in data and b"holiday" not in stored.name.encode()
        sizes = {p.stat().st_size - DATA_START for p in _blob_files(server)}
        assert cipher.ciphertext_length(pointer.size) in sizes   # the padded length only
        saved = await down.download(pointer, tmp_path / "downloads")
        assert saved.name == "holiday photo.jpg" and saved.read_bytes() == plain
        assert [p.name for p in (tmp_path / "downloads").iterdir()] == [saved.name]
        # A wrong token is refused by the server; nothing is written.
        wrong = type(pointer)(pointer.blob_id, pointer.key, bytes(32), pointer.digest,
                              pointer.size, "other.bin", pointer.media_type)
        with pytest.raises(ServerRejected) as refused:
            await down.download(wrong, tmp_path / "elsewhere")
        assert refused.value.status in (403, 404)
        assert not any((tmp_path / "elsewhere").glob("other*"))
    finally:
        await up_http.close()
        await down_http.close()


async def test_uploads_and_downloads_resume_after_dropped_connections(
        server: ServerProcess, clients: list[Client], tmp_path: Path,
        proxy: CuttingProxy) -> None:
    alice = await new_client(clients, tmp_path, server, "alice2")
    source = _file(tmp_path / "big.bin", 12 * MIB + 7)
    up, http = _attachments(alice, proxy.url)
    try:
        resumed: list[int] = []

        def note(p: TransferProgress) -> None:
            if p.resumed_at is not None:
                resumed.append(p.resumed_at)
        proxy.cut_after(3 * MIB)
        job = up.new_upload(source)
        upload = asyncio.create_task(up.upload(job, note))
        while proxy.cuts < 1:
            await asyncio.sleep(0.01)
        proxy.cut_after(4 * MIB)                         # and a second drop
        pointer = await upload
        assert proxy.cuts == 2 and resumed and all(r > 0 for r in resumed)
        proxy.cut_after(5 * MIB)                         # the download is cut too
        saved = await up.download(pointer, tmp_path / "dl")
        assert proxy.cuts == 3
        assert hashlib.sha256(saved.read_bytes()).digest() == \
            hashlib.sha256(source.read_bytes()).digest()
    finally:
        await http.close()


async def test_a_killed_client_and_a_restarted_server_resume_the_upload(
        tmp_path: Path, clients: list[Client]) -> None:
    own = ServerProcess(tmp_path / "own-server").start()
    proxy = await CuttingProxy(own.port).start()
    try:
        alice = await new_client(clients, tmp_path, own, "alice3")
        source = _file(tmp_path / "film.mkv", 24 * MIB)
        up, http = _attachments(alice, proxy.url)
        job = up.new_upload(source)
        proxy.rate = 20e6                        # so it is still running when cancelled
        first = asyncio.create_task(up.upload(job))
        watcher = BlobHttp(own.url, alice._ctx.api.authorization)
        while (stored := up.upload_job(job.job_id)) is None or stored.blob_id is None or \
                await watcher.offset(stored.blob_id) == 0:   # until the server fsynced some
            await asyncio.sleep(0.01)
        await watcher.close()
        first.cancel()                                   # the client dies mid-upload
        with pytest.raises(asyncio.CancelledError):
            await first
        await http.close()
        own.stop()                                       # and the server restarts
        own.start()
        proxy.target_port = own.port
        proxy.rate = None
        again, http = _attachments(alice, proxy.url)     # a new process: job from store
        stored = again.upload_job(job.job_id)
        assert stored is not None and stored.blob_id is not None
        held = await http.offset(stored.blob_id)
        assert held > 0                                  # kept across the restart
        resumed: list[int] = []
        pointer = await again.upload(stored, lambda p: resumed.extend(
            [p.resumed_at] if p.resumed_at is not None else []))
        assert resumed == [held]
        saved = await again.download(pointer, tmp_path / "dl3")
        assert saved.read_bytes() == source.read_bytes()
        await http.close()
    finally:
        await proxy.close()
        own.stop()


async def test_a_tampered_blob_is_refused_and_deleted_never_shown(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    alice = await new_client(clients, tmp_path, server, "alice4")
    source = _file(tmp_path / "contract.pdf", 200_000)
    up, http = _attachments(alice, server.url)
    try:
        pointer = await up.upload(up.new_upload(source))
        [stored] = [p for p in _blob_files(server) if pointer.blob_id in p.name]
        data = bytearray(stored.read_bytes())
        data[DATA_START + 100_000] ^= 0x01               # the server flips one bit
        stored.write_bytes(bytes(data))
        with pytest.raises(AttachmentRefused, match="deleted"):
            await up.download(pointer, tmp_path / "dl4")
        assert list((tmp_path / "dl4").iterdir()) == []  # no partial file, no plaintext
    finally:
        await http.close()


async def test_a_file_changed_between_attempts_is_not_sent_as_a_mix(
        server: ServerProcess, clients: list[Client], tmp_path: Path,
        proxy: CuttingProxy) -> None:
    alice = await new_client(clients, tmp_path, server, "alice5")
    source = _file(tmp_path / "notes.txt", 4 * MIB)
    up, http = _attachments(alice, proxy.url)
    try:
        job = up.new_upload(source)
        proxy.cut_after(2 * MIB)
        task = asyncio.create_task(up.upload(job))
        while proxy.cuts < 1:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        source.write_bytes(os.urandom(4 * MIB))          # edited meanwhile
        stored = up.upload_job(job.job_id)
        assert stored is not None
        with pytest.raises(FileChanged):
            await up.upload(stored)
        assert up.upload_job(job.job_id) is None         # the job and the server copy go
        assert stored.blob_id is not None
        with pytest.raises(ServerRejected, match="blob_not_found"):
            await http.offset(stored.blob_id)
    finally:
        await http.close()


_SENDER = """
import asyncio, sys
from pathlib import Path
from veil.client import Client

async def main() -> None:
    alice = await Client.open(Path(sys.argv[1]), passphrase="pw")
    await alice.send_file(sys.argv[2], Path(sys.argv[3]), "the film")

asyncio.run(main())
"""


async def test_50_mib_through_three_drops_a_killed_client_and_a_server_restart(
        tmp_path: Path) -> None:
    """Issue 12 §6: a 50 MiB file sent with ``send_file`` through a connection dropped
    three times, the sending process killed (``kill -9``) once and the server restarted
    once, arrives bit-identical; the server never saw its name, type or plaintext."""
    import subprocess
    import sys

    own = ServerProcess(tmp_path / "srv").start()
    proxy = await CuttingProxy(own.port).start()
    made: list[Client] = []
    try:
        alice = await new_client(made, tmp_path, _Url(proxy.url), "alice6")
        bob = await new_client(made, tmp_path, _Url(proxy.url), "bob6")
        await alice.send(bob.account, "a film is coming")
        await bob.receive_pending()
        await alice.close()
        made.remove(alice)
        source = _file(tmp_path / "summer holiday.mkv", 50 * MIB)
        proxy.rate = 20e6                                # slow enough to act mid-way
        proxy.cut_after(6 * MIB)                         # drop 1, in the killed process
        sender = subprocess.Popen([sys.executable, "-c", _SENDER, str(tmp_path / "alice6"),
                                   bob.account, str(source)])
        uploads = own.data_dir / "blobs" / "uploads"
        try:
            while proxy.cuts < 1 or not any(
                    p.stat().st_size > DATA_START + 12 * MIB for p in uploads.glob("*")):
                assert sender.poll() is None, "the sender ended before it was killed"
                await asyncio.sleep(0.01)
        finally:
            sender.kill()                                # kill -9
            sender.wait(10)
        own.stop()                                       # the server restarts
        own.start()
        proxy.target_port = own.port
        alice = await Client.open(tmp_path / "alice6", passphrase="pw")
        made.append(alice)
        [waiting] = alice.outbox()
        assert waiting.uploads                           # the upload job survived
        proxy.cut_after(8 * MIB)                         # drop 2, while resuming
        resumed: list[int] = []
        sent = await alice.flush_outbox(lambda p: resumed.extend(
            [p.resumed_at] if p.resumed_at is not None else []))
        assert [s.id for s in sent] == [waiting.id] and proxy.cuts == 2
        assert resumed and resumed[0] > 0                # went on, did not start over
        proxy.rate = None
        [message] = await bob.receive_pending()
        assert message.attachments[0].name == "summer holiday.mkv"
        proxy.cut_after(20 * MIB)                        # drop 3, downloading
        saved = await bob.download(alice.account, message.id, directory=tmp_path / "dl6")
        assert proxy.cuts == 3
        assert hashlib.sha256(saved.read_bytes()).digest() == \
            hashlib.sha256(source.read_bytes()).digest()
        # The server's view: no name, no type, no plaintext; one padded size.
        plain = source.read_bytes()
        stored = [p for p in (own.data_dir / "blobs").rglob("*") if p.is_file()]
        for path in stored + [p for p in own.data_dir.iterdir() if p.is_file()]:
            data = path.read_bytes()
            assert b"summer holiday" not in data and b"video/x-matroska" not in data
            assert plain[1000:1064] not in data
        assert {p.stat().st_size - DATA_START for p in stored} == \
            {cipher.ciphertext_length(50 * MIB)}
    finally:
        for client in made:
            await client.close()
        await proxy.close()
        own.stop()


class _Url:
    """What ``new_client`` needs of a server: its URL (here the proxy's)."""

    def __init__(self, url: str) -> None:
        self.url = url


async def test_a_resumed_download_never_trusts_a_partial_file_that_lost_bytes(
        server: ServerProcess, clients: list[Client], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, proxy: CuttingProxy) -> None:
    """Review: the checkpoint says N bytes of plaintext are on disk; if the partial
    file was deleted or cut short meanwhile, the download starts again instead of
    padding it with zeros. Two downloads of one blob at once both come out whole."""
    import veil.client.attachments as attachments_module

    monkeypatch.setattr(attachments_module, "CHECK_EVERY", 1 * MIB)
    alice = await new_client(clients, tmp_path, server, "alice7")
    source = _file(tmp_path / "report.bin", 6 * MIB)
    up, http = _attachments(alice, server.url)
    down, down_http = _attachments(alice, proxy.url)
    try:
        pointer = await up.upload(up.new_upload(source))
        proxy.rate = 4e6
        target = tmp_path / "dl7"
        task = asyncio.create_task(down.download(pointer, target))
        while alice._ctx.store.get(attachments_module.DOWNLOAD_KIND, pointer.blob_id) is None:
            await asyncio.sleep(0.01)                    # a checkpoint was saved
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        [partial] = list(target.glob(".*.veil-partial"))
        partial.write_bytes(b"")                         # lost what it held
        proxy.rate = None
        first, second = await asyncio.gather(down.download(pointer, target),
                                             down.download(pointer, target))
        assert first != second
        assert first.read_bytes() == second.read_bytes() == source.read_bytes()
        assert not list(target.glob(".*.veil-partial"))
    finally:
        await http.close()
        await down_http.close()
