"""Sender certificates ahead of need, and sealed requests on their own connections
(issue 10 §4, items 1 and 2): real ``Client`` logic against the in-memory server with
a clock the test moves. Waits are on server-side conditions with deadlines, never sleeps.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.unit.client.helpers import DAY_MS, FakeClock
from tests.unit.client.memory_server import MemoryServer
from veil.client import Client, certificates
from veil.client.api import Api
from veil.client.store import FAST
from veil.client.transport import AiohttpTransport, WebSocket
from veil.protocol import requests as rq

URL = "memory://veil"
CERT = ("GET", "/v1/certificate")


async def _client(made: list[Client], server: MemoryServer, tmp_path: Path, name: str
                  ) -> Client:
    client = await Client.register(tmp_path / name, URL, passphrase="pw", kdf=FAST,
                                   clock=server.clock, transport=server)
    made.append(client)
    return client


def _fetches(server: MemoryServer) -> int:
    return server.requests.count(CERT)


async def _talking(made: list[Client], server: MemoryServer, tmp_path: Path
                   ) -> tuple[Client, Client]:
    """Alice wrote first (authenticated); Bob received, so he knows her profile key."""
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    await alice.send(bob.account, "hi bob")
    assert [m.text for m in await bob.receive_pending()] == ["hi bob"]
    return alice, bob


async def test_housekeeping_fetches_ahead_of_need_and_sends_never_fetch(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice, bob = await _talking(made, server, tmp_path)
    # Alice had none: her first send fetched one (that send is authenticated anyway).
    # Bob's was fetched by the housekeeping of his receive, before he needs it.
    assert _fetches(server) == 2
    before = len(server.requests)
    reply = await bob.send(alice.account, "sealed reply")
    assert reply.sealed
    assert CERT not in server.requests[before:]
    # Bob's delivery receipt for "hi bob" (sealed: he has her profile key) and his reply.
    assert server.sealed_requests == [("PUT", f"/v1/messages/{alice.account}")] * 2
    await alice.receive_pending()
    for n in range(5):
        assert (await alice.send(bob.account, f"sealed {n}")).sealed
        assert (await bob.send(alice.account, f"back {n}")).sealed
    assert _fetches(server) == 2
    # 2 above, Alice's receipt for the reply, then 10 messages: all sealed.
    assert len(server.sealed_requests) == 13


async def test_a_send_past_the_refresh_point_does_not_refresh(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice, bob = await _talking(made, server, tmp_path)
    at = bob.certificates.next_refresh_ms()
    assert at is not None
    clock = server.clock
    assert isinstance(clock, FakeClock)
    clock.now = at + 1                        # due, but still usable for hours
    assert bob.certificates.due()
    fetched = _fetches(server)
    assert (await bob.send(alice.account, "still the old certificate")).sealed
    await bob.receive_pending()               # housekeeping leaves it to the timer
    assert _fetches(server) == fetched


async def test_the_timer_refreshes_between_half_and_three_quarters_of_the_lifetime(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    _, bob = await _talking(made, server, tmp_path)
    certs = bob.certificates
    cert = certs.cached
    assert cert is not None
    fetched_at = server.clock()
    at = certs.next_refresh_ms()
    assert at is not None
    lifetime = cert.expires_at - fetched_at
    assert fetched_at + lifetime // 2 <= at <= fetched_at + lifetime * 3 // 4
    before = _fetches(server)
    certs.recheck_s = 0.01                    # re-read the (test's) clock often
    clock = server.clock
    assert isinstance(clock, FakeClock)
    clock.now = at                            # exactly due: not late, refreshed now
    await server.wait_for(lambda: _fetches(server) == before + 1)
    await server.wait_for(lambda: (certs.next_refresh_ms() or 0) > at)
    fresh = certs.cached
    assert fresh is not None and fresh.expires_at > cert.expires_at


async def test_a_late_refresh_waits_a_random_moment_instead_of_firing_at_wake_up(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    _, bob = await _talking(made, server, tmp_path)
    certs = bob.certificates
    at = certs.next_refresh_ms()
    assert at is not None
    certs.recheck_s = 0.01
    before = _fetches(server)
    clock = server.clock
    assert isinstance(clock, FakeClock)
    clock.now = at + 3 * 3600 * 1000          # the machine slept past the refresh point
    woke = clock.now
    await server.wait_for(lambda: (certs.next_refresh_ms() or 0) > woke, timeout=10)
    later = certs.next_refresh_ms()
    assert later is not None and woke < later <= woke + certificates.LATE_JITTER_MS
    assert _fetches(server) == before


async def test_the_certificate_is_stored_so_a_new_process_does_not_fetch(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice, bob = await _talking(made, server, tmp_path)
    await bob.send(alice.account, "hello")
    await alice.receive_pending()
    for client in (alice, bob):               # their timers stay out of this test
        await client.close()
        made.remove(client)
    fetched = _fetches(server)

    async def one_send(text: str) -> Client:
        """As `veil send` does: a new process on the same home, one send, exit."""
        process = await Client.open(tmp_path / "alice", passphrase="pw",
                                    clock=server.clock, transport=server)
        made.append(process)
        assert (await process.send(bob.account, text)).sealed
        return process

    again = await one_send("from a new process")
    assert _fetches(server) == fetched
    await again.close()
    made.remove(again)
    # One that starts after the refresh point keeps using it, refreshing later.
    clock = server.clock
    assert isinstance(clock, FakeClock)
    clock.advance(DAY_MS * 3 // 4 + 1)
    late = await one_send("a while later")
    assert _fetches(server) == fetched
    at = late.certificates.next_refresh_ms()
    assert at is not None and clock.now < at <= clock.now + certificates.LATE_JITTER_MS
    await late.close()
    made.remove(late)
    # Expired: fetched on first use (nothing usable is cached).
    clock.advance(DAY_MS)
    expired = await Client.open(tmp_path / "alice", passphrase="pw", clock=server.clock,
                                transport=server)
    made.append(expired)
    assert expired.certificates.cached is None
    await expired.send(bob.account, "after a day away")
    assert _fetches(server) == fetched + 1


async def test_a_certificate_for_someone_else_is_refused(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    from veil.client.errors import ClientError
    from veil.core import keys
    alice = await _client(made, server, tmp_path, "alice")
    other = keys.IdentityKeyPair.generate()

    async def foreign(_: Any) -> Any:
        cert = server.server_key.issue(bytes.fromhex(alice.account), 1, other.public,
                                       server.clock() + DAY_MS)
        return 200, {"certificate": _b64(cert.to_bytes()),
                     "server_certificate": _b64(cert.server_certificate.to_bytes()),
                     "expires": cert.expires_at}
    server.answer("GET", "/v1/certificate", foreign)
    with pytest.raises(ClientError, match="someone else"):
        await alice.certificates.refresh()
    assert alice.certificates.cached is None


def _b64(data: bytes) -> str:
    import base64
    return base64.b64encode(data).decode()


def test_refresh_points_are_spread() -> None:
    """Two devices fetching at the same moment refresh at different ones."""
    rng = random.Random(7)
    draws = {int(rng.uniform(certificates.REFRESH_FROM, certificates.REFRESH_TO) * DAY_MS)
             for _ in range(50)}
    assert len(draws) == 50
    assert min(draws) >= DAY_MS // 2 and max(draws) <= DAY_MS * 3 // 4


# --- item 1: which requests are sealed -------------------------------------------------

class _Recorder:
    """A transport that records what it was asked; ``legacy`` has no ``sealed``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], bool]] = []

    async def request(self, method: str, url: str, body: Any, headers: dict[str, str],
                      *, sealed: bool = False) -> tuple[int, Any]:
        self.calls.append((method, dict(headers), sealed))
        return 200, {}

    async def websocket(self, url: str, headers: dict[str, str]) -> WebSocket:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class _Legacy:
    """A transport written before the ``sealed`` keyword."""

    def __init__(self) -> None:
        self.calls = 0

    async def request(self, method: str, url: str, body: Any, headers: dict[str, str]
                      ) -> tuple[int, Any]:
        self.calls += 1
        return 200, {}

    async def websocket(self, url: str, headers: dict[str, str]) -> WebSocket:
        raise NotImplementedError

    async def close(self) -> None:
        return None


