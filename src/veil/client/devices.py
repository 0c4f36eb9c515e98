"""This account's own devices: names, approvals, the device list, removing one, and
the "self" contact that syncs to the other devices go through (docs/devices.md).

Device names are user data: they stay in the encrypted local stores (and inside the
end-to-end encrypted provisioning message), never at the server, which knows a device
by its id, registration id, link time and approval only. A device knows the names of
itself, of the devices it approved, and of those its approver knew.

The account's other devices are kept as a contact under the account's own id (the
sessions with them are ordinary sessions), verified with this device's own identity:
the directory refuses a bundle of the account that presents another identity or lacks
an approval, as for any contact. :func:`refresh` brings that contact in line with the
server's device list, approvals checked.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from veil.client import contacts, sessions
from veil.client.device import Context
from veil.client.errors import ClientError, CorruptStore, ServerRejected
from veil.client.records import Contact, SelfRecord
from veil.client.store import Store
from veil.core import devices as core_devices
from veil.core import keys
from veil.core.errors import CoreError
from veil.protocol import requests as rq
from veil.protocol import responses as rs

log = logging.getLogger("veil.client")
KIND = "own_device"
_APPROVAL = ("self", "approval")            # this device's approval, as signed
_APPROVAL_SENT = ("self", "approval_sent")  # the server holds it


@dataclass
class OwnDevice:
    """What this device keeps about a device of its account (encrypted, local)."""

    device_id: int
    name: str | None = None
    linked_at: int | None = None        # ms, when it was approved (None: not known here)
    last_seen: int | None = None        # ms, last message from it received here

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> OwnDevice:
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError):
            raise CorruptStore("stored device record is damaged") from None


@dataclass(frozen=True)
class DeviceInfo:
    """One device of this account, for ``Client.devices()`` (``veil devices``)."""

    device_id: int
    name: str | None
    linked_at: int | None          # from the approval (or the server, for legacy ones)
    last_seen: int | None          # by this device (None: never heard from it here)
    current: bool                  # this device
    approved: bool                 # its approval verifies (False: legacy device 1)


def get(store: Store, device_id: int) -> OwnDevice | None:
    raw = store.get(KIND, str(device_id))
    return None if raw is None else OwnDevice.decode(raw)


def put(store: Store, device: OwnDevice) -> None:
    store.put(KIND, str(device.device_id), device.encode())


def every(store: Store) -> list[OwnDevice]:
    return sorted((OwnDevice.decode(raw) for raw in store.values(KIND)),
                  key=lambda d: d.device_id)


def self_contact(store: Store, me: SelfRecord, identity: keys.IdentityPublicKey) -> Contact:
    """The account's other devices as a contact (created verified on first use)."""
    contact = contacts.get(store, me.account)
    if contact is None:
        contact = Contact(me.account, me.username, identity.to_bytes(), verified=True)
        contacts.save(store, contact)
    return contact


def note_own_device(store: Store, me: SelfRecord, identity: keys.IdentityPublicKey,
                    device: int, now: int) -> None:
    """Inside a receive transaction: a message came from our own ``device``."""
    contact = self_contact(store, me, identity)
    if device != me.device_id and device not in contact.devices:
        contact.devices = sorted({*contact.devices, device})
        contact.linked_devices = sorted({*contact.linked_devices, device})
        contacts.save(store, contact)
    record = get(store, device) or OwnDevice(device)
    record.last_seen = now
    put(store, record)


def remember_approved(store: Store, me: SelfRecord, identity: keys.IdentityPublicKey,
                      device: OwnDevice) -> None:
    """After approving ``device``: it is one of ours; syncs go to it."""
    with store.transaction():
        put(store, device)
        contact = self_contact(store, me, identity)
        contact.devices = sorted({*contact.devices, device.device_id})
        contact.linked_devices = sorted({*contact.linked_devices, device.device_id})
        contacts.save(store, contact)


