"""The SQLite side of linked devices: device listings, approvals, provisioning channels.

A mixin of :class:`veil.server.storage.sqlite.SQLiteStorage` (docs/devices.md). Every
call runs on the database thread, which serialises them, so each read-check-write here
is atomic.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from veil.server.errors import ChannelNotFound, ChannelUsed, DeviceNotFound, LimitExceeded
from veil.server.storage.base import LinkedDevice, ProvisioningChannel

T = TypeVar("T")


class SQLiteDevicesStore:
    """storage/base.py has the contract."""

    if TYPE_CHECKING:
        async def _call(
            self, fn: Callable[[sqlite3.Connection], T], *, savepoint: bool = True
        ) -> T: ...

    async def list_devices(self, account_id: bytes) -> list[LinkedDevice]:
        def fn(conn: sqlite3.Connection) -> list[LinkedDevice]:
            return [LinkedDevice(dev, reg, created, None if approval is None else bytes(approval))
                    for dev, reg, created, approval in conn.execute(
                        "SELECT device_id, registration_id, created_at, approval FROM devices "
                        "WHERE account_id = ? ORDER BY device_id", (account_id,))]

        return await self._call(fn)

    async def set_device_approval(self, account_id: bytes, device_id: int,
                                  approval: bytes) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE devices SET approval = ? WHERE account_id = ? AND device_id = ?",
                (approval, account_id, device_id))
            if cur.rowcount != 1:
                raise DeviceNotFound("no such device")

        await self._call(fn)

    async def create_provisioning_channel(
        self, channel_id: bytes, public_key: bytes, now_ms: int, expires_at_ms: int,
        max_channels: int,
    ) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM provisioning_channels WHERE expires_at <= ?", (now_ms,))
            (count,) = conn.execute("SELECT COUNT(*) FROM provisioning_channels").fetchone()
            if count >= max_channels:
                raise LimitExceeded("too many devices are being linked right now; try again "
                                    "in a few minutes")
            try:
                conn.execute(
                    "INSERT INTO provisioning_channels (id, public_key, message, created_at, "
                    "expires_at) VALUES (?, ?, NULL, ?, ?)",
                    (channel_id, public_key, now_ms, expires_at_ms))
            except sqlite3.IntegrityError as exc:
                raise ChannelUsed("that provisioning channel id is in use") from exc

        await self._call(fn)

    async def get_provisioning_channel(
        self, channel_id: bytes, now_ms: int
    ) -> ProvisioningChannel | None:
        def fn(conn: sqlite3.Connection) -> ProvisioningChannel | None:
            row = conn.execute(
                "SELECT public_key, message, expires_at FROM provisioning_channels "
                "WHERE id = ? AND expires_at > ?", (channel_id, now_ms)).fetchone()
            if row is None:
                return None
            return ProvisioningChannel(bytes(row[0]), None if row[1] is None else bytes(row[1]),
                                       row[2])

        return await self._call(fn)

    async def put_provisioning_message(
        self, channel_id: bytes, message: bytes, now_ms: int
    ) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT message IS NOT NULL FROM provisioning_channels "
                "WHERE id = ? AND expires_at > ?", (channel_id, now_ms)).fetchone()
            if row is None:
                raise ChannelNotFound("no such provisioning channel (expired or used)")
            if row[0]:
                raise ChannelUsed("this provisioning channel holds a message already")
            conn.execute("UPDATE provisioning_channels SET message = ? WHERE id = ?",
                         (message, channel_id))

        await self._call(fn)

    async def take_provisioning_message(self, channel_id: bytes, now_ms: int) -> bytes | None:
        def fn(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT message FROM provisioning_channels WHERE id = ? AND expires_at > ?",
                (channel_id, now_ms)).fetchone()
            if row is None:
                raise ChannelNotFound("no such provisioning channel (expired or used)")
            if row[0] is None:
                return None
            conn.execute("DELETE FROM provisioning_channels WHERE id = ?", (channel_id,))
            return bytes(row[0])

        return await self._call(fn)

__all__ = [
    "SQLiteDevicesStore",
]
