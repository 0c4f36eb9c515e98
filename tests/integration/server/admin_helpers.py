"""The admin listener of a real server process, for the tests (issue 13 §4): where it
is (``DATA/admin/address``), its token, and waiting for a condition instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from tests.integration.server.harness import ServerProcess

T = TypeVar("T")
ATTACKER = "127.0.0.2"  # exempt are 127.0.0.1 and ::1 only: an attack comes from here
BYSTANDER = "127.0.0.3"


@dataclass
class AdminRef:
    url: str
    token: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def admin_of(server: ServerProcess, timeout: float = 15.0) -> AdminRef:
    """The admin listener of ``server`` (its address file appears once it listens)."""
    address = server.data_dir / "admin" / "address"
    deadline = time.monotonic() + timeout
    while True:
        try:
            url = address.read_text().strip()
        except OSError:
            url = ""
        if url:
            token = (server.data_dir / "admin" / "token").read_text().strip()
            return AdminRef(url, token)
        if time.monotonic() > deadline:
            raise AssertionError("the admin listener never wrote its address")
        time.sleep(0.05)


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 20.0,
                     what: str = "the condition") -> T:
    """Poll ``probe`` until it returns something other than None or False."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def session_from(address: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def scan_routes(url: str, requests: int = 60) -> int:
    """Unknown routes asked from :data:`ATTACKER` until it is refused (the route_scan
    rule); the number of requests the server still answered."""
    answered = 0
    async with session_from(ATTACKER) as attacker:
        for i in range(requests):
            try:
                async with attacker.get(f"{url}/no-such-route-{i}") as r:
                    await r.read()
                    if r.status == 403:
                        break
                    answered += 1
            except (aiohttp.ClientConnectionError, OSError):
                break
    return answered


async def api(session: aiohttp.ClientSession, admin: AdminRef, method: str, path: str,
              **kwargs: Any) -> tuple[int, Any]:
    async with session.request(method, admin.url + path, headers=admin.bearer,
                               **kwargs) as r:
        return r.status, await r.json()
