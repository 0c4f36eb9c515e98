"""Group mailboxes: the server as MLS Delivery Service (RFC 9420 §14; issue 11 §1).

The server knows a group only as a random id (the MLS group id) and an epoch number:
no name, no member list, no sender. Members prove what they may do with capabilities
derived from the epoch's secrets, which the server cannot compute:

    R_e = export_secret(b"veil ds read", b"", 32)     read epoch e's messages
    W_e = export_secret(b"veil ds write", b"", 32)    post to epoch e (the current one)

The server stores SHA-256(R_e) of each epoch it still holds messages of and SHA-256(W_e)
of the current epoch only, and compares in constant time. The commit that ends epoch e
registers the verifiers of e + 1; a member removed by it cannot derive R_{e+1} or W_{e+1},
so it loses read and write access in that very commit. At most one commit per epoch is
accepted (first wins, decided by the database); a commit or message for another epoch
is ``409 epoch_conflict`` with the current epoch. Welcomes do not pass through here:
the committer seals each one to the invited devices as an ordinary 1:1 envelope, so the
server cannot link an invitee to a group.

Every message is stored once, whatever the group's size, with a per-group sequence
number; members keep their own cursor. Group messages must be MLS PrivateMessages of
the group and epoch they are posted to (a PublicMessage would show the server the
sender's leaf and, in a commit, the KeyPackages of those added); content type commit
only on the commit endpoint. Messages older than ``group_message_ttl_s`` are deleted by
:meth:`GroupService.expire`, together with groups idle for ``group_idle_ttl_s``, verifiers
of past epochs that hold no message any more, and expired KeyPackages. The server runs it
from the retention job of ``services/retention.py`` (with envelope expiry and the
reclaiming of space); :func:`run_expiry` is the group-only form of that job.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass

from veil.core.mls.codec import decode_all
from veil.core.mls.errors import MlsError
from veil.core.mls.messages import CONTENT_COMMIT, MLSMessage, PrivateMessage
from veil.server.bus import Bus, GroupPosted
from veil.server.config import ServerConfig
from veil.server.errors import (
    EpochConflict,
    GroupNotFound,
    GroupQuotaExceeded,
    InvalidCapability,
    PayloadTooLarge,
    ServerError,
    ValidationFailed,
)
from veil.server.storage.base import (
    ExpiryReport,
    GroupMessage,
    GroupRecord,
    GroupView,
    NextEpoch,
    Storage,
)

log = logging.getLogger("veil.server.groups")

READ_LABEL = b"veil ds read"
WRITE_LABEL = b"veil ds write"
CAPABILITY_BYTES = 32
# A commit may go this share above the quotas (at least one message of the largest
# size), so that a full mailbox can still remove the member filling it.
COMMIT_HEADROOM = 0.1


def verifier(capability: bytes) -> bytes:
    """What the server stores of a capability: SHA-256 of it."""
    return hashlib.sha256(capability).digest()


def matches(capability: bytes, stored: bytes | None) -> bool:
    if stored is None:
        hmac.compare_digest(verifier(capability), bytes(32))  # same work either way
        return False
    return hmac.compare_digest(verifier(capability), stored)


def epoch_conflict(current_epoch: int) -> EpochConflict:
    return EpochConflict("the group is at another epoch; fetch, process and retry",
                         {"current_epoch": current_epoch})


def check_group_message(message: bytes, group_id: bytes, epoch: int, *, commit: bool) -> None:
    """The message is an MLS PrivateMessage of this group and epoch, a commit exactly
    when ``commit``. Only the clear header is read; the content stays opaque."""
    try:
        body = decode_all(message, MLSMessage.read).body
    except MlsError:
        raise ValidationFailed("message: not an MLS message") from None
    if not isinstance(body, PrivateMessage):
        raise ValidationFailed("message: must be an MLS PrivateMessage (a PublicMessage "
                               "would show the server who sends and who joins)")
    if body.group_id != group_id:
        raise ValidationFailed("message: belongs to another group")
    if body.epoch != epoch:
        raise ValidationFailed(f"message: is of epoch {body.epoch}, not {epoch}")
    if (body.content_type == CONTENT_COMMIT) != commit:
        raise ValidationFailed("message: commits go to /commits, and only commits"
                               if commit else "message: a commit goes to /commits")


@dataclass(frozen=True, slots=True)
class GroupPage:
    messages: list[GroupMessage]
    more: bool
    epoch_ended: bool
    current_epoch: int


class GroupService:
    def __init__(self, storage: Storage, bus: Bus, config: ServerConfig,
                 clock_ms: Callable[[], int]) -> None:
        self._storage = storage
        self._bus = bus
        self._config = config
        self._clock_ms = clock_ms

    async def create(self, group_id: bytes, read_verifier: bytes, write_verifier: bytes
                     ) -> None:
        await self._storage.create_group(group_id, read_verifier, write_verifier,
                                         self._clock_ms(), self._config.max_groups)

    async def check_read(self, group_id: bytes, epoch: int, capability: bytes) -> GroupView:
        """The group's view if ``capability`` is epoch ``epoch``'s read capability."""
        view = await self._storage.group_view(group_id, epoch)
        if view is None:
            raise GroupNotFound("no such group")
        if not matches(capability, view.read_verifier):
            raise InvalidCapability("the read capability does not match that epoch (or "
                                    "the epoch is no longer kept)")
        return view

    def _authoriser(self, epoch: int, capability: bytes, size: int, commit: bool
                    ) -> Callable[[GroupRecord], None]:
        config = self._config
        max_messages, max_bytes = config.max_group_messages, config.max_group_bytes
        if commit:
            max_messages += max(1, int(max_messages * COMMIT_HEADROOM))
            max_bytes += max(config.max_group_message_bytes, int(max_bytes * COMMIT_HEADROOM))

        def authorise(group: GroupRecord) -> None:
            # The epoch first: a loser's W_e no longer matches, and it must learn to
            # catch up (409), not that its capability is wrong (401).
            if group.epoch != epoch:
                raise epoch_conflict(group.epoch)
            if not matches(capability, group.write_verifier):
                raise InvalidCapability("the write capability does not match the "
                                        "current epoch")
            if group.message_count + 1 > max_messages:
                raise GroupQuotaExceeded(
                    f"the group holds its maximum of {config.max_group_messages} messages; "
                    "older ones expire", {"limit": "messages"})
            if group.byte_count + size > max_bytes:
                raise GroupQuotaExceeded(
                    f"the group holds its maximum of {config.max_group_bytes} bytes; older "
                    "messages expire", {"limit": "bytes"})

        return authorise

    async def post(
        self, group_id: bytes, epoch: int, capability: bytes, message: bytes,
        next_epoch: NextEpoch | None = None,
    ) -> GroupMessage:
        """Store one message of the current epoch (a commit with ``next_epoch``) and
        push it to the subscribed sockets."""
        if len(message) > self._config.max_group_message_bytes:
            raise PayloadTooLarge(
                f"a group message is at most {self._config.max_group_message_bytes} bytes")
        commit = next_epoch is not None
        check_group_message(message, group_id, epoch, commit=commit)
        stored = await self._storage.append_group_message(
            group_id, message, self._clock_ms(),
            self._authoriser(epoch, capability, len(message), commit), next_epoch)
        self._bus.publish_group(GroupPosted(group_id, stored.seq, stored.epoch, stored.ts,
                                            stored.commit, stored.body))
        return stored

    async def fetch(
        self, group_id: bytes, epoch: int, capability: bytes, after_seq: int, limit: int
    ) -> GroupPage:
        view = await self.check_read(group_id, epoch, capability)
        rows = await self._storage.fetch_group_messages(group_id, epoch, after_seq,
                                                        limit + 1)
        return GroupPage(rows[:limit], len(rows) > limit, view.epoch > epoch, view.epoch)

    async def expire(self) -> ExpiryReport:
        now = self._clock_ms()
        return await self._storage.expire(
            group_messages_before_ms=now - self._config.group_message_ttl_s * 1000,
            groups_idle_before_ms=now - self._config.group_idle_ttl_s * 1000,
            now_s=now // 1000,
        )


async def run_expiry(groups: GroupService, interval_s: float) -> None:
    """The retention job: :meth:`GroupService.expire` now and every ``interval_s``."""
    while True:
        try:
            report = await groups.expire()
        except ServerError as exc:
            log.warning("expiry failed: %s", exc.code)
        else:
            if report.group_messages or report.groups or report.key_packages:
                log.info("expired %d group messages, %d groups, %d epochs, %d KeyPackages",
                         report.group_messages, report.groups, report.group_epochs,
                         report.key_packages)
        await asyncio.sleep(interval_s)

__all__ = [
    "CAPABILITY_BYTES",
    "READ_LABEL",
    "WRITE_LABEL",
    "GroupPage",
    "GroupService",
    "check_group_message",
    "epoch_conflict",
    "matches",
    "run_expiry",
    "verifier",
]