async def test_api_marks_exactly_the_requests_with_an_access_key_and_no_credentials(
        ) -> None:
    t = _Recorder()
    api = Api("http://x", transport=t)
    api.set_credentials("0" * 32, 1, b"t" * 32)
    body = rq.Submission(messages=[rq.EnvelopeItem(device_id=1, envelope=b"e")])
    await api.request("PUT", "/v1/messages/" + "1" * 32, body, auth=False,
                      access_key=b"k" * 16)
    await api.request("PUT", "/v1/messages/" + "1" * 32, body)
    await api.request("GET", "/v1/certificate")
    await api.request("GET", "/v1/certificate/trust_root", auth=False)
    kinds = [(("Authorization" in h), ("Veil-Access-Key" in h), s) for _, h, s in t.calls]
    assert kinds == [(False, True, True), (True, False, False), (True, False, False),
                     (False, False, False)]
    legacy = _Legacy()
    old = Api("http://x", transport=legacy)
    old.set_credentials("0" * 32, 1, b"t" * 32)
    await old.request("GET", "/v1/certificate")       # works as before
    assert legacy.calls == 1


async def test_the_aiohttp_transport_keeps_the_pools_apart() -> None:
    t = AiohttpTransport()
    with pytest.raises(ValueError, match="credentials"):
        await t.request("PUT", "http://127.0.0.1:9/v1/messages/x", {},
                        {"Authorization": "Basic x", "Veil-Access-Key": "k"}, sealed=True)
    await t.close()
    tor = AiohttpTransport("socks5://127.0.0.1:9050")
    first, second = tor._isolated_proxy(), tor._isolated_proxy()
    assert first is not None and second is not None and first != second
    assert first.startswith("socks5://") and first.endswith("@127.0.0.1:9050")
    given = AiohttpTransport("socks5://me:secret@127.0.0.1:1080")
    assert given._isolated_proxy() == "socks5://me:secret@127.0.0.1:1080"
    assert AiohttpTransport()._isolated_proxy() is None
