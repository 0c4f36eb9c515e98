"""What people do in a conversation besides writing: replies, reactions, edits,
deletions, receipts, typing and disappearing messages (issue 12 §2, §3;
docs/client.md, "Conversations").

Every kind travels as content inside the encryption (:mod:`veil.client.content`), in
1:1 chats and groups alike; :meth:`Conversations.apply` takes one, inside the
transaction that decrypted it (or that records what this device sent), and changes the
conversation's lines in place (``Store.replace_history``), so the local history always
shows the current state. The rules, the same on every device:

- **Edits and deletions for everyone** come only from the author of the line (the
  target's author is checked, never the claim); a deletion is honoured within
  :data:`DELETE_WINDOW_MS` of the message's time, as its author's clock says both.
  An edit keeps the earlier texts (``edits``); a deletion drops text and attachments
  (downloaded files are unlinked) and leaves a "deleted" line.
- **Reactions**: one per person per message, changeable, removable.
- **Receipts** (``delivered`` / ``read``) are kept on our own outgoing lines. Read
  receipts can be turned off per person (:meth:`Conversations.set_read_receipts`):
  then none are sent to them and theirs are ignored.
- **Typing** is never stored and at most one event per second per person.
- **Disappearing messages**: each conversation has a timer (0 off, 30 s … 4 weeks),
  set by either person in a 1:1 chat or by a group admin, announced as a line (only a
  ``timer`` message changes it, checked like any). Every message carries its sender's
  timer (``exp``), which applies to that line alone on every device of every member. A
  line expires that long after it was sent or received *on this device*; then it is
  deleted from the store with its attachments (secure_delete, the WAL emptied:
  :meth:`Store.forget_deleted`). Expiry needs the client running (or next opened).
- **Unknown kinds** (a newer client) are kept as an "unsupported" line, never dropped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from veil.client.attachments import drop_download
from veil.client.content import Content, check_timer
from veil.client.events import (
    AttachmentInfo,
    Event,
    IncomingMessage,
    MessageChanged,
    TimerChanged,
    Typing,
)
from veil.client.records import HistoryEntry
from veil.client.store import Store

log = logging.getLogger("veil.client")
SETTINGS_KIND = "conversation.settings"
EXPIRY_KIND = "conversation.expiry"
DELETE_WINDOW_MS = 24 * 3600 * 1000      # delete for everyone: within a day
EDIT_WINDOW_MS = 24 * 3600 * 1000        # edits too (Signal allows a day)
TYPING_INTERVAL_MS = 1000
MAX_EDITS = 10                           # a line keeps at most this many earlier texts
_EXPIRY = struct.Struct(">QQ")           # expires at (ms), history seq


def forget_if_deleted(store: Store, changes: list[Event]) -> None:
    """After the transaction that deleted a line's content for everyone: no copy of it
    may stay in the store's write-ahead log."""
    if any(isinstance(c, MessageChanged) and c.change == "deleted" for c in changes):
        store.forget_deleted()


def author_of(line: HistoryEntry, me: str) -> str:
    return me if line.direction == "out" else line.peer


def line_for(content: Content, direction: str, peer: str, device: int,
             identity_changed: bool = False) -> HistoryEntry:
    """The history line of a text message (or of a kind this version does not know,
    kept as "unsupported" without its fields)."""
    text_kind = content.kind in ("text", "sent")
    return HistoryEntry(content.id, direction, peer, content.text if text_kind else "",
                        content.timestamp, device, identity_changed,
                        kind="text" if text_kind else "unsupported",
                        reply_to=content.reply_to,
                        attachments=[dict(a) for a in content.attachments])


def attachment_infos(line: HistoryEntry) -> tuple[AttachmentInfo, ...]:
    return tuple(AttachmentInfo(str(a.get("name", "")), int(a.get("size", 0)),
                                str(a.get("type", "")), a.get("path"))
                 for a in line.attachments)


def incoming(line: HistoryEntry, username: str | None, group: str | None) -> IncomingMessage:
    """What the application is told of a new line from someone else."""
    return IncomingMessage(line.id, line.peer, username, line.device, line.text,
                           line.timestamp, line.identity_changed, group=group,
                           kind=line.kind, reply_to=line.reply_to,
                           attachments=attachment_infos(line), expires_at=line.expires_at)


