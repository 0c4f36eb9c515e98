"""The Delivery Service rules with real MLS groups (veil.core.mls), on every backend:
KeyPackage validation, capabilities, epochs, removed members, quotas, retention."""

from __future__ import annotations

import os

import pytest

from tests.unit.server.mls_fixtures import (
    bad_signature,
    join,
    key_package,
    new_group,
    read_cap,
    rollback,
    sha,
    stage_commit,
    write_cap,
)
from tests.unit.server.test_storage import NOW, device, new_account
from veil.core.mls import Group
from veil.server.bus import GroupPosted, InProcessBus, KeyPackagesLow
from veil.server.config import ServerConfig
from veil.server.errors import (
    DuplicateKeyPackage,
    EpochConflict,
    GroupQuotaExceeded,
    InvalidAccessKey,
    InvalidCapability,
    PayloadTooLarge,
    ValidationFailed,
)
from veil.server.services.groups import GroupService
from veil.server.services.key_packages import KeyPackageService, parse_key_packages
from veil.server.storage.base import NextEpoch, Storage

NOW_S = NOW // 1000
DAY = 24 * 3600
CONFIG = ServerConfig(key_package_low_threshold=2)


class Clock:
    def __init__(self) -> None:
        self.ms = NOW

    def __call__(self) -> int:
        return self.ms


# ---- KeyPackage validation ------------------------------------------------------------------
def kp_bytes(name: bytes = b"bob", now: int = NOW_S, **kw: int) -> bytes:
    return key_package(name, now, **kw).key_package.encoded()


def test_a_valid_upload_parses_with_refs_suites_and_lifetimes():
    records = parse_key_packages([kp_bytes(), kp_bytes()], kp_bytes(), now_s=NOW_S,
                                 config=CONFIG)
    assert [r.last_resort for r in records] == [False, False, True]
    assert all(r.cipher_suite == 1 and len(r.ref) == 32 for r in records)
    assert records[0].not_after == NOW_S + 90 * DAY


@pytest.mark.parametrize(("make", "message"), [
    (lambda: bad_signature(kp_bytes()), "key_packages[1]: signature does not verify"),
    (lambda: kp_bytes(now=NOW_S - 100 * DAY), "key_packages[1]: expired"),
    (lambda: kp_bytes(now=NOW_S + 7200), "key_packages[1]: not valid yet"),
    (lambda: kp_bytes(lifetime_s=1000 * DAY),
     "key_packages[1]: lifetime ends more than 400 days from now"),
    (lambda: b"\x00\x01" + os.urandom(100), "key_packages[1]: "),
])
def test_a_bad_key_package_is_refused_naming_the_field(make, message):  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationFailed) as info:
        parse_key_packages([kp_bytes(), make()], None, now_s=NOW_S, config=CONFIG)
    assert info.value.status == 422
    assert info.value.message.startswith(message), info.value.message


def test_upload_level_rules():
    same = kp_bytes()
    with pytest.raises(DuplicateKeyPackage, match=r"key_packages\[1\] appears twice"):
        parse_key_packages([same, same], None, now_s=NOW_S, config=CONFIG)
    with pytest.raises(ValidationFailed, match="no KeyPackage"):
        parse_key_packages([], None, now_s=NOW_S, config=CONFIG)
    with pytest.raises(PayloadTooLarge):
        parse_key_packages([kp_bytes()] * 3, None, now_s=NOW_S,
                           config=ServerConfig(max_key_packages_per_upload=2))
    with pytest.raises(ValidationFailed, match="last_resort: signature does not verify"):
        parse_key_packages([kp_bytes()], bad_signature(kp_bytes()), now_s=NOW_S,
                           config=CONFIG)


