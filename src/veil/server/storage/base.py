"""The storage interface the services depend on, and the records it returns.

Services never see SQL. A backend implements :class:`Storage`; the embedded SQLite one
is the default and a PostgreSQL one can be added without touching the services, as long
as it passes ``tests/unit/server/test_storage.py`` (a suite parametrised by backend).

Contract every backend keeps:
- every method is atomic (one transaction); a method that returns has committed durably;
- one-time prekeys are handed out at most once even under concurrent claims;
- envelope ids increase monotonically per server and are never reused;
- envelopes have no sender column: a stored envelope is (id, recipient device, time, bytes);
- expired envelopes are really deleted (``expire_envelopes``; SQLite zeroes them and
  gives the pages back with ``reclaim``, issue 12 §4);
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
    approval: bytes | None = None  # identity-signed (veil.core.devices), opaque here


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
    approval: bytes | None = None  # the device's approval, for the fetcher to verify


@dataclass(frozen=True, slots=True)
class RecipientInfo:
    """What the delivery rules need to know about a recipient, read in the same transaction."""

    account_id: bytes
    access_key: bytes | None
    unrestricted_sealed: bool
    devices: frozenset[int]
    queue_lengths: dict[int, int] = field(default_factory=dict)
    # Bytes of envelope bodies queued for the account, all its devices together.
    queued_bytes: int = 0


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    id: int
    device_id: int
    ts: int
    body: bytes


# Called inside the enqueue transaction; raising aborts the submission.
Authorise = Callable[[RecipientInfo], None]


@dataclass(frozen=True, slots=True)
class KeyPackageRecord:
    """One MLS KeyPackage as stored: its KeyPackageRef, suite and lifetime's end."""

    ref: bytes
    cipher_suite: int
    last_resort: bool
    not_after: int  # seconds since 1970
    data: bytes


@dataclass(frozen=True, slots=True)
class KeyPackageCounts:
    one_time: int  # one-time KeyPackages in stock, every suite
    last_resort: int  # last-resort KeyPackages (at most one per suite)


@dataclass(frozen=True, slots=True)
class ClaimedKeyPackage:
    device_id: int
    data: bytes
    last_resort: bool
    remaining: KeyPackageCounts


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """A group mailbox as the write rules see it (read inside the write's transaction)."""

    group_id: bytes
    epoch: int
    write_verifier: bytes
    next_seq: int
    message_count: int
    byte_count: int


@dataclass(frozen=True, slots=True)
class GroupView:
    """What a reader needs: the current epoch and seq, and the read verifier of the
    asked epoch (``None``: not kept)."""

    epoch: int
    last_seq: int
    read_verifier: bytes | None


@dataclass(frozen=True, slots=True)
class NextEpoch:
    """The verifiers a commit registers for the epoch it starts."""

    read_verifier: bytes
    write_verifier: bytes


@dataclass(frozen=True, slots=True)
class GroupMessage:
    seq: int
    epoch: int
    ts: int
    commit: bool
    body: bytes


@dataclass(frozen=True, slots=True)
class ExpiryReport:
    group_messages: int
    group_epochs: int
    groups: int
    key_packages: int


@dataclass(frozen=True, slots=True)
class EnvelopeExpiry:
    """What one ``expire_envelopes`` call deleted."""

    envelopes: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Reclaimed:
    """What ``reclaim`` gave back: database pages returned to the file system, and
    whether the write-ahead log was emptied (SQLite; PostgreSQL leaves it to VACUUM)."""

    pages: int = 0
    log_truncated: bool = False


# Called inside the append transaction with the group's row; raising stores nothing.
GroupAuthorise = Callable[[GroupRecord], None]


# --- linked devices (docs/devices.md) ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class LinkedDevice:
    """One device of an account as its own devices list it."""

    device_id: int
    registration_id: int
    created_at: int  # ms
    approval: bytes | None


@dataclass(frozen=True, slots=True)
class ProvisioningChannel:
    """An anonymous provisioning channel: the new device's ephemeral key and, once
    posted, the one opaque message for it."""

    public_key: bytes
    message: bytes | None
    expires_at: int  # ms
# --- end of linked devices ---------------------------------------------------------------


# --- protection layers (issue 13; sqlite_protection.py, postgres_protection.py) ---------
@dataclass(frozen=True, slots=True)
class AuditRow:
    """One record of the audit chain (protection/audit.py). ``fields`` is the canonical
    JSON text exactly as it was hashed; ``hash`` = SHA-256(``prev_hash`` || canonical
    encoding of seq, at_ms, kind, fields)."""

    seq: int
    at_ms: int
    kind: str
    fields: str
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class AuditCheckpoint:
    """The chain head at ``seq`` signed with the server key ``key_id`` (Ed25519)."""

    seq: int
    hash: bytes
    at_ms: int
    signature: bytes
    key_id: str


