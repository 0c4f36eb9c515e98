"""Linked devices: approvals, linking a device, listing and removing devices, and the
anonymous provisioning channels the link runs over (docs/devices.md).

The server never sees what the two devices exchange: a provisioning channel holds the
new device's ephemeral public key and one opaque message for it, lives
``provisioning_ttl_s`` and goes after one read. A new device joins its account with
``link``: the approval an existing device signed for it (carried to it inside the
provisioning message) is its authorisation, checked here under the account's identity
— contacts check it again, so a server that skips this check gains nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from veil.core.devices import DeviceApproval
from veil.core.errors import CoreError
from veil.core.keys import IdentityPublicKey
from veil.core.provisioning import CHANNEL_ID_LEN
from veil.server.bus import Bus, DeviceRemoved
from veil.server.config import ServerConfig
from veil.server.encoding import log_id
from veil.server.errors import (
    AccountNotFound,
    ChannelNotFound,
    DeviceIdTaken,
    DeviceNotFound,
    InvalidApproval,
    PayloadTooLarge,
    ValidationFailed,
)
from veil.server.services.accounts import AccountService, hash_token
from veil.server.services.keys import PreKeyUpload, validate_prekey_upload_off_loop
from veil.server.storage.base import LinkedDevice, NewDevice, ProvisioningChannel, Storage

log = logging.getLogger("veil.server.devices")
# How far an approval's time may be from the server's clock beyond the channel's life
# (clocks of phones and laptops drift).
CLOCK_SKEW_MS = 5 * 60 * 1000
# A waiting reader looks at the database at least this often, so a message posted
# through another server node is seen too.
_POLL_S = 1.0


@dataclass(frozen=True)
class DeviceLink:
    account_id: bytes
    device_id: int
    registration_id: int
    identity_key: bytes
    token: bytes
    approval: bytes
    prekeys: PreKeyUpload


@dataclass(frozen=True)
class OpenedChannel:
    channel_id: bytes
    expires_at: int


def _approval(raw: bytes) -> DeviceApproval:
    try:
        return DeviceApproval.from_bytes(raw)
    except CoreError:
        raise InvalidApproval("the approval is not a device approval") from None


class AuditRecorder(Protocol):
    """The audit log as this service uses it (veil.server.protection.audit)."""

    def record(self, kind: str, **fields: Any) -> None: ...

    def keyed(self, value: str | bytes) -> str: ...


class DeviceService:
    def __init__(self, storage: Storage, bus: Bus, accounts: AccountService,
                 config: ServerConfig, clock_ms: Callable[[], int],
                 audit: AuditRecorder | None = None) -> None:
        self._storage = storage
        self._audit = audit  # device revocations are audited (issue 13 §5)
        self._bus = bus
        self._accounts = accounts
        self._config = config
        self._clock_ms = clock_ms
        self._posted: dict[bytes, asyncio.Event] = {}   # readers waiting on this node

    # --- approvals and devices ---------------------------------------------------------
    async def set_approval(self, account_id: bytes, device_id: int, registration_id: int,
                           identity_key: bytes, raw: bytes) -> None:
        """A device's approval of itself (a first device, after registering)."""
        approval = _approval(raw)
        try:
            approval.verify(IdentityPublicKey.from_bytes(identity_key), account_id,
                            device_id, registration_id)
        except CoreError:
            raise InvalidApproval("the approval does not verify for this device") from None
        await self._storage.set_device_approval(account_id, device_id, raw)

    async def link(self, link: DeviceLink) -> int:
        """Add the new device with its prekeys, if an existing device approved it."""
        devices = await self._storage.list_devices(link.account_id)
        if not devices:
            raise AccountNotFound("no such account")
        first = await self._storage.get_device(link.account_id, devices[0].device_id)
        if first is None or first.identity_key != link.identity_key:
            raise InvalidApproval("a linked device uses its account's identity key")
        if link.device_id in {d.device_id for d in devices}:
            raise DeviceIdTaken("the account has a device with that id; approve again")
        approval = _approval(link.approval)
        try:
            approval.verify(IdentityPublicKey.from_bytes(first.identity_key),
                            link.account_id, link.device_id, link.registration_id)
        except CoreError:
            raise InvalidApproval("the approval is not the account identity's for this "
                                  "device") from None
        window = self._config.provisioning_ttl_s * 1000 + CLOCK_SKEW_MS
        if abs(self._clock_ms() - approval.approved_at) > window:
            raise InvalidApproval("the approval is too old (or from a clock far off); "
                                  "approve the device again")
        if link.prekeys.signed_prekey is None or link.prekeys.last_resort_kem_prekey is None:
            raise ValidationFailed("a linked device brings its signed and last-resort "
                                   "prekeys")
        await validate_prekey_upload_off_loop(link.prekeys, identity_key=link.identity_key,
                                              config=self._config)
        await self._storage.add_device(link.account_id, NewDevice(
            device_id=link.device_id, registration_id=link.registration_id,
            token_hash=hash_token(link.token), identity_key=link.identity_key,
            signed_prekey=link.prekeys.signed_prekey,
            last_resort_kem_prekey=link.prekeys.last_resort_kem_prekey,
            one_time_prekeys=link.prekeys.one_time_prekeys,
            one_time_kem_prekeys=link.prekeys.one_time_kem_prekeys,
            approval=link.approval,
        ), self._clock_ms(), self._config.max_devices_per_account,
            self._config.max_prekeys_stored)
        log.info("linked device %d to account %s", link.device_id, log_id(link.account_id))
        return link.device_id

    async def devices(self, account_id: bytes) -> list[LinkedDevice]:
        return await self._storage.list_devices(account_id)

    async def remove(self, account_id: bytes, device_id: int) -> None:
        """Unlink: credentials, keys and queue go at once, and its socket is closed."""
        if not await self._storage.delete_device(account_id, device_id):
            raise DeviceNotFound("the account has no device with that id")
        self._accounts.forget(account_id, device_id)
        self._bus.publish((account_id, device_id), DeviceRemoved())
        if self._audit is not None:  # the account only as the audit log's keyed hash
            self._audit.record("device.revoked", account=self._audit.keyed(account_id),
                               device_id=device_id)
        log.info("removed device %d of account %s", device_id, log_id(account_id))

    # --- provisioning channels -----------------------------------------------------------
    async def open_channel(self, public_key: bytes) -> OpenedChannel:
        now = self._clock_ms()
        expires = now + self._config.provisioning_ttl_s * 1000
        channel_id = os.urandom(CHANNEL_ID_LEN)
        await self._storage.create_provisioning_channel(
            channel_id, public_key, now, expires, self._config.max_provisioning_channels)
        return OpenedChannel(channel_id, expires)

    async def channel(self, channel_id: bytes) -> ProvisioningChannel:
        found = await self._storage.get_provisioning_channel(channel_id, self._clock_ms())
        if found is None:
            raise ChannelNotFound("no such provisioning channel (expired or used)")
        return found

    async def post(self, channel_id: bytes, message: bytes) -> None:
        limit = self._config.max_provisioning_bytes
        if len(message) > limit:
            raise PayloadTooLarge(f"a provisioning message is at most {limit} bytes")
        await self._storage.put_provisioning_message(channel_id, message, self._clock_ms())
        waiting = self._posted.pop(channel_id, None)
        if waiting is not None:
            waiting.set()

    async def take(self, channel_id: bytes, wait_s: int) -> bytes | None:
        """The message (the channel goes with it), waiting up to ``wait_s`` for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait_s, self._config.provisioning_wait_max_s)
        while True:
            message = await self._storage.take_provisioning_message(channel_id,
                                                                    self._clock_ms())
            left = deadline - loop.time()
            if message is not None or left <= 0:
                return message
            posted = self._posted.setdefault(channel_id, asyncio.Event())
            try:
                await asyncio.wait_for(posted.wait(), min(left, _POLL_S))
            except TimeoutError:
                pass
            finally:
                if self._posted.get(channel_id) is posted and posted.is_set():
                    del self._posted[channel_id]
            if len(self._posted) > self._config.max_provisioning_channels:
                self._posted.clear()        # bounded: stale waiters are re-created

__all__ = [
    "DeviceLink",
    "DeviceService",
    "OpenedChannel",
]
