"""Per-record prekeys (outside review, issue 8 item 9) and the migration of old homes.

The attack of item 9: claim bundles in bulk until the device holds 10,000 one-time keys
of each kind, so that one record of ~14 MB is read and parsed on every envelope. Here
the cost is shown by what is read: nothing for a ratchet message, the same few
records for an initial message whatever the stock (bench/client_prekeys.py times it).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from tests.unit.client.helpers import DAY_MS, FakeClock, initial_message, offline_client, seal_from
from veil.client import Client, prekey_store, sessions
from veil.client.store import Store
from veil.core import keys, prekeys
from veil.core.errors import DuplicateMessage
from veil.protocol import to_builtins
from veil.protocol.requests import PrekeyUpload

DATA = Path(__file__).parent / "data"


def test_store_tables_keep_the_cores_contract(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.create(tmp_path, None)
    table = prekey_store.StoreTable(store, "opk")
    with store.transaction():
        for key_id in (7, 3, 9, 1):
            table[key_id] = bytes([key_id]) * 3
    assert list(table) == [7, 3, 9, 1]                   # oldest first, not by id
    assert len(table) == 4 and table[9] == b"\x09" * 3 and 5 not in table
    table[3] = b"again"                                  # an update keeps its place
    assert list(table) == [7, 3, 9, 1]
    with store.transaction():
        assert table.pop(7) == b"\x07" * 3
        assert table.pop(7, None) is None
    with pytest.raises(KeyError):
        del table[7]
    assert list(table) == [3, 9, 1] and len(table) == 3
    # The core's cap: the oldest go first.
    store.close()
    monkeypatch.setattr(prekeys, "MAX_ONE_TIME", 5)
    identity = keys.IdentityKeyPair.generate()
    store = Store.create(tmp_path / "capped", None)
    with store.transaction():
        pre = prekeys.PreKeys.generate(identity, now_ms=0, one_time=4,
                                       tables=prekey_store.tables(store))
        first = list(pre.one_time)
        pre.add_one_time(identity, 3)
    assert len(pre.one_time) == 5 == len(pre.one_time_kem)
    assert list(pre.one_time)[:2] == first[2:]
    store.close()


def _reads(client: Client) -> list[str]:
    """Record the kinds the store is asked for (a hook, not a mock: reads still happen)."""
    seen: list[str] = []
    real_get, real_scan = client._store.get, client._store.scan

    def get(kind: str, name: str) -> bytes | None:
        seen.append(kind if kind != "self" else f"self/{name}")
        return real_get(kind, name)

    def scan(kind: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        seen.append(f"scan {kind}")
        return real_scan(kind, after, limit)

    client._store.get = get             # type: ignore[method-assign]
    client._store.scan = scan           # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("stock", [10, 300])
def test_receiving_reads_the_same_whatever_the_stock(tmp_path: Path, stock: int) -> None:
    clock = FakeClock()
    bob = offline_client(tmp_path / "bob", clock=clock, one_time=stock)
    alice = keys.IdentityKeyPair.generate()
    with bob.client._store.transaction():
        bundle = prekey_store.load(bob.client._store).bundle()
    held, first = initial_message(alice, bundle, "first", clock())
    account = bytes(range(16))
    reads = _reads(bob.client)
    message, _ = bob.client._decrypt_and_store(
        seal_from(alice, account, bob.server_key, bob.client.identity, first, clock() + DAY_MS),
        clock())
    assert message is not None and message.text == "first"
    initial_reads = sorted(reads)
    reads.clear()
    # The same session's next message is no initial message... until Bob answers, it is
    # one (the initiator repeats the header): it names the held session and loads nothing.
    nxt = held.encrypt(b'{"v":1,"id":"' + b"e" * 32 + b'","ts":1,"kind":"text","text":"x"}')
    bob.client._decrypt_and_store(
        seal_from(alice, account, bob.server_key, bob.client.identity, nxt, clock() + DAY_MS),
        clock())
    assert not any(k.startswith(("self/prekeys", "opk", "pqopk", "scan")) for k in reads)
    # An initial message reads the small record and the two one-time keys it names:
    # never a scan of the stock.
    assert initial_reads.count("self/prekeys") == 1
    assert not any(k.startswith("scan") for k in initial_reads)
    assert initial_reads.count("opk") <= 2 and initial_reads.count("pqopk") <= 2
    with bob.client._store.transaction():
        left = prekey_store.load(bob.client._store)
        assert len(left.one_time) == stock - 1 == len(left.one_time_kem)
    assert len(bob.client._store.get("self", "prekeys") or b"") < 8192


def test_replay_memory_is_kept_per_record(tmp_path: Path) -> None:
    clock = FakeClock()
    bob = offline_client(tmp_path / "bob", clock=clock, one_time=0)  # last resort only
    alice = keys.IdentityKeyPair.generate()
    with bob.client._store.transaction():
        bundle = prekey_store.load(bob.client._store).bundle()
    assert bundle.one_time_prekey is None
    _, first = initial_message(alice, bundle, "no one-time keys", clock())
    envelope = seal_from(alice, bytes(16), bob.server_key, bob.client.identity, first,
                         clock() + DAY_MS)
    assert bob.client._decrypt_and_store(envelope, clock())[0] is not None
    sessions.delete(bob.client._store, bytes(16).hex(), 1)   # even without the session
    with pytest.raises(DuplicateMessage):
        bob.client._decrypt_and_store(envelope, clock())
    spk = bundle.signed_prekey.key_id
    assert bob.client._store.count(f"replay.{spk}") == 1


async def test_a_pre_review_home_is_migrated(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    facts = json.loads((DATA / "v1_home.json").read_text())
    home = tmp_path / "home"
    shutil.copytree(DATA / "v1_home", home)
    bob = await Client.open(home, passphrase="pw", clock=FakeClock())
    try:
        store = bob._store
        assert store.count("opk") == facts["one_time_left"] == store.count("pqopk")
        raw = store.get("self", "prekeys")
        assert raw is not None and raw[0] == 2 and len(raw) < 8192
        assert [e.text for e in bob.history(facts["alice"])] == ["hello from v1", "hi alice"]
        # Alice writes again with a bundle from the migrated keys; Bob's stored session
        # with her is version 1 (unreadable now): it is set aside, a new one set up.
        with store.transaction():
            bundle = prekey_store.load(store).bundle()
        alice = keys.IdentityKeyPair.from_bytes(bytes.fromhex(facts["alice_identity"]))
        from veil.core.sealed import ServerKey
        server_key = ServerKey.from_bytes(bytes.fromhex(facts["server_key"]))
        now = bob._clock()
        _, first = initial_message(alice, bundle, "after the upgrade", now)
        caplog.set_level(logging.WARNING, "veil.client")
        message, _ = bob._decrypt_and_store(
            seal_from(alice, bytes.fromhex(facts["alice"]), server_key, bob.identity, first,
                      now + DAY_MS), now)
        assert message is not None and message.text == "after the upgrade"
        assert "set aside a stored session" in caplog.text
        assert facts["alice"] not in caplog.text and facts["alice"][:8] not in caplog.text
        assert store.count("opk") == facts["one_time_left"] - 1
    finally:
        await bob.close()
    again = await Client.open(home, passphrase="pw")     # migrated once, verifies
    await again.close()


def test_rotation_is_remembered_until_uploaded(tmp_path: Path) -> None:
    clock = FakeClock()
    bob = offline_client(tmp_path / "bob", clock=clock)
    store = bob.client._store
    clock.advance(7 * DAY_MS)
    with store.transaction():
        pre = prekey_store.load(store)
        rotation = pre.maintain(bob.client._identity, now_ms=clock())
        prekey_store.save(store, pre)
        prekey_store.remember_rotation(store, rotation)
    body = prekey_store.pending_upload(store)
    assert body is not None and set(to_builtins(body)) == {"signed_prekey",
                                                           "last_resort_kem_prekey"}
    prekey_store.uploaded(store, PrekeyUpload(signed_prekey=b"an older body"))
    assert prekey_store.pending_upload(store) == body        # not the one uploaded: kept
    prekey_store.uploaded(store, body)
    assert prekey_store.pending_upload(store) is None
