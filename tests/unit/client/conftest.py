"""Fixtures of the client tests that run real ``Client`` logic against the in-memory
server: the server (on a clock the test moves) and the clients a test made, closed at
its end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.client.helpers import FakeClock
from tests.unit.client.memory_server import MemoryServer
from veil.client import Client


@pytest.fixture
def server() -> MemoryServer:
    return MemoryServer(FakeClock())


@pytest.fixture
async def made() -> AsyncIterator[list[Client]]:
    clients: list[Client] = []
    yield clients
    for client in clients:
        await client.close()
