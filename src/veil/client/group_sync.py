"""Catching up and the live connection of :class:`veil.client.groups.Groups`: the
mailbox registration, settling a pending commit against the mailbox (ours, theirs or
absent), the sync loop epoch by epoch, telling the application what happened, and the
WebSocket subscriptions (docs/groups.md, "Delivery", "Crash safety").

Split from :mod:`veil.client.groups` (the operations and the commit engine) only to
keep modules short.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import os

from veil.client import group_store as gs
from veil.client import group_tree
from veil.client import pending as outbox_store
from veil.client.api import b64
from veil.client.conversations import forget_if_deleted
from veil.client.errors import ClientError, ServerRejected
from veil.client.events import IncomingMessage, MessageReceived
from veil.client.group_core import (
    MAX_PAGES,
    WELCOME_KIND,
    GroupCore,
    _carry,
    _counted,
    _device_of,
    _Out,
    _restore,
    _sha,
    not_stored,
    read_cap,
    write_cap,
)
from veil.client.transport import WebSocket
from veil.core.errors import CoreError
from veil.core.mls import Group
from veil.protocol import requests as rq
from veil.protocol import responses as rs
from veil.protocol import to_builtins
from veil.protocol.frames import (
    GroupDroppedFrame,
    GroupEpochFrame,
    GroupSubscribedFrame,
    GroupSubscribeFrame,
    GroupUnsubscribeFrame,
    ServerFrame,
)

log = logging.getLogger("veil.client")


class GroupSync(GroupCore):
    """Catching up with the mailbox and the live connection (the base of ``Groups``)."""

    async def _register(self, gid: str) -> None:
        rec = self._record(gid)
        if rec.registered:
            return
        group = self._group(gid)
        try:
            await self._ctx.api.group_call("POST", "/v1/groups", rs.GroupMailbox,
                                           rq.GroupCreate(group_id=bytes.fromhex(gid),
                                                          read_verifier=_sha(read_cap(group)),
                                                          write_verifier=_sha(write_cap(group))))
        except ServerRejected as exc:
            if exc.server_code != "group_exists":
                raise
        with self._txn(gid):
            rec = self._record(gid)
            rec.registered = True
            gs.put_record(self._ctx.store, rec)

    async def _fetch(self, gid: str, epoch: int, after: int, read: bytes
                     ) -> rs.GroupMessagePage:
        return await self._ctx.api.group_call(
            "GET", f"/v1/groups/{gid}/messages?epoch={epoch}&after={after}",
            rs.GroupMessagePage, read=read)

    async def _resolve(self, gid: str, out: _Out) -> str:
        """Settle a pending commit against the mailbox: ``ours`` (adopted), ``theirs``
        (dropped; theirs processed), ``absent`` (the epoch has no commit yet), or
        ``none`` (nothing pending)."""
        store = self._ctx.store
        pending = gs.get_pending(store, gid)
        if pending is None:
            return "none"
        group = self._group(gid)
        if group.epoch != pending.epoch:
            with self._txn(gid):
                gs.drop_pending(store, gid)
            return "theirs"
        read = read_cap(group)
        for _ in range(MAX_PAGES):
            page = await self._fetch(gid, pending.epoch, self._record(gid).cursor, read)
            for m in page.messages:
                if m.commit and m.message == pending.commit:
                    self._adopt(gid, pending, m.seq, out)
                    return "ours"
                if m.commit:
                    with self._txn(gid):
                        gs.drop_pending(store, gid)
                    self._process(gid, m, out)
                    return "theirs"
                self._process(gid, m, out)
            if not page.more:
                break
        return "absent"

    def _adopt(self, gid: str, pending: gs.PendingCommit, seq: int, out: _Out) -> None:
        """Our commit won its epoch: the after-state becomes the state, in one
        transaction with the cursor and the Welcomes queued in the outbox."""
        store = self._ctx.store
        before = {m.account for _, m in gs.members(self._group(gid))}
        group = _restore(pending.after_slow, pending.after_hot)
        after = {m.account for _, m in gs.members(group)}
        now = self._ctx.clock()
        welcomes = [outbox_store.PendingMessage(
            id=os.urandom(16).hex(), to=account, timestamp=now, kind=WELCOME_KIND,
            text=json.dumps({"v": 1, "welcome": b64(pending.welcome)}))
            for account in pending.welcome_to if pending.welcome is not None]
        with self._txn(gid):
            rec = self._record(gid)
            old = (rec.name, rec.description, tuple(rec.admins))
            meta = gs.Metadata.of(group.extensions)
            if meta is not None:
                rec.name, rec.description, rec.admins = (meta.name, meta.description,
                                                         list(meta.admins))
            rec.epoch, rec.cursor = group.epoch, seq
            members_before = dict(gs.members(self._group(gid)))
            rec.leave_requests = _carry(rec.leave_requests, members_before,
                                        dict(gs.members(group)))
            rec.senders = _counted(rec.senders, members_before, dict(gs.members(group)))
            gs.put_record(store, rec)
            store.put(gs.KIND_SLOW, gid, pending.after_slow)
            store.put(gs.KIND_HOT, gid, pending.after_hot)
            gs.drop_pending(store, gid)
            self._prune_adding(gid, group)
            if pending.tree and welcomes:     # the tree first, then the Welcomes
                gs.put_tree_post(store, gid, gs.TreePost(
                    epoch=group.epoch, chunks=pending.tree, welcomes=welcomes))
            else:
                for message in welcomes:
                    outbox_store.save(store, message)
        self._cache[gid] = group
        if not pending.tree:
            out.welcomes.extend(welcomes)
        self._tell_changes(out, gid, rec, old, before, after, self._me, set())

    def _prune_adding(self, gid: str, group: Group) -> None:
        """Inside the transaction that adopts a commit of ours: the invitation's
        KeyPackages whose device is now in the group are done; the rest (the next
        batches) stay in ``group.adding``, or the record goes."""
        store = self._ctx.store
        adding = gs.get_adding(store, gid)
        if adding is None:
            return
        present = {(m.account, m.device) for _, m in gs.members(group)}
        rest = [(account, kp) for account, kp in adding.key_packages
                if (account, _device_of(kp)) not in present]
        if rest:  # the next batches
            gs.put_adding(store, gid, gs.Adding(op=adding.op, key_packages=rest))
        else:
            gs.drop_adding(store, gid)

    async def _sync(self, gid: str, out: _Out) -> None:
        rec = gs.get_record(self._ctx.store, gid)
        if (rec is None or rec.status != "active") \
                and gs.get_joining(self._ctx.store, gid) is not None:
            await self._complete_join(gid, out)
            rec = gs.get_record(self._ctx.store, gid)
        if rec is None or rec.status != "active":
            return
        await self._register(gid)
        if gs.get_pending(self._ctx.store, gid) is not None:
            outcome = await self._resolve(gid, out)
            if outcome == "absent":
                await self._repost(gid, out)
        await self._post_tree(gid, out)
        if self._record(gid).status == "active":
            await self._confirm_members(gid, out)
        seen_commit, seen_epoch = False, -1     # a commit served in the epoch being read
        stalled = False
        for _ in range(MAX_PAGES):
            rec = self._record(gid)
            if rec.status != "active":
                break
            group = self._group(gid)
            epoch = group.epoch
            if epoch != seen_epoch:
                seen_commit, seen_epoch = False, epoch
            try:
                page = await self._fetch(gid, epoch, rec.cursor, read_cap(group))
            except ServerRejected as exc:
                if exc.server_code != "invalid_capability":
                    raise
                log.warning("a group's mailbox refused this device's capability (expired, "
                            "or the epoch is gone)")
                self._stalled(gid, epoch, "capability_refused", out)
                return
            seen_commit = seen_commit or any(m.commit for m in page.messages)
            for m in page.messages:
                pending = gs.get_pending(self._ctx.store, gid) if m.commit else None
                if pending is not None and m.message == pending.commit \
                        and pending.epoch == epoch:
                    self._adopt(gid, pending, m.seq, out)      # ours: never "own commit"
                else:
                    self._process(gid, m, out)
                if self._record(gid).status != "active":
                    break
                if m.commit:
                    await self._confirm_members(gid, out)
            if self._record(gid).status != "active":
                await self._unsubscribe(gid)
                return
            if page.more or (page.epoch_ended and self._group(gid).epoch > epoch):
                continue
            if page.epoch_ended:
                # The server says the epoch ended, and this device is still in it: the
                # commit that ended it was not served (or did not verify). The device
                # stays here, safely; it is told why, once (docs/groups.md).
                self._stalled(gid, epoch, "commit_refused" if seen_commit
                              else "commit_withheld", out)
                stalled = True
            break
        if not stalled:
            self._unstalled(gid)
        await self._post_tree(gid, out)
        await self._subscribe(gid)

    async def _complete_join(self, gid: str, out: _Out) -> None:
        """A Welcome without the tree (``group.joining``): read its epoch's mailbox with
        the read capability the Welcome gave, open the tree's chunks, and join with the
        tree (``Group.join`` checks its hash against the GroupContext's). Until every
        chunk is there it stays waiting, for at most ``welcome_wait_ms`` (then it is
        dropped); a tree that does not verify drops it."""
        store = self._ctx.store
        joining = gs.get_joining(store, gid)
        if joining is None:
            return
        waited = self._ctx.clock() - joining.created
        if waited >= self.welcome_wait_ms:
            self._expire_join(gid, joining, waited)
            return
        raw_id = bytes.fromhex(gid)
        chunks: dict[int, tuple[int, int, bytes]] = {}
        after, tree = 0, None
        for _ in range(MAX_PAGES):
            try:
                page = await self._fetch(gid, joining.epoch, after, joining.read)
            except ServerRejected as exc:
                if exc.server_code != "invalid_capability":
                    raise
                log.warning("the mailbox refused the capability of a group Welcome (the "
                            "epoch is gone, or the Welcome was not the group's)")
                return
            for m in page.messages:
                after = max(after, m.seq)
                got = None if m.commit else group_tree.open_chunk(
                    joining.key, raw_id, joining.epoch, m.message)
                if got is not None:
                    index, count, length, data = got
                    chunks.setdefault(index, (count, length, data))
            tree = group_tree.assemble(chunks)
            if tree is not None or not page.more:
                break
        if tree is None:
            log.info("a group Welcome waits for its ratchet tree in the mailbox")
            return
        found = gs.find_bundle(store, [bytes.fromhex(joining.ref)])
        try:
            if found is None:
                raise ClientError("the KeyPackage of a group Welcome is gone")
            ref, bundle, last_resort = found
            self._join(joining.welcome, joining.sender, ref, bundle, last_resort, tree, out)
        except (CoreError, ClientError) as exc:
            log.warning("dropped a group Welcome whose tree does not verify: %s", exc.code)
            with self._txn(gid):
                store.delete(gs.KIND_JOINING, gid)

    def _expire_join(self, gid: str, joining: gs.Joining, waited_ms: int) -> None:
        """Drop a Welcome whose tree never came, with the private half of its one-time
        KeyPackage (no other Welcome can be for it: the server handed it out once)."""
        store = self._ctx.store
        found = gs.find_bundle(store, [bytes.fromhex(joining.ref)])
        with self._txn(gid):
            store.delete(gs.KIND_JOINING, gid)
            if found is not None and not found[2]:
                store.delete(gs.KIND_KP, found[0])
        log.warning("dropped a group Welcome that waited %d days for its ratchet tree; "
                    "the group's admin must invite this device again",
                    waited_ms // (24 * 3600 * 1000))

    async def _post_tree(self, gid: str, out: _Out) -> None:
        """Our commit won: post the new epoch's tree (``group.tree``), then queue the
        Welcomes that need it. Resumed by every sync (a crash, the server away); given
        up when the epoch has ended meanwhile (its capability is gone)."""
        store = self._ctx.store
        post = gs.get_tree_post(store, gid)
        if post is None or self._record(gid).status != "active":
            return
        group = self._group(gid)
        if group.epoch != post.epoch:
            log.warning("a group's epoch ended before its tree was posted; the invited "
                        "devices must be invited again")
            with self._txn(gid):
                gs.drop_tree_post(store, gid)
            return
        write = write_cap(group)
        for index in range(post.posted, len(post.chunks)):
            try:
                answer = await self._ctx.api.group_call(
                    "POST", f"/v1/groups/{gid}/messages", rs.GroupAppended,
                    rq.GroupPost(epoch=post.epoch, message=post.chunks[index]), write=write)
            except ServerRejected as exc:
                if exc.server_code not in ("epoch_conflict", "invalid_capability"):
                    raise                   # kept: the next sync goes on
                log.warning("a group's epoch ended while its tree was posted")
                with self._txn(gid):
                    gs.drop_tree_post(store, gid)
                return
            self._own_seqs.setdefault(gid, set()).add(answer.seq)
            post.posted = index + 1
            with self._txn(gid):
                gs.put_tree_post(store, gid, post)
        with self._txn(gid):                # the Welcomes leave with the tree in place
            for message in post.welcomes:
                outbox_store.save(store, message)
            gs.drop_tree_post(store, gid)
        out.welcomes.extend(post.welcomes)

    async def _repost(self, gid: str, out: _Out) -> None:
        """A pending commit the server never stored: post the same bytes again (they
        are still a valid commit of that epoch), then settle it."""
        pending = gs.get_pending(self._ctx.store, gid)
        if pending is None:
            return
        group = self._group(gid)
        try:
            await self._ctx.api.group_call(
                "POST", f"/v1/groups/{gid}/commits", rs.GroupAppended,
                rq.GroupCommit(epoch=pending.epoch, message=pending.commit,
                               next_read_verifier=_sha(pending.next_read),
                               next_write_verifier=_sha(pending.next_write)),
                write=write_cap(group))
        except ServerRejected as exc:
            if not_stored(exc):
                with self._txn(gid):
                    gs.drop_pending(self._ctx.store, gid)
                raise
            log.info("a reposted group commit: %s; settling it against the mailbox", exc.code)
        if await self._resolve(gid, out) == "absent":
            with self._txn(gid):
                gs.drop_pending(self._ctx.store, gid)

    async def _emit(self, out: _Out) -> None:
        for account in out.announce:
            self._ctx.announce(True, account)
        own, self._applied_own = self._applied_own, []
        forget_if_deleted(self._ctx.store, [*out.events, *own])
        for event in [*out.events, *own]:
            self._ctx.hub.emit(event)
        for message in out.messages:
            assert message.group is not None
            await self._ctx.hub.emit_message(MessageReceived(message, message.group))
        for welcome in out.welcomes:
            try:
                await self._outbox.deliver(welcome)
            except (ClientError, CoreError, TimeoutError) as exc:
                log.warning("a group Welcome waits in the outbox: %s",
                            getattr(exc, "code", type(exc).__name__))
        out.announce, out.events, out.messages, out.welcomes = [], [], [], []

    # --- the live connection (veil.client.connection) -------------------------------------

    def attach(self, ws: WebSocket) -> None:
        self._ws = ws
        self._subscribed.clear()
        for rec in gs.all_records(self._ctx.store):
            if rec.status == "active":
                self._kick(rec.id)

    def detach(self) -> None:
        self._ws = None
        self._subscribed.clear()

    def on_frame(self, frame: ServerFrame) -> None:
        group_id = getattr(frame, "group_id", None)
        if not isinstance(group_id, bytes):
            return
        gid = group_id.hex()
        if isinstance(frame, GroupEpochFrame | GroupDroppedFrame):
            self._subscribed.pop(gid, None)
        if isinstance(frame, GroupSubscribedFrame):
            rec = gs.get_record(self._ctx.store, gid)
            if frame.current_epoch == frame.epoch and rec is not None \
                    and frame.last_seq <= rec.cursor:
                return
            if frame.current_epoch != frame.epoch:
                self._subscribed.pop(gid, None)
                if rec is not None and rec.stalled == frame.epoch:
                    # Stalled there (GroupStalled told): a sync would find the same and
                    # subscribe again, round and round. The next connect or receive
                    # looks again.
                    return
        self._kick(gid)

    async def key_packages_low(self) -> None:
        await self.key_packages.run_quietly()

    def _subscribe_soon(self, gid: str) -> None:
        if self._ws is not None:
            self._kick(gid)

    def _kick(self, gid: str) -> None:
        """Catch up with ``gid`` in the background (one run at a time per group)."""
        if gid in self._running:
            self._again.add(gid)
            return
        self._running.add(gid)
        task = asyncio.create_task(self._background(gid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _background(self, gid: str) -> None:
        try:
            while True:
                self._again.discard(gid)
                try:
                    await self.sync(gid)
                except (ClientError, CoreError) as exc:
                    log.warning("could not catch up with a group: %s", exc.code)
                if gid not in self._again:
                    return
        finally:
            self._running.discard(gid)

    async def _subscribe(self, gid: str) -> None:
        ws = self._ws
        if ws is None:
            return
        group = self._group(gid)
        if self._subscribed.get(gid) == group.epoch:
            return
        self._req += 1
        frame = GroupSubscribeFrame(req=self._req, group_id=bytes.fromhex(gid),
                                    epoch=group.epoch, read=read_cap(group),
                                    after=self._record(gid).cursor)
        try:
            await ws.send_json(to_builtins(frame))
        except (ConnectionError, OSError):
            return
        self._subscribed[gid] = group.epoch

    async def _unsubscribe(self, gid: str) -> None:
        ws = self._ws
        if ws is None or self._subscribed.pop(gid, None) is None:
            return
        with contextlib.suppress(ConnectionError, OSError):
            await ws.send_json(to_builtins(GroupUnsubscribeFrame(group_id=bytes.fromhex(gid))))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @abc.abstractmethod
    async def sync(self, gid: str) -> list[IncomingMessage]:
        """Catch up with one group (:class:`veil.client.groups.Groups`)."""


__all__ = ["GroupSync"]
