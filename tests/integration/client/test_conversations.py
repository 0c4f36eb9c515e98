"""Conversations beyond text, with a real server process and real clients (issue 12
§2, §3, §5, §6): replies, reactions, edits, deletions for everyone, receipts, typing,
disappearing messages and unknown kinds, in 1:1 chats and groups, on two devices per
person (docs/client.md, "Conversations")."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.integration.server.harness import ServerProcess
from veil.client import Client
from veil.client import pending as pending_store
from veil.client.attachments import Pointer
from veil.client.content import Content
from veil.client.errors import ClientError, NotGroupAdmin, ServerRejected
from veil.client.events import MessageChanged, TimerChanged, Typing
from veil.client.store import DB_FILE, FAST
from veil.core.errors import MalformedMessage


class Clock:
    """A clock the test moves (ms); every client of a test shares one."""

    def __init__(self) -> None:
        import time
        self.now = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now


def _events(client: Client) -> asyncio.Queue[object]:
    return client._hub.add()


def _drain(queue: asyncio.Queue[object]) -> list[object]:
    return [queue.get_nowait() for _ in range(queue.qsize())]


async def _person(made: list[Client], tmp_path: Path, server: ServerProcess, name: str,
                  clock: Clock) -> Client:
    client = await Client.register(tmp_path / name, server.url, username=name,
                                   passphrase="pw", kdf=FAST, clock=clock)
    made.append(client)
    return client


async def _second_device(first: Client, tmp_path: Path, server: ServerProcess,
                         name: str, clock: Clock, made: list[Client]) -> Client:
    link = await Client.begin_link(tmp_path / name, server.url, passphrase="pw", kdf=FAST,
                                   clock=clock)
    finishing = asyncio.create_task(link.finish(timeout=30))
    await first.approve_device(link.code, name=name)
    device = await finishing
    made.append(device)
    return device


def _line(client: Client, conversation: str, message_id: str):  # type: ignore[no-untyped-def]
    found = client._outbox.conversations.find(conversation, message_id)
    assert found is not None
    return found[1]


async def test_replies_reactions_edits_and_deletions_reach_every_device(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    clock = Clock()
    alice = await _person(clients, tmp_path, server, "alice_cv", clock)
    bob = await _person(clients, tmp_path, server, "bob_cv", clock)
    await alice.send("@bob_cv", "hello bob")
    [hello] = await bob.receive_pending()
    await bob.send(alice.account, "hi")
    await alice.receive_pending()
    laptop = await _second_device(alice, tmp_path, server, "alice_laptop", clock, clients)
    tablet = await _second_device(bob, tmp_path, server, "bob_tablet", clock, clients)
    await alice.receive_pending()
    await bob.receive_pending()

    # A reply quotes by id; both of Bob's devices get it, Alice's laptop by sync.
    reply_id = await bob.reply(alice.account, hello.id, "what's up?")
    for device in (alice, laptop):
        got = [m for m in await device.receive_pending() if m.id == reply_id]
        assert [(m.text, m.reply_to) for m in got] == [("what's up?", hello.id)]
    await tablet.receive_pending()                   # Bob's own reply, as a sync
    assert _line(tablet, alice.account, reply_id).reply_to == hello.id

    # Read on one device, read on the other: the read receipt is synced too.
    assert _line(laptop, bob.account, reply_id).read_at is None
    await alice.mark_read(bob.account, [reply_id])
    await laptop.receive_pending()
    assert _line(laptop, bob.account, reply_id).read_at is not None

    # Reactions: one per person, changeable, removable.
    bob_events = _events(bob)
    await alice.react(bob.account, reply_id, "👍")
    await alice.react(bob.account, reply_id, "❤️")
    await bob.receive_pending()
    await tablet.receive_pending()
    await laptop.receive_pending()
    for device, peer in ((bob, alice.account), (tablet, alice.account),
                         (alice, bob.account), (laptop, bob.account)):
        assert _line(device, peer, reply_id).reactions == {alice.account: "❤️"}
    changes = [e for e in _drain(bob_events) if isinstance(e, MessageChanged)]
    assert [(c.change, c.emoji) for c in changes if c.change == "reaction"] == \
        [("reaction", "👍"), ("reaction", "❤️")]
    await alice.react(bob.account, reply_id, None)
    await bob.receive_pending()
    assert _line(bob, alice.account, reply_id).reactions == {}
    with pytest.raises(ClientError, match="one emoji"):
        await alice.react(bob.account, reply_id, "ok")

    # Edits keep the earlier text; only the author may edit.
    sent = await alice.send(bob.account, "meet at 5")
    await bob.receive_pending()
    await alice.edit(bob.account, sent.id, "meet at 6")
    await bob.receive_pending()
    await tablet.receive_pending()
    await laptop.receive_pending()
    for device, peer in ((bob, alice.account), (tablet, alice.account),
                         (laptop, bob.account)):
        line = _line(device, peer, sent.id)
        assert (line.text, [e[0] for e in line.edits]) == ("meet at 6", ["meet at 5"])
    with pytest.raises(ClientError, match="own messages"):
        await bob.edit(alice.account, sent.id, "hijacked")

    # Deleted for everyone: the text is gone from every device's history.
    secret = await alice.send(bob.account, "the code is 4711")
    await bob.receive_pending()
    await tablet.receive_pending()
    await alice.delete_for_everyone(bob.account, secret.id)
    await bob.receive_pending()
    await tablet.receive_pending()
    await laptop.receive_pending()
    for device, peer in ((bob, alice.account), (tablet, alice.account),
                         (alice, bob.account), (laptop, bob.account)):
        line = _line(device, peer, secret.id)
        assert line.deleted and line.text == ""
        assert "4711" not in [e.text for e in device.history(peer, 100)]


async def test_an_edit_or_deletion_of_another_persons_message_is_refused(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    """A modified client sends an edit of a message it did not write: refused by the
    receiver, the message unchanged, the conversation going on."""
    clock = Clock()
    alice = await _person(clients, tmp_path, server, "alice_fk", clock)
    bob = await _person(clients, tmp_path, server, "bob_fk", clock)
    mine = await alice.send("@bob_fk", "alice's words")
    await bob.receive_pending()
    await bob.send(alice.account, "bob here")
    await alice.receive_pending()
    forged = Content("f" * 32, clock(), "bob's words now", None, "edit", target=mine.id)
    await bob._outbox.send(alice.account, forged.text, forged)
    await alice.receive_pending()
    assert _line(alice, bob.account, mine.id).text == "alice's words"
    await bob.send(alice.account, "still talking")
    assert [m.text for m in await alice.receive_pending()] == ["still talking"]


async def test_delivery_and_read_receipts_and_turning_read_receipts_off(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    clock = Clock()
    alice = await _person(clients, tmp_path, server, "alice_rc", clock)
    bob = await _person(clients, tmp_path, server, "bob_rc", clock)
    sent = await alice.send("@bob_rc", "did you get this?")
    [got] = await bob.receive_pending()                      # sends "delivered"
    await alice.receive_pending()
    assert set(_line(alice, bob.account, sent.id).receipts[bob.account]) == {"delivered"}
    await bob.mark_read(alice.account, [got.id])
    events = _events(alice)
    await alice.receive_pending()
    assert "read" in _line(alice, bob.account, sent.id).receipts[bob.account]
    assert [(e.change, e.account) for e in _drain(events)
            if isinstance(e, MessageChanged)] == [("read", bob.account)]
    # Bob turns read receipts off for Alice: he sends none, and sees none of hers.
    await bob.set_read_receipts(alice.account, False)
    second = await alice.send(bob.account, "and this?")
    [got2] = await bob.receive_pending()
    await bob.mark_read(alice.account, [got2.id])
    await alice.receive_pending()
    assert set(_line(alice, bob.account, second.id).receipts[bob.account]) == {"delivered"}
    reply = await bob.send(alice.account, "yes")
    [seen] = await alice.receive_pending()
    await alice.mark_read(bob.account, [seen.id])
    await bob.receive_pending()
    assert "read" not in _line(bob, alice.account, reply.id).receipts.get(alice.account, {})


async def test_typing_is_told_rate_limited_and_never_stored(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    clock = Clock()
    alice = await _person(clients, tmp_path, server, "alice_ty", clock)
    bob = await _person(clients, tmp_path, server, "bob_ty", clock)
    await alice.send("@bob_ty", "hi")
    await bob.receive_pending()
    events = _events(bob)
    await alice.typing(bob.account)
    await alice.typing(bob.account)                 # within 3 s: not sent again
    clock.now += 3500
    await alice.typing(bob.account, started=False)
    await bob.receive_pending()
    assert [(e.account, e.typing) for e in _drain(events) if isinstance(e, Typing)] == \
        [(alice.account, True), (alice.account, False)]
    assert [e.text for e in bob.history(alice.account, 10)] == ["hi"]
    assert pending_store.all_pending(alice._ctx.store) == []


async def test_disappearing_messages_are_gone_from_every_store(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    """The timer reaches every device; after it ran out the messages and their
    attachments are deleted, and the store files hold not even their ciphertext."""
    clock = Clock()
    alice = await _person(clients, tmp_path, server, "alice_dm", clock)
    bob = await _person(clients, tmp_path, server, "bob_dm", clock)
    await alice.send("@bob_dm", "before the timer")
    await bob.receive_pending()
    laptop = await _second_device(alice, tmp_path, server, "alice_dm_laptop", clock,
                                  clients)
    events = _events(bob)
    await alice.set_timer(bob.account, 60)
    await bob.receive_pending()
    assert await bob.timer(alice.account) == 60
    assert [(e.seconds, e.account) for e in _drain(events)
            if isinstance(e, TimerChanged)] == [(60, alice.account)]
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8" + b"jpeg bytes that must go " * 2000)
    file_id = await alice.send_file(bob.account, photo, "a photo that disappears")
    sent = await bob.send(alice.account, "a reply that disappears too")
    got = await bob.receive_pending()
    [with_file] = [m for m in got if m.id == file_id]
    assert with_file.expires_at is not None and with_file.attachments[0].name == "photo.jpg"
    saved = await bob.download(alice.account, file_id, directory=tmp_path / "bob_dl")
    assert saved.read_bytes() == photo.read_bytes()
    await alice.receive_pending()
    await laptop.receive_pending()
    homes = {bob: tmp_path / "bob_dm", alice: tmp_path / "alice_dm",
             laptop: tmp_path / "alice_dm_laptop"}
    sealed_rows: dict[Client, list[bytes]] = {}
    for device, home in homes.items():
        db = sqlite3.connect(home / DB_FILE)
        sealed_rows[device] = [bytes(r[0]) for r in db.execute("SELECT value FROM history")]
        db.close()
        peer = alice.account if device is bob else bob.account
        assert "a reply that disappears too" in [e.text for e in device.history(peer, 50)]
    clock.now += 61_000
    for device, home in homes.items():
        gone = device.expire_messages()
        peer = alice.account if device is bob else bob.account
        texts = [e.text for e in device.history(peer, 50)]
        assert "a reply that disappears too" not in texts, device
        assert "a photo that disappears" not in texts
        assert "before the timer" in texts or device is laptop
        assert {c.message_id for c in gone} >= {sent.id}
        files = b"".join(p.read_bytes() for p in home.iterdir()
                         if p.name.startswith(DB_FILE))
        remaining = set()
        db = sqlite3.connect(home / DB_FILE)
        remaining = {bytes(r[0]) for r in db.execute("SELECT value FROM history")}
        db.close()
        for row in sealed_rows[device]:
            if row not in remaining:           # an expired line: no copy left anywhere
                assert row not in files and row[20:80] not in files
    assert not saved.exists()                     # the downloaded photo went with it


async def test_an_unknown_kind_is_kept_as_unsupported_and_bad_fields_drop_nothing_else(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    clock = Clock()
    alice = await _person(clients, tmp_path, server, "alice_uk", clock)
    bob = await _person(clients, tmp_path, server, "bob_uk", clock)
    await alice.send("@bob_uk", "hi")
    await bob.receive_pending()
    poll = Content("a" * 32, clock(), "", None, "poll")          # a newer client's kind
    await alice._outbox.send(bob.account, "", poll)
    bad = Content("b" * 32, clock(), "", None, "reaction", target="c" * 32, emoji="👍")
    raw = bad.encode().replace("👍".encode(), b"not an emoji")
    broken = pending_store.PendingMessage(id="b" * 32, to=bob.account, text="",
                                          timestamp=clock(), content=raw)
    pending_store.save(alice._ctx.store, broken)
    with pytest.raises(MalformedMessage):         # refused before it is sealed
        await alice._outbox.deliver(broken)
    assert pending_store.get(alice._ctx.store, broken.id) is None   # and not kept
    await alice.send(bob.account, "after that")
    got = await bob.receive_pending()
    assert [(m.kind, m.text) for m in got] == [("unsupported", ""), ("text", "after that")]
    assert [e.kind for e in bob.history(alice.account, 10)] == \
        ["text", "unsupported", "text"]


async def test_group_attachments_reactions_and_an_admin_only_timer(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    clock = Clock()
    alice = await _person(clients, tmp_path, server, "alice_gr", clock)
    bob = await _person(clients, tmp_path, server, "bob_gr", clock)
    carol = await _person(clients, tmp_path, server, "carol_gr", clock)
    for other in ("@bob_gr", "@carol_gr"):
        await alice.send(other, "hi")
    await bob.receive_pending()
    await carol.receive_pending()
    bob_laptop = await _second_device(bob, tmp_path, server, "bob_gr_laptop", clock,
                                      clients)
    info = await alice.create_group("trip", members=["@bob_gr", "@carol_gr"])
    for member in (bob, bob_laptop, carol):
        await member.receive_pending()
    doc = tmp_path / "itinerary.pdf"
    doc.write_bytes(b"%PDF-1.7 " + bytes(range(256)) * 800)
    file_id = await alice.send_file(info.id, doc, "the plan")
    downloaded: list[Path] = []
    for member in (bob, bob_laptop, carol):
        [got] = [m for m in await member.receive_pending() if m.id == file_id]
        assert got.group == info.id and got.attachments[0].name == "itinerary.pdf"
        saved = await member.download(info.id, file_id,
                                      directory=tmp_path / f"dl_{id(member)}")
        assert saved.read_bytes() == doc.read_bytes()
        downloaded.append(saved)
    # Receipts in a small group go through its mailbox: Alice sees who got it.
    await alice.receive_pending()
    receipts = _line(alice, info.id, file_id).receipts
    assert {bob.account, carol.account} <= set(receipts)
    assert all("delivered" in r for r in receipts.values())
    await carol.mark_read(info.id, [file_id])
    await alice.receive_pending()
    assert "read" in _line(alice, info.id, file_id).receipts[carol.account]
    await bob.react(info.id, file_id, "🎉")
    for member in (alice, carol, bob_laptop):
        await member.receive_pending()
        assert _line(member, info.id, file_id).reactions == {bob.account: "🎉"}
    # Deleted for everyone: gone from every member's history, and the blob from the
    # server (the uploader terminates it), so a kept pointer fetches nothing.
    kept = Pointer.from_json(_line(carol, info.id, file_id).attachments[0])
    await alice.delete_for_everyone(info.id, file_id)
    for member in (bob, bob_laptop, carol):
        await member.receive_pending()
        line = _line(member, info.id, file_id)
        assert line.deleted and line.attachments == [] and line.text == ""
    assert len(downloaded) == 3 and not any(p.exists() for p in downloaded)
    with pytest.raises(ServerRejected) as gone:
        await carol._attachments.download(kept, tmp_path / "too_late")
    assert gone.value.status == 404
    with pytest.raises(NotGroupAdmin):
        await carol.set_timer(info.id, 3600)
    await alice.set_timer(info.id, 3600)
    for member in (bob, carol):
        await member.receive_pending()
        assert await member.timer(info.id) == 3600
    # A non-admin cannot change it through a message's own timer either (review #2):
    # the message keeps its own, the group's stays.
    forged = Content("0f" * 16, clock(), "no timer from me", None, "text", expire_s=30)
    await carol._groups.send(info.id, forged.text, forged)
    await bob.receive_pending()
    assert await bob.timer(info.id) == 3600
    assert _line(bob, info.id, forged.id).expires_at == clock() + 30_000


async def test_a_message_received_live_is_acknowledged_with_a_receipt(
        server: ServerProcess, clients: list[Client], tmp_path: Path) -> None:
    clock = Clock()
    alice = await _person(clients, tmp_path, server, "alice_lv", clock)
    bob = await _person(clients, tmp_path, server, "bob_lv", clock)
    await alice.send("@bob_lv", "hello")
    await bob.receive_pending()
    stream = bob.messages()
    listening = asyncio.create_task(stream.__anext__())
    sent = await alice.send(bob.account, "live")
    assert (await asyncio.wait_for(listening, 30)).text == "live"

    async def delivered() -> None:
        while "delivered" not in _line(alice, bob.account, sent.id).receipts.get(
                bob.account, {}):
            await alice.receive_pending()
    await asyncio.wait_for(delivered(), 30)
    await stream.aclose()
