"""Files from the command line (issue 12 §1), with the real ``veil`` console script
against a real server process: ``veil send TO --file`` with JSON progress and a
progress bar on a terminal, ``veil recv --download-dir`` saving bit-identical copies, a
``kill -9`` mid-upload resumed by ``veil outbox --retry``, and a file the server
tampered with refused in one line while the rest goes on."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.client.cutting_proxy import CuttingProxy
from tests.integration.server.harness import ServerProcess
from veil.server.blobs.record import DATA_START

SCRIPT = str(Path(sys.executable).with_name("veil"))
MIB = 1 << 20


def run(home: Path, *args: str, check: bool = True, timeout: float = 120,
        **env: str) -> subprocess.CompletedProcess[str]:
    """The console script with ``home``; English unless ``env`` says otherwise."""
    environ = dict(os.environ, VEIL_HOME=str(home), VEIL_PASSPHRASE="pw")
    environ.update(env)
    proc = subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=environ,
                          stdin=subprocess.DEVNULL, timeout=timeout, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def objects(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


class ThreadedProxy:
    """The transfer tests' cutting proxy, on an event loop of its own (a thread): the
    commands under test are processes, this test is not async."""

    def __init__(self, target_port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = asyncio.run_coroutine_threadsafe(
            CuttingProxy(target_port).start(), self._loop).result(10)

    @property
    def url(self) -> str:
        return self.proxy.url

    def close(self) -> None:
        async def end() -> None:
            await self.proxy.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(end(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data").start()
    yield proc
    proc.stop()


def two_people(tmp_path: Path, url: str, suffix: str) -> tuple[Path, Path]:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    run(alice, "init", "--server", url, "--username", f"alice_{suffix}")
    run(bob, "init", "--server", url, "--username", f"bob_{suffix}")
    run(alice, "send", f"@bob_{suffix}", "hello")        # the first message makes contact
    run(bob, "recv")
    return alice, bob


def test_a_file_goes_with_json_progress_and_is_saved_bit_identical(
        server: ServerProcess, tmp_path: Path) -> None:
    alice, bob = two_people(tmp_path, server.url, "fj")
    source = random_file(tmp_path / "holiday photo.jpg", 3 * MIB + 4321)
    sent = objects(run(alice, "send", "@bob_fj", "--file", str(source), "from the beach",
                       "--json"))
    progress = [o for o in sent if o.get("event") == "progress"]
    assert progress and all(o["direction"] == "upload" for o in progress)
    assert [o["done"] for o in progress] == sorted(o["done"] for o in progress)
    assert progress[-1]["done"] == progress[-1]["total"] == source.stat().st_size
    result = sent[-1]
    assert result["status"] == "sent" and result["file"]["name"] == "holiday photo.jpg"
    downloads = tmp_path / "downloads"
    got = run(bob, "recv", "--json", "--download-dir", str(downloads))
    out = objects(got)
    [message] = [o for o in out if "text" in o and "event" not in o]
    assert message["id"] == result["id"] and message["text"] == "from the beach"
    assert message["attachments"] == [{"name": "holiday photo.jpg",
                                       "size": source.stat().st_size,
                                       "type": "image/jpeg", "path": None}]
    [saved] = [o for o in out if o.get("event") == "saved"]
    assert digest(Path(saved["path"])) == digest(source)
    assert Path(saved["path"]) == downloads.resolve() / "holiday photo.jpg"
    assert [o for o in out if o.get("event") == "progress"][-1]["direction"] == "download"
    for said in (sent, out):                 # never a key, token or digest
        text = json.dumps(said)
        assert '"key"' not in text and '"token"' not in text and '"digest"' not in text
    # People see the file with its size and type, and history says where it is.
    history = run(bob, "history", "@alice_fj").stdout
    assert f"📎 holiday photo.jpg (3.0 MiB, image/jpeg) → {saved['path']}" in history
    # The sender's read receipt came back (bob's recv marked it read).
    [line] = [o for o in objects(run(alice, "history", "@bob_fj", "--json"))
              if o["id"] == result["id"]]
    assert line["attachments"][0]["name"] == "holiday photo.jpg"
    assert "read" not in json.dumps(line["receipts"])   # not fetched yet by alice
    notices = run(alice, "recv").stdout
    assert f"{result['id'][:8]} read by @bob_fj" in notices


def test_a_file_to_a_group_and_a_later_download(server: ServerProcess,
                                                tmp_path: Path) -> None:
    alice, bob = two_people(tmp_path, server.url, "fg")
    run(alice, "group", "create", "team", "--member", "@bob_fg")
    run(bob, "recv")
    source = random_file(tmp_path / "notes.txt", 200_000)
    shown = run(alice, "send", "#team", "--file", str(source)).stdout
    assert shown.startswith("sent notes.txt (195.3 KiB) to #team")
    listed = run(bob, "recv", "--no-download")
    assert "#team @alice_fg:" in listed.stdout
    assert "📎 notes.txt (195.3 KiB, text/plain)" in listed.stdout
    assert not (bob / "downloads").exists()
    message_id = listed.stdout.split("] ", 1)[1].split()[0]
    saved = run(bob, "download", "#team", message_id).stdout
    target = bob / "downloads" / "notes.txt"
    assert f"saved notes.txt → {target}" in saved and digest(target) == digest(source)


def test_kill_9_mid_upload_then_outbox_retry_delivers_it_bit_identical(
        server: ServerProcess, tmp_path: Path) -> None:
    """A 40 MiB ``veil send --file`` killed (``kill -9``) mid-upload: the message waits
    in the outbox with its upload, ``veil outbox --retry`` goes on from where the
    server's copy stopped (said in JSON and in words) and the receiver gets the file
    bit-identical."""
    proxy = ThreadedProxy(server.port)
    try:
        alice, bob = two_people(tmp_path, proxy.url, "fk")
        source = random_file(tmp_path / "film.mkv", 40 * MIB)
        proxy.proxy.rate = 8e6                        # slow enough to kill it mid-way
        environ = dict(os.environ, VEIL_HOME=str(alice), VEIL_PASSPHRASE="pw")
        sender = subprocess.Popen([SCRIPT, "send", "@bob_fk", "--file", str(source),
                                   "--json"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=environ,
                                  stdin=subprocess.DEVNULL)
        uploads = server.data_dir / "blobs" / "uploads"

        def held() -> int:
            return max((p.stat().st_size - DATA_START for p in uploads.glob("*")),
                       default=0)
        try:
            assert sender.stdout is not None
            for raw in sender.stdout:
                said = json.loads(raw)
                assert said.get("event") == "progress", f"ended before the kill: {said}"
                if said["done"] >= 12 * MIB and held() >= 6 * MIB:
                    break
        finally:
            sender.kill()                             # kill -9
            sender.communicate(timeout=20)
        assert sender.returncode == -9
        proxy.proxy.rate = None
        [waiting] = objects(run(alice, "outbox", "--json"))
        assert waiting["uploads"] == 1 and waiting["status"] == "pending"
        assert "a file upload waits" in run(alice, "outbox").stdout
        retried = objects(run(alice, "outbox", "--retry", "--json"))
        [resumed] = [o for o in retried if o.get("event") == "resumed"]
        assert 6 * MIB <= resumed["at"] < 40 * MIB and resumed["direction"] == "upload"
        done = retried[-1]
        assert done["status"] == "sent" and done["id"] == waiting["id"]
        assert done["resumed_at"] == resumed["at"]
        assert objects(run(alice, "outbox", "--json")) == []
        got = run(bob, "recv", "--download-dir", str(tmp_path / "dl"))
        assert "📎 film.mkv (40.0 MiB, video/x-matroska)" in got.stdout
        assert digest(tmp_path / "dl" / "film.mkv") == digest(source)
    finally:
        proxy.close()


def test_a_resumed_upload_is_announced_in_words(server: ServerProcess,
                                                tmp_path: Path) -> None:
    """The same kill, retried by the next ``veil send`` (no --json): "resumed at"."""
    proxy = ThreadedProxy(server.port)
    try:
        alice, bob = two_people(tmp_path, proxy.url, "fw")
        source = random_file(tmp_path / "album.zip", 24 * MIB)
        proxy.proxy.rate = 8e6
        environ = dict(os.environ, VEIL_HOME=str(alice), VEIL_PASSPHRASE="pw")
        sender = subprocess.Popen([SCRIPT, "send", "@bob_fw", "--file", str(source),
                                   "--json"], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, env=environ,
                                  stdin=subprocess.DEVNULL)
        uploads = server.data_dir / "blobs" / "uploads"
        try:
            assert sender.stdout is not None
            for raw in sender.stdout:
                if json.loads(raw).get("done", 0) >= 8 * MIB and any(
                        p.stat().st_size > DATA_START + 2 * MIB for p in uploads.glob("*")):
                    break
        finally:
            sender.kill()
            sender.communicate(timeout=20)
        proxy.proxy.rate = None
        later = run(alice, "send", "@bob_fw", "and a line after it")
        said = " ".join(later.stderr.split())
        assert "album.zip: upload resumed at" in said and "MiB of 24.0 MiB" in said
        assert "sent a message that waited in the outbox" in said
        got = run(bob, "recv", "--download-dir", str(tmp_path / "dl"))
        assert got.stdout.index("album.zip") < got.stdout.index("and a line after it")
        assert digest(tmp_path / "dl" / "album.zip") == digest(source)
    finally:
        proxy.close()


def test_a_tampered_file_is_refused_in_one_line_and_the_rest_goes_on(
        server: ServerProcess, tmp_path: Path) -> None:
    alice, bob = two_people(tmp_path, server.url, "ft")
    source = random_file(tmp_path / "contract.pdf", 300_000)
    run(alice, "send", "@bob_ft", "--file", str(source), "sign this")
    run(alice, "send", "@bob_ft", "--file", str(random_file(tmp_path / "ok.bin", 1000)))
    run(alice, "send", "@bob_ft", "after the files")
    stored = sorted((p for p in (server.data_dir / "blobs").rglob("*")
                     if p.is_file() and "uploads" not in p.parts),
                    key=lambda p: p.stat().st_size)[-1]       # the larger: contract.pdf
    data = bytearray(stored.read_bytes())
    data[DATA_START + 150_000] ^= 0x01                        # the server flips one bit
    stored.write_bytes(bytes(data))
    got = run(bob, "recv", "--download-dir", str(tmp_path / "dl"), check=False)
    assert got.returncode == 1 and "Traceback" not in got.stderr
    [error] = got.stderr.strip().splitlines()
    assert error.startswith("veil: contract.pdf (message ") and "refused" in error
    assert "sign this" in got.stdout and "after the files" in got.stdout
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["ok.bin"]  # no partial
    message_id = got.stdout.split("] ", 1)[1].split()[0]
    again = run(bob, "download", "@alice_ft", message_id, check=False, VEIL_LANG="zh")
    assert again.returncode == 1 and "Traceback" not in again.stderr
    [error] = again.stderr.strip().splitlines()
    assert "contract.pdf" in error and "被拒收并已删除" in error


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_progress_bar_on_a_terminal(server: ServerProcess, tmp_path: Path) -> None:
    """In a real terminal (tmux), ``veil send --file`` draws a progress bar on stderr;
    its output without a terminal has none (the other tests)."""
    proxy = ThreadedProxy(server.port)
    socket = f"veil-test-{os.getpid()}"
    try:
        alice, _ = two_people(tmp_path, proxy.url, "tm")
        source = random_file(tmp_path / "slides.pdf", 16 * MIB)
        proxy.proxy.rate = 4e6
        command = (f"env VEIL_HOME={alice} VEIL_PASSPHRASE=pw VEIL_LANG=en {SCRIPT} send "
                   f"@bob_tm --file {source}; echo VEIL-DONE; sleep 600")
        subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-s", "bar", "-x", "120",
                        "-y", "20", command], check=True, timeout=20)

        def screen() -> str:
            return subprocess.run(["tmux", "-L", socket, "capture-pane", "-p", "-t", "bar"],
                                  capture_output=True, text=True, check=True,
                                  timeout=20).stdout
        deadline = time.monotonic() + 60
        while "sending slides.pdf" not in screen() or "MiB" not in screen():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.05)
        during = screen()
        assert "━" in during and "/16.0 MiB" in during
        proxy.proxy.rate = None
        while "VEIL-DONE" not in screen():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.05)
        assert "sent slides.pdf (16.0 MiB) to @bob_tm" in screen()
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], check=False, timeout=20,
                       capture_output=True)
        proxy.close()
