"""What a network observer between a real client and a real server sees of sealed
sender (issue 10 §4, items 1 and 2).

A recording TCP proxy sits in front of the server process. For every connection it
accepts it records the HTTP request heads the client sent on it (parsed as they pass,
bodies skipped by ``Content-Length``, a WebSocket upgrade ends the parsing). Over a
conversation of 20 messages in both directions — both clients connected, one side's
sends partly from a new process each time, as ``veil send`` does — it checks that:

- no connection carries both a request with ``Authorization`` and a sealed one (an
  access key without credentials), and each sealed request has a connection of its own;
- every message after the first is sealed;
- no ``GET /v1/certificate`` comes within :data:`WINDOW_S` before any sealed send.

The same holds through a SOCKS5 proxy. Waits are on conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.server.harness import ServerProcess
from tests.unit.mixnet.socks_server import Socks5Server
from veil.client import Client
from veil.client.store import FAST

WINDOW_S = 0.5
MESSAGES = 20


@dataclass
class Head:
    at: float
    method: str
    path: str
    authorization: bool
    access_key: bool

    @property
    def sealed(self) -> bool:
        return self.access_key and not self.authorization


@dataclass
class Connection:
    heads: list[Head] = field(default_factory=list)
    upgraded: bool = False
    unparsed: bool = False


class _Parser:
    """HTTP/1.1 request heads out of a client's byte stream."""

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self._conn, self._loop = conn, loop
        self._buf = b""
        self._body_left = 0
        self._done = False

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        self._buf += data
        while True:
            if self._body_left:
                take = min(self._body_left, len(self._buf))
                self._buf, self._body_left = self._buf[take:], self._body_left - take
                if self._body_left:
                    return
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self._buf = self._buf[:end].decode("latin-1"), self._buf[end + 4:]
            first, *lines = head.split("\r\n")
            method, path, _ = first.split(" ", 2)
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self._conn.heads.append(Head(self._loop.time(), method, path,
                                         "authorization" in headers,
                                         "veil-access-key" in headers))
            if headers.get("upgrade", "").lower() == "websocket":
                self._conn.upgraded, self._done = True, True
                return
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._conn.unparsed, self._done = True, True
                return
            self._body_left = int(headers.get("content-length", "0"))


class RecordingProxy:
    """TCP to the server's port, recording each accepted connection's request heads."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def heads(self) -> list[tuple[int, Head]]:
        return sorted(((i, h) for i, c in enumerate(self.connections) for h in c.heads),
                      key=lambda item: item[1].at)

    async def wait_quiet(self, quiet_s: float, timeout: float = 60.0) -> None:
        """Until no request head has passed for ``quiet_s`` (start-up work is done)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            heads = self.heads()
            last = heads[-1][1].at if heads else 0.0
            if loop.time() - last >= quiet_s:
                return
            assert loop.time() < deadline, "the clients kept talking to the server"
            await asyncio.sleep(0.02)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Connection()
        self.connections.append(conn)
        parser = _Parser(conn, asyncio.get_running_loop())
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1",
                                                                 self.target_port)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       record: bool) -> None:
            try:
                while data := await src.read(65536):
                    if record:
                        parser.feed(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer, True),
                                 pipe(up_reader, writer, False))
        except asyncio.CancelledError:
            pass                             # stop(): the connection is dropped
        finally:
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)


async def _register(made: list[Client], tmp_path: Path, url: str, name: str,
                    proxy: str | None = None) -> Client:
    client = await Client.register(tmp_path / name, url, username=name, passphrase="pw",
                                   kdf=FAST, proxy=proxy)
    made.append(client)
    return client


async def _close_all(made: list[Client]) -> None:
    for client in made:
        with contextlib.suppress(Exception):
            await client.close()


def _check_connections(proxy: RecordingProxy) -> list[Head]:
    """No connection mixes sealed and authenticated requests; each sealed request has
    a connection of its own. Returns the sealed heads."""
    sealed: list[Head] = []
    for conn in proxy.connections:
        assert not conn.unparsed
        kinds = {("sealed" if h.sealed else "auth" if h.authorization else "anonymous")
                 for h in conn.heads}
        assert not ({"sealed", "auth"} <= kinds), \
            [(h.method, h.path[:20], h.authorization, h.access_key) for h in conn.heads]
        if "sealed" in kinds:
            assert len(conn.heads) == 1, "a sealed request shared its connection"
            sealed.extend(conn.heads)
    return sealed


def _check_no_certificate_before(proxy: RecordingProxy, sealed: list[Head]) -> None:
    fetches = [h.at for _, h in proxy.heads()
               if h.method == "GET" and h.path == "/v1/certificate"]
    assert fetches, "the clients never fetched a certificate"
    for send in sealed:
        near = [send.at - t for t in fetches if 0 <= send.at - t <= WINDOW_S]
        assert not near, f"a certificate fetch {min(near) * 1000:.1f} ms before a sealed send"


