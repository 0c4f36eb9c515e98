"""The PostgreSQL side of linked devices: device listings, approvals, provisioning
channels.

A mixin of :class:`veil.server.storage.postgres.PostgresStorage` (docs/devices.md);
driver errors of its methods become StorageError there, as for the class's own. A
message is posted with ``UPDATE ... WHERE message IS NULL`` and taken with ``DELETE ...
RETURNING``, so two nodes can neither post twice nor both read the one message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg  # type: ignore[import-untyped]

from veil.server.errors import ChannelNotFound, ChannelUsed, DeviceNotFound, LimitExceeded
from veil.server.storage.base import LinkedDevice, ProvisioningChannel

# Serialises channel creation across nodes, so the count bound holds.
_CHANNEL_LOCK = 0x7E11_DE71


class PostgresDevicesStore:
    """storage/base.py has the contract."""

    if TYPE_CHECKING:
        def _p(self) -> asyncpg.Pool: ...

    async def list_devices(self, account_id: bytes) -> list[LinkedDevice]:
        rows = await self._p().fetch(
            "SELECT device_id, registration_id, created_at, approval FROM devices "
            "WHERE account_id = $1 ORDER BY device_id", account_id)
        return [LinkedDevice(r[0], r[1], r[2], None if r[3] is None else bytes(r[3]))
                for r in rows]

    async def set_device_approval(self, account_id: bytes, device_id: int,
                                  approval: bytes) -> None:
        status = await self._p().execute(
            "UPDATE devices SET approval = $1 WHERE account_id = $2 AND device_id = $3",
            approval, account_id, device_id)
        if status.endswith(" 0"):
            raise DeviceNotFound("no such device")

    async def create_provisioning_channel(
        self, channel_id: bytes, public_key: bytes, now_ms: int, expires_at_ms: int,
        max_channels: int,
    ) -> None:
        async with self._p().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _CHANNEL_LOCK)
            await conn.execute("DELETE FROM provisioning_channels WHERE expires_at <= $1",
                               now_ms)
            count = await conn.fetchval("SELECT COUNT(*) FROM provisioning_channels")
            if count >= max_channels:
                raise LimitExceeded("too many devices are being linked right now; try again "
                                    "in a few minutes")
            inserted = await conn.fetchval(
                "INSERT INTO provisioning_channels (id, public_key, message, created_at, "
                "expires_at) VALUES ($1, $2, NULL, $3, $4) ON CONFLICT (id) DO NOTHING "
                "RETURNING 1", channel_id, public_key, now_ms, expires_at_ms)
            if inserted is None:
                raise ChannelUsed("that provisioning channel id is in use")

    async def get_provisioning_channel(
        self, channel_id: bytes, now_ms: int
    ) -> ProvisioningChannel | None:
        row = await self._p().fetchrow(
            "SELECT public_key, message, expires_at FROM provisioning_channels "
            "WHERE id = $1 AND expires_at > $2", channel_id, now_ms)
        if row is None:
            return None
        return ProvisioningChannel(bytes(row[0]), None if row[1] is None else bytes(row[1]),
                                   row[2])

    async def put_provisioning_message(
        self, channel_id: bytes, message: bytes, now_ms: int
    ) -> None:
        async with self._p().acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT message IS NOT NULL FROM provisioning_channels WHERE id = $1 "
                "AND expires_at > $2 FOR UPDATE", channel_id, now_ms)
            if row is None:
                raise ChannelNotFound("no such provisioning channel (expired or used)")
            if row[0]:
                raise ChannelUsed("this provisioning channel holds a message already")
            await conn.execute("UPDATE provisioning_channels SET message = $1 WHERE id = $2",
                               message, channel_id)

    async def take_provisioning_message(self, channel_id: bytes, now_ms: int) -> bytes | None:
        async with self._p().acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT message FROM provisioning_channels WHERE id = $1 AND expires_at > $2 "
                "FOR UPDATE", channel_id, now_ms)
            if row is None:
                raise ChannelNotFound("no such provisioning channel (expired or used)")
            if row[0] is None:
                return None
            await conn.execute("DELETE FROM provisioning_channels WHERE id = $1", channel_id)
            return bytes(row[0])

__all__ = [
    "PostgresDevicesStore",
]
