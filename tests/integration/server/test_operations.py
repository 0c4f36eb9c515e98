"""A server an operator can trust with data (issue 10 §5), with real processes:

- a second server on one data directory is refused (one line, exit 1), and neither a
  SIGTERM nor a ``kill -9`` of the first leaves the directory locked;
- ``invite`` on a directory that holds no server is refused and creates nothing;
- a backup made while the server runs and takes submissions, restored into a new
  directory, starts a server (same trust root) that delivers every queued envelope;
- clients that reset their connections mid-request leave no traceback and almost
  nothing in the log at INFO; at DEBUG one line each, and the log file rotates.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import stat
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.integration.server.harness import (
    Device,
    ServerProcess,
    b64,
    free_port,
    recv_envelope,
    register,
    send_sealed,
)
from veil.server.datadir_lock import LOCK_FILE
from veil.server.storage import DATABASE_FILE

SERVER = [sys.executable, "-m", "veil.server"]
CLI = [sys.executable, "-m", "veil.cli.main", "server"]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING) \S+: ")


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("veil: ")
    return lines[0]


def output_of(server: ServerProcess) -> Path:
    """Where the harness sends the server's standard output and error."""
    return server.data_dir.parent / f"{server.data_dir.name}.out"


def fingerprint(server: ServerProcess) -> str:
    found = re.findall(r"trust root fingerprint (\S+)", output_of(server).read_text())
    assert found, output_of(server).read_text()
    return str(found[-1])


def healthy(server: ServerProcess) -> bool:
    with urllib.request.urlopen(server.url + "/health", timeout=10) as r:
        return bool(r.status == 200)


# --- item 1: one server per data directory -------------------------------------------


def test_a_second_server_on_one_data_directory_is_refused(tmp_path: Path):
    first = ServerProcess(tmp_path / "data").start()
    try:
        assert first.proc is not None
        log = first.data_dir / "logs" / "server.log"
        log_before = log.read_bytes()
        expected = (f"veil: another veil server (pid {first.proc.pid}) is already running "
                    f"on the data directory {first.data_dir} (it holds "
                    f"{first.data_dir / LOCK_FILE}); stop it first or use another --data")
        for front in (SERVER, CLI):
            proc = run([*front, "--data", str(first.data_dir), "--port", str(free_port())])
            assert one_line_error(proc) == expected
            assert proc.stdout == ""
        assert healthy(first)
        # The refused processes did not write to (or rotate) the first one's log.
        assert log.read_bytes().startswith(log_before)
        assert b"listening" not in log.read_bytes()[len(log_before):]
    finally:
        first.stop()
    again = ServerProcess(tmp_path / "data").start()  # SIGTERM released it
    again.stop()


def test_kill9_leaves_the_data_directory_free(tmp_path: Path):
    server = ServerProcess(tmp_path / "data").start()
    assert server.proc is not None
    pid = server.proc.pid
    server.kill9()
    # The lock file stays, naming the dead holder; the kernel dropped the lock itself.
    assert (server.data_dir / LOCK_FILE).read_text().strip() == str(pid)
    server.start()
    try:
        assert healthy(server)
    finally:
        server.stop()


# --- item 2: invite needs a server -----------------------------------------------------


def test_invite_on_a_directory_without_a_server_is_refused(tmp_path: Path):
    typo = tmp_path / "typo"
    expected = (f"veil: {typo} holds no Veil server (no {DATABASE_FILE}); give the --data "
                f"of an existing server, or start one there first with "
                f"'veil server --data {typo}'")
    for front in (SERVER, CLI):
        proc = run([*front, "--data", str(typo), "invite", "--count", "3"])
        assert one_line_error(proc) == expected
        assert proc.stdout == "", "no token may be printed"
    assert not typo.exists(), "the refused command created the directory"


# --- item 3: online backup, restore -----------------------------------------------------


async def _queue(http: aiohttp.ClientSession, url: str, to: Device, tag: str,
                 n: int) -> list[bytes]:
    payloads = [f"{tag}-{i:04d}-".encode() + os.urandom(24) for i in range(n)]
    for p in payloads:
        status, body = await send_sealed(http, url, to, {1: p})
        assert status == 200, body
    return payloads