async def test_claims_follow_the_prekey_rules_and_notify_once(storage: Storage):
    bus, clock = InProcessBus(), Clock()
    service = KeyPackageService(storage, bus, CONFIG, clock)
    account = await new_account(storage)
    heard: list[object] = []

    class Sink:
        def deliver(self, event: object) -> None:
            heard.append(event)

        def replaced(self) -> None:
            pass

    await bus.subscribe((account, 1), Sink())  # type: ignore[arg-type]
    status = await service.upload(account, 1, [kp_bytes() for _ in range(3)], kp_bytes())
    assert (status.counts.one_time, status.counts.last_resort, status.low) == (3, 1, False)
    with pytest.raises(InvalidAccessKey):
        await service.claim(account, 1, authenticated=False, access_key=b"x" * 16)
    await service.claim(account, 1, authenticated=False, access_key=b"k" * 16)
    assert heard == []
    await service.claim(account, 1, authenticated=True, access_key=None)  # 3 -> 1
    assert heard == [KeyPackagesLow(1)]
    await service.claim(account, 1, authenticated=True, access_key=None)
    (last,) = await service.claim(account, 1, authenticated=True, access_key=None)
    assert last.last_resort and heard == [KeyPackagesLow(1)]  # once
    assert (await service.status(account, 1)).notice() == KeyPackagesLow(0)
    await storage.add_device(account, device(2), NOW, 16, 100)
    assert (await service.status(account, 2)).notice() is None  # never published


# ---- groups -----------------------------------------------------------------------------------
class Fixture:
    def __init__(self, storage: Storage, config: ServerConfig = CONFIG) -> None:
        self.bus = InProcessBus()
        self.clock = Clock()
        self.service = GroupService(storage, self.bus, config, self.clock)

    async def create(self, group: Group) -> None:
        await self.service.create(group.group_id, sha(read_cap(group)), sha(write_cap(group)))

    async def send(self, group: Group, text: bytes) -> int:
        stored = await self.service.post(group.group_id, group.epoch, write_cap(group),
                                         group.encrypt(text))
        return stored.seq


async def read_all(f: Fixture, group: Group, epoch: int, cap: bytes) -> list[bytes]:
    page = await f.service.fetch(group.group_id, epoch, cap, 0, 100)
    return [m.body for m in page.messages]


async def test_members_talk_through_one_stored_copy(storage: Storage):
    f = Fixture(storage)
    alice, bob_kp = new_group(b"alice", NOW_S), key_package(b"bob", NOW_S)
    await f.create(alice)
    staged = stage_commit(alice, NOW_S, add=[bob_kp.key_package.encoded()])
    stored = await f.service.post(alice.group_id, 0, write_cap(rollback(staged)),
                                  staged.commit, NextEpoch(sha(staged.next_read),
                                                           sha(staged.next_write)))
    assert stored.commit and stored.epoch == 0
    assert staged.welcome is not None
    bob = join(staged.welcome, bob_kp, NOW_S)
    seq = await f.send(bob, b"hello alice")
    page = await f.service.fetch(alice.group_id, 1, read_cap(alice), 0, 10)
    assert [m.seq for m in page.messages] == [seq] and not page.epoch_ended
    received = alice.process(page.messages[0].body, now=NOW_S)
    assert received.data == b"hello alice"  # type: ignore[union-attr]


async def test_stale_epochs_and_wrong_capabilities(storage: Storage):
    f = Fixture(storage)
    alice, bob_kp = new_group(b"alice", NOW_S), key_package(b"bob", NOW_S)
    await f.create(alice)
    old_read, old_write = read_cap(alice), write_cap(alice)
    stale_text = alice.encrypt(b"sent at epoch 0")
    staged = stage_commit(alice, NOW_S, add=[bob_kp.key_package.encoded()])
    await f.service.post(alice.group_id, 0, old_write, staged.commit,
                         NextEpoch(sha(staged.next_read), sha(staged.next_write)))
    with pytest.raises(EpochConflict) as info:
        await f.service.post(alice.group_id, 0, old_write, stale_text)
    assert info.value.status == 409 and info.value.details == {"current_epoch": 1}
    with pytest.raises(InvalidCapability):  # epoch 1, with epoch 0's capability
        await f.service.post(alice.group_id, 1, old_write, alice.encrypt(b"x"))
    with pytest.raises(InvalidCapability):
        await f.service.fetch(alice.group_id, 1, old_read, 0, 10)
    with pytest.raises(InvalidCapability):
        await f.service.fetch(alice.group_id, 0, os.urandom(32), 0, 10)
    # The old capability still reads its own epoch, up to the commit that ends it.
    page = await f.service.fetch(alice.group_id, 0, old_read, 0, 10)
    assert page.epoch_ended and page.current_epoch == 1 and page.messages[-1].commit


