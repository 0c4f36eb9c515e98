"""Groups in the client: MLS groups over the server's Delivery Service (docs/groups.md).

One component, :class:`Groups`, built on the client's :class:`~veil.client.device.Context`:

- **create, invite, remove, rename, set_admin** are commits. Each goes through
  :meth:`Groups._commit`: sync first, build the commit from the *intent* (what the
  person asked for, re-evaluated against the current state), keep the state before and
  after it in a ``group.pending`` record (committed to the store before the request),
  post it, then resolve it against the mailbox: the commit that ended the epoch is ours
  (adopt the after-state, queue the Welcomes) or another member's (drop ours, process
  theirs, re-apply the intent; at most :data:`COMMIT_ATTEMPTS` times). A client killed
  anywhere in between resolves the same record the same way on its next sync. An
  invitation of more than :data:`ADD_BATCH` devices is several commits; what is still
  to add is kept in ``group.adding``, so a sync after a crash finishes it.
- **Welcomes** travel as ordinary sealed 1:1 messages of kind ``group_welcome`` through
  the :class:`~veil.client.outbox.Outbox`; the invitee's inbox hands them to
  :meth:`Groups.accept_welcome`, which joins (in the receive transaction).
- **Receiving**: :meth:`Groups.sync` reads the mailbox from the cursor over HTTP with
  the epoch's read capability, epoch by epoch; each message is processed in one store
  transaction (MLS state, history, cursor). Pushes on the WebSocket (``group_message``,
  ``group_epoch``, ``group_dropped``) only trigger a sync; after each sync the group is
  (re)subscribed with the current epoch's capability.
- **Admins** are in the group's metadata (a GroupContext extension,
  :mod:`veil.client.group_store`). Only admins may add, remove, rename or promote
  (:class:`NotGroupAdmin` otherwise). A commit by a non-admin that adds, removes (other
  than members who asked to leave) or changes the metadata is *flagged*
  (``GroupUpdated(change="policy_violation")``) and merged, so the group does not
  fork, but its metadata change is not taken.

Every group request carries a capability header on the sealed pool
(:meth:`veil.client.api.Api.group_call`), never device credentials. Operations on one
group are serialised by a per-group ``asyncio.Lock`` (MLS steps are sequential by
nature); other groups, 1:1 sending and receiving go on meanwhile.

The receive path (processing, merging, the admin policy, identities, Welcomes) and the
state helpers are in :mod:`veil.client.group_core`; catching up with the mailbox and the
live connection in :mod:`veil.client.group_sync` (the base classes).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import os
from collections.abc import Sequence

import msgspec

from veil.client import contacts, group_tree
from veil.client import group_store as gs
from veil.client import pending as outbox_store
from veil.client.content import Content
from veil.client.errors import (
    ClientError,
    GroupBusy,
    GroupStuck,
    NotGroupAdmin,
    NotGroupMember,
    ServerRejected,
    UnknownUser,
)
from veil.client.events import GroupUpdated, IncomingMessage
from veil.client.group_core import (
    COMMIT_ATTEMPTS,
    PAD_TO,
    SEND_ATTEMPTS,
    GroupInfo,
    GroupMember,
    SentGroupMessage,
    _device_of,
    _Intent,
    _key_package_member,
    _Out,
    _restore,
    _sha,
    not_stored,
    read_cap,
    write_cap,
)
from veil.client.group_sync import GroupSync
from veil.client.outbox import SentMessage, content_of
from veil.core.errors import CoreError
from veil.core.mls import Group
from veil.protocol import requests as rq
from veil.protocol import responses as rs

log = logging.getLogger("veil.client")
_OWN_ADDS = ("group.own_adds", "waiting")   # linked devices still to join our groups
OWN_ADD_TRIES = 40                           # with backoff up to 30 s: about 15 minutes
ADD_BATCH = 150     # devices added per commit: its Welcome (136 B each) fits 64 KiB


class Groups(GroupSync):
    """The groups of this device (see the module docstring)."""

    # --- reading ---------------------------------------------------------------------------

    def info(self, gid: str) -> GroupInfo:
        rec = self._record(gid)
        accounts: tuple[str, ...] = ()
        if rec.status == "active":
            with contextlib.suppress(NotGroupMember):
                accounts = tuple(sorted({m.account for _, m in gs.members(self._group(gid))}))
        return GroupInfo(rec.id, rec.name, rec.description, tuple(rec.admins), accounts,
                         rec.epoch, rec.status == "active", self._me in rec.admins)

    def all(self) -> list[GroupInfo]:
        return [self.info(r.id) for r in gs.all_records(self._ctx.store)]

    def members(self, gid: str) -> list[GroupMember]:
        rec = self._active(gid)
        by_account: dict[str, list[int]] = {}
        unconfirmed: dict[str, list[int]] = {}
        for _, member in gs.members(self._group(gid)):
            by_account.setdefault(member.account, []).append(member.device)
            if not self._genuine(member):
                unconfirmed.setdefault(member.account, []).append(member.device)
        return [GroupMember(a, self._username(a), tuple(sorted(d)), a in rec.admins,
                            tuple(sorted(unconfirmed.get(a, ()))))
                for a, d in sorted(by_account.items())]

    # --- creating and changing -------------------------------------------------------------

    async def create(self, name: str, description: str | None, invite: list[str]) -> str:
        name, description = gs.check_name(name), gs.check_description(description)
        priv, credential = gs.signer(self._ctx)
        raw_id = os.urandom(32)            # 64 hex: never mistaken for an account id
        gid = raw_id.hex()
        meta = gs.Metadata(name, description, (self._me,))
        group = Group.create(gs.SUITE, credential, now=self._now_s(), signature_priv=priv,
                             group_id=raw_id, extensions=[meta.extension()],
                             credential_check=gs.check_credential, private_handshakes=True,
                             capabilities=gs.CAPABILITIES)
        rec = gs.GroupRecord(id=gid, name=name, description=description, admins=[self._me],
                             registered=False, created=self._ctx.clock())
        with self._txn(gid):
            gs.put_record(self._ctx.store, rec)
            self._save_state(gid, group)
        self._cache[gid] = group
        async with self._lock(gid):
            await self._register(gid)
            self._subscribe_soon(gid)
        own = await self._claim_own(None)   # this account's other devices join too
        if invite:
            await self.invite(gid, invite, own)
        elif own:
            await self._change(gid, _Intent("own", key_packages=own))
        return gid

    async def invite(self, gid: str, who: list[str],
                     own: list[tuple[str, bytes]] | None = None) -> None:
        claimed: list[tuple[str, bytes]] = list(own or ())
        for person in who:
            contact = await self._directory.resolve(person)
            if contact.account == self._me:
                raise UnknownUser("you are in the group already (your other devices join "
                                  "through linking)")
            claimed.extend((contact.account, kp) for kp in await self._claim(contact.account))
        await self._change(gid, _Intent("add", key_packages=claimed))

    async def _claim(self, account: str) -> list[bytes]:
        """One KeyPackage per device of ``account`` whose credential is bound to the
        account's identity as the directory knows it (its prekey bundles, resolved first
        when unknown) and names an approved device of the account (sealed with the
        access key when we hold it)."""
        api = self._ctx.api
        contact = contacts.get(self._ctx.store, account)
        access = None if contact is None else contact.access_key()
        path = f"/v1/keys/mls/{account}?cipher_suite={gs.SUITE}"
        try:
            if access is not None:
                answer = await api.call("GET", path, rs.MlsKeyPackages, auth=False,
                                        access_key=access)
            else:
                answer = await api.call("GET", path, rs.MlsKeyPackages)
        except ServerRejected as exc:
            if exc.status == 404:
                raise UnknownUser(f"{self._who(account)} has no devices that can join groups "
                                  "(no MLS KeyPackages published yet)") from None
            raise
        contact = contacts.get(self._ctx.store, account)
        if contact is None or contact.identity is None or not {
                d.device_id for d in answer.devices} <= set(contact.linked_devices):
            await self._directory.refresh_devices(account)     # identity and approvals
            contact = contacts.get(self._ctx.store, account)
        out: list[bytes] = []
        for dev in answer.devices:
            member = _key_package_member(dev.key_package)
            if member is None or member.account != account or member.device != dev.device_id:
                log.warning("refused a KeyPackage whose credential is not bound to its "
                            "account and device")
                continue
            if contact is None or member.identity.to_bytes() != contact.identity \
                    or dev.device_id not in contact.linked_devices:
                log.warning("refused a KeyPackage of %s… whose identity or device is not "
                            "the account's as the directory knows it", account[:8])
                continue
            out.append(dev.key_package)
        if not out:
            raise UnknownUser(f"{self._who(account)} has no usable MLS KeyPackages")
        return out

    async def _claim_own(self, only: int | None) -> list[tuple[str, bytes]]:
        """KeyPackages of this account's other approved devices (of ``only``, if given),
        each bound to our own identity; empty when none has published one."""
        me, store = self._me, self._ctx.store
        own = contacts.get(store, me)
        approved = set() if own is None else set(own.devices)
        if only is not None:
            approved &= {only}
        if not approved:
            return []
        try:
            answer = await self._ctx.api.call(
                "GET", f"/v1/keys/mls/{me}?cipher_suite={gs.SUITE}", rs.MlsKeyPackages)
        except ServerRejected as exc:
            if exc.status == 404:
                return []
            raise
        identity = self._ctx.identity.public.to_bytes()
        out: list[tuple[str, bytes]] = []
        for dev in answer.devices:
            member = _key_package_member(dev.key_package)
            if dev.device_id not in approved or member is None or member.account != me \
                    or member.device != dev.device_id or member.identity.to_bytes() != identity:
                continue
            out.append((me, dev.key_package))
        return out

    # --- this account's newly linked devices (docs/devices.md, "Groups") ------------------

    def _own_waiting(self) -> list[int]:
        raw = self._ctx.store.get(*_OWN_ADDS)
        return [] if raw is None else [int(d) for d in json.loads(raw)]

    def _set_own_waiting(self, devices: list[int]) -> None:
        self._ctx.store.put(*_OWN_ADDS, json.dumps(sorted(set(devices))).encode())

    def own_device_linked(self, device: int) -> None:
        """After approving ``device``: it is to join every active group of this device
        once it has published KeyPackages (it does so right after linking). Kept in the
        store; tried now in the background (with backoff for a while) and on every
        :meth:`sync_all`."""
        with self._ctx.store.transaction():
            self._set_own_waiting([*self._own_waiting(), device])
        task = asyncio.create_task(self._add_own_later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _add_own_later(self) -> None:
        delay = 0.5
        for _ in range(OWN_ADD_TRIES):
            try:
                await self.add_own_devices()
            except (ClientError, CoreError) as exc:
                log.warning("could not add a linked device to the groups: %s", exc.code)
            if not self._own_waiting():
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def add_own_devices(self) -> None:
        """Add this account's newly linked devices to every active group that lacks
        them: a commit of an ``own`` intent (allowed to any member for its own devices)
        and a Welcome to this account's devices. A device with no KeyPackage yet stays
        waiting."""
        async with self._own_lock:
            for device in self._own_waiting():
                done = True
                for rec in gs.all_records(self._ctx.store):
                    if rec.status != "active":
                        continue
                    with contextlib.suppress(NotGroupMember):
                        if any(m.account == self._me and m.device == device
                               for _, m in gs.members(self._group(rec.id))):
                            continue
                    claimed = await self._claim_own(device)
                    if not claimed:
                        done = False               # not published yet: later
                        break
                    try:
                        await self._change(rec.id, _Intent("own", key_packages=claimed))
                    except (ClientError, CoreError) as exc:
                        done = False
                        log.warning("could not add a linked device to a group: %s", exc.code)
                if done:
                    with self._ctx.store.transaction():
                        self._set_own_waiting([d for d in self._own_waiting() if d != device])

    async def remove(self, gid: str, who: str) -> None:
        contact = await self._directory.resolve(who)
        if contact.account == self._me:
            raise ClientError("to remove yourself, leave the group")
        await self._change(gid, _Intent("remove", accounts=[contact.account]))

    async def rename(self, gid: str, name: str, description: str | None) -> None:
        name = gs.check_name(name)
        description = gs.check_description(description)

        def change(meta: gs.Metadata) -> gs.Metadata:
            return gs.Metadata(name, meta.description if description is None else description,
                               meta.admins)
        await self._change(gid, _Intent("meta", change=change))

    async def set_admin(self, gid: str, who: str, admin: bool) -> None:
        account = (await self._directory.resolve(who)).account
        self._active(gid)
        if admin and account not in {m.account for _, m in gs.members(self._group(gid))}:
            raise NotGroupMember(f"{self._who(account)} is not in this group")

        def change(meta: gs.Metadata) -> gs.Metadata:
            admins = set(meta.admins)
            if admin:
                admins.add(account)
            else:
                admins.discard(account)
            if not admins:
                raise ClientError("a group needs at least one admin")
            return gs.Metadata(meta.name, meta.description, tuple(sorted(admins)))
        await self._change(gid, _Intent("meta", change=change))

    async def _change(self, gid: str, intent: _Intent) -> None:
        out = _Out()
        try:
            async with self._lock(gid):
                self._active(gid)
                await self._sync(gid, out)
                await self._resume_adds(gid, out)
                await self._commit(gid, intent, out)
        finally:
            await self._emit(out)

    async def _resume_adds(self, gid: str, out: _Out) -> None:
        """With the lock held, after a sync: an invitation cut off between its batches
        (``group.adding``: a crash, a kill, the server away) commits its remaining
        batches now."""
        adding = gs.get_adding(self._ctx.store, gid)
        rec = gs.get_record(self._ctx.store, gid)
        if adding is None or rec is None or rec.status != "active":
            return
        log.info("resuming an invitation cut off between its batches")
        try:
            await self._commit(gid, _Intent(adding.op, key_packages=adding.key_packages),
                               out)
        except (ClientError, CoreError) as exc:
            # Not the caller's failure (a sync, another change): logged; the record is
            # kept if a later sync can still finish it (_commit decides).
            log.warning("could not finish an invitation cut off between its batches: %s",
                        exc.code)

    def _changes(self, rec: gs.GroupRecord, group: Group, intent: _Intent
                 ) -> dict[str, object] | None:
        """The commit's arguments for ``intent`` in the current state; None when there
        is nothing (left) to do."""
        current = gs.members(group)
        if intent.op in ("add", "own"):
            present = {(m.account, m.device) for _, m in current}
            fresh = [kp for account, kp in intent.key_packages
                     if (_key_package_member(kp) is not None
                         and (account, _device_of(kp)) not in present)]
            return {"add": fresh[:ADD_BATCH]} if fresh else None    # a batch at a time
        if intent.op == "remove":
            leaves = [i for i, m in current if m.account in intent.accounts]
            if not leaves:
                names = ", ".join(self._who(a) for a in intent.accounts)
                raise NotGroupMember(f"{names} is not in the group '{rec.name}'")
            changes: dict[str, object] = {"remove": leaves}
            admins = set(rec.admins) - set(intent.accounts)
            if admins != set(rec.admins) and admins:
                changes["extensions"] = [gs.Metadata(rec.name, rec.description,
                                                     tuple(sorted(admins))).extension()]
            return changes
        if intent.op == "devices":           # our own unlinked devices (docs/devices.md)
            gone = [i for i, m in current if m.account == self._me and m.device in intent.devices]
            return {"remove": gone} if gone else None
        if intent.op == "meta":
            assert intent.change is not None
            now = gs.Metadata(rec.name, rec.description, tuple(sorted(rec.admins)))
            wanted = intent.change(now)
            return None if wanted == now else {"extensions": [wanted.extension()]}
        # flush: remove the members who asked to leave and are still here
        leaves_now = {i for i, _ in current}
        standing = [i for i in rec.leave_requests if i in leaves_now]
        if not standing:
            return None
        flush: dict[str, object] = {"remove": standing, "include_pending": False}
        staying = {m.account for i, m in current if i not in standing}
        leaving = {m.account for i, m in current if i in standing} - staying
        admins = (set(rec.admins) - leaving) & staying
        if self._me in rec.admins and admins and admins != set(rec.admins):
            flush["extensions"] = [gs.Metadata(rec.name, rec.description,
                                               tuple(sorted(admins))).extension()]
        return flush

    async def _commit(self, gid: str, intent: _Intent, out: _Out) -> None:
        """With the group's lock held. See the module docstring. An invitation keeps its
        KeyPackages in ``group.adding`` until every batch is in the group; a refusal the
        person is told of (or that a retry cannot fix) forgets them."""
        if intent.op not in ("add", "own"):
            await self._commit_loop(gid, intent, out)
            return
        try:
            await self._commit_loop(gid, intent, out)
        except ServerRejected as exc:
            if not_stored(exc):
                self._drop_adding(gid)
            raise
        except (NotGroupAdmin, NotGroupMember, GroupBusy, CoreError):
            self._drop_adding(gid)
            raise

    def _drop_adding(self, gid: str) -> None:
        if gs.get_adding(self._ctx.store, gid) is not None:
            with self._txn(gid):
                gs.drop_adding(self._ctx.store, gid)

    async def _commit_loop(self, gid: str, intent: _Intent, out: _Out) -> None:
        store, api = self._ctx.store, self._ctx.api
        attempts = 0
        while attempts < COMMIT_ATTEMPTS:
            attempts += 1
            rec = self._active(gid)
            if intent.op not in ("flush", "devices", "own") and self._me not in rec.admins:
                admins = ", ".join(self._who(a) for a in rec.admins) or "nobody"
                raise NotGroupAdmin(f"only an admin of '{rec.name}' may add, remove, rename "
                                    f"or promote; the admins are {admins}")
            group = self._group(gid)
            changes = self._changes(rec, group, intent)
            if changes is None:
                if intent.op in ("add", "own"):
                    self._drop_adding(gid)     # every device is in (or none is usable)
                return
            epoch, write = group.epoch, write_cap(group)
            added: list[bytes] = changes.get("add", [])  # type: ignore[assignment]
            group_before = {(m.account, m.device) for _, m in gs.members(group)}
            before = group.save()
            # Welcomes never carry the tree: it goes to the new epoch's mailbox
            # (veil.client.group_tree), so a group of any size can be joined.
            result = group.commit(now=self._now_s(), include_tree_in_welcome=False,
                                  **changes)  # type: ignore[arg-type]
            group.merge_pending_commit()
            after = group.save()
            tree = group_tree.seal_tree(group) if result.welcome is not None else []
            pending = gs.PendingCommit(
                epoch=epoch, commit=result.commit, welcome=result.welcome,
                welcome_to=sorted({a for a, kp in intent.key_packages if kp in added}),
                before_slow=before.slow, before_hot=before.hot,
                after_slow=after.slow, after_hot=after.hot,
                next_read=read_cap(group), next_write=write_cap(group), tree=tree)
            self._cache[gid] = _restore(before.slow, before.hot)
            with self._txn(gid):
                store.put(gs.KIND_SLOW, gid, before.slow)
                store.put(gs.KIND_HOT, gid, before.hot)
                gs.put_pending(store, gid, pending)
                if intent.op in ("add", "own"):
                    # What is not in the group yet, this batch included: whatever stops
                    # this call, the next sync commits it (_adopt takes each batch out).
                    gs.put_adding(store, gid, gs.Adding(
                        op=intent.op, key_packages=_not_in(group_before, intent)))
            await self._hook("before_post")
            try:
                await api.group_call(
                    "POST", f"/v1/groups/{gid}/commits", rs.GroupAppended,
                    rq.GroupCommit(epoch=epoch, message=result.commit,
                                   next_read_verifier=_sha(pending.next_read),
                                   next_write_verifier=_sha(pending.next_write)),
                    write=write)
            except ServerRejected as exc:
                if exc.server_code == "epoch_conflict":
                    log.info("a group commit lost its epoch; catching up and trying again")
                elif not_stored(exc):
                    with self._txn(gid):
                        gs.drop_pending(store, gid)
                    raise
                else:                    # maybe stored: the mailbox says (docs/groups.md)
                    log.warning("the answer to a group commit was lost (%s); settling it "
                                "against the mailbox", exc.code)
            await self._hook("after_post")
            outcome = await self._resolve(gid, out)
            if outcome == "ours":
                await self._post_tree(gid, out)
                if intent.op not in ("add", "own"):
                    return
                await self._hook("batch_done")
                attempts = 0               # an add: the next batch, if any, or done
                continue
            if outcome == "absent":
                with self._txn(gid):
                    gs.drop_pending(store, gid)
            await self._sync(gid, out)     # catch up, then re-apply the intent
        raise GroupBusy(f"the group '{self._record(gid).name}' kept changing while this "
                        "change was being committed; try again")

    async def _hook(self, point: str) -> None:
        if self.crash_hook is not None:
            result = self.crash_hook(point)
            if inspect.isawaitable(result):
                await result

    # --- leaving -------------------------------------------------------------------------

    async def leave(self, gid: str) -> None:
        """Propose the removal of this account's leaves (the next commit by another
        member removes them), then forget the group's keys here."""
        out = _Out()
        try:
            async with self._lock(gid):
                self._active(gid)
                await self._sync(gid, out)
                await self._propose_removal(gid, None, out)
                with self._txn(gid):
                    rec = self._record(gid)
                    rec.status = "left"
                    gs.put_record(self._ctx.store, rec)
                    self._forget_state(gid)
                await self._unsubscribe(gid)
                out.events.append(GroupUpdated(gid, "left", self._me, (self._me,)))
        finally:
            await self._emit(out)

    async def _propose_removal(self, gid: str, devices: set[int] | None, out: _Out) -> None:
        """With the lock held: propose the removal of this account's leaves (of
        ``devices`` only, or all), which every member records as a leave request."""
        for _ in range(SEND_ATTEMPTS):
            if self._record(gid).status != "active":
                return
            group = self._group(gid)
            current = gs.members(group)
            mine = [i for i, m in current if m.account == self._me
                    and (devices is None or m.device in devices)]
            if not mine or all(m.account == self._me for _, m in current):
                return                             # alone: nothing to tell anyone
            epoch, write = group.epoch, write_cap(group)
            proposals = [group.propose_remove(i) for i in mine]
            with self._txn(gid):
                self._save_state(gid, group)
            try:
                for proposal in proposals:
                    await self._post(gid, epoch, proposal, write)
                return
            except ServerRejected as exc:
                if exc.server_code != "epoch_conflict":
                    raise
                await self._sync(gid, out)

    async def remove_device(self, device: int) -> None:
        """After the server revoked ``device`` of this account: take its leaves out of
        every group (docs/groups.md, "Unlinked devices"). Where this account is an
        admin, a commit removes them; elsewhere a Remove proposal asks for it (as
        leaving does) and the next admin's commit carries it out."""
        for rec in gs.all_records(self._ctx.store):
            if rec.status != "active":
                continue
            out = _Out()
            try:
                async with self._lock(rec.id):
                    await self._sync(rec.id, out)
                    if self._record(rec.id).status != "active":
                        continue
                    if self._me in self._record(rec.id).admins:
                        await self._commit(rec.id, _Intent("devices", devices=[device]), out)
                    else:
                        await self._propose_removal(rec.id, {device}, out)
            except (ClientError, CoreError) as exc:
                log.warning("could not take an unlinked device out of a group: %s", exc.code)
            finally:
                await self._emit(out)

    # --- sending -------------------------------------------------------------------------

    async def _post(self, gid: str, epoch: int, message: bytes, write: bytes
                    ) -> rs.GroupAppended:
        answer = await self._ctx.api.group_call(
            "POST", f"/v1/groups/{gid}/messages", rs.GroupAppended,
            rq.GroupPost(epoch=epoch, message=message), write=write)
        self._own_seqs.setdefault(gid, set()).add(answer.seq)
        return answer

    async def send(self, gid: str, text: str, content: Content | None = None,
                   uploads: Sequence[str] = ()) -> SentGroupMessage:
        """Save ``text`` (or ``content``: a reply, attachments, a reaction, an edit...)
        in the persistent outbox (kind ``group``) before anything else, then deliver it
        (:meth:`deliver_pending`). If the server cannot be reached the message stays in
        the outbox and ``flush_outbox`` (every connect) posts it."""
        self._active(gid)
        if content is None:
            content = Content.text_message(text, self._ctx.clock(), b"")
        if content.kind == "timer" and self._me not in self._record(gid).admins:
            raise NotGroupAdmin("only an admin of the group sets its disappearing timer")
        message = outbox_store.PendingMessage(
            id=content.id, to=gid, text=content.text, timestamp=content.timestamp,
            kind=outbox_store.GROUP_KIND,
            content=dataclasses.replace(content, profile_key=None).encode(),
            uploads=list(uploads))
        outbox_store.save(self._ctx.store, message)
        await self._outbox.deliver(message)
        return SentGroupMessage(message.id, gid, self._sent_seqs.pop(message.id, 0),
                                message.timestamp)

    async def deliver_pending(self, message: outbox_store.PendingMessage) -> SentMessage:
        """Post one outbox group message exactly once. Its PrivateMessage is saved in
        the outbox with the MLS state that used its key, before it is posted; a retry
        in the same epoch posts the same bytes (a copy the server stored twice is a
        reused key every receiver drops), and a sync that meets those bytes in the
        mailbox settles it as sent. Only when its epoch ended without them is it
        encrypted again, in the new epoch."""
        gid, store = message.to, self._ctx.store
        out = _Out()
        try:
            async with self._lock(gid):
                self._active(gid)
                stale = message.group_epoch is not None \
                    and message.group_epoch != self._group(gid).epoch
                if stale or gs.get_pending(store, gid) is not None:
                    await self._sync(gid, out)
                for _ in range(SEND_ATTEMPTS):
                    rec = self._active(gid)
                    current = outbox_store.get(store, message.id)
                    if current is None:        # the mailbox holds it: sent
                        return self._as_sent(message)
                    group = self._group(gid)
                    if current.group_message is None or current.group_epoch != group.epoch:
                        # Members who never talked to us 1:1 see our @username from it.
                        certificate = (await self._outbox.certificate()).to_bytes()
                        # The sequence number is taken once per message and kept when a
                        # new epoch re-encrypts it, so receivers count each message once
                        # (docs/groups.md, "Missing messages").
                        number = current.group_number or self._record(gid).sent + 1
                        data = dataclasses.replace(
                            content_of(current), kind=_group_kind(current),
                            certificate=certificate, number=number).encode()
                        encrypted = group.encrypt(data, padding=(-len(data)) % PAD_TO)
                        current = msgspec.structs.replace(
                            current, group_message=encrypted, group_epoch=group.epoch,
                            group_number=number)
                        with self._txn(gid):   # the key is used: saved before it leaves
                            self._save_state(gid, group)
                            outbox_store.save(store, current)
                            rec = self._record(gid)
                            if number > rec.sent:
                                rec.sent = number
                                gs.put_record(store, rec)
                    assert current.group_message is not None
                    try:
                        answer = await self._post(gid, group.epoch, current.group_message,
                                                  write_cap(group))
                    except ServerRejected as exc:
                        if exc.server_code not in ("epoch_conflict", "invalid_capability"):
                            raise
                        await self._sync(gid, out)
                        continue
                    with self._txn(gid):       # in the history and out of the outbox
                        self._note_sent(gid, current, answer.seq)
                    return self._as_sent(message)
                if self._record(gid).stalled == self._group(gid).epoch:
                    raise GroupStuck(f"the server does not let this device past its epoch "
                                     f"of '{rec.name}' (a commit withheld or refused); the "
                                     "message waits in the outbox")
                raise GroupBusy(f"the group '{rec.name}' kept changing; the message waits "
                                "in the outbox")
        finally:
            await self._emit(out)

    def _as_sent(self, message: outbox_store.PendingMessage) -> SentMessage:
        return SentMessage(message.id, message.to, 0, message.timestamp, True, "group")

    # --- receiving -----------------------------------------------------------------------

    async def sync(self, gid: str) -> list[IncomingMessage]:
        """Catch up with the group's mailbox (resolving a pending commit first)."""
        out = _Out()
        try:
            async with self._lock(gid):
                await self._sync(gid, out)
                await self._resume_adds(gid, out)
        finally:
            got = list(out.messages)
            await self._emit(out)
        await self._flush_leaves(gid)
        return got

    async def sync_all(self) -> list[IncomingMessage]:
        if self._own_waiting():
            try:
                await self.add_own_devices()
            except (ClientError, CoreError) as exc:
                log.warning("could not add a linked device to the groups: %s", exc.code)
        got: list[IncomingMessage] = []
        store = self._ctx.store
        joining = [gid for gid in gs.all_joining(store)
                   if (r := gs.get_record(store, gid)) is None or r.status != "active"]
        for gid in [*joining, *(r.id for r in gs.all_records(store) if r.status == "active")]:
            try:
                got.extend(await self.sync(gid))
            except (ClientError, CoreError) as exc:
                log.warning("could not catch up with a group: %s", exc.code)
        return got

    async def _flush_leaves(self, gid: str) -> None:
        """Commit the removal of members who asked to leave: admins do it; when no admin
        remains among the others, anyone does."""
        rec = gs.get_record(self._ctx.store, gid)
        if rec is None or rec.status != "active" or not rec.leave_requests:
            return
        try:
            group = self._group(gid)
            leaving = {m.account for i, m in gs.members(group) if i in rec.leave_requests}
            staying_admins = set(rec.admins) - leaving
            if staying_admins and self._me not in staying_admins:
                return
            await self._change(gid, _Intent("flush"))
        except (ClientError, CoreError) as exc:
            log.warning("could not commit a member's leaving: %s", exc.code)

def _not_in(present: set[tuple[str, int]], intent: _Intent) -> list[tuple[str, bytes]]:
    """The intent's KeyPackages whose device is not among ``present`` (account, device)."""
    return [(account, kp) for account, kp in intent.key_packages
            if (account, _device_of(kp)) not in present]


def _group_kind(message: outbox_store.PendingMessage) -> str:
    """The content kind of an outbox group message (older records: text)."""
    return "text" if message.content is None else content_of(message).kind


__all__ = [
    "GroupInfo",
    "GroupMember",
    "Groups",
    "SentGroupMessage",
    "read_cap",
]
