"""What a malicious peer or server, or bad timing, must not break in the client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from tests.integration.client.conftest import new_client
from tests.integration.server.harness import ServerProcess
from veil.client import Client
from veil.client.api import b64
from veil.client.errors import IdentityChanged, ServerRejected
from veil.core import sealed


async def _send_raw(sender: Client, to: Client, plaintext: bytes) -> None:
    """A malicious peer: a validly encrypted and sealed message with arbitrary content."""
    contact = await sender.resolve(to.account)
    cert = await sender._certificate()
    envelopes, _ = await sender._outbox._encrypt_for(contact, plaintext, cert)
    await sender._api.request("PUT", f"/v1/messages/{to.account}", {"messages": [
        {"device_id": d, "envelope": b64(e)} for d, e in envelopes.items()]})


async def test_hostile_contents_are_dropped_and_delivery_goes_on(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    mallory = await new_client(clients, tmp_path, server, "mallory")
    bob = await new_client(clients, tmp_path, server, "bob")
    nested = b'{"v":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge_ts = json.dumps({"v": 1, "id": "a" * 32, "ts": 10**27, "kind": "text",
                          "text": "x"}).encode()
    bool_ts = json.dumps({"v": 1, "id": "b" * 32, "ts": True, "kind": "text",
                          "text": "x"}).encode()
    for content in (nested, huge_ts, bool_ts, b"\xff not json"):
        await _send_raw(mallory, bob, content)
    await mallory.send(bob.account, "a normal message")
    assert [m.text for m in await bob.receive_pending()] == ["a normal message"]
    assert await bob.receive_pending() == []                     # nothing stuck in the queue


async def test_late_delivery_with_an_expired_certificate(tmp_path: Path,
                                                         clients: list[Client]) -> None:
    server = ServerProcess(tmp_path / "short-certs", {"sender_certificate_ttl_s": 1}).start()
    try:
        alice = await new_client(clients, tmp_path, server, "alice")
        bob = await new_client(clients, tmp_path, server, "bob")
        await alice.send(bob.account, "written before the certificate expired")
        await asyncio.sleep(1.5)                  # Bob reads after it expired
        got = [m.text for m in await bob.receive_pending()]
        assert got == ["written before the certificate expired"]
    finally:
        server.stop()


async def test_both_write_first_at_the_same_time(server: ServerProcess, clients: list[Client],
                                                 tmp_path: Path) -> None:
    carol = await new_client(clients, tmp_path, server, "carol")
    dave = await new_client(clients, tmp_path, server, "dave")
    await carol.send(dave.account, "carol first")
    await dave.send(carol.account, "dave first")              # neither has read yet
    assert [m.text for m in await dave.receive_pending()] == ["carol first"]
    assert [m.text for m in await carol.receive_pending()] == ["dave first"]
    for i in range(3):
        await carol.send(dave.account, f"c{i}")
        await dave.send(carol.account, f"d{i}")
        assert [m.text for m in await dave.receive_pending()] == [f"c{i}"]
        assert [m.text for m in await carol.receive_pending()] == [f"d{i}"]


async def test_a_lookup_answered_with_another_name_is_refused(tmp_path: Path,
                                                              clients: list[Client]) -> None:
    real = ServerProcess(tmp_path / "real").start()
    try:
        alice = await new_client(clients, tmp_path, real, "alice")
    finally:
        real.stop()

    async def lying_lookup(request: web.Request) -> web.Response:
        return web.json_response({"account_id": "ab" * 16, "username": "bob"})

    app = web.Application()
    app.router.add_get("/v1/usernames/{name}", lying_lookup)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    alice._api.base_url = f"http://127.0.0.1:{port}"
    try:
        with pytest.raises(ServerRejected):
            await alice.resolve("@carol")
        assert all(c.username != "bob" for c in alice.contacts())
    finally:
        await runner.cleanup()


async def test_verify_refuses_a_number_that_changed(server: ServerProcess,
                                                    clients: list[Client],
                                                    tmp_path: Path) -> None:
    alice = await new_client(clients, tmp_path, server, "alice")
    bob = await new_client(clients, tmp_path, server, "bob")
    number = await alice.safety_number(bob.account)
    wrong = ("1" if number.digits[0] != "1" else "2") + number.digits[1:]
    with pytest.raises(IdentityChanged):
        await alice.verify(bob.account, wrong)
    assert (await alice.verify(bob.account, " ".join(number.groups()))).verified


def test_certificates_do_not_outlive_their_server_receipt() -> None:
    # The client checks a sender certificate at the server's receipt time, so an
    # envelope accepted after the certificate expired is still refused.
    root = sealed.TrustRoot.generate()
    key = sealed.ServerKey.generate(root, 1, 10**13)
    from veil.core import keys
    alice, bob = keys.IdentityKeyPair.generate(), keys.IdentityKeyPair.generate()
    cert = key.issue(bytes(16), 1, alice.public, expires_at=1000)
    env = sealed.seal(alice, cert, bob.public, b"x")
    sealed.open_envelope(bob, env, root.public, 999)
    from veil.core.errors import ExpiredCertificate
    with pytest.raises(ExpiredCertificate):
        sealed.open_envelope(bob, env, root.public, 1001)