async def test_sealed_sends_share_no_connection_and_follow_no_certificate_fetch(
        server: ServerProcess, tmp_path: Path) -> None:
    proxy = await RecordingProxy(server.port).start()
    made: list[Client] = []
    live: list[Client] = []
    try:
        alice = await _register(made, tmp_path, proxy.url, "alice_sc")
        bob = await _register(made, tmp_path, proxy.url, "bob_sc")
        # Both start as a client does (housekeeping: key statement, a certificate ahead
        # of need, prekeys); the conversation begins once that traffic has settled.
        await alice.receive_pending()
        await bob.receive_pending()
        await proxy.wait_quiet(WINDOW_S)
        stream = bob.messages()          # Bob stays connected (WebSocket via the proxy)
        sent = [await alice.send("@bob_sc", "message 0")]
        assert not sent[0].sealed        # first contact: Alice has no key of Bob's yet
        got = [(await asyncio.wait_for(stream.__anext__(), 30)).text]
        for n in range(1, MESSAGES):
            if n % 2:
                sent.append(await bob.send(alice.account, f"message {n}"))
                got += [m.text for m in await alice.receive_pending()]
            elif n % 4 == 0:
                # As `veil send` does: a new process for one send (its stored
                # certificate is reused), then it exits.
                once = await Client.open(tmp_path / "alice_sc", passphrase="pw")
                live.append(once)
                sent.append(await once.send(bob.account, f"message {n}"))
                await once.close()
                live.remove(once)
                got.append((await asyncio.wait_for(stream.__anext__(), 30)).text)
            else:
                sent.append(await alice.send(bob.account, f"message {n}"))
                got.append((await asyncio.wait_for(stream.__anext__(), 30)).text)
        await stream.aclose()
        assert got == [f"message {n}" for n in range(MESSAGES)]
        assert [s.sealed for s in sent] == [False] + [True] * (MESSAGES - 1)
    finally:
        await _close_all(live + made)
        await proxy.stop()
    sealed = _check_connections(proxy)
    puts = [h for _, h in proxy.heads() if h.method == "PUT" and
            h.path == f"/v1/messages/{bob.account}"]
    assert len(puts) == MESSAGES and [h.sealed for h in puts] == [s.sealed for s in sent]
    # Bob's delivery receipts to Alice are sealed sends too, each on its own connection.
    receipts = [h for _, h in proxy.heads() if h.method == "PUT" and
                h.path == f"/v1/messages/{alice.account}"]
    assert all(h.sealed for h in receipts)
    assert len(sealed) == MESSAGES - 1 + len(receipts)
    assert any(c.upgraded and c.heads[-1].authorization for c in proxy.connections)
    _check_no_certificate_before(proxy, sealed)


async def test_through_socks5_both_pools_work_and_stay_apart(
        server: ServerProcess, tmp_path: Path) -> None:
    proxy = await RecordingProxy(server.port).start()
    socks = Socks5Server()
    listener = await asyncio.start_server(socks.handle, "127.0.0.1", 0)
    socks_url = f"socks5://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    made: list[Client] = []
    try:
        alice = await _register(made, tmp_path, proxy.url, "alice_s5", proxy=socks_url)
        bob = await _register(made, tmp_path, proxy.url, "bob_s5")
        await alice.send("@bob_s5", "hello through socks")
        assert [m.text for m in await bob.receive_pending()] == ["hello through socks"]
        assert (await bob.send(alice.account, "sealed back")).sealed
        assert [m.text for m in await alice.receive_pending()] == ["sealed back"]
        before = len(socks.targets)
        for n in range(3):
            assert (await alice.send(bob.account, f"sealed {n}")).sealed
        # Each sealed request went through the proxy on a connection of its own.
        assert len(socks.targets) - before >= 3
        assert [m.text for m in await bob.receive_pending()] == [f"sealed {n}"
                                                                  for n in range(3)]
    finally:
        await _close_all(made)
        listener.close()
        await proxy.stop()
    assert all(t == ("127.0.0.1", proxy.port) for t in socks.targets)
    # 4 sealed messages, and 3 delivery receipts (one per receive_pending), sealed too.
    assert len(_check_connections(proxy)) == 4 + 3


async def test_with_a_contact_link_first_contact_is_sealed_too(
        server: ServerProcess, tmp_path: Path) -> None:
    """Bob hands Alice his contact link: her bundle claim and her first message go
    sealed, each on a connection of its own, and Bob sees her username at once."""
    proxy = await RecordingProxy(server.port).start()
    made: list[Client] = []
    try:
        alice = await _register(made, tmp_path, proxy.url, "alice_ln")
        bob = await _register(made, tmp_path, proxy.url, "bob_ln")
        sent = await alice.send(bob.contact_link(), "first contact, sealed")
        assert sent.sealed
        [got] = await bob.receive_pending()
        assert (got.text, got.sender_username) == ("first contact, sealed", "alice_ln")
    finally:
        await _close_all(made)
        await proxy.stop()
    sealed = _check_connections(proxy)
    about_bob = [h for _, h in proxy.heads() if bob.account in h.path]
    assert {h.method for h in about_bob} == {"GET", "PUT"}    # the claim, the message
    # And Bob's delivery receipt to Alice, sealed as well (her message gave him her key).
    assert all(h.sealed for h in about_bob) and len(sealed) == len(about_bob) + 1
    assert not any(h.path.startswith("/v1/usernames/") for _, h in proxy.heads())
