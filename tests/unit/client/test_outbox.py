"""The persistent outbox (issue 10 §1): a message is saved before anything goes to the
network, leaves the outbox only when the server stored it, and every retry after an
unknown outcome sends the same envelopes, so the recipient shows it once. Real
``Client`` logic against the in-memory server; waits are on conditions, never sleeps.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from tests.unit.client.helpers import FakeClock
from tests.unit.client.memory_server import MemoryServer
from veil.client import Client, OutboxFailed, OutboxSent
from veil.client.errors import SealedRefused, ServerUnreachable, UnknownUser
from veil.client.store import FAST

URL = "memory://veil"


async def _client(made: list[Client], server: MemoryServer, tmp_path: Path,
                  name: str) -> Client:
    client = await Client.register(tmp_path / name, URL, passphrase="pw", kdf=FAST,
                                   clock=server.clock, transport=server)
    made.append(client)
    return client


def _store_then_lose_the_first_answer(server: MemoryServer, account: str
                                      ) -> list[dict[str, Any]]:
    """The first submission to ``account`` is stored but its answer is lost (a timeout,
    a dropped connection); later ones take the real route. Returns the bodies sent."""
    seen: list[dict[str, Any]] = []

    async def reply(body: Any) -> None:
        seen.append(body)
        if len(seen) == 1:
            for item in body["messages"]:
                server.deliver(account, int(item["device_id"]),
                               base64.b64decode(item["envelope"]))
            raise ServerUnreachable("cannot reach the server at memory:// (TimeoutError)")
        return None

    server.answer("PUT", f"/v1/messages/{account}", reply)
    return seen


async def test_a_message_typed_while_the_server_is_down_waits_and_then_goes_once(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    server.reachable = False
    with pytest.raises(ServerUnreachable):
        await alice.send(bob.account, "typed on the train")
    [waiting] = alice.outbox()
    assert waiting.text == "typed on the train" and waiting.stage == "queued"
    assert waiting.attempts == 1 and waiting.last_error == "server_unreachable"
    assert alice.history(bob.account) == []
    server.reachable = True
    [sent] = await alice.flush_outbox()
    assert sent.id == waiting.id and alice.outbox() == []
    assert [e.text for e in alice.history(bob.account)] == ["typed on the train"]
    assert [m.text for m in await bob.receive_pending()] == ["typed on the train"]


async def test_a_retry_after_an_unknown_outcome_is_shown_once(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    """The server stored the envelope but the answer was lost (a timeout, a dropped
    connection): the retry sends the same envelope, and Bob sees one message."""
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    seen = _store_then_lose_the_first_answer(server, bob.account)
    with pytest.raises(ServerUnreachable):
        await alice.send(bob.account, "did it go?")
    [waiting] = alice.outbox()
    assert waiting.stage == "sealed" and waiting.account == bob.account
    await alice.flush_outbox()
    assert alice.outbox() == []
    # The same bytes both times: no second encryption of the message.
    assert seen[0] == seen[1]
    assert [m.text for m in await bob.receive_pending()] == ["did it go?"]
    assert [e.text for e in alice.history(bob.account)] == ["did it go?"]


async def test_an_interrupted_send_stays_in_the_outbox(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    reached, _ = server.hold("PUT", f"/v1/messages/{bob.account}")
    sending = asyncio.create_task(alice.send(bob.account, "Ctrl-C now"))
    await asyncio.wait_for(reached.wait(), 10)
    sending.cancel()                      # what Ctrl-C does to the running command
    with pytest.raises(asyncio.CancelledError):
        await sending
    [waiting] = alice.outbox()
    assert waiting.stage == "sealed"
    server._overrides.clear()
    await alice.flush_outbox()
    assert [m.text for m in await bob.receive_pending()] == ["Ctrl-C now"]


async def test_the_outbox_survives_closing_the_client_and_is_sent_on_connect(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    server.reachable = False
    for text in ("one", "two"):
        with pytest.raises(ServerUnreachable):
            await alice.send(bob.account, text)
    made.remove(alice)
    await alice.close()
    server.reachable = True
    again = await Client.open(tmp_path / "alice", passphrase="pw", clock=server.clock,
                              transport=server)
    made.append(again)
    assert [m.text for m in again.outbox()] == ["one", "two"]
    events = again.events()
    got: list[OutboxSent] = []
    while len(got) < 2:                   # the live connection sends the outbox
        event = await asyncio.wait_for(events.__anext__(), 10)
        if isinstance(event, OutboxSent):
            got.append(event)
    await events.aclose()
    assert again.outbox() == [] and {e.conversation for e in got} == {bob.account}
    assert [m.text for m in await bob.receive_pending()] == ["one", "two"]


async def test_a_message_that_cannot_be_sent_leaves_the_outbox_and_says_so(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    with pytest.raises(UnknownUser):
        await alice.send("@nobody", "hello?")
    assert alice.outbox() == []
    # Queued while offline, then found unsendable: reported as an event.
    server.reachable = False
    with pytest.raises(ServerUnreachable):
        await alice.send("@nobody", "still nobody")
    server.reachable = True
    events = alice.events()
    failed = None
    while failed is None:
        event = await asyncio.wait_for(events.__anext__(), 10)
        if isinstance(event, OutboxFailed):
            failed = event
    await events.aclose()
    assert failed.to == "@nobody" and failed.code == "unknown_user"
    assert alice.outbox() == []


async def test_a_cancelled_message_is_not_sent(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    server.reachable = False
    with pytest.raises(ServerUnreachable):
        await alice.send(bob.account, "never mind")
    [waiting] = alice.outbox()
    assert alice.cancel(waiting.id) and not alice.cancel(waiting.id)
    server.reachable = True
    assert await alice.flush_outbox() == []
    assert await bob.receive_pending() == []


async def test_envelopes_whose_certificate_expired_meanwhile_are_sealed_anew(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    """A recipient judges the sender certificate at the time the server accepted the
    envelope: one retried a day later is sealed again (and shown once, by its id)."""
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    seen = _store_then_lose_the_first_answer(server, bob.account)
    with pytest.raises(ServerUnreachable):
        await alice.send(bob.account, "a day late")
    assert isinstance(server.clock, FakeClock)
    server.clock.advance(2 * 24 * 3600 * 1000)      # past the certificate's expiry
    await alice.flush_outbox()
    assert alice.outbox() == [] and seen[0] != seen[1]   # sealed anew
    assert [m.text for m in await bob.receive_pending()] == ["a day late"]


async def test_a_refused_sealed_delivery_is_not_resent_at_once_with_credentials(
        server: MemoryServer, made: list[Client], tmp_path: Path) -> None:
    """A server that answers 401 to a sealed submission (or a recipient whose access key
    changed) must not get the same envelopes straight back with the sender's
    credentials: that would name the sender of what it was just offered sealed. The
    message stays in the outbox, is sealed anew, and goes on a later attempt."""
    alice = await _client(made, server, tmp_path, "alice")
    bob = await _client(made, server, tmp_path, "bob")
    await alice.send(bob.account, "hi")
    await bob.send(alice.account, "hello")            # Alice learns Bob's profile key
    await alice.receive_pending()
    await bob.receive_pending()
    server.accounts[bob.account].access_key = bytes(16)   # Bob's key "changed"
    puts = f"/v1/messages/{bob.account}"
    before = [r for r in server.requests if r == ("PUT", puts)]
    with pytest.raises(SealedRefused, match="access key was refused"):
        await alice.send(bob.account, "are you there?")
    during = [r for r in server.requests if r == ("PUT", puts)]
    assert len(during) == len(before) + 1             # one sealed attempt, no resend
    [waiting] = alice.outbox()
    assert waiting.stage == "queued" and waiting.last_error == "sealed_refused"
    [sent] = await alice.flush_outbox()               # later: with credentials, anew
    assert not sent.sealed
    assert [m.text for m in await bob.receive_pending()] == ["are you there?"]
