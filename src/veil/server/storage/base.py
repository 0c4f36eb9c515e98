"""The storage interface the services depend on, and the records it returns.

Services never see SQL. A backend implements :class:`Storage`; the embedded SQLite one
is the default and a PostgreSQL one can be added without touching the services, as long
as it passes ``tests/unit/server/test_storage.py`` (a suite parametrised by backend).

Contract every backend keeps:
- every method is atomic (one transaction); a method that returns has committed durably;
- one-time prekeys are handed out at most once even under concurrent claims;
- envelope ids increase monotonically per server and are never reused;
- envelopes have no sender column: a stored envelope is (id, recipient device, time, bytes);
- after ``delete_account`` (``delete_device``) no row names the account (the device);
- a database written by newer, incompatible code is refused on open and left untouched.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# Kinds of one-time prekeys (the integer stored in the ``kind`` column).
KIND_EC = 0
KIND_KEM = 1


@dataclass(frozen=True, slots=True)
class OneTimeKey:
    key_id: int
    key: bytes


@dataclass(frozen=True, slots=True)
class NewDevice:
    """Everything a device brings at registration (or, later, when it is linked)."""

    device_id: int
    registration_id: int
    token_hash: bytes
    identity_key: bytes
    signed_prekey: bytes | None = None
    last_resort_kem_prekey: bytes | None = None
    one_time_prekeys: Sequence[OneTimeKey] = ()
    one_time_kem_prekeys: Sequence[OneTimeKey] = ()


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    account_id: bytes
    device_id: int
    registration_id: int
    token_hash: bytes
    identity_key: bytes


@dataclass(frozen=True, slots=True)
class AccountRecord:
    account_id: bytes
    username: str | None
    access_key: bytes | None
    unrestricted_sealed: bool
    devices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PreKeyCounts:
    one_time_prekeys: int
    one_time_kem_prekeys: int
    has_signed_prekey: bool
    has_last_resort_kem_prekey: bool


@dataclass(frozen=True, slots=True)
class DeviceBundle:
    """One device's public keys as handed to someone starting a session with it."""

    device_id: int
    registration_id: int
    identity_key: bytes
    signed_prekey: bytes | None
    last_resort_kem_prekey: bytes | None
    one_time_prekey: OneTimeKey | None
    one_time_kem_prekey: OneTimeKey | None
    remaining: PreKeyCounts


@dataclass(frozen=True, slots=True)
class RecipientInfo:
    """What the delivery rules need to know about a recipient, read in the same transaction."""

    account_id: bytes
    access_key: bytes | None
    unrestricted_sealed: bool
    devices: frozenset[int]
    queue_lengths: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    id: int
    device_id: int
    ts: int
    body: bytes


# Called inside the enqueue transaction; raising aborts the submission.
Authorise = Callable[[RecipientInfo], None]


