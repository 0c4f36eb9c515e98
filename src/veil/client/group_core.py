"""The receiving half of :class:`veil.client.groups.Groups`: the group's state in the
store, processing mailbox messages (one store transaction each), merging commits with
the admin policy, checking members' identities, and joining from a Welcome.

Split from :mod:`veil.client.groups` (the operations, the commit engine, catching up
and the live connection) only to keep modules short; docs/groups.md, "The client".
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import msgspec

from veil.client import contacts, group_tree, trust
from veil.client import group_store as gs
from veil.client import pending as outbox_store
from veil.client.api import unb64
from veil.client.content import CONVERSATION_KINDS, Content
from veil.client.conversations import Conversations, incoming, line_for
from veil.client.device import Context
from veil.client.directory import Directory
from veil.client.errors import (
    ClientError,
    NotGroupMember,
    ServerRejected,
    UnknownGroup,
)
from veil.client.events import (
    Event,
    GroupMessagesMissing,
    GroupStalled,
    GroupUpdated,
    IncomingMessage,
    StallReason,
)
from veil.client.outbox import Outbox
from veil.client.transport import WebSocket
from veil.core import sealed
from veil.core.errors import CoreError, MalformedMessage
from veil.core.mls import Group, KeyPackageBundle, SavedGroup
from veil.core.mls.codec import decode_all
from veil.core.mls.errors import KeyReused, MlsError
from veil.core.mls.messages import MLSMessage, Welcome
from veil.core.mls.proposals import Remove
from veil.core.mls.results import ApplicationMessage, ProposalReceived, StagedCommit
from veil.protocol import responses as rs

log = logging.getLogger("veil.client")


READ = b"veil ds read"
WRITE = b"veil ds write"
COMMIT_ATTEMPTS = 5
SEND_ATTEMPTS = 3
MAX_PAGES = 1000                 # per sync: the server cannot loop us
PAD_TO = 256
WELCOME_KIND = "group_welcome"
# A Welcome waiting for its ratchet tree (``group.joining``) is dropped after this long:
# the tree is posted before the Welcome leaves, so one still missing after days never
# comes (its epoch ended first, or the server withholds it), and the record and the
# KeyPackage's private half should not be kept forever. (ms, the client's clock.)
WELCOME_WAIT_MS = 7 * 24 * 3600 * 1000
# Refusals that prove a commit was not stored (a server error code, not a lost or
# garbled answer: then the commit may be stored, and the mailbox settles it).
_NOT_STORED = frozenset({400, 401, 403, 404, 413, 422, 429})


def not_stored(exc: ServerRejected) -> bool:
    return exc.status in _NOT_STORED and exc.server_code not in ("bad_response", "http_error")


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def read_cap(group: Group) -> bytes:
    return group.export_secret(READ, b"", 32)


def write_cap(group: Group) -> bytes:
    return group.export_secret(WRITE, b"", 32)


def _restore(slow: bytes, hot: bytes) -> Group:
    return Group.restore(SavedGroup(slow, hot), credential_check=gs.check_credential)


@dataclass(frozen=True)
class GroupInfo:
    """A group as this device knows it."""

    id: str                        # the group id, 64 hex: the key of ``history()``
    name: str
    description: str | None
    admins: tuple[str, ...]        # account ids
    members: tuple[str, ...]       # account ids (each with one or more devices)
    epoch: int
    active: bool                   # False once this device left or was removed
    am_admin: bool


@dataclass(frozen=True)
class GroupMember:
    account: str
    username: str | None
    devices: tuple[int, ...]
    admin: bool
    # Devices whose leaf presents another identity than the account's (as this device
    # knows it from 1:1 or the directory), or a device the account does not list as
    # approved, or an account not confirmed by the directory yet: not to be taken as
    # that person (docs/groups.md, "Identities").
    unconfirmed: tuple[int, ...] = ()


@dataclass(frozen=True)
class SentGroupMessage:
    id: str
    group: str
    seq: int
    timestamp: int


@dataclass
class _Intent:
    """What a person asked for, re-applied after a lost epoch race."""

    op: str                             # add, own (our linked devices), remove, meta, flush
    key_packages: list[tuple[str, bytes]] = field(default_factory=list)  # (account, kp)
    accounts: list[str] = field(default_factory=list)                    # remove
    devices: list[int] = field(default_factory=list)         # devices: our own, unlinked
    change: Callable[[gs.Metadata], gs.Metadata] | None = None           # meta


@dataclass
class _Out:
    """What a step produced, told to the application once the lock is released."""

    messages: list[IncomingMessage] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    announce: list[str] = field(default_factory=list)
    welcomes: list[outbox_store.PendingMessage] = field(default_factory=list)


class GroupCore(abc.ABC):
    """State, helpers and the receive path shared by :class:`Groups`."""

    def __init__(self, ctx: Context, directory: Directory, outbox: Outbox) -> None:
        self._ctx = ctx
        self._directory = directory
        self._outbox = outbox
        self.key_packages = gs.KeyPackageMaintenance(ctx)
        self._cache: dict[str, Group] = {}     # one owner per home: safe to keep
        self._locks: dict[str, asyncio.Lock] = {}
        self._ws: WebSocket | None = None
        self._subscribed: dict[str, int] = {}
        self._req = 0
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._own_lock = asyncio.Lock()        # adding this account's linked devices
        self._own_seqs: dict[str, set[int]] = {}
        self._sent_seqs: dict[str, int] = {}     # outbox id → seq, for ``send``'s answer
        self._conversations = Conversations(
            ctx.store, ctx.device.record.account,
            lambda gid, account: account in self._record(gid).admins)
        # Changes our own group posts made here (told after the post's transaction).
        self._applied_own: list[Event] = []
        self._unconfirmable: set[str] = set()  # the directory could not confirm (this run)
        # Devices of group members not known to be approved, asked of the directory in
        # this run (asked again only for a device not asked before).
        self._asked_devices: dict[str, set[int]] = {}
        # Refreshes this account's device list (set by the client, veil.client.devices).
        self.own_devices_refresh: Callable[[], Awaitable[object]] | None = None
        # Tests: called with "before_post" / "after_post" around a commit's request,
        # to stop the client there as a crash would.
        # (It may return an awaitable, awaited there: a test can hold a commit back.)
        self.crash_hook: Callable[[str], object] | None = None
        # How long a Welcome may wait for its tree (docs/groups.md, "Large groups").
        self.welcome_wait_ms = WELCOME_WAIT_MS

    # --- helpers -------------------------------------------------------------------------

    @property
    def _me(self) -> str:
        return self._ctx.device.record.account

    def _now_s(self) -> int:
        return max(1, self._ctx.clock() // 1000)

    def _lock(self, gid: str) -> asyncio.Lock:
        return self._locks.setdefault(gid, asyncio.Lock())

    def _record(self, gid: str) -> gs.GroupRecord:
        rec = gs.get_record(self._ctx.store, gid)
        if rec is None:
            raise UnknownGroup(f"no group {gid[:8]}… on this device")
        return rec

    def _active(self, gid: str) -> gs.GroupRecord:
        rec = self._record(gid)
        if rec.status != "active":
            raise NotGroupMember(f"you are no longer in the group '{rec.name}' ({rec.status})")
        return rec

    def _group(self, gid: str) -> Group:
        group = self._cache.get(gid)
        if group is None:
            store = self._ctx.store
            slow, hot = store.get(gs.KIND_SLOW, gid), store.get(gs.KIND_HOT, gid)
            if slow is None or hot is None:
                raise NotGroupMember(f"this device holds no state of group {gid[:8]}…")
            group = _restore(slow, hot)
            self._cache[gid] = group
        return group

    @contextlib.contextmanager
    def _txn(self, gid: str) -> Iterator[None]:
        """A store transaction; on failure the in-memory group is dropped (reloaded
        from the store, which holds what was committed)."""
        try:
            with self._ctx.store.transaction():
                yield
        except BaseException:
            self._cache.pop(gid, None)
            raise

    def _save_state(self, gid: str, group: Group) -> None:
        """Inside a transaction: the parts of the MLS state that changed."""
        store = self._ctx.store
        dirty = group.dirty
        if "slow" in dirty:
            saved = group.save()
            store.put(gs.KIND_SLOW, gid, saved.slow)
            store.put(gs.KIND_HOT, gid, saved.hot)
        elif "hot" in dirty:
            store.put(gs.KIND_HOT, gid, group.save_hot())

    def _forget_state(self, gid: str) -> None:
        store = self._ctx.store
        store.delete(gs.KIND_SLOW, gid)
        store.delete(gs.KIND_HOT, gid)
        gs.drop_pending(store, gid)
        gs.drop_adding(store, gid)
        self._cache.pop(gid, None)

    def resolve(self, group: str) -> str:
        """A group id (64 hex) or ``#name`` → the group id."""
        text = group.strip()
        records = gs.all_records(self._ctx.store)
        if text.startswith("#"):
            name = text[1:]
            found = [r for r in records if r.name == name]
            active = [r for r in found if r.status == "active"]
            found = active or found
            if len(found) > 1:
                raise UnknownGroup(f"{len(found)} groups are named '{name}': use the group id")
            if not found:
                raise UnknownGroup(f"no group named '{name}' on this device")
            return found[0].id
        gid = text.lower()
        if gs.get_record(self._ctx.store, gid) is None:
            raise UnknownGroup(f"no group '{text[:16]}' on this device (an id or #name)")
        return gid

    def _username(self, account: str) -> str | None:
        contact = contacts.get(self._ctx.store, account)
        return None if contact is None else contact.username

    def _who(self, account: str) -> str:
        name = self._username(account)
        return f"@{name}" if name else f"{account[:8]}…"

    def _tell_changes(self, out: _Out, gid: str, rec: gs.GroupRecord,
                      old: tuple[str, str | None, tuple[str, ...]], before: set[str],
                      after: set[str], by: str | None, leavers: set[str]) -> None:
        added, gone = tuple(sorted(after - before)), sorted(before - after)
        if added:
            out.events.append(GroupUpdated(gid, "added", by, added))
        left = tuple(a for a in gone if a in leavers)
        removed = tuple(a for a in gone if a not in leavers)
        if left:
            out.events.append(GroupUpdated(gid, "left", by, left))
        if removed:
            out.events.append(GroupUpdated(gid, "removed", by, removed))
        if (rec.name, rec.description) != old[:2]:
            out.events.append(GroupUpdated(gid, "renamed", by))
        if tuple(rec.admins) != old[2]:
            out.events.append(GroupUpdated(gid, "admins", by, tuple(rec.admins)))

    def _process(self, gid: str, m: rs.GroupStoredMessage, out: _Out) -> None:
        """One mailbox message, in one store transaction (state, history, cursor)."""
        store = self._ctx.store
        # Our own post at that seq cannot be decrypted here (its key is used up), but
        # the server chooses what it serves there: decrypt anyway, so another member's
        # message moved to our seq is still read (and attributed to its sender).
        own = m.seq in self._own_seqs.get(gid, set())
        self._own_seqs.get(gid, set()).discard(m.seq)
        unsent = self._unsent(gid, m.message) if not m.commit else None
        group = self._group(gid)
        with self._txn(gid):
            rec = self._record(gid)
            if m.seq <= rec.cursor:
                return
            rec.cursor = m.seq
            if unsent is not None:         # our own outbox message, stored: it is sent
                self._note_sent(gid, unsent, m.seq)
                gs.put_record(store, rec)
                return
            try:
                got = group.process(m.message, now=max(1, m.ts // 1000))
            except KeyReused:
                log.info("dropped a second copy of a group message (its key is used)")
                gs.put_record(store, rec)
                return
            except MlsError as exc:
                if not own and group_tree.open_chunk(group_tree.tree_key(group),
                                                     group.group_id, group.epoch,
                                                     m.message) is None:
                    log.warning("dropped a group message that cannot be processed: %s",
                                exc.code)
                gs.put_record(store, rec)          # (or a tree chunk: not for members)
                return
            if isinstance(got, ApplicationMessage):
                self._application(gid, rec, group, got, m, out)
            elif isinstance(got, ProposalReceived):
                proposal = got.proposal
                if isinstance(proposal, Remove):
                    by = gs.member_of(group, got.sender)
                    target = gs.member_of(group, proposal.removed)
                    if by is not None and target is not None and by.account == target.account \
                            and proposal.removed not in rec.leave_requests:
                        rec.leave_requests.append(proposal.removed)
            elif isinstance(got, StagedCommit):
                self._merge(gid, rec, group, got, out)
            if rec.status == "active":
                self._save_state(gid, group)
            gs.put_record(store, rec)

    def _unsent(self, gid: str, message: bytes) -> outbox_store.PendingMessage | None:
        """The outbox group message of ``gid`` whose posted bytes are ``message``."""
        store = self._ctx.store
        if not store.count(outbox_store.KIND):
            return None
        for waiting in outbox_store.all_pending(store):
            if waiting.kind == outbox_store.GROUP_KIND and waiting.to == gid \
                    and waiting.group_message == message:
                return waiting
        return None

    def _note_sent(self, gid: str, message: outbox_store.PendingMessage, seq: int) -> None:
        """Inside a transaction: the server stored ``message`` at ``seq``: it goes into
        the history and out of the outbox."""
        content = Content(message.id, message.timestamp, message.text) \
            if message.content is None else Content.decode(message.content)
        now = self._ctx.clock()
        if content.kind == "text":
            self._conversations.add_line(gid, line_for(
                content, "out", self._me, self._ctx.device.record.device_id), now,
                content.expire_s)
        else:                      # our reaction, edit, deletion, timer: applied here
            self._applied_own.extend(self._conversations.apply(gid, self._me, content, now,
                                                               group=gid))
        outbox_store.drop(self._ctx.store, message.id)
        self._sent_seqs[message.id] = seq

    def _application(self, gid: str, rec: gs.GroupRecord, group: Group,
                     got: ApplicationMessage, m: rs.GroupStoredMessage, out: _Out) -> None:
        member = gs.member_of(group, got.sender)
        try:
            content = Content.decode(got.data)
        except MalformedMessage:
            log.warning("dropped a group message whose content is malformed")
            return
        if member is None or content.kind in ("sent", "group_welcome"):
            return
        me = self._ctx.device.record
        own = member.account == me.account
        genuine = self._genuine(member)
        if own and not genuine:
            log.warning("dropped a group message from a leaf that claims this account "
                        "under another identity or for a device it does not list")
            return
        self._count(gid, rec, member, content.number, out)
        contact = contacts.get(self._ctx.store, member.account)
        flagged = not genuine or (contact is not None and contact.identity_changed)
        if genuine and not own and contact is not None and content.certificate is not None:
            named = self._vouched_username(content.certificate, member, m.ts)
            if named is not None and contact.username != named:
                contact.username = named         # vouched for by the server, as in 1:1
                contacts.save(self._ctx.store, contact)
        now = self._ctx.clock()
        if content.kind in CONVERSATION_KINDS and content.kind != "text":
            if not genuine:
                log.warning("ignored a group %s from a flagged member", content.kind)
                return
            out.events.extend(self._conversations.apply(gid, member.account, content, now,
                                                        group=gid))
            return
        line = line_for(content, "out" if own else "in", member.account, member.device,
                        flagged)
        kept = self._conversations.add_line(gid, line, now, content.expire_s)
        if own or kept is None:
            return                         # another device of ours: history only
        out.messages.append(incoming(kept, None if contact is None else contact.username,
                                     gid))

    def _count(self, gid: str, rec: gs.GroupRecord, member: gs.Member, number: int | None,
               out: _Out) -> None:
        """Inside the message's transaction: check the sender device's sequence number
        against the highest seen (docs/groups.md, "Missing messages"). The first number
        seen from a device is its baseline (a joiner cannot know what came before);
        content without one (an older client) is not counted."""
        if number is None:
            return
        key = f"{member.account}/{member.device}"
        last = rec.senders.get(key)
        if last is not None and number <= last:
            log.warning("a group message arrived after a later one of the same sender")
            out.events.append(GroupMessagesMissing(gid, member.account, member.device, 0,
                                                   reordered=True))
            return
        if last is not None and number > last + 1:
            log.warning("%d group message(s) of a member device did not arrive",
                        number - last - 1)
            out.events.append(GroupMessagesMissing(gid, member.account, member.device,
                                                   number - last - 1))
        rec.senders[key] = number

    def _stalled(self, gid: str, epoch: int, reason: StallReason, out: _Out) -> None:
        """This device cannot go past ``epoch``: tell it once (GroupStalled), with why.
        Nothing else changes: the device stays in its epoch, safe, until the server
        serves what is missing."""
        rec = self._record(gid)
        if rec.stalled == epoch:
            return
        with self._txn(gid):
            rec = self._record(gid)
            rec.stalled = epoch
            gs.put_record(self._ctx.store, rec)
        log.warning("a group cannot go past its current epoch: %s", reason)
        out.events.append(GroupStalled(gid, epoch, reason))

    def _unstalled(self, gid: str) -> None:
        """A sync read its epoch to the end without a stall: a stall told before is
        over (the next one is told again)."""
        rec = gs.get_record(self._ctx.store, gid)
        if rec is None or rec.stalled < 0:
            return
        with self._txn(gid):
            rec = self._record(gid)
            rec.stalled = -1
            gs.put_record(self._ctx.store, rec)

    def _merge(self, gid: str, rec: gs.GroupRecord, group: Group, staged: StagedCommit,
               out: _Out) -> None:
        before_members = dict(gs.members(group))
        committer = before_members.get(staged.committer)
        by = None if committer is None else committer.account
        is_admin = by is not None and by in rec.admins
        leavers = {before_members[i].account for i in rec.leave_requests
                   if i in before_members}
        # An account may always add or remove its own devices (docs/devices.md).
        unrequested = [i for i in staged.removed if i not in rec.leave_requests
                       and (by is None or before_members.get(i) is None
                            or before_members[i].account != by)]
        before = {mm.account for mm in before_members.values()}
        old = (rec.name, rec.description, tuple(rec.admins))
        applied = group.merge_staged(staged)
        requests, rec.leave_requests = rec.leave_requests, []
        if applied.removed_me:
            rec.status, rec.epoch = "removed", rec.epoch + 1
            self._forget_state(gid)
            out.events.append(GroupUpdated(gid, "removed_me", by, (self._me,)))
            return
        rec.epoch = group.epoch
        after_members = dict(gs.members(group))
        rec.senders = _counted(rec.senders, before_members, after_members)
        after = {mm.account for mm in after_members.values()}
        # A leave request the commit did not carry out still stands (its leaf keeps its
        # member); the next commit by an admin removes it.
        rec.leave_requests = _carry(requests, before_members, after_members)
        meta = gs.Metadata.of(group.extensions)
        changed_meta = meta is not None and (meta.name, meta.description, meta.admins) != old
        others_added = [i for i in applied.added
                        if i not in after_members or after_members[i].account != by]
        violation = not is_admin and bool(others_added or unrequested or changed_meta)
        if violation:
            log.warning("a group commit by a non-admin changed the group; flagged")
            out.events.append(GroupUpdated(gid, "policy_violation", by))
        elif meta is not None and changed_meta:
            rec.name, rec.description, rec.admins = (meta.name, meta.description,
                                                     list(meta.admins))
        for index in applied.added:
            if index in after_members:
                self._check_member(gid, after_members[index], out)
        self._tell_changes(out, gid, rec, old, before, after, by, leavers)

    def _vouched_username(self, raw: bytes, member: gs.Member, server_ts: int) -> str | None:
        """The username a group message's sender certificate names, if the certificate
        chains to the pinned trust root, was valid when the server took the message, and
        names this very leaf (account, device, identity); else None."""
        ctx = self._ctx
        try:
            cert = sealed.SenderCertificate.from_bytes(raw)
            cert.validate(ctx.device.record.trust_root,
                          trust.certificate_time(server_ts, ctx.clock()))
        except CoreError:
            return None
        if cert.server_certificate.key_id < ctx.device.min_server_key_id() \
                or cert.account_id.hex() != member.account or cert.device_id != member.device \
                or cert.identity.to_bytes() != member.identity.to_bytes():
            return None
        return cert.username

    def _known_identity(self, account: str) -> bytes | None:
        """The identity ``account`` is known by here (1:1, the directory's bundles, a
        verification), never one learnt from a group credential."""
        if account == self._me:
            return self._ctx.identity.public.to_bytes()
        contact = contacts.get(self._ctx.store, account)
        return None if contact is None else contact.identity

    def _approved_device(self, member: gs.Member) -> bool:
        """Whether the member's device is one its account approved and still lists, as
        this device knows (docs/devices.md): an own device from the account's device
        list, another account's from the directory's approval-checked bundles. A leaf
        for any other device id (never approved, or unlinked) is what a holder of the
        account's identity key could add without the account: flagged like an
        identity change."""
        me = self._ctx.device.record
        if member.account == me.account and member.device == me.device_id:
            return True
        contact = contacts.get(self._ctx.store, member.account)
        return contact is not None and member.device in contact.devices and \
            member.device in contact.linked_devices

    def _genuine(self, member: gs.Member) -> bool:
        return self._known_identity(member.account) == member.identity.to_bytes() and \
            self._approved_device(member)

    def _check_member(self, gid: str, member: gs.Member, out: _Out) -> None:
        """A member's identity against the identity its account is known by. A
        credential is only self-signed by the key it embeds, so it never changes a
        contact: a leaf presenting another identity is flagged (``policy_violation``
        naming the account) and its messages carry ``identity_changed``. An account not
        known yet is confirmed from the directory (:meth:`_confirm_members`)."""
        known = self._known_identity(member.account)
        if known is not None and known != member.identity.to_bytes():
            log.warning("a group member claims account %s… under another identity; "
                        "flagged", member.account[:8])
            out.events.append(GroupUpdated(gid, "policy_violation", None, (member.account,)))

    async def _confirm_members(self, gid: str, out: _Out) -> None:
        """Learn from the directory (prekey bundles, whose device approvals it checks)
        the identity of members' accounts not known here, and the devices of accounts
        with a leaf for a device not known to be approved; then flag leaves that present
        another identity or a device the account does not approve. With the group's lock
        held; outside any transaction. Each account is asked once per run."""
        group = self._group(gid)
        current = gs.members(group)
        for account in sorted({m.account for _, m in current}):
            devices = [m for _, m in current if m.account == account]
            unasked = {m.device for m in devices if not self._approved_device(m)} - \
                self._asked_devices.get(account, set())
            if account in self._unconfirmable or \
                    (self._known_identity(account) is not None and not unasked):
                continue
            self._asked_devices.setdefault(account, set()).update(unasked)
            try:
                if account == self._me:
                    await self._own_devices_refresh()
                else:
                    await self._directory.refresh_devices(account)
            except (ClientError, CoreError) as exc:
                self._unconfirmable.add(account)
                log.warning("could not confirm a group member's devices: %s", exc.code)
                continue
            for member in devices:
                if self._known_identity(account) == member.identity.to_bytes() and \
                        not self._approved_device(member):
                    log.warning("a group member's account does not list or approve one "
                                "of its devices in the group; flagged")
                    out.events.append(GroupUpdated(gid, "policy_violation", None,
                                                   (account,)))
                else:
                    self._check_member(gid, member, out)

    async def _own_devices_refresh(self) -> None:
        """This account's device list from the server, approvals checked (set by the
        client: ``veil.client.devices``)."""
        if self.own_devices_refresh is not None:
            await self.own_devices_refresh()

    def accept_welcome(self, sender: str, device: int, content: Content) -> None:
        """An inbox hook (in the receive transaction): join from a Welcome sent by
        ``sender``, an admin of the group (or another device of this account). A Welcome
        without the ratchet tree (every Welcome Veil makes: docs/groups.md, "Large
        groups") is kept as ``group.joining`` and the join completes once the tree is
        read from the mailbox (``GroupSync._complete_join``). Never raises: a bad
        Welcome is logged."""
        del device
        if content.kind != WELCOME_KIND:
            return
        store = self._ctx.store
        try:
            body = json.loads(content.text)
            welcome = unb64(body["welcome"])
            msg = decode_all(welcome, MLSMessage.read)
            if not isinstance(msg.body, Welcome):
                raise MalformedMessage("not a Welcome")
            found = gs.find_bundle(store, [s.new_member for s in msg.body.secrets])
            if found is None:
                log.warning("a Welcome for none of this device's KeyPackages")
                return
            ref, bundle, last_resort = found
            preview = Group.preview_welcome(welcome, bundle)
            if not preview.tree_included:
                gid = preview.group_id.hex()
                existing = gs.get_record(store, gid)
                if existing is not None and existing.status == "active":
                    return
                with self._txn(gid):
                    store.put(gs.KIND_JOINING, gid, msgspec.json.encode(gs.Joining(
                        welcome=welcome, sender=sender, ref=ref, epoch=preview.epoch,
                        read=preview.export_secret(READ, b"", 32),
                        key=group_tree.tree_key(preview), created=self._ctx.clock(),
                        group_id=gid)))
                if self._ws is not None:
                    self._kick(gid)
                return
            out = _Out()
            joined = self._join(welcome, sender, ref, bundle, last_resort, None, out)
        except (CoreError, ClientError, ValueError, KeyError, TypeError) as exc:
            log.warning("dropped a group Welcome: %s", getattr(exc, "code", type(exc).__name__))
            return
        if joined is None:
            return
        for account in out.announce:
            self._ctx.announce(True, account)
        for event in out.events:
            self._ctx.hub.emit(event)
        if self._ws is not None:
            self._kick(joined)

    def _join(self, welcome: bytes, sender: str, ref: str, bundle: KeyPackageBundle,
              last_resort: bool, tree: bytes | None, out: _Out) -> str | None:
        """Join (every RFC 9420 §12.4.3.1 check, the tree's hash against the
        GroupContext's included) and keep the group, if ``sender`` may invite to it."""
        store = self._ctx.store
        group = Group.join(welcome, bundle, now=self._now_s(), ratchet_tree=tree,
                           credential_check=gs.check_credential, private_handshakes=True)
        gid = group.group_id.hex()
        meta = gs.Metadata.of(group.extensions)
        present = gs.members(group)
        existing = gs.get_record(store, gid)
        # An admin's Welcome, or one from another device of this account (an account
        # may always add its own devices: docs/devices.md, "Groups").
        if meta is None or sender not in {m.account for _, m in present} or \
                (sender not in meta.admins and sender != self._me):
            log.warning("refused a Welcome from someone who is not an admin of the group")
            meta = None
        if meta is None or (existing is not None and existing.status == "active"):
            with self._txn(gid):
                store.delete(gs.KIND_JOINING, gid)
            return None
        with self._txn(gid):
            gs.put_record(store, gs.GroupRecord(
                id=gid, name=meta.name, description=meta.description,
                admins=list(meta.admins), epoch=group.epoch, cursor=0,
                created=self._ctx.clock()))
            self._save_state(gid, group)
            store.delete(gs.KIND_JOINING, gid)
            if not last_resort:
                store.delete(gs.KIND_KP, ref)
            for _, member in present:
                self._check_member(gid, member, out)
        self._cache[gid] = group
        out.events.append(GroupUpdated(gid, "joined", sender, (self._me,)))
        return gid

    @abc.abstractmethod
    def _kick(self, gid: str) -> None:
        """Catch up with ``gid`` in the background (:class:`Groups`)."""


def _carry(requests: list[int], before: dict[int, gs.Member], after: dict[int, gs.Member]
           ) -> list[int]:
    return [i for i in requests if i in before and after.get(i) == before[i]]


def _counted(senders: dict[str, int], before: dict[int, gs.Member],
             after: dict[int, gs.Member]) -> dict[str, int]:
    """The sequence numbers still to follow after a commit: only of devices that stay
    in the same leaf. A device removed, or added (again), starts a new count (its own
    count restarts when it joins anew)."""
    staying = {f"{m.account}/{m.device}" for i, m in after.items() if before.get(i) == m}
    return {key: n for key, n in senders.items() if key in staying}


def _key_package_member(data: bytes) -> gs.Member | None:
    from veil.core.mls.group import _decode_key_package

    try:
        kp = _decode_key_package(data)
    except CoreError:
        return None
    leaf = kp.leaf_node
    return gs.parse_credential(leaf.credential, leaf.signature_key)


def _device_of(data: bytes) -> int:
    member = _key_package_member(data)
    return -1 if member is None else member.device


__all__ = [
    "GroupCore",
    "GroupInfo",
    "GroupMember",
    "SentGroupMessage",
    "read_cap",
    "write_cap",
]