def keep_own_approval(store: Store, approval: bytes, sent: bool) -> None:
    with store.transaction():
        store.put(*_APPROVAL, approval)
        if sent:
            store.put(*_APPROVAL_SENT, b"1")


class Devices:
    """The device list and its maintenance, over the server API."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def upload_own_approval(self) -> None:
        """Give the server this device's approval if it does not hold it yet (a first
        device signs its own after registering; older homes do it on the next
        connect)."""
        store, me = self._ctx.store, self._ctx.device.record
        if store.get(*_APPROVAL_SENT) is not None:
            return
        raw = store.get(*_APPROVAL)
        if raw is None:
            raw = core_devices.DeviceApproval.sign(
                self._ctx.identity, bytes.fromhex(me.account), me.device_id,
                me.registration_id, self._ctx.clock()).to_bytes()
            keep_own_approval(store, raw, sent=False)
        await self._ctx.api.request("PUT", "/v1/accounts/me/approval",
                                    rq.DeviceApprovalUpload(approval=raw))
        keep_own_approval(store, raw, sent=True)

    async def upload_own_approval_quietly(self) -> None:
        try:
            await self.upload_own_approval()
        except ClientError as exc:
            log.warning("could not give the server this device's approval: %s", exc.code)

    async def server_list(self) -> list[rs.DeviceEntry]:
        return (await self._ctx.api.call("GET", "/v1/accounts/me/devices",
                                         rs.DeviceList)).devices

    async def refresh(self) -> list[DeviceInfo]:
        """The server's device list, each approval checked against our identity; the
        approved other devices become the ones syncs go to."""
        ctx, store, me = self._ctx, self._ctx.store, self._ctx.device.record
        identity = ctx.identity.public
        listed = await self.server_list()
        out: list[DeviceInfo] = []
        approved: set[int] = set()
        for entry in listed:
            raw = None if not isinstance(entry.approval, bytes) else entry.approval
            try:
                checked = core_devices.check_device(identity, bytes.fromhex(me.account),
                                                    entry.device_id, entry.registration_id,
                                                    raw)
            except CoreError:
                log.warning("device %d of this account has no valid approval; ignored",
                            entry.device_id)
                continue
            approved.add(entry.device_id)
            local = get(store, entry.device_id) or OwnDevice(entry.device_id)
            linked_at = checked.approved_at if checked is not None else entry.created_at
            out.append(DeviceInfo(entry.device_id, local.name, local.linked_at or linked_at,
                                  local.last_seen, entry.device_id == me.device_id,
                                  checked is not None))
        with store.transaction():
            contact = self_contact(store, me, identity)
            others = sorted(approved - {me.device_id})
            gone = set(contact.devices) - set(others)
            for device in gone:
                sessions.delete(store, me.account, device)
            if others != contact.devices:
                contact.devices = others
                contact.linked_devices = sorted(set(contact.linked_devices) | set(others))
                contacts.save(store, contact)
        return out

    async def refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except ClientError as exc:
            log.warning("could not refresh this account's device list: %s", exc.code)

    async def remove(self, device_id: int) -> None:
        """Unlink one of this account's devices (this one too, if others remain)."""
        ctx, store, me = self._ctx, self._ctx.store, self._ctx.device.record
        try:
            await ctx.api.request("DELETE", f"/v1/accounts/me/devices/{device_id}")
        except ServerRejected as exc:
            if exc.server_code == "device_not_found":
                raise ClientError(f"this account has no device {device_id}") from None
            raise
        with store.transaction():
            store.delete(KIND, str(device_id))
            sessions.delete(store, me.account, device_id)
            contact = self_contact(store, me, ctx.identity.public)
            if device_id in contact.devices:
                contact.devices = [d for d in contact.devices if d != device_id]
                contacts.save(store, contact)

__all__ = [
    "KIND",
    "DeviceInfo",
    "Devices",
    "OwnDevice",
    "every",
    "note_own_device",
    "remember_approved",
    "self_contact",
]