class Storage(abc.ABC):
    """Durable state of one deployment. All methods are coroutines; all are atomic."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, then create or upgrade the schema (``storage/migrations.py``).

        Raises DatabaseTooNew, before writing anything, for a database written by code
        newer than this code can safely use.
        """

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The database's schema version (above this code's for newer compatible code)."""

    # Accounts and devices.
    @abc.abstractmethod
    async def create_account(
        self, account_id: bytes, *, username: str | None, access_key: bytes | None,
        unrestricted_sealed: bool, device: NewDevice, now_ms: int,
        invite_hash: bytes | None, max_prekeys_stored: int,
    ) -> None:
        """Create the account with its first device; consume ``invite_hash`` if given.

        Raises UsernameTaken, InvalidInvite, DuplicatePreKey.
        """

    @abc.abstractmethod
    async def get_account(self, account_id: bytes) -> AccountRecord | None: ...

    @abc.abstractmethod
    async def find_username(self, username: str) -> bytes | None: ...

    @abc.abstractmethod
    async def set_username(self, account_id: bytes, username: str | None) -> None:
        """Raises UsernameTaken."""

    @abc.abstractmethod
    async def set_sealed_access(
        self, account_id: bytes, access_key: bytes | None, unrestricted_sealed: bool
    ) -> None: ...

    @abc.abstractmethod
    async def get_device(self, account_id: bytes, device_id: int) -> DeviceRecord | None: ...

    @abc.abstractmethod
    async def add_device(self, account_id: bytes, device: NewDevice, now_ms: int,
                         max_devices: int, max_prekeys_stored: int) -> None:
        """Add a further device (device linking builds on this). Raises LimitExceeded."""

    # Erasure: every row that names the account or device goes, in one transaction
    # (the tables say which columns name them: ``storage/schema.py``).
    @abc.abstractmethod
    async def delete_device(self, account_id: bytes, device_id: int) -> bool:
        """Erase one device: its keys, credentials and queued envelopes.

        Returns False when there is no such device (so deleting twice is fine). Raises
        LastDevice for the account's only device: an account without devices could
        never sign in again, so that is ``delete_account``'s job.
        """

    @abc.abstractmethod
    async def delete_account(self, account_id: bytes) -> bool:
        """Erase the account: its devices (with everything ``delete_device`` erases),
        username, access key and sealed settings.

        Returns False when there was no such account (so deleting twice is fine).
        Invites are minted by the operator and consumed at registration: none names an
        account, so there is nothing of them to erase.
        """

    # Key directory.
    @abc.abstractmethod
    async def store_prekeys(
        self, account_id: bytes, device_id: int, *, signed_prekey: bytes | None,
        last_resort_kem_prekey: bytes | None, one_time_prekeys: Sequence[OneTimeKey],
        one_time_kem_prekeys: Sequence[OneTimeKey], max_stored: int,
    ) -> PreKeyCounts:
        """Replace the given single slots and append one-time keys.

        Raises DuplicatePreKey (a key id already stored) and LimitExceeded (stock cap).
        """

    @abc.abstractmethod
    async def prekey_counts(self, account_id: bytes, device_id: int) -> PreKeyCounts: ...

    @abc.abstractmethod
    async def claim_bundles(
        self, account_id: bytes, device_id: int | None
    ) -> list[DeviceBundle]:
        """Bundles of one device (or all when ``None``), removing the one-time keys handed out."""

    # Message queue.
    @abc.abstractmethod
    async def enqueue(
        self, account_id: bytes, items: Sequence[tuple[int, bytes]], now_ms: int,
        authorise: Authorise,
    ) -> list[StoredEnvelope]:
        """Durably store one envelope per (device_id, body) after ``authorise`` accepts.

        Raises AccountNotFound or whatever ``authorise`` raises; stores nothing then.
        """

    def enqueue_nowait(
        self, account_id: bytes, items: Sequence[tuple[int, bytes]], now_ms: int,
        authorise: Authorise,
    ) -> asyncio.Future[list[StoredEnvelope]]:
        """Start :meth:`enqueue` without awaiting it; the future resolves after commit."""
        return asyncio.ensure_future(self.enqueue(account_id, items, now_ms, authorise))

    @abc.abstractmethod
    async def fetch_envelopes(
        self, account_id: bytes, device_id: int, limit: int, after_id: int = 0
    ) -> list[StoredEnvelope]:
        """Queued envelopes of a device with id > ``after_id``, oldest first."""

    @abc.abstractmethod
    async def delete_envelopes(
        self, account_id: bytes, device_id: int, ids: Sequence[int]
    ) -> int:
        """Delete the device's envelopes among ``ids``; returns how many existed."""

    def delete_envelopes_nowait(
        self, account_id: bytes, device_id: int, ids: Sequence[int]
    ) -> asyncio.Future[int]:
        """Start :meth:`delete_envelopes` without awaiting it (acknowledgements use this)."""
        return asyncio.ensure_future(self.delete_envelopes(account_id, device_id, ids))

    # Invites.
    @abc.abstractmethod
    async def add_invite(self, token_hash: bytes, expires_at_ms: int) -> None: ...

    @abc.abstractmethod
    async def invite_exists(self, token_hash: bytes, now_ms: int) -> bool:
        """Whether an unexpired invite has this hash (it is not consumed)."""

__all__ = [
    "KIND_EC",
    "KIND_KEM",
    "AccountRecord",
    "Authorise",
    "DeviceBundle",
    "DeviceRecord",
    "NewDevice",
    "OneTimeKey",
    "PreKeyCounts",
    "RecipientInfo",
    "Storage",
    "StoredEnvelope",
]
