"""``kill -9`` the server while a real client sends: every acknowledged message arrives,
none twice, and the sessions keep working."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.integration.client.conftest import new_client
from tests.integration.server.harness import ServerProcess
from veil.client import Client
from veil.client.errors import ServerUnreachable


async def test_kill9_while_sending(tmp_path: Path, clients: list[Client]) -> None:
    server = ServerProcess(tmp_path / "crash-data").start()
    try:
        alice = await new_client(clients, tmp_path, server, "alice")
        bob = await new_client(clients, tmp_path, server, "bob")
        acknowledged: list[str] = []
        unacknowledged: list[str] = []

        async def sender() -> None:
            for i in range(80):
                text = f"message {i}"
                try:
                    await alice.send(bob.account, text)
                    acknowledged.append(text)
                except ServerUnreachable:
                    unacknowledged.append(text)
                    await asyncio.sleep(0.02)

        task = asyncio.create_task(sender())
        while len(acknowledged) < 25:
            await asyncio.sleep(0.005)
        server.kill9()                       # mid-stream: some send is in flight
        await asyncio.sleep(0.3)
        server.start()
        await task
        assert unacknowledged, "the kill should have interrupted some sends"
        received = [m.text for m in await bob.receive_pending()]
        assert len(received) == len(set(received)), "a message was delivered twice"
        assert set(acknowledged) <= set(received), set(acknowledged) - set(received)
        assert set(received) <= set(acknowledged) | set(unacknowledged)
        await bob.send(alice.account, "still talking")
        assert [m.text for m in await alice.receive_pending()] == ["still talking"]
    finally:
        server.stop()