async def test_the_loser_of_a_commit_race_catches_up_and_retries(storage: Storage):
    f = Fixture(storage)
    alice, bob_kp, carol_kp = (new_group(b"alice", NOW_S), key_package(b"bob", NOW_S),
                               key_package(b"carol", NOW_S))
    await f.create(alice)
    add_bob = stage_commit(alice, NOW_S, add=[bob_kp.key_package.encoded()])
    await f.service.post(alice.group_id, 0, write_cap(rollback(add_bob)), add_bob.commit,
                         NextEpoch(sha(add_bob.next_read), sha(add_bob.next_write)))
    assert add_bob.welcome is not None
    bob = join(add_bob.welcome, bob_kp, NOW_S)
    w1 = write_cap(alice)
    by_alice = stage_commit(alice, NOW_S, update=True)
    by_bob = stage_commit(bob, NOW_S, add=[carol_kp.key_package.encoded()])
    await f.service.post(alice.group_id, 1, w1, by_alice.commit,
                         NextEpoch(sha(by_alice.next_read), sha(by_alice.next_write)))
    with pytest.raises(EpochConflict) as info:
        await f.service.post(alice.group_id, 1, w1, by_bob.commit,
                             NextEpoch(sha(by_bob.next_read), sha(by_bob.next_write)))
    assert info.value.details == {"current_epoch": 2}
    bob = rollback(by_bob)  # fetch, process the winner, retry
    page = await f.service.fetch(alice.group_id, 1, read_cap(bob), 0, 10)
    staged = bob.process(page.messages[-1].body, now=NOW_S)
    bob.merge_staged(staged)  # type: ignore[arg-type]
    assert bob.epoch == 2 and read_cap(bob) == read_cap(alice)
    retry = stage_commit(bob, NOW_S, add=[carol_kp.key_package.encoded()])
    await f.service.post(alice.group_id, 2, write_cap(rollback(retry)), retry.commit,
                         NextEpoch(sha(retry.next_read), sha(retry.next_write)))


async def test_a_removed_member_loses_read_and_write_in_the_removing_commit(storage: Storage):
    f = Fixture(storage)
    alice, bob_kp = new_group(b"alice", NOW_S), key_package(b"bob", NOW_S)
    await f.create(alice)
    add = stage_commit(alice, NOW_S, add=[bob_kp.key_package.encoded()])
    await f.service.post(alice.group_id, 0, write_cap(rollback(add)), add.commit,
                         NextEpoch(sha(add.next_read), sha(add.next_write)))
    assert add.welcome is not None
    bob = join(add.welcome, bob_kp, NOW_S)
    bob_leaf = bob.my_leaf
    remove = stage_commit(alice, NOW_S, remove=[bob_leaf])
    await f.service.post(alice.group_id, 1, write_cap(bob), remove.commit,
                         NextEpoch(sha(remove.next_read), sha(remove.next_write)))
    await f.send(alice, b"after bob left")
    # Bob reads epoch 1 to its end and learns he was removed ...
    page = await f.service.fetch(alice.group_id, 1, read_cap(bob), 0, 10)
    assert page.epoch_ended
    staged = bob.process(page.messages[-1].body, now=NOW_S)
    bob.merge_staged(staged)  # type: ignore[arg-type]
    assert not bob.active
    # ... and has no capability of epoch 2: everything he can present is refused.
    for cap in (read_cap(rollback(remove)), write_cap(rollback(remove)), os.urandom(32)):
        with pytest.raises(InvalidCapability):
            await f.service.fetch(alice.group_id, 2, cap, 0, 10)
        with pytest.raises(InvalidCapability):
            await f.service.post(alice.group_id, 2, cap, alice.encrypt(b"x"))
    assert len(await read_all(f, alice, 2, read_cap(alice))) == 1


