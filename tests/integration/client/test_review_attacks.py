"""The client's findings of the outside review (issue 8), each written as the attack,
against a real server process on loopback.

- item 3: prekeys rotate on the client's clock; a prekey past its grace is gone;
- item 6: the trust root is pinned; a backdated envelope cannot revive an expired
  certificate;
- item 7: contact and session identities cannot drift apart (races reproduced by
  interleaving two clients on one home, or by a hook on the store);
- item 8: an envelope with a counter at the 32-bit limit is dropped, not stuck;
- sessions stored by the pre-review client are set up anew instead of breaking things.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.integration.client.conftest import new_client
from tests.integration.server.harness import ServerProcess
from tests.unit.client.helpers import DAY_MS, FakeClock
from veil.client import Client, IncomingMessage, contacts, prekey_store, sessions, trust
from veil.client.api import b64, unb64
from veil.client.content import Content
from veil.client.errors import IdentityChanged, TrustRootMismatch
from veil.client.store import FAST
from veil.core import keys, padding, ratchet, safety, sealed, session
from veil.core import primitives as p
from veil.core.encoding import Writer
from veil.core.errors import CoreError

SERVER_KEY_FILE = "server_signing.key"


def _now() -> int:
    return int(time.time() * 1000)


async def _next(it: AsyncIterator[IncomingMessage], timeout: float = 20.0) -> IncomingMessage:
    return await asyncio.wait_for(it.__anext__(), timeout)


async def _claim(client: Client, account: str) -> keys.PreKeyBundle:
    """Claim a bundle the way any registered device may (uses up one one-time key)."""
    answer = await client._api.request("GET", f"/v1/keys/{account}/1")
    dev = answer["devices"][0]
    opk, pqopk = dev.get("one_time_prekey"), dev.get("one_time_kem_prekey")
    return keys.PreKeyBundle.from_parts(
        unb64(dev["identity_key"]), unb64(dev["signed_prekey"]),
        unb64(dev["last_resort_kem_prekey"]), unb64(opk["key"]) if opk else None,
        unb64(pqopk["key"]) if pqopk else None)


async def _submit(sender: Client, to: str, envelope: bytes) -> int:
    answer = await sender._api.request("PUT", f"/v1/messages/{to}", {"messages": [
        {"device_id": 1, "envelope": b64(envelope)}]})
    return int(answer["messages"][0]["id"])


async def _initial_with(sender: Client, to: str, bundle: keys.PreKeyBundle,
                        certificate: sealed.SenderCertificate, text: str) -> int:
    """An initial message from ``bundle`` (possibly an old one), sealed and submitted."""
    content = Content.text_message(text, _now(), sender._me.profile_key).encode()
    _, message = session.initiate(sender._identity, bundle, content)
    return await _submit(sender, to, sealed.seal(sender._identity, certificate,
                                                 bundle.identity, message))


def _server_key(server: ServerProcess) -> sealed.ServerKey:
    """The hostile server's (or a thief's) signing key, read from its data directory."""
    return sealed.ServerKey.from_bytes((server.data_dir / SERVER_KEY_FILE).read_bytes())


async def _forge_identity_change(server: ServerProcess, impostor: Client, claimed: str,
                                 victim: Client, text: str) -> None:
    """The server certifies ``claimed``'s account with the impostor's identity key and
    the impostor writes to the victim as ``claimed``."""
    cert = _server_key(server).issue(bytes.fromhex(claimed), 1, impostor.identity,
                                     _now() + DAY_MS)
    await _initial_with(impostor, victim.account, await _claim(impostor, victim.account),
                        cert, text)


async def _queue_ids(client: Client) -> list[int]:
    answer = await client._api.request("GET", "/v1/messages?limit=100")
    return [int(m["id"]) for m in answer["messages"]]


async def _eventually(condition: Any, timeout: float = 10.0) -> None:
    """Wait for a condition (polled), never for a fixed time."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- item 3: rotation on a timer ---------------------------------------------------------

