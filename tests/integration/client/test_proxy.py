"""``--proxy socks5://…`` (e.g. Tor): every client connection goes through the proxy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.client.conftest import new_client
from tests.integration.server.harness import ServerProcess
from tests.unit.mixnet.socks_server import Socks5Server
from veil.client import Client
from veil.client.errors import ClientError, ServerUnreachable
from veil.client.store import FAST


async def test_client_through_socks5(server: ServerProcess, clients: list[Client],
                                     tmp_path: Path) -> None:
    socks = Socks5Server()
    listener = await asyncio.start_server(socks.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    proxy = f"socks5://127.0.0.1:{port}"
    try:
        alice = await Client.register(tmp_path / "alice", server.url, passphrase="pw",
                                      kdf=FAST, proxy=proxy)
        clients.append(alice)
        bob = await new_client(clients, tmp_path, server, "bob")
        await alice.send(bob.account, "through the proxy")
        assert [m.text for m in await bob.receive_pending()] == ["through the proxy"]
        live = alice.messages()                    # the WebSocket goes through it too
        # Sent before the socket is up: the server queues it and delivers it on connect.
        await bob.send(alice.account, "back to you")
        assert (await asyncio.wait_for(live.__anext__(), 10)).text == "back to you"
        await live.aclose()
        assert socks.targets and all(t == ("127.0.0.1", server.port) for t in socks.targets)
        assert len(socks.targets) >= 2
    finally:
        listener.close()


async def test_bad_or_dead_proxy_is_a_clear_error(server: ServerProcess, tmp_path: Path) -> None:
    with pytest.raises(ClientError):
        await Client.register(tmp_path / "x", server.url, proxy="http://nope", kdf=FAST)
    with pytest.raises(ServerUnreachable):
        await Client.register(tmp_path / "y", server.url, proxy="socks5://127.0.0.1:9",
                              kdf=FAST)
