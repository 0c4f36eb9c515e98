from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.server.harness import ServerProcess
from veil.client import Client
from veil.client.store import FAST

ClientFactory = Callable[..., "AsyncIterator[Client]"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(Path(tmp_path_factory.mktemp("veil")) / "data").start()
    yield proc
    proc.stop()


@pytest.fixture
async def clients(tmp_path: Path) -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.close()


async def new_client(made: list[Client], tmp_path: Path, server: ServerProcess, name: str,
                     username: str | None = None) -> Client:
    client = await Client.register(tmp_path / name, server.url, username=username,
                                   passphrase="pw", kdf=FAST)
    made.append(client)
    return client