class Conversations:
    """One device's conversations. ``is_admin(group, account)`` answers for groups."""

    def __init__(self, store: Store, me: str,
                 is_admin: Callable[[str, str], bool] | None = None) -> None:
        self._store = store
        self._me = me
        self._is_admin = is_admin
        self._typing_seen: dict[tuple[str, str], int] = {}   # bounded below

    # --- settings ----------------------------------------------------------------------

    def _settings(self, conversation: str) -> dict[str, Any]:
        raw = self._store.get(SETTINGS_KIND, conversation)
        return {} if raw is None else dict(json.loads(raw))

    def _save_settings(self, conversation: str, settings: dict[str, Any]) -> None:
        self._store.put(SETTINGS_KIND, conversation, json.dumps(settings).encode())

    def timer(self, conversation: str) -> int:
        """The conversation's disappearing timer in seconds (0: off)."""
        return int(self._settings(conversation).get("timer", 0))

    def read_receipts(self, account: str) -> bool:
        """Whether read receipts go to, and count from, ``account`` (on by default)."""
        return bool(self._settings(account).get("read_receipts", True))

    def set_read_receipts(self, account: str, enabled: bool) -> None:
        with self._store.transaction():
            settings = self._settings(account)
            settings["read_receipts"] = enabled
            self._save_settings(account, settings)

    # --- lines -------------------------------------------------------------------------

    def find(self, conversation: str, message_id: str) -> tuple[int, HistoryEntry] | None:
        found = self._store.find_history(conversation, message_id)
        return None if found is None else (found[0], HistoryEntry.decode(found[1]))

    def add_line(self, conversation: str, line: HistoryEntry, now: int,
                 timer_s: int | None) -> HistoryEntry | None:
        """Inside a transaction: a new line (text or unsupported), expiring after
        ``timer_s`` if set. None when a line with this id is already there: it is kept
        as it is, and nothing is to be told (a repeated or re-used id)."""
        if self._store.find_history(conversation, line.id) is not None:
            log.info("a message with an id already in the conversation was not kept")
            return None
        if timer_s:
            line = dataclasses.replace(line, expires_at=now + timer_s * 1000)
        seq = self._store.append_history(conversation, line.encode(), key=line.id)
        if line.expires_at is not None:
            name = f"{conversation}\x00{line.id}"
            # Record names are HMACs in the store: the value carries the name too.
            self._store.put(EXPIRY_KIND, name,
                            _EXPIRY.pack(line.expires_at, seq) + name.encode())
        return line

    def _replace(self, conversation: str, seq: int, line: HistoryEntry) -> None:
        self._store.replace_history(conversation, seq, line.encode())

    # --- what arrives (or what this device did) -----------------------------------------

    def apply(self, conversation: str, author: str, content: Content, now: int,
              group: str | None = None) -> list[Event]:
        """Inside the transaction that decrypted ``content`` (or made it): the change it
        makes to ``conversation``, and the events to tell once it is committed. Text
        and unknown kinds are the caller's (:meth:`add_line`); a message's ``exp``
        brings the conversation's timer in line with the sender's."""
        kind = content.kind
        if kind in ("edit", "delete", "reaction"):
            return self._change_target(conversation, author, content, now)
        if kind == "receipt":
            return self._receipt(conversation, author, content, now)
        if kind == "typing":
            return self._typing(conversation, author, content, now)
        if kind == "timer":
            assert content.expire_s is not None
            return self._timer(conversation, author, content.expire_s, content, now, group)
        return []

    def _change_target(self, conversation: str, author: str, content: Content,
                       now: int) -> list[Event]:
        assert content.target is not None
        found = self.find(conversation, content.target)
        if found is None:
            log.info("a %s names a message this device does not have", content.kind)
            return []
        seq, line = found
        if content.kind == "reaction":
            reactions = dict(line.reactions)
            if content.emoji is None:
                reactions.pop(author, None)
            else:
                reactions[author] = content.emoji
            self._replace(conversation, seq, dataclasses.replace(line, reactions=reactions))
            return [MessageChanged(conversation, line.id, "reaction", author,
                                   emoji=content.emoji)]
        if author_of(line, self._me) != author or line.deleted:
            log.warning("refused a %s of another person's message", content.kind)
            return []
        if content.kind == "edit" and len(line.edits) >= MAX_EDITS:
            log.info("refused an edit beyond the %d a message may have", MAX_EDITS)
            return []
        window = DELETE_WINDOW_MS if content.kind == "delete" else EDIT_WINDOW_MS
        if not 0 <= content.timestamp - line.timestamp <= window:
            log.info("refused a %s outside its time window", content.kind)
            return []
        if content.kind == "edit":
            edits = [*line.edits, [line.text, line.timestamp]]
            self._replace(conversation, seq, dataclasses.replace(
                line, text=content.text, edits=edits))
            return [MessageChanged(conversation, line.id, "edited", author,
                                   text=content.text)]
        self._drop_files(line)
        self._replace(conversation, seq, dataclasses.replace(
            line, text="", attachments=[], edits=[], deleted=True))
        return [MessageChanged(conversation, line.id, "deleted", author)]

    def _receipt(self, conversation: str, author: str, content: Content,
                 now: int) -> list[Event]:
        assert content.receipt is not None
        if author == self._me:    # from another device of ours: what it read, we read
            return self._read_elsewhere(conversation, content, now) \
                if content.receipt == "read" else []
        if content.receipt == "read" and not self.read_receipts(author):
            return []                                    # "see none"
        if content.group is not None and content.group != conversation:
            return []             # receipts are about this conversation's lines only
        where = conversation
        events: list[Event] = []
        for message_id in content.ids:
            found = self.find(where, message_id)
            if found is None or found[1].direction != "out":
                continue
            seq, line = found
            receipts = {k: dict(v) for k, v in line.receipts.items()}
            mark = receipts.setdefault(author, {})
            if content.receipt in mark:
                continue
            mark[content.receipt] = now
            if content.receipt == "read":
                mark.setdefault("delivered", now)
            self._replace(where, seq, dataclasses.replace(line, receipts=receipts))
            events.append(MessageChanged(where, message_id, content.receipt, author))
        return events

    def _read_elsewhere(self, conversation: str, content: Content,
                        now: int) -> list[Event]:
        """Our read receipt, synced from another device of this account: those lines
        are read here too (no event: nothing changed for anyone but us)."""
        for message_id in content.ids:
            found = self.find(conversation, message_id)
            if found is None or found[1].direction != "in" or found[1].read_at:
                continue
            seq, line = found
            self._replace(conversation, seq, dataclasses.replace(line, read_at=now))
        return []

    def _typing(self, conversation: str, author: str, content: Content,
                now: int) -> list[Event]:
        if content.group is not None and content.group != conversation:
            return []             # typing in a group comes from the group's mailbox
        where = conversation
        key = (where, author)
        if content.typing and now - self._typing_seen.get(key, -TYPING_INTERVAL_MS) \
                < TYPING_INTERVAL_MS:
            return []
        if len(self._typing_seen) > 1000:
            self._typing_seen.clear()
        self._typing_seen[key] = now
        return [Typing(where, author, bool(content.typing))]

    def _timer(self, conversation: str, author: str, seconds: int, content: Content,
               now: int, group: str | None) -> list[Event]:
        if group is not None and self._is_admin is not None \
                and not self._is_admin(group, author):
            log.warning("refused a disappearing timer set by a non-admin of a group")
            return []
        settings = self._settings(conversation)
        settings["timer"] = check_timer(seconds)
        self._save_settings(conversation, settings)
        self.add_line(conversation, HistoryEntry(
            content.id, "out" if author == self._me else "in",
            author if group is not None or author != self._me else conversation, "",
            content.timestamp, 0, kind="timer", timer_s=seconds), now, None)
        return [TimerChanged(conversation, seconds, author)]

    # --- deleting ----------------------------------------------------------------------

    def delete_for_me(self, conversation: str, message_id: str) -> bool:
        with self._store.transaction():
            found = self.find(conversation, message_id)
            if found is None:
                return False
            self._drop_files(found[1])
            self._store.delete_history(conversation, found[0], key=message_id)
            self._store.delete(EXPIRY_KIND, f"{conversation}\x00{message_id}")
        self._store.forget_deleted()
        return True

    def expire(self, now: int) -> list[MessageChanged]:
        """Delete every line whose timer ran out; the events to tell."""
        gone: list[MessageChanged] = []
        with self._store.transaction():
            for raw_name, at, seq in self._expiring():
                if at > now:
                    continue
                conversation, _, message_id = raw_name.partition("\x00")
                found = self.find(conversation, message_id)
                if found is not None:
                    self._drop_files(found[1])
                self._store.delete_history(conversation, seq, key=message_id)
                self._store.delete(EXPIRY_KIND, raw_name)
                gone.append(MessageChanged(conversation, message_id, "expired"))
        if gone:
            self._store.forget_deleted()
        return gone

    def next_expiry(self) -> int | None:
        times = [at for _, at, _ in self._expiring()]
        return min(times) if times else None

    def _expiring(self) -> list[tuple[str, int, int]]:
        """(conversation\\0id, expires at, seq) of every line with a timer."""
        out = []
        for value in self._store.values(EXPIRY_KIND):
            at, seq = _EXPIRY.unpack_from(value)
            out.append((value[_EXPIRY.size:].decode(), at, seq))
        return out

    def _drop_files(self, line: HistoryEntry) -> None:
        """The line's downloaded files, and unfinished downloads of its attachments
        (their partial plaintext and their keys in the store)."""
        for attachment in line.attachments:
            path = attachment.get("path")
            if isinstance(path, str):
                Path(path).unlink(missing_ok=True)
            blob_id = attachment.get("id")
            if isinstance(blob_id, str):
                drop_download(self._store, blob_id)


__all__ = [
    "DELETE_WINDOW_MS",
    "EXPIRY_KIND",
    "Conversations",
    "attachment_infos",
    "author_of",
    "forget_if_deleted",
    "incoming",
    "line_for",
]
