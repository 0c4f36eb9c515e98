"""Group credentials and metadata (veil.client.group_store), without a server."""

from __future__ import annotations

import os

from veil.client import group_store as gs
from veil.core import keys
from veil.core.mls import Credential
from veil.core.mls.crypto import get_suite


def test_a_credential_binds_account_device_and_signature_key() -> None:
    identity = keys.IdentityKeyPair.generate()
    account = os.urandom(16).hex()
    _, signature_key = get_suite(1).generate_signature_key_pair()
    credential = gs.make_credential(identity, account, 3, signature_key)
    member = gs.parse_credential(credential, signature_key)
    assert member is not None and (member.account, member.device) == (account, 3)
    assert member.identity.to_bytes() == identity.public.to_bytes()
    assert gs.check_credential(credential, signature_key, None)
    # Another signature key, another account, another identity: refused.
    _, other_key = get_suite(1).generate_signature_key_pair()
    assert not gs.check_credential(credential, other_key, None)
    raw = bytearray(credential.identity)
    raw[1] ^= 1                                      # claim another account
    assert not gs.check_credential(Credential.basic(bytes(raw)), signature_key, None)
    forged = gs.make_credential(keys.IdentityKeyPair.generate(), account, 3, signature_key)
    assert gs.check_credential(forged, signature_key, None)        # valid, but ...
    assert gs.parse_credential(forged, signature_key).identity != member.identity  # type: ignore[union-attr]
    assert not gs.check_credential(Credential.basic(b"alice"), signature_key, None)
    # A leaf may not change who it is.
    assert not gs.check_credential(credential, signature_key, forged)


def test_metadata_round_trip_and_malformed() -> None:
    meta = gs.Metadata("team", None, (os.urandom(16).hex(),))
    assert gs.Metadata.of([meta.extension()]) == meta
    assert gs.Metadata.of([]) is None
    bad = gs.Extension(gs.META_EXTENSION, b'{"name": 1, "admins": []}')
    assert gs.Metadata.of([bad]) is None
    assert gs.Metadata.of([gs.Extension(gs.META_EXTENSION, b"[" * 10000)]) is None


def test_group_content_carries_its_sequence_number_and_older_content_has_none() -> None:
    import pytest

    from veil.client.content import Content
    from veil.core.errors import MalformedMessage

    numbered = Content("ab" * 16, 5, "hi", certificate=b"c", number=7)
    assert b'"n":7' in numbered.encode()
    assert Content.decode(numbered.encode()) == numbered
    old = b'{"v":1,"id":"' + b"ab" * 16 + b'","ts":5,"kind":"text","text":"hi"}'
    assert Content.decode(old).number is None
    for bad in (b'0', b'-1', b'1.5', b'"1"', b'true', str(1 << 53).encode()):
        with pytest.raises(MalformedMessage):
            Content.decode(old[:-1] + b',"n":' + bad + b"}")


def test_records_of_older_versions_still_decode() -> None:
    import msgspec

    rec = msgspec.json.decode(b'{"id":"ab","name":"g","epoch":3,"cursor":9}',
                              type=gs.GroupRecord)
    assert (rec.sent, rec.senders, rec.stalled) == (0, {}, -1)
    adding = gs.Adding(op="add", key_packages=[("cd" * 16, b"\x00\x01kp")])
    assert msgspec.json.decode(msgspec.json.encode(adding), type=gs.Adding) == adding


def test_a_commit_restarts_the_count_of_devices_it_adds_or_removes() -> None:
    from veil.client.group_core import _counted

    def member(account: str, device: int) -> gs.Member:
        return gs.Member(account, device, identity)

    identity = keys.IdentityKeyPair.generate().public
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    before = {0: member(a, 1), 1: member(b, 1), 2: member(c, 1)}
    after = {0: member(a, 1), 2: member(b, 1), 3: member(c, 2)}   # b moved, c re-added
    senders = {f"{a}/1": 4, f"{b}/1": 9, f"{c}/1": 2}
    assert _counted(senders, before, after) == {f"{a}/1": 4}


async def test_a_queue_without_messages_never_holds_up_receiving() -> None:
    from veil.client.events import (
        EventHub,
        GroupStalled,
        IncomingMessage,
        MessageReceived,
    )

    hub = EventHub(size=2)
    quiet = hub.add(messages=False)
    message = MessageReceived(IncomingMessage("id", "a" * 32, None, 1, "t", 1), "a" * 32)
    for _ in range(5):                   # more than the queue holds: nothing waits
        await hub.emit_message(message)
    hub.emit(GroupStalled("g" * 64, 3, "commit_withheld"))
    assert EventHub.drain(quiet) == [GroupStalled("g" * 64, 3, "commit_withheld")]
    hub.remove(quiet)
    assert hub.subscribers == 0