async def test_only_private_messages_of_the_group_and_epoch(storage: Storage):
    f = Fixture(storage)
    alice = new_group(b"alice", NOW_S)
    await f.create(alice)
    other = new_group(b"other", NOW_S)
    staged = stage_commit(alice, NOW_S, update=True)
    cap = write_cap(rollback(staged))
    nxt = NextEpoch(sha(staged.next_read), sha(staged.next_write))
    public = Group.create(1, alice.members()[0][1], now=NOW_S, group_id=alice.group_id)
    cases = [
        (other.encrypt(b"x"), None, "belongs to another group"),
        (public.commit(now=NOW_S, update=True).commit, nxt, "must be an MLS PrivateMessage"),
        (staged.commit, None, "a commit goes to /commits"),
        (rollback(staged).encrypt(b"x"), nxt, "commits go to /commits"),
        (b"\x00" * 40, None, "not an MLS message"),
    ]
    for message, next_epoch, text in cases:
        with pytest.raises(ValidationFailed, match=text):
            await f.service.post(alice.group_id, 0, cap, message, next_epoch)
    alice_later = stage_commit(alice, NOW_S, update=True)  # epoch 1 -> 2, never posted
    with pytest.raises(ValidationFailed, match="is of epoch 1, not 0"):
        await f.service.post(alice.group_id, 0, cap, alice_later.commit,
                             NextEpoch(sha(alice_later.next_read), sha(alice_later.next_write)))


async def test_quotas_refuse_with_a_code_and_leave_room_for_a_commit(storage: Storage):
    f = Fixture(storage, ServerConfig(max_group_messages=3))
    alice = new_group(b"alice", NOW_S)
    await f.create(alice)
    for i in range(3):
        await f.send(alice, b"message %d" % i)
    with pytest.raises(GroupQuotaExceeded) as info:
        await f.send(alice, b"one too many")
    assert info.value.status == 429 and info.value.details == {"limit": "messages"}
    staged = stage_commit(alice, NOW_S, update=True)
    await f.service.post(alice.group_id, 0, write_cap(rollback(staged)), staged.commit,
                         NextEpoch(sha(staged.next_read), sha(staged.next_write)))
    small = Fixture(storage, ServerConfig(max_group_bytes=1000))
    bob = new_group(b"bob", NOW_S)
    await small.create(bob)
    with pytest.raises(GroupQuotaExceeded, match="bytes"):
        for _ in range(10):
            await small.send(bob, os.urandom(200))
    with pytest.raises(PayloadTooLarge):
        await Fixture(storage, ServerConfig(max_group_message_bytes=100)).send(
            bob, os.urandom(200))


async def test_retention_through_the_service(storage: Storage):
    f = Fixture(storage, ServerConfig(group_message_ttl_s=30 * DAY))
    alice = new_group(b"alice", NOW_S)
    await f.create(alice)
    await f.send(alice, b"old")
    f.clock.ms += 31 * DAY * 1000
    await f.send(alice, b"new")
    report = await f.service.expire()
    assert report.group_messages == 1
    page = await f.service.fetch(alice.group_id, 0, read_cap(alice), 0, 10)
    assert [m.seq for m in page.messages] == [2]


async def test_posts_are_published_on_the_bus_once(storage: Storage):
    f = Fixture(storage)
    alice = new_group(b"alice", NOW_S)
    await f.create(alice)
    got: list[GroupPosted] = []

    class Sink:
        def deliver_group(self, event: GroupPosted) -> None:
            got.append(event)

    sinks = [Sink() for _ in range(3)]
    for sink in sinks:
        f.bus.subscribe_group(alice.group_id, sink)
    await f.send(alice, b"to all")
    assert len(got) == 3 and len({id(e) for e in got}) == 1  # one event, three sinks
    for sink in sinks:
        f.bus.unsubscribe_group(alice.group_id, sink)
    assert f.bus.group_subscribers(alice.group_id) == 0


async def test_the_retention_job_runs_at_once_and_keeps_running_after_a_failure():
    import asyncio

    from veil.server.errors import StorageError
    from veil.server.services.groups import run_expiry
    from veil.server.storage.base import ExpiryReport

    calls: list[int] = []
    ran_twice = asyncio.Event()

    class Groups:
        async def expire(self) -> ExpiryReport:
            calls.append(1)
            if len(calls) == 1:
                raise StorageError("the database is away")
            ran_twice.set()
            return ExpiryReport(1, 0, 0, 0)

    job = asyncio.create_task(run_expiry(Groups(), 0.001))  # type: ignore[arg-type]
    await asyncio.wait_for(ran_twice.wait(), 10)
    job.cancel()
    assert len(calls) >= 2