async def test_prekeys_rotate_on_the_clock_and_expire_after_their_grace(
        server: ServerProcess, clients: list[Client], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(_now())
    bob = await Client.register(tmp_path / "bob", server.url, passphrase="pw", kdf=FAST,
                                clock=clock)
    clients.append(bob)
    alice = await new_client(clients, tmp_path, server, "alice")
    carol = await new_client(clients, tmp_path, server, "carol")
    day0, day0_again = await _claim(carol, bob.account), await _claim(carol, bob.account)
    live = bob.messages()
    await alice.send(bob.account, "day 0")
    assert (await _next(live)).text == "day 0"

    clock.advance(7 * DAY_MS + 1)
    await alice.send(bob.account, "day 7")      # Bob's loop sees the clock on this frame
    assert (await _next(live)).text == "day 7"
    day7 = await _claim(carol, bob.account)
    assert day7.signed_prekey.key_id != day0.signed_prekey.key_id
    assert day7.last_resort_kem.key_id != day0.last_resort_kem.key_id

    clock.advance(3 * DAY_MS)                   # day 10: the old key is in its grace
    cert = await carol._certificate()
    await _initial_with(carol, bob.account, day0, cert, "old bundle, in time")
    assert (await _next(live)).text == "old bundle, in time"

    clock.advance(4 * DAY_MS)                   # day 14: its successor is a week old
    await alice.send(bob.account, "day 14")
    assert (await _next(live)).text == "day 14"
    with bob._store.transaction():
        held = prekey_store.load(bob._store)
        assert day0.signed_prekey.key_id not in held.signed_prekeys
        assert day0.last_resort_kem.key_id not in held.last_resort
        assert day7.signed_prekey.key_id in held.signed_prekeys
    caplog.set_level(logging.WARNING, "veil.client")
    dave = await new_client(clients, tmp_path, server, "dave")
    stale = await _initial_with(dave, bob.account, day0_again, await dave._certificate(),
                                "names a deleted prekey")
    await alice.send(bob.account, "after the stale one")
    assert (await _next(live)).text == "after the stale one"
    assert caplog.text.count("cannot be decrypted: unknown_prekey") == 1

    async def acknowledged() -> bool:
        return stale not in await _queue_ids(bob)
    await _eventually(acknowledged)
    await live.aclose()


async def test_the_rotation_timer_runs_without_traffic(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    clock = FakeClock(_now())
    bob = await Client.register(tmp_path / "bob", server.url, passphrase="pw", kdf=FAST,
                                clock=clock)
    clients.append(bob)
    bob.prekeys.recheck_s = 0.05                # re-read the (test's) clock often
    carol = await new_client(clients, tmp_path, server, "carol")
    before = await _claim(carol, bob.account)
    listener = asyncio.create_task(anext(bob.messages()))   # connected, nothing arrives

    def rotated() -> bool:
        with bob._store.transaction():
            current = prekey_store.load(bob._store).current_signed_prekey().key_id
        return current != before.signed_prekey.key_id and \
            prekey_store.pending_upload(bob._store) is None

    async def ready() -> bool:
        return bob.prekeys.next_rotation_ms > 0

    async def done() -> bool:
        return rotated()
    try:
        await _eventually(ready)
        clock.advance(7 * DAY_MS + 1)
        await _eventually(done)
    finally:
        listener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listener
    after = await _claim(carol, bob.account)
    assert after.signed_prekey.key_id != before.signed_prekey.key_id
    assert after.last_resort_kem.key_id != before.last_resort_kem.key_id


# --- item 6: trust root pinned, certificate times bounded --------------------------------

async def test_registration_refuses_another_trust_root(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    real = trust.fingerprint((server.data_dir / "trust_root.pub").read_bytes())
    other = trust.fingerprint(os.urandom(32))
    with pytest.raises(TrustRootMismatch, match="not the pinned"):
        await Client.register(tmp_path / "mitm", server.url, passphrase="pw", kdf=FAST,
                              trust_root=other)
    assert not (tmp_path / "mitm").exists()
    pinned = await Client.register(tmp_path / "ok", server.url, passphrase="pw", kdf=FAST,
                                   trust_root=":".join(real[i:i + 4] for i in range(0, 32, 4)))
    clients.append(pinned)
    assert pinned.trust_root_fingerprint() == real
    started = (server.data_dir.parent / f"{server.data_dir.name}.out").read_text()
    assert f"trust root fingerprint {real}" in started


async def _serve_queue(items: list[dict[str, Any]], acked: list[int]) -> web.AppRunner:
    """A hostile server: it hands out the envelopes it likes with the times it likes."""
    async def messages(request: web.Request) -> web.Response:
        left = [i for i in items if i["id"] not in acked]
        return web.json_response({"messages": left, "more": False})

    async def ack(request: web.Request) -> web.Response:
        acked.append(int(request.match_info["id"]))
        return web.Response(status=204)

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"one_time_prekeys": 100, "one_time_kem_prekeys": 100})

    async def nothing(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "not_found", "message": "no"}},
                                 status=404)

    app = web.Application()
    app.router.add_get("/v1/messages", messages)
    app.router.add_delete("/v1/messages/{id}", ack)
    app.router.add_get("/v1/keys/status", status)
    app.router.add_get("/v1/certificate/trust_root", nothing)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def test_a_backdated_envelope_cannot_revive_an_expired_certificate(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    alice = await new_client(clients, tmp_path, server, "alice")
    bob = await new_client(clients, tmp_path, server, "bob")
    key, now = _server_key(server), _now()

    def envelope(bundle: keys.PreKeyBundle, text: str, expires: int) -> str:
        cert = key.issue(bytes.fromhex(alice.account), 1, alice.identity, expires)
        content = Content.text_message(text, now, alice._me.profile_key).encode()
        _, message = session.initiate(alice._identity, bundle, content)
        return b64(sealed.seal(alice._identity, cert, bob.identity, message))

    late = await _claim(alice, bob.account)
    old = await _claim(alice, bob.account)
    items = [
        # Waited 20 days in the queue; its certificate was valid when it was accepted.
        {"id": 1, "ts": now - 20 * DAY_MS,
         "envelope": envelope(late, "late but honest", now - 19 * DAY_MS)},
        # A certificate that expired 40 days ago, "accepted" the day before it expired.
        {"id": 2, "ts": now - 41 * DAY_MS,
         "envelope": envelope(old, "revived by backdating", now - 40 * DAY_MS)},
    ]
    acked: list[int] = []
    runner = await _serve_queue(items, acked)
    site_port = runner.addresses[0][1]
    bob._api.base_url = f"http://127.0.0.1:{site_port}"
    try:
        got = [m.text for m in await bob.receive_pending()]
    finally:
        await runner.cleanup()
    assert got == ["late but honest"]
    assert sorted(acked) == [1, 2]                  # dropped, not left in the queue


# --- item 7: contacts and sessions cannot drift apart -----------------------------------

async def _verified_pair(server: ServerProcess, clients: list[Client], tmp_path: Path,
                         talk: bool) -> tuple[Client, Client, Client]:
    alice = await new_client(clients, tmp_path, server, "alice")
    bob = await new_client(clients, tmp_path, server, "bob")
    mallory = await new_client(clients, tmp_path, server, "mallory")
    if talk:
        await bob.send(alice.account, "hi alice")
        assert [m.text for m in await alice.receive_pending()] == ["hi alice"]
    await alice.verify(bob.account)                 # compared in person
    return alice, bob, mallory


async def test_a_stale_contact_cannot_erase_an_identity_change_warning(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    alice, bob, mallory = await _verified_pair(server, clients, tmp_path, talk=True)
    other = await Client.open(tmp_path / "alice", passphrase="pw")   # e.g. `veil recv -f`
    clients.append(other)
    await _forge_identity_change(server, mallory, bob.account, alice, "it is bob, really")
    real_request = alice._api.request

    async def request(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        if method == "PUT" and path.startswith("/v1/messages/"):
            # While this send is on the network, the other process reads the forgery.
            got = await other.receive_pending()
            assert [m.identity_changed for m in got] == [True]
        return await real_request(method, path, *args, **kwargs)

    alice._api.request = request                    # type: ignore[method-assign]
    await alice.send(bob.account, "sent before the warning arrived")
    alice._api.request = real_request               # type: ignore[method-assign]
    contact = contacts.get(alice._store, bob.account)
    assert contact is not None and contact.identity_changed and not contact.verified
    with pytest.raises(IdentityChanged):
        await alice.send(bob.account, "must wait for a new verification")


async def test_a_session_with_another_identity_is_not_used(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    alice, bob, mallory = await _verified_pair(server, clients, tmp_path, talk=True)
    trusted = alice._store.get("contact", bob.account)
    await _forge_identity_change(server, mallory, bob.account, alice, "it is bob, really")
    assert [m.identity_changed for m in await alice.receive_pending()] == [True]
    # The drift: the contact says "verified, Bob's key" (a stale copy written back),
    # while the current session belongs to Mallory's key.
    assert trusted is not None
    alice._store.put("contact", bob.account, trusted)
    held = sessions.load(alice._store, bob.account, 1)
    assert held[0].remote_identity == mallory.identity
    await alice.send(bob.account, "for bob only")
    assert [m.text for m in await bob.receive_pending()] == ["for bob only"]
    remaining = sessions.load(alice._store, bob.account, 1)
    assert remaining and all(s.remote_identity == bob.identity for s in remaining)


async def test_the_safety_number_is_that_of_the_key_the_sessions_use(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    alice, bob, mallory = await _verified_pair(server, clients, tmp_path, talk=False)
    trusted = alice._store.get("contact", bob.account)
    await _forge_identity_change(server, mallory, bob.account, alice, "it is bob, really")
    await alice.receive_pending()
    assert trusted is not None
    alice._store.put("contact", bob.account, trusted)      # the same drift as above
    number = await alice.safety_number(bob.account)
    bobs = await bob.safety_number(alice.account)
    assert number.digits != bobs.digits             # comparing shows the man in the middle
    assert number.digits == safety.safety_number(
        alice.identity, bytes.fromhex(alice.account), mallory.identity,
        bytes.fromhex(bob.account)).digits
    contact = contacts.get(alice._store, bob.account)
    assert contact is not None and contact.identity_changed and not contact.verified


async def test_verify_marks_exactly_the_key_whose_digits_were_compared(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    alice = await new_client(clients, tmp_path, server, "alice")
    bob = await new_client(clients, tmp_path, server, "bob")
    mallory = await new_client(clients, tmp_path, server, "mallory")
    compared = (await alice.safety_number(bob.account)).digits     # of Bob's real key
    other = await Client.open(tmp_path / "alice", passphrase="pw")
    clients.append(other)
    await _forge_identity_change(server, mallory, bob.account, alice, "it is bob, really")
    queued = (await other._api.request("GET", "/v1/messages"))["messages"]
    fired: list[bool] = []

    def change_now() -> None:
        fired.append(True)
        for item in queued:                          # the other process, synchronously
            other._decrypt_and_store(unb64(item["envelope"]), int(item["ts"]))

    real_get = alice._store.get
    reads: list[str] = []

    def get(kind: str, name: str) -> bytes | None:
        if kind == "contact":
            reads.append(name)
            # Between reading the contact and writing it (no store transaction open):
            # the moment another process can commit the identity change.
            if len(reads) == 2 and not alice._store._depth and not fired:
                change_now()
        return real_get(kind, name)

    alice._store.get = get                           # type: ignore[method-assign]
    try:
        await alice.verify(bob.account, compared)
    except IdentityChanged:
        pass                                         # refusing is right as well
    finally:
        alice._store.get = real_get                  # type: ignore[method-assign]
    if not fired:
        change_now()                                 # it arrives after the verify
    contact = contacts.get(alice._store, bob.account)
    assert contact is not None
    if contact.verified:
        assert contact.identity == bob.identity.to_bytes()
    assert contact.identity != mallory.identity.to_bytes() or not contact.verified


# --- item 8: counters at the limit ------------------------------------------------------

def _at_the_limit(held: session.Session, content: bytes) -> bytes:
    """The message a malicious sender makes with counter 2**32 - 1 (the next key of its
    chain, labelled with that counter), wrapped as the session's messages are."""
    state = held._ratchet
    assert state.cks is not None and state.dhs_pub is not None
    mk, _ = ratchet.kdf_ck(state.cks)
    header = ratchet._HEADER.pack(state.dhs_pub, state.pn, ratchet.MAX_COUNTER)
    body = bytes((session.VERSION, session.TYPE_MESSAGE)) + header + \
        p.seal_message(mk, padding.pad(content), held._message_ad + header)
    initial = held._initial
    return body if initial is None else initial + len(body).to_bytes(4, "big") + body


async def test_an_envelope_at_the_counter_limit_is_dropped_and_the_queue_moves_on(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    mallory = await new_client(clients, tmp_path, server, "mallory")
    bob = await new_client(clients, tmp_path, server, "bob")
    alice = await new_client(clients, tmp_path, server, "alice")
    await mallory.send(bob.account, "hello")
    assert [m.text for m in await bob.receive_pending()] == ["hello"]
    # Bob's receiving counter has (somehow) reached the limit; Mallory writes there.
    with bob._store.transaction():
        held = sessions.load(bob._store, mallory.account, 1)
        held[0]._ratchet.nr = ratchet.MAX_COUNTER
        sessions.save(bob._store, mallory.account, 1, held)
    theirs = sessions.load(mallory._store, bob.account, 1)[0]
    theirs._ratchet.ns = ratchet.MAX_COUNTER
    content = Content.text_message("boom", _now(), mallory._me.profile_key).encode()
    try:
        message = theirs.encrypt(content)
    except CoreError:              # today's core will not send there: written by hand
        message = _at_the_limit(theirs, content)
    forged = sealed.seal(mallory._identity, await mallory._certificate(), bob.identity,
                         message)
    stuck = await _submit(mallory, bob.account, forged)
    await alice.send(bob.account, "the next honest message")
    assert [m.text for m in await bob.receive_pending()] == ["the next honest message"]
    assert stuck not in await _queue_ids(bob)
    assert await bob.receive_pending() == []


# --- sessions from before the review ----------------------------------------------------

async def test_sessions_stored_before_the_review_are_set_up_anew(
        server: ServerProcess, clients: list[Client], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    alice = await new_client(clients, tmp_path, server, "alice")
    bob = await new_client(clients, tmp_path, server, "bob")
    await alice.send(bob.account, "before")
    assert [m.text for m in await bob.receive_pending()] == ["before"]
    # What the pre-review client left: session state version 1, on both sides.
    old = Writer().u32(1).var(b"\x01" + os.urandom(300)).finish()
    bob._store.put("sessions", f"{alice.account}.1", old)
    alice._store.put("sessions", f"{bob.account}.1", old)
    caplog.set_level(logging.WARNING, "veil.client")
    await bob.send(alice.account, "after the upgrade")
    assert [m.text for m in await alice.receive_pending()] == ["after the upgrade"]
    await alice.send(bob.account, "and back")
    assert [m.text for m in await bob.receive_pending()] == ["and back"]
    assert "set aside a stored session" in caplog.text
    for account in (alice.account, bob.account):
        assert account[:8] not in caplog.text
