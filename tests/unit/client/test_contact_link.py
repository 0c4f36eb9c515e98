"""First contact (issue 10 §3 and §4): the first message shows the sender's username,
vouched for by the server in the sender certificate; with the recipient's contact link
the first message and the bundle claim before it are sealed, and keys that are not the
link's identity are refused. Real ``Client`` logic against the in-memory server."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.unit.client.memory_server import MemoryServer
from veil.client import Client, contact_link
from veil.client.errors import IdentityChanged, UnknownUser
from veil.client.store import FAST

URL = "memory://veil"


async def _client(made: list[Client], server: MemoryServer, tmp_path: Path, name: str,
                  username: str | None = None) -> Client:
    client = await Client.register(tmp_path / name, URL, passphrase="pw", kdf=FAST,
                                   clock=server.clock, transport=server, username=username)
    made.append(client)
    return client


async def test_the_first_message_shows_the_senders_username(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice", "alice")
    bob = await _client(made, server, tmp_path, "bob")
    await alice.send(bob.account, "hello")
    [got] = await bob.receive_pending()
    assert got.sender == alice.account and got.sender_username == "alice"
    [contact] = bob.contacts()
    assert contact.username == "alice"
    assert (await bob.resolve("@alice")).account == alice.account   # no lookup needed
    assert ("GET", "/v1/usernames/alice") not in server.requests


async def test_a_sender_without_username_is_shown_by_account(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    await alice.send(bob.account, "hello")
    [got] = await bob.receive_pending()
    assert got.sender_username is None


async def test_with_a_contact_link_the_first_contact_is_sealed(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice", "alice")
    bob = await _client(made, server, tmp_path, "bob", "bob")
    link = bob.contact_link()
    assert link.startswith("veil:") and len(link) < 120
    server.requests.clear()
    server.sealed_requests.clear()
    sent = await alice.send(link, "first words, sealed")
    assert sent.sealed and sent.recipient == bob.account
    to_bob = [r for r in server.requests if bob.account in r[1]]
    assert to_bob and all(r in server.sealed_requests for r in to_bob)
    assert not any(path.startswith("/v1/usernames") for _, path in server.requests)
    [got] = await bob.receive_pending()
    assert got.text == "first words, sealed" and got.sender_username == "alice"
    assert (await alice.resolve("@bob")).account == bob.account  # the link named him


async def test_keys_that_are_not_the_links_identity_are_refused(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    mallory = await _client(made, server, tmp_path, "mallory")

    async def substitute(_: Any) -> Any:
        status, body = server._claim(mallory.account, "*")
        return status, {**body, "account_id": bob.account}
    server.answer("GET", f"/v1/keys/{bob.account}", substitute)
    alice.add_contact(bob.contact_link())
    with pytest.raises(IdentityChanged, match="contact link"):
        await alice.send(bob.account, "for bob only")
    assert not any(r[0] == "PUT" and bob.account in r[1] for r in server.requests)
    contact = next(c for c in alice.contacts() if c.account == bob.account)
    assert contact.identity is None          # the substituted key was not recorded


async def test_damaged_own_and_contradicting_links_are_refused(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    mallory = await _client(made, server, tmp_path, "mallory")
    link = bob.contact_link()
    for bad in ("veil:", "veil:%%%", link[:-10], "veil:" + "A" * 70):
        with pytest.raises(UnknownUser):
            alice.add_contact(bad)
    with pytest.raises(UnknownUser, match="your own"):
        bob.add_contact(link)
    await alice.send(bob.account, "we have met")            # alice learns bob's key
    forged = contact_link.parse(mallory.contact_link())
    lying = contact_link.ContactLink(bob.account, forged.access_key, forged.fingerprint,
                                     None).encode()
    with pytest.raises(IdentityChanged, match="another identity key"):
        alice.add_contact(lying)
    assert contact_link.parse(link).matches(bob.identity.to_bytes())


async def test_a_named_certificate_keeps_a_first_message_in_the_smallest_class(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    """The username (up to 32 bytes) rides in the padding of the 2,560-byte class: a
    first message with a short text is as large as any other (issue 10 §4, item 3)."""
    long_name = "a" * 32
    alice = await _client(made, server, tmp_path, "alice", long_name)
    bob = await _client(made, server, tmp_path, "bob")
    await alice.send(bob.account, "x" * 200)
    [(_, envelope)] = server.accounts[bob.account].devices[1].queue.values()
    assert len(base64.b64decode(envelope)) == 2560
    [got] = await bob.receive_pending()
    assert got.sender_username == long_name