async def _receive(http: aiohttp.ClientSession, url: str, who: Device,
                   n: int) -> list[bytes]:
    got: list[bytes] = []
    async with http.ws_connect(url + "/v1/websocket", headers=who.auth()) as ws:
        while len(got) < n:
            event = await recv_envelope(ws, timeout=20)
            got.append(base64.b64decode(event["envelope"]))
    return got


async def test_online_backup_restores_every_queued_envelope(
    tmp_path: Path, http: aiohttp.ClientSession
):
    origin = ServerProcess(tmp_path / "origin").start()
    out = tmp_path / "veil-backup.tar.gz"
    try:
        bob = await register(http, origin.url)
        carol = await register(http, origin.url)
        bob_queued = await _queue(http, origin.url, bob, "bob", 40)
        carol_queued = await _queue(http, origin.url, carol, "carol", 40)
        # Submissions keep arriving while the backup is taken: it is made online.
        stop = asyncio.Event()
        during: list[bytes] = []

        async def keep_sending() -> None:
            i = 0
            while not stop.is_set():
                payload = f"during-{i:05d}-".encode() + os.urandom(8)
                i += 1
                during.append(payload)
                status, body = await send_sealed(http, origin.url, carol, {1: payload})
                assert status == 200, body

        sender = asyncio.create_task(keep_sending())
        try:
            proc = await asyncio.create_subprocess_exec(
                *CLI, "backup", "--data", str(origin.data_dir), "--out", str(out),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
        finally:
            stop.set()
            await sender
        assert proc.returncode == 0, stderr.decode()
        report = stdout.decode()
        assert f"backup written to {out}" in report and "mode 0600" in report
        assert "trust root's private key" in report and "outside the data" in report
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        origin_fingerprint = fingerprint(origin)
    finally:
        origin.stop()  # the restored server owes nothing to the original

    restored_dir = tmp_path / "restored"
    proc_restore = run([*CLI, "restore", "--from", str(out), "--data", str(restored_dir)])
    assert proc_restore.returncode == 0, proc_restore.stderr
    restored = ServerProcess(restored_dir).start()
    try:
        assert fingerprint(restored) == origin_fingerprint  # the same keys, not new ones
        assert await _receive(http, restored.url, bob, 40) == bob_queued
        carol_got = await _receive(http, restored.url, carol, 40)
        assert carol_got == carol_queued
        # The restored server takes new submissions and delivers them as well.
        async with http.ws_connect(restored.url + "/v1/websocket",
                                   headers=bob.auth()) as ws:
            status, _ = await send_sealed(http, restored.url, bob, {1: b"after restore"})
            assert status == 200
            while True:
                event = await recv_envelope(ws, timeout=20)
                if event["envelope"] == b64(b"after restore"):
                    break
                assert base64.b64decode(event["envelope"]) in bob_queued
    finally:
        restored.stop()

    # Restoring again into the now non-empty directory, or from a damaged file: refused.
    refused = run([*CLI, "restore", "--from", str(out), "--data", str(restored_dir)])
    assert one_line_error(refused) == (
        f"veil: {restored_dir} is not empty; restore into a new or empty directory "
        f"(nothing was changed)")
    damaged = tmp_path / "damaged.tar.gz"
    raw = bytearray(out.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    refused = run([*CLI, "restore", "--from", str(damaged), "--data", str(tmp_path / "x")])
    assert "is not a usable Veil server backup" in one_line_error(refused)
    assert not (tmp_path / "x").exists()


async def test_python_m_veil_server_backs_up_and_restores_too(
    tmp_path: Path, http: aiohttp.ClientSession
):
    """The server's own entry point (no user-facing CLI layer) has both commands."""
    origin = ServerProcess(tmp_path / "origin").start()
    out = tmp_path / "plain.tar.gz"
    try:
        bob = await register(http, origin.url)
        queued = await _queue(http, origin.url, bob, "bob", 3)
        made = run([*SERVER, "--data", str(origin.data_dir), "backup", "--out", str(out)])
        assert made.returncode == 0 and f"backup written to {out}" in made.stdout, made.stderr
    finally:
        origin.stop()
    missing = run([*SERVER, "restore", "--from", str(out)])
    assert missing.returncode == 2 and "restore needs --data" in missing.stderr
    restored_dir = tmp_path / "restored"
    done = run([*SERVER, "--data", str(restored_dir), "restore", "--from", str(out)])
    assert done.returncode == 0, done.stderr
    restored = ServerProcess(restored_dir).start()
    try:
        assert await _receive(http, restored.url, bob, 3) == queued
    finally:
        restored.stop()
    again = run([*SERVER, "--data", str(restored_dir), "restore", "--from", str(out)])
    assert "is not empty" in one_line_error(again)


# --- item 4: clients that drop their connection -----------------------------------------


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    return sock


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)  # the socket's timeout is the deadline
        if not chunk:
            break
        data += chunk
    return data


def partial_headers(port: int) -> None:
    sock = _connect(port)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: veil\r\nX-Partial: abc")
    _reset(sock)


def partial_body(port: int) -> None:
    """The handler is reading the body (the server said 100 Continue) when the client
    resets: the case that used to log an unhandled-error traceback."""
    sock = _connect(port)
    sock.sendall(b"POST /v1/accounts HTTP/1.1\r\nHost: veil\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 4096\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    assert b"100 Continue" in _read_until(sock, b"100 Continue\r\n\r\n")
    sock.sendall(b'{"identity_key": "AAAA')
    _reset(sock)


def request_then_reset(port: int) -> None:
    sock = _connect(port)
    sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: veil\r\n\r\n")
    _reset(sock)


def websocket_then_reset(port: int) -> None:
    sock = _connect(port)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET /v1/websocket/sealed HTTP/1.1\r\nHost: veil\r\n"
                 b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert b" 101 " in _read_until(sock, b"\r\n\r\n")
    _reset(sock)


def not_http(port: int) -> None:
    sock = _connect(port)
    sock.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(40))
    _reset(sock)


def malformed_then_reset(port: int) -> None:
    sock = _connect(port)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: veil\r\nno colon here\r\n\r\n")
    _read_until(sock, b"\r\n\r\n")  # answered 400
    _reset(sock)


ABUSE: list[tuple[Callable[[int], None], int]] = [
    (partial_headers, 40), (request_then_reset, 40), (websocket_then_reset, 40),
    (not_http, 20), (malformed_then_reset, 20), (partial_body, 100),
]
GONE_LINE = "client went away during POST /v1/accounts"


def _open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling interval of a condition with a deadline


def _abuse(server: ServerProcess) -> None:
    for kind, count in ABUSE:
        for _ in range(count):
            kind(server.port)


def _tail(path: Path, offset: int) -> str:
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace")


def test_dropped_connections_leave_the_log_quiet_at_info(tmp_path: Path):
    server = ServerProcess(tmp_path / "data").start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        log, out = server.data_dir / "logs" / "server.log", output_of(server)
        log_at, out_at = log.stat().st_size, out.stat().st_size
        fds = _open_fds(pid)
        _abuse(server)
        if fds is not None:  # every dropped connection closed on the server's side too
            _wait_for(lambda: (_open_fds(pid) or 0) <= fds + 2,
                      "the server to close the dropped connections")
        assert healthy(server)
        logged, said = _tail(log, log_at), _tail(out, out_at)
        for text in (logged, said):
            assert "Traceback" not in text and "ERROR" not in text, text[:2000]
        assert len(logged) <= 512, logged[:2000]
    finally:
        server.stop()


@pytest.mark.slow
def test_dropped_connections_are_one_debug_line_each_and_the_log_rotates(tmp_path: Path):
    server = ServerProcess(tmp_path / "data", {
        "log_level": "DEBUG", "log_max_bytes": 8192, "log_backups": 2,
    }).start()
    try:
        out = output_of(server)
        _abuse(server)
        wanted = dict(ABUSE)[partial_body]
        _wait_for(lambda: out.read_text(errors="replace").count(GONE_LINE) >= wanted,
                  f"{wanted} '{GONE_LINE}' lines")
        assert healthy(server)
    finally:
        server.stop()
    said = out.read_text(errors="replace")
    assert "Traceback" not in said and " ERROR " not in said, said[-3000:]
    assert not [line for line in said.splitlines() if line.startswith((" ", "\t"))]
    logs = sorted((server.data_dir / "logs").iterdir())
    names = [p.name for p in logs]
    assert "server.log" in names and "server.log.1" in names, names
    assert set(names) <= {"server.log", "server.log.1", "server.log.2"}, names
    for path in logs:
        assert path.stat().st_size <= 8192, (path, path.stat().st_size)
        for line in path.read_text().splitlines():
            assert LOG_LINE.match(line), (path.name, line)
