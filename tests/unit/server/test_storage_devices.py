"""Linked devices in storage: approvals, device listings, provisioning channels — on
every back end (the ``storage`` fixture is parametrised by back end)."""

from __future__ import annotations

import os

import pytest

from tests.unit.server.test_storage import NOW, device, new_account
from veil.server.errors import ChannelNotFound, ChannelUsed, DeviceNotFound, LimitExceeded
from veil.server.storage.base import Storage


async def test_approvals_are_stored_listed_and_served_with_bundles(storage: Storage) -> None:
    account = await new_account(storage, signed_prekey=b"s" * 40,
                                last_resort_kem_prekey=b"l" * 1200)
    assert [(d.device_id, d.approval) for d in await storage.list_devices(account)] == \
        [(1, None)]
    await storage.set_device_approval(account, 1, b"a" * 97)
    await storage.add_device(account, device(2, approval=b"b" * 97, signed_prekey=b"s" * 40,
                                             last_resort_kem_prekey=b"l" * 1200),
                             NOW + 5, max_devices=5, max_prekeys_stored=10)
    listed = await storage.list_devices(account)
    assert [(d.device_id, d.approval, d.created_at) for d in listed] == \
        [(1, b"a" * 97, NOW), (2, b"b" * 97, NOW + 5)]
    bundles = await storage.claim_bundles(account, None)
    assert [(b.device_id, b.approval) for b in bundles] == [(1, b"a" * 97), (2, b"b" * 97)]
    with pytest.raises(DeviceNotFound):
        await storage.set_device_approval(account, 9, b"c" * 97)
    assert await storage.list_devices(os.urandom(16)) == []
    assert await storage.delete_device(account, 2)
    assert [d.device_id for d in await storage.list_devices(account)] == [1]


async def test_provisioning_channel_holds_one_message_read_once(storage: Storage) -> None:
    cid = os.urandom(10)
    await storage.create_provisioning_channel(cid, b"k" * 32, NOW, NOW + 1000, 10)
    with pytest.raises(ChannelUsed):
        await storage.create_provisioning_channel(cid, b"k" * 32, NOW, NOW + 1000, 10)
    found = await storage.get_provisioning_channel(cid, NOW)
    assert found is not None and (found.public_key, found.message) == (b"k" * 32, None)
    assert await storage.take_provisioning_message(cid, NOW) is None      # not yet
    await storage.put_provisioning_message(cid, b"m" * 100, NOW)
    with pytest.raises(ChannelUsed):
        await storage.put_provisioning_message(cid, b"x", NOW)
    assert await storage.take_provisioning_message(cid, NOW) == b"m" * 100
    with pytest.raises(ChannelNotFound):                                 # gone after one read
        await storage.take_provisioning_message(cid, NOW)
    assert await storage.get_provisioning_channel(cid, NOW) is None
    with pytest.raises(ChannelNotFound):
        await storage.put_provisioning_message(cid, b"m", NOW)


async def test_provisioning_channels_expire_and_are_bounded(storage: Storage) -> None:
    old = os.urandom(10)
    await storage.create_provisioning_channel(old, b"k" * 32, NOW, NOW + 1000, 2)
    await storage.create_provisioning_channel(os.urandom(10), b"k" * 32, NOW, NOW + 5000, 2)
    with pytest.raises(LimitExceeded):
        await storage.create_provisioning_channel(os.urandom(10), b"k" * 32, NOW, NOW + 5000, 2)
    assert await storage.get_provisioning_channel(old, NOW + 1000) is None   # expired
    with pytest.raises(ChannelNotFound):
        await storage.put_provisioning_message(old, b"m", NOW + 1000)
    # The expired one no longer counts (and is deleted by the next creation).
    await storage.create_provisioning_channel(os.urandom(10), b"k" * 32, NOW + 1000,
                                              NOW + 6000, 2)
