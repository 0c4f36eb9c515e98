"""TLS against a real server process (issue 13 §1, first bullet): ``--tls self-signed``
serves HTTPS and WSS with a kept certificate whose fingerprint it prints; a client that
pinned it registers, sends and receives; a wrong pin is a typed error on every kind of
connection (API, sealed, WebSocket, blobs); plain HTTP to the TLS port gets nothing; and
a public address without TLS is refused in one line unless ``insecure_public``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.server.harness import ServerProcess, free_port
from veil.client import Client, IncomingMessage
from veil.client.blob_http import BlobHttp
from veil.client.errors import CertificateMismatch, CertificateUntrusted, ServerUnreachable
from veil.client.store import FAST
from veil.client.transport import AiohttpTransport
from veil.server.tls import CERT_FILE, fingerprint

WRONG_PIN = "ab" * 32


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(Path(tmp_path_factory.mktemp("veil-tls")) / "data",
                         args=["--tls", "self-signed"]).start()
    yield proc
    proc.stop()


def _said(server: ServerProcess) -> str:
    return (server.data_dir.parent / f"{server.data_dir.name}.out").read_text()


def _pin(server: ServerProcess) -> str:
    return fingerprint((server.data_dir / CERT_FILE).read_bytes())


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.close()


async def _client(made: list[Client], home: Path, server: ServerProcess,
                  pin: str | None, username: str | None = None) -> Client:
    client = await Client.register(home, server.url, username=username, passphrase="pw",
                                   kdf=FAST, pin=pin)
    made.append(client)
    return client


async def _peer_certificate(port: int) -> bytes:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    try:
        der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return der
    finally:
        writer.close()


async def test_the_printed_fingerprint_is_the_served_certificate(
        tls_server: ServerProcess) -> None:
    said = _said(tls_server)
    pin = _pin(tls_server)
    assert f"listening on https://127.0.0.1:{tls_server.port}" in said
    assert f"clients pin its SHA-256 fingerprint {pin}" in said
    assert f"veil init --server https://127.0.0.1:{tls_server.port} --pin {pin}" in said
    assert hashlib.sha256(await _peer_certificate(tls_server.port)).hexdigest() == pin


async def _next(it: AsyncIterator[IncomingMessage]) -> IncomingMessage:
    return await asyncio.wait_for(it.__anext__(), 20)


async def test_pinned_clients_register_send_and_receive_over_https_and_wss(
        tls_server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    pin = _pin(tls_server)
    colons = ":".join(pin[i:i + 2] for i in range(0, 64, 2)).upper()
    alice = await _client(clients, tmp_path / "alice", tls_server, pin, "alice_tls")
    bob = await _client(clients, tmp_path / "bob", tls_server, colons, "bob_tls")
    assert alice.me.tls_pin == bob.me.tls_pin == pin      # kept, normalised
    await alice.send("@bob_tls", "over https")            # HTTP API
    assert [m.text for m in await bob.receive_pending()] == ["over https"]
    live = bob.messages()                                 # the WebSocket (wss)
    try:
        await alice.send(bob.account, "pushed over wss")
        assert (await _next(live)).text == "pushed over wss"
        reply = await bob.send(alice.account, "sealed back")
        assert reply.sealed                               # the sealed pool, pinned too
        assert [m.text for m in await alice.receive_pending()] == ["sealed back"]
        # Blob uploads and downloads check the pin as well.
        photo = tmp_path / "photo.bin"
        photo.write_bytes(os.urandom(300_000))
        file_id = await alice.send_file(bob.account, photo, "a file")
        got = await _next(live)
        assert got.id == file_id
        saved = await bob.download(alice.account, file_id, directory=tmp_path / "dl")
        assert saved.read_bytes() == photo.read_bytes()
    finally:
        await live.aclose()
    # Reopened from its home, the client still pins (the pin is stored with the URL).
    await bob.close()
    clients.remove(bob)
    again = await Client.open(tmp_path / "bob", passphrase="pw")
    clients.append(again)
    assert again.me.tls_pin == pin
    await alice.send(again.account, "after reopening")
    assert [m.text for m in await again.receive_pending()] == ["after reopening"]


async def test_a_wrong_pin_is_refused_on_every_kind_of_connection(
        tls_server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    with pytest.raises(CertificateMismatch, match="is not the pinned one") as refused:
        await Client.register(tmp_path / "mitm", tls_server.url, passphrase="pw", kdf=FAST,
                              pin=WRONG_PIN)
    assert "\n" not in str(refused.value) and refused.value.code == "certificate_mismatch"
    assert not (tmp_path / "mitm" / "veil.db").exists()
    bob = await _client(clients, tmp_path / "bob", tls_server, _pin(tls_server))
    transport = AiohttpTransport(pin=WRONG_PIN)
    blobs = BlobHttp(tls_server.url, None, pin=WRONG_PIN)
    try:
        with pytest.raises(CertificateMismatch):
            await transport.request("GET", tls_server.url + "/v1/certificate/trust_root",
                                    None, {})
        with pytest.raises(CertificateMismatch):             # the sealed pool
            await transport.request("PUT", f"{tls_server.url}/v1/messages/{bob.account}",
                                    {"messages": []}, {"Veil-Access-Key": "AAAA"},
                                    sealed=True)
        with pytest.raises(CertificateMismatch):
            await transport.websocket(tls_server.url + "/v1/websocket", {})
        with pytest.raises(CertificateMismatch):
            await blobs.create(10, bytes(32))
        with pytest.raises(CertificateMismatch):
            async for _ in blobs.download("0" * 32, bytes(32), 0):
                pass
    finally:
        await transport.close()
        await blobs.close()


async def test_without_a_pin_a_self_signed_server_is_untrusted(
        tls_server: ServerProcess, tmp_path: Path) -> None:
    with pytest.raises(CertificateUntrusted, match="not trusted"):
        await Client.register(tmp_path / "nopin", tls_server.url, passphrase="pw", kdf=FAST)


async def test_plain_http_to_the_tls_port_gets_nothing(tls_server: ServerProcess,
                                                       tmp_path: Path) -> None:
    plain = f"http://127.0.0.1:{tls_server.port}"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(plain + "/health") as r:
                await r.read()
    with pytest.raises(ServerUnreachable):
        await Client.register(tmp_path / "plain", plain, passphrase="pw", kdf=FAST)
    # The listener is unharmed.
    assert hashlib.sha256(await _peer_certificate(tls_server.port)).hexdigest() \
        == _pin(tls_server)


async def test_a_new_certificate_breaks_the_pin_and_nothing_is_sent(
        tmp_path: Path, clients: list[Client]) -> None:
    """Someone in between (here: the certificate made anew) gets no request."""
    server = ServerProcess(tmp_path / "data", args=["--tls", "self-signed"]).start()
    try:
        alice = await _client(clients, tmp_path / "alice", server, _pin(server))
        bob = await _client(clients, tmp_path / "bob", server, _pin(server))
        old = _pin(server)
        server.stop()
        shutil.rmtree(server.data_dir / "tls")
        server.start()
        assert _pin(server) != old
        with pytest.raises(CertificateMismatch):
            await alice.send(bob.account, "must not leave")
        assert [m.text for m in alice.outbox()] == ["must not leave"]   # kept, not sent
    finally:
        server.stop()


def _run_server(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil.server", "--data", str(tmp_path / "d"),
         "--port", str(free_port()), *flags],
        capture_output=True, text=True, timeout=60, check=False)


def test_a_public_host_without_tls_refuses_to_start(tmp_path: Path) -> None:
    # Refused before anything is bound or written, so 0.0.0.0 never listens here.
    proc = _run_server(tmp_path, "--host", "0.0.0.0")
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "refusing to serve plain HTTP on 0.0.0.0" in err and "--insecure-public" in err
    assert not (tmp_path / "d").exists()


def _netns_ok() -> bool:
    """Whether this process may make a network namespace (root, or a capable user)."""
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True,
                              timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_insecure_public_starts_with_a_loud_warning(tmp_path: Path) -> None:
    """On 0.0.0.0 inside a network namespace of its own: nothing outside can reach it."""
    if not _netns_ok():
        pytest.skip("insecure_public on 0.0.0.0: needs 'unshare -n' (a network namespace "
                    "keeps the public listener off every real interface)")
    out = tmp_path / "server.out"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            ["unshare", "-n", sys.executable, "-m", "veil.server", "--data",
             str(tmp_path / "d"), "--host", "0.0.0.0", "--port", "8470",
             "--insecure-public"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        said = ""
        while "API docs" not in said and time.monotonic() < deadline:
            assert proc.poll() is None, out.read_text()
            time.sleep(0.05)
            said = out.read_text()
        assert "listening on http://0.0.0.0:8470" in said, said
        assert "WARNING: serving plain HTTP WITHOUT TLS on 0.0.0.0" in said
        assert "WARNING veil.server: serving plain HTTP without TLS" in said   # the log
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