@dataclass(frozen=True, slots=True)
class BlockRow:
    """A block in force. ``key`` is the raw address key (kept so that the block applies
    after a restart); ``key_hash`` its keyed hash, the only form shown to anyone."""

    block_id: str
    key: str
    key_hash: str
    rule: str
    since_ms: int
    until_ms: int
    count: int


@dataclass(frozen=True, slots=True)
class NetworkRule:
    """A network rule added at run time; ``action`` is ``"deny"`` or ``"allow"``."""

    cidr: str
    action: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class LimiterRow:
    """One token bucket of a limiter table that outlives the process."""

    key: str
    tokens: float
    updated_ms: int
# --- end of protection layers ------------------------------------------------------------


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

    # Retention (issue 12 §4; sqlite_retention.py, postgres_retention.py).
    @abc.abstractmethod
    async def expire_envelopes(self, *, before_ms: int, limit: int) -> EnvelopeExpiry:
        """Delete up to ``limit`` of the oldest envelopes stored before ``before_ms``,
        of every account (callers repeat while a call deletes ``limit``, so no single
        transaction holds the database for long)."""

    async def reclaim(self) -> Reclaimed:
        """Give the space of deleted rows back, so the files do not keep old ciphertext.

        The default does nothing: PostgreSQL's autovacuum reuses dead tuples' space
        (docs/server.md, "Retention"). SQLite returns its free pages to the file system
        (incremental vacuum) and empties the write-ahead log.
        """
        return Reclaimed()

    # Monitoring (issue 13 §4; protection/metrics.py).
    @abc.abstractmethod
    async def queued_envelopes(self) -> int:
        """Envelopes waiting in every device queue together (the metrics' queue depth).
        A full count: the metrics ask at most every few seconds and cache it."""

    def set_observer(self, observer: Callable[[str, float], None] | None) -> None:
        """Report each database transaction's duration as ``observer(op, seconds)``
        (the metrics' storage latency; it may be called from the database thread).
        The default times nothing."""
        return None

    # MLS KeyPackage directory.
    @abc.abstractmethod
    async def store_key_packages(
        self, account_id: bytes, device_id: int, packages: Sequence[KeyPackageRecord],
        max_stored: int,
    ) -> KeyPackageCounts:
        """Append one-time KeyPackages; a last-resort one replaces the device's
        last-resort one of the same suite.

        Raises DeviceNotFound, DuplicateKeyPackage (a ref already stored) and
        LimitExceeded (more than ``max_stored`` one-time KeyPackages).
        """

    @abc.abstractmethod
    async def key_package_counts(self, account_id: bytes, device_id: int) -> KeyPackageCounts:
        """Raises DeviceNotFound."""

    @abc.abstractmethod
    async def claim_key_packages(
        self, account_id: bytes, cipher_suite: int, now_s: int
    ) -> list[ClaimedKeyPackage]:
        """One KeyPackage of ``cipher_suite`` per device of the account that has one
        unexpired: a one-time one (removed, so handed out at most once, even under
        concurrent claims), else the last-resort one (kept). Devices without any are
        left out; an unknown account gives ``[]``."""

    # Group mailboxes (the MLS Delivery Service).
    @abc.abstractmethod
    async def create_group(
        self, group_id: bytes, read_verifier: bytes, write_verifier: bytes, now_ms: int,
        max_groups: int,
    ) -> None:
        """A group at epoch 0. Raises GroupExists, and LimitExceeded when the server
        holds ``max_groups`` groups already (creation is anonymous)."""

    @abc.abstractmethod
    async def group_view(self, group_id: bytes, epoch: int) -> GroupView | None:
        """The group's epoch and last seq and ``epoch``'s read verifier; None: no group."""

    @abc.abstractmethod
    async def append_group_message(
        self, group_id: bytes, body: bytes, now_ms: int, authorise: GroupAuthorise,
        next_epoch: NextEpoch | None = None,
    ) -> GroupMessage:
        """Store one message of the group's current epoch after ``authorise`` accepts
        the group's row, with the next sequence number. With ``next_epoch`` it is the
        commit that ends the epoch: in the same transaction the group moves to the next
        epoch with those verifiers; of two commits for one epoch only the first commits
        (the row lock and the ``group_epochs`` key decide, never a process lock); the
        other raises EpochConflict. Raises GroupNotFound or what ``authorise`` raises.
        """

    @abc.abstractmethod
    async def fetch_group_messages(
        self, group_id: bytes, epoch: int, after_seq: int, limit: int
    ) -> list[GroupMessage]:
        """Messages of ``epoch`` with seq > ``after_seq``, oldest first."""

    @abc.abstractmethod
    async def expire(
        self, *, group_messages_before_ms: int, groups_idle_before_ms: int, now_s: int
    ) -> ExpiryReport:
        """Retention: delete group messages older than the first bound, groups not
        written to since the second (with everything they hold), verifiers of past
        epochs that hold no message any more, and KeyPackages whose lifetime ended."""

    # --- linked devices (docs/devices.md; sqlite_devices.py, postgres_devices.py) ------
    @abc.abstractmethod
    async def list_devices(self, account_id: bytes) -> list[LinkedDevice]:
        """The account's devices, by id ([] for an unknown account)."""

    @abc.abstractmethod
    async def set_device_approval(self, account_id: bytes, device_id: int,
                                  approval: bytes) -> None:
        """Store the device's approval (opaque). Raises DeviceNotFound."""

    @abc.abstractmethod
    async def create_provisioning_channel(
        self, channel_id: bytes, public_key: bytes, now_ms: int, expires_at_ms: int,
        max_channels: int,
    ) -> None:
        """Open a channel; expired channels are deleted first. Raises LimitExceeded when
        ``max_channels`` unexpired ones exist, Conflict for an id in use."""

    @abc.abstractmethod
    async def get_provisioning_channel(
        self, channel_id: bytes, now_ms: int
    ) -> ProvisioningChannel | None:
        """The unexpired channel, or None."""

    @abc.abstractmethod
    async def put_provisioning_message(
        self, channel_id: bytes, message: bytes, now_ms: int
    ) -> None:
        """Store the channel's one message. Raises NotFound (no unexpired channel) and
        Conflict (a message was posted already)."""

    @abc.abstractmethod
    async def take_provisioning_message(self, channel_id: bytes, now_ms: int) -> bytes | None:
        """The channel's message, deleting the channel with it (one read); None while
        there is none. Raises NotFound for no unexpired channel."""
    # --- end of linked devices ----------------------------------------------------------

    # --- protection layers (issue 13; sqlite_protection.py, postgres_protection.py) -----
    @abc.abstractmethod
    async def audit_append(self, rows: Sequence[AuditRow]) -> None:
        """Append audit records in one transaction. Raises Conflict when a seq is taken
        (another writer appended first): nothing is stored then."""

    @abc.abstractmethod
    async def audit_last(self) -> AuditRow | None:
        """The record of the highest seq, or None for an empty log."""

    @abc.abstractmethod
    async def audit_rows(self, after_seq: int, limit: int) -> list[AuditRow]:
        """Up to ``limit`` records with seq > ``after_seq``, by seq."""

    @abc.abstractmethod
    async def audit_checkpoint_add(self, checkpoint: AuditCheckpoint) -> None:
        """Store a checkpoint (replacing one of the same seq)."""

    @abc.abstractmethod
    async def audit_checkpoints(self) -> list[AuditCheckpoint]:
        """Every checkpoint, by seq (one per ``checkpoint_every`` records: few)."""

    @abc.abstractmethod
    async def blocks_save(self, row: BlockRow) -> None:
        """Insert the block, or replace the one with the same ``block_id``."""

    @abc.abstractmethod
    async def blocks_delete(self, block_id: str) -> bool:
        """Remove a block (lifted); False when there was none."""

    @abc.abstractmethod
    async def blocks_load(self, now_ms: int) -> list[BlockRow]:
        """The blocks still in force at ``now_ms`` (``until_ms`` > now), by
        ``since_ms``; ended ones are deleted in the same transaction, so no address
        stays stored longer than its block."""

    @abc.abstractmethod
    async def network_rules_add(self, cidr: str, action: str, now_ms: int) -> None:
        """Add a rule, or replace the action of the rule for the same ``cidr``.
        ``action`` is ``"deny"`` or ``"allow"`` (anything else: ValueError)."""

    @abc.abstractmethod
    async def network_rules_remove(self, cidr: str) -> bool:
        """Remove the rule for ``cidr``; False when there was none."""

    @abc.abstractmethod
    async def network_rules(self) -> list[NetworkRule]:
        """Every runtime rule, oldest first."""

    @abc.abstractmethod
    async def limiter_save(self, name: str, rows: Sequence[LimiterRow]) -> None:
        """Replace every row of the limiter table ``name`` with ``rows`` (the caller
        bounds them), in one transaction."""

    @abc.abstractmethod
    async def limiter_load(self, name: str) -> list[LimiterRow]:
        """The rows of the limiter table ``name``, by key."""
    # --- end of protection layers -------------------------------------------------------

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
    "AuditCheckpoint",
    "AuditRow",
    "Authorise",
    "BlockRow",
    "ClaimedKeyPackage",
    "DeviceBundle",
    "DeviceRecord",
    "EnvelopeExpiry",
    "ExpiryReport",
    "GroupAuthorise",
    "GroupMessage",
    "GroupRecord",
    "GroupView",
    "KeyPackageCounts",
    "KeyPackageRecord",
    "LimiterRow",
    "LinkedDevice",
    "NetworkRule",
    "NewDevice",
    "NextEpoch",
    "OneTimeKey",
    "PreKeyCounts",
    "ProvisioningChannel",
    "RecipientInfo",
    "Reclaimed",
    "Storage",
    "StoredEnvelope",
]
