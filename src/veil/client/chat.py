"""The conversation half of :class:`veil.client.Client`: files, replies, reactions,
edits, deletions, receipts, typing and disappearing messages, in 1:1 chats and groups
alike (issue 12; docs/client.md, "Conversations").

A conversation is named as everywhere: ``@username``, an account id or a contact link
for a 1:1 chat, ``#name`` or a group id for a group. Everything here is content inside
the encryption (:mod:`veil.client.content`), sent through the outbox (so it is sent
exactly once, also after a crash), and applied to this device's history by
:class:`veil.client.conversations.Conversations` when the server took it; the other
devices of the account get it as a sync (1:1) or from the group's mailbox.

Kept apart from ``client.py`` only so that both stay short: :class:`Chat` is a mixin of
:class:`~veil.client.Client` and uses its components.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from veil.client import pending
from veil.client.attachments import Attachments, Pointer, Progress
from veil.client.content import MAX_RECEIPT_IDS, Content, check_emoji, check_timer
from veil.client.conversations import Conversations
from veil.client.device import Context
from veil.client.directory import Directory
from veil.client.errors import ClientError, UnknownGroup
from veil.client.events import IncomingMessage, MessageChanged
from veil.client.groups import Groups
from veil.client.home_lock import HomeLock
from veil.client.outbox import Outbox
from veil.client.records import HistoryEntry
from veil.core.errors import CoreError

log = logging.getLogger("veil.client")
TYPING_EVERY_MS = 3000                 # at most one "started typing" per conversation
GROUP_RECEIPTS_MAX = 50                # member devices, for receipts in a group


class Chat:
    """Conversation operations; mixed into :class:`veil.client.Client`."""

    _ctx: Context
    _directory: Directory
    _outbox: Outbox
    _groups: Groups
    _attachments: Attachments
    _typing_sent: dict[str, int]
    _home_lock: HomeLock | None
    _arrivals: list[IncomingMessage]
    _receipts_task: asyncio.Task[None] | None
    _pending_calls: int

    @property
    def _conversations(self) -> Conversations:
        return self._outbox.conversations

    async def _where(self, conversation: str) -> tuple[str, bool]:
        """The conversation's key (account id or group id) and whether it is a group."""
        try:
            return self._groups.resolve(conversation), True
        except UnknownGroup:
            if conversation.startswith("#"):
                raise
        contact = await self._directory.resolve(conversation)
        return contact.account, False

    def _new(self, kind: str, text: str = "", **fields: object) -> Content:
        return Content(os.urandom(16).hex(), self._ctx.clock(), text, None, kind,
                       **fields)  # type: ignore[arg-type]

    async def _send(self, key: str, group: bool, content: Content,
                    uploads: Iterable[str] = ()) -> str:
        if group:
            await self._groups.send(key, content.text, content, uploads=list(uploads))
        else:
            await self._outbox.send(key, content.text,
                                    dataclasses.replace(
                                        content,
                                        profile_key=self._ctx.device.record.profile_key),
                                    uploads=list(uploads))
        return content.id

    def _line(self, key: str, message_id: str) -> HistoryEntry:
        found = self._conversations.find(key, message_id)
        if found is None:
            raise ClientError(f"no message {message_id[:8]}… in that conversation")
        return found[1]

    # --- sending ------------------------------------------------------------------------

    async def reply(self, conversation: str, message_id: str, text: str) -> str:
        """Answer the message ``message_id`` (quoted by id); the new message's id."""
        key, group = await self._where(conversation)
        self._line(key, message_id)
        return await self._send(key, group, self._new(
            "text", text, reply_to=message_id, expire_s=self._timer_field(key)))

    async def send_file(self, conversation: str, path: Path, text: str = "", *,
                        reply_to: str | None = None, media_type: str | None = None,
                        progress: Progress | None = None) -> str:
        """Encrypt ``path`` here, upload it (resumable: tus), and send a message with
        its pointer (and ``text``). The message is in the outbox from the start: a
        killed client or a dropped connection resumes the upload where it stopped.
        Returns the message id."""
        key, group = await self._where(conversation)
        job = self._attachments.new_upload(path, media_type)
        content = self._new("text", text, reply_to=reply_to,
                            expire_s=self._timer_field(key))
        self._outbox.upload_progress = progress
        try:
            return await self._send(key, group, content, uploads=[job.job_id])
        finally:
            self._outbox.upload_progress = None

    async def react(self, conversation: str, message_id: str, emoji: str | None) -> None:
        """React with one ``emoji`` (replacing one's earlier reaction), or take it back
        (``None``)."""
        key, group = await self._where(conversation)
        self._line(key, message_id)
        try:
            chosen = None if emoji is None else check_emoji(emoji)
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        await self._send(key, group, self._new("reaction", target=message_id, emoji=chosen))

    async def edit(self, conversation: str, message_id: str, text: str) -> None:
        """Change the text of one's own message (its earlier texts are kept)."""
        key, group = await self._where(conversation)
        line = self._line(key, message_id)
        if line.direction != "out" or line.deleted:
            raise ClientError("only your own messages can be edited")
        await self._send(key, group, self._new("edit", text, target=message_id))

    async def delete_for_everyone(self, conversation: str, message_id: str) -> None:
        """Delete one's own message on every device of every member (within a day of
        sending): they keep a "deleted" line, without its text or attachments."""
        key, group = await self._where(conversation)
        line = self._line(key, message_id)
        if line.direction != "out":
            raise ClientError("only your own messages can be deleted for everyone")
        await self._send(key, group, self._new("delete", target=message_id))
        for attachment in line.attachments:    # and the blobs we uploaded (tus DELETE)
            try:
                await self._attachments.delete_blob(str(attachment.get("id", "")))
            except ClientError as exc:
                log.info("an attachment's blob stays until it expires: %s", exc.code)

    async def delete_for_me(self, conversation: str, message_id: str) -> bool:
        """Delete a message from this device only (its attachments too)."""
        key, _ = await self._where(conversation)
        return self._conversations.delete_for_me(key, message_id)

    async def set_timer(self, conversation: str, seconds: int) -> None:
        """Set the conversation's disappearing timer (0: off; 30 s to four weeks): in a
        group only an admin may. Announced as a line on every device."""
        key, group = await self._where(conversation)
        try:
            check_timer(seconds)
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        await self._send(key, group, self._new("timer", expire_s=seconds))

    async def timer(self, conversation: str) -> int:
        key, _ = await self._where(conversation)
        return self._conversations.timer(key)

    def _timer_field(self, key: str) -> int | None:
        return self._conversations.timer(key) or None

    # --- receipts and typing ------------------------------------------------------------

    async def set_read_receipts(self, who: str, enabled: bool) -> None:
        """Send read receipts to ``who`` and see theirs (the default), or neither."""
        key, group = await self._where(who)
        if group:
            raise ClientError("read receipts are set per person, not per group")
        self._conversations.set_read_receipts(key, enabled)

    async def mark_read(self, conversation: str, message_ids: Iterable[str]) -> None:
        """These messages were shown: noted here, and a read receipt goes to each
        author who has read receipts on."""
        key, group = await self._where(conversation)
        now = self._ctx.clock()
        by_author: dict[str, list[str]] = {}
        store = self._ctx.store
        with store.transaction():
            for message_id in message_ids:
                found = self._conversations.find(key, message_id)
                if found is None or found[1].direction != "in" or found[1].read_at:
                    continue
                seq, line = found
                store.replace_history(key, seq, dataclasses.replace(
                    line, read_at=now).encode())
                if self._conversations.read_receipts(line.peer):
                    by_author.setdefault(line.peer, []).append(message_id)
        if group:
            await self._group_receipts("read", key, [i for ids in by_author.values()
                                                     for i in ids])
        else:
            await self._receipts("read", by_author, None)

    def _arrived(self, message: IncomingMessage) -> None:
        """Every message as it is emitted (EventHub.on_message): its delivery receipt
        goes soon — at the end of ``pending()``, or from a task on a live connection."""
        self._arrivals.append(message)
        if self._pending_calls:
            return                           # pending() sends them all at its end
        if self._receipts_task is None or self._receipts_task.done():
            self._receipts_task = asyncio.create_task(self._receipts_soon())

    async def _receipts_soon(self) -> None:
        await asyncio.sleep(0)               # the rest of a burst first
        await self.flush_delivery_receipts()

    async def flush_delivery_receipts(self) -> None:
        while self._arrivals:                 # also those that came while sending
            arrived, self._arrivals = self._arrivals, []
            await self.send_delivery_receipts(arrived)

    async def send_delivery_receipts(self, messages: Iterable[IncomingMessage]) -> None:
        """Tell each sender their messages arrived (quietly: a receipt that cannot go
        now waits in the outbox)."""
        by_author: dict[str, list[str]] = {}
        by_group: dict[str, list[str]] = {}
        for message in messages:
            if message.sender == self._ctx.device.record.account:
                continue
            if message.group is None:
                by_author.setdefault(message.sender, []).append(message.id)
            else:
                by_group.setdefault(message.group, []).append(message.id)
        await self._receipts("delivered", by_author, None)
        for gid, ids in by_group.items():
            await self._group_receipts("delivered", gid, ids)

    async def _group_receipts(self, kind: str, gid: str, ids: list[str]) -> None:
        """Receipts for group messages: one post to the group's mailbox per batch (every
        member sees it; each author takes its own ids). Never 1:1 to the authors: a
        burst of sealed envelopes to the author right after each post would show the
        server who posted. Only in groups of at most GROUP_RECEIPTS_MAX devices, where
        the posts stay few."""
        if not ids:
            return
        try:
            devices = sum(len(m.devices) for m in self._groups.members(gid))
        except ClientError:
            return
        if devices > GROUP_RECEIPTS_MAX:
            return
        for start in range(0, len(ids), MAX_RECEIPT_IDS):
            content = self._new("receipt", receipt=kind,
                                ids=tuple(ids[start:start + MAX_RECEIPT_IDS]))
            try:
                await self._send(gid, True, content)
            except (ClientError, CoreError) as exc:
                log.info("a group %s receipt was not sent now: %s", kind, exc.code)

    async def _receipts(self, kind: str, by_author: dict[str, list[str]],
                        group: str | None) -> None:
        for author, ids in by_author.items():
            for start in range(0, len(ids), MAX_RECEIPT_IDS):
                content = self._new("receipt", receipt=kind,
                                    ids=tuple(ids[start:start + MAX_RECEIPT_IDS]),
                                    group=group)
                try:
                    await self._send(author, False, content)
                except (ClientError, CoreError) as exc:
                    log.info("a %s receipt was not sent now: %s", kind, exc.code)

    async def typing(self, conversation: str, started: bool = True) -> None:
        """Tell the others this person is typing (at most every 3 s) or stopped. Never
        stored; not sent at all when it cannot go at once."""
        key, group = await self._where(conversation)
        now = self._ctx.clock()
        if started and now - self._typing_sent.get(key, -TYPING_EVERY_MS) < TYPING_EVERY_MS:
            return
        self._typing_sent[key] = now if started else -TYPING_EVERY_MS
        content = self._new("typing", typing=started, group=key if group else None)
        try:
            await self._send(key, group, content)
        except ClientError as exc:
            log.info("a typing notice was not sent: %s", exc.code)
        finally:
            pending.drop(self._ctx.store, content.id)     # never kept for later

    # --- attachments and expiry ----------------------------------------------------------

    async def download(self, conversation: str, message_id: str, index: int = 0,
                       directory: Path | None = None,
                       progress: Progress | None = None) -> Path:
        """Fetch, check and decrypt attachment ``index`` of a message into ``directory``
        (resumed if an earlier try stopped); refused and deleted, never shown, when it
        is not the file the sender meant (``AttachmentRefused``)."""
        key, _ = await self._where(conversation)
        line = self._line(key, message_id)
        if not 0 <= index < len(line.attachments):
            raise ClientError(f"that message has no attachment {index}")
        pointer = Pointer.from_json(line.attachments[index])
        done = line.attachments[index].get("path")
        if isinstance(done, str) and Path(done).is_file():
            return Path(done)                  # saved here already
        saved = await self._attachments.download(
            pointer, directory or self._downloads_dir(), progress)
        store = self._ctx.store
        with store.transaction():
            found = self._conversations.find(key, message_id)
            if found is None:                  # expired or deleted meanwhile
                saved.unlink(missing_ok=True)
                raise ClientError("that message was deleted while its file downloaded")
            seq, current = found
            if current.deleted or index >= len(current.attachments):
                saved.unlink(missing_ok=True)
                raise ClientError("that message was deleted while its file downloaded")
            attachments = [dict(a) for a in current.attachments]
            attachments[index]["path"] = str(saved)
            store.replace_history(key, seq, dataclasses.replace(
                current, attachments=attachments).encode())
        return saved

    def _downloads_dir(self) -> Path:
        """Where attachments are saved unless the caller says: the home's downloads."""
        assert self._home_lock is not None
        return self._home_lock.path.parent / "downloads"

    def expire_messages(self) -> list[MessageChanged]:
        """Delete every message whose disappearing timer ran out (with its files)."""
        gone = self._conversations.expire(self._ctx.clock())
        for change in gone:
            self._ctx.hub.emit(change)
        return gone

    async def run_expiry(self) -> None:
        """Expire messages as their timers run out, until cancelled."""
        while True:
            self.expire_messages()
            due = self._conversations.next_expiry()
            wait = 60.0 if due is None else max(0.05, (due - self._ctx.clock()) / 1000)
            await asyncio.sleep(min(wait, 60.0))


__all__ = [
    "Chat",
]
