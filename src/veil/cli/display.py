"""How conversations look on the command line (issue 12 §2, §3): received messages with
their id, replies, files and "unsupported message"; the short notice lines of edits,
deletions, reactions, receipts, timers and typing; history lines; and how a person
names a conversation and a message (``#group``, ``@user``, an id prefix of 8 or more
hex digits, as ``veil history`` shows them).

Everything a peer wrote (text, names, emoji, file names) is shown through
:func:`safe_text`; ``--json`` objects carry it as it is, and never an attachment's key.
"""

from __future__ import annotations

import re
from typing import Any

import click

from veil.cli.common import BadValue, emit, err_console, safe_text, when
from veil.cli.groups import is_group, show_notice
from veil.cli.i18n import t, tn
from veil.cli.transfer import attachment_line, attachment_obj
from veil.client import Client, IncomingMessage
from veil.client.events import Event, MessageChanged, TimerChanged, Typing
from veil.client.records import HistoryEntry

SHORT = 8                          # hex digits of a message id shown, and the least taken
HISTORY_SCAN = 100_000             # lines searched for a message id prefix
_ID = re.compile(r"[0-9a-f]{8,32}")


def short(message_id: str) -> str:
    return message_id[:SHORT]


async def conversation_key(c: Client, ref: str) -> tuple[str, bool]:
    """The key of the conversation ``ref`` names (account id or group id), and whether
    it is a group."""
    if is_group(ref):
        return c.group(ref).id, True
    return (await c.resolve(ref)).account, False


def find_message(c: Client, key: str, ref: str) -> HistoryEntry:
    """The line of conversation ``key`` whose id is, or starts with, ``ref``."""
    prefix = ref.strip().lower()
    if not _ID.fullmatch(prefix):
        raise BadValue(t("err.bad_message_id", value=repr(ref)))
    matches = [e for e in c.history(key, HISTORY_SCAN) if e.id.startswith(prefix)]
    if not matches:
        raise click.ClickException(t("msg.no_match", prefix=prefix))
    if len(matches) > 1:
        raise click.ClickException(t("msg.ambiguous", prefix=prefix, count=len(matches)))
    return matches[0]


def name_of(c: Client, account: str | None) -> str:
    """How a person is shown: you, @username (a contact's), or the account id's start."""
    if account is None:
        return "-"
    if account == c.account:
        return t("chat.you")
    for contact in c.contacts():
        if contact.account == account and contact.username:
            return "@" + safe_text(contact.username)
    return account[:8] + "…"


def group_name(c: Client, group_id: str) -> str:
    for g in c.groups():
        if g.id == group_id:
            return "#" + safe_text(g.name)
    return group_id[:8] + "…"


def _quote(c: Client, key: str, message_id: str) -> str:
    """``1a2b3c4d “the start of its text”`` (just the id when this device lacks it)."""
    for e in c.history(key, HISTORY_SCAN):
        if e.id == message_id:
            text = t("msg.deleted") if e.deleted else e.text or \
                (t("msg.a_file") if e.attachments else "")
            cut = text[:40] + ("…" if len(text) > 40 else "")
            return t("msg.quote", id=short(message_id), text=safe_text(cut))
    return short(message_id)


def message_obj(m: IncomingMessage) -> dict[str, Any]:
    return {"id": m.id, "sender": m.sender, "sender_username": m.sender_username,
            "device": m.device, "text": m.text, "timestamp": m.timestamp,
            "identity_changed": m.identity_changed, "group": m.group, "kind": m.kind,
            "reply_to": m.reply_to, "attachments": [attachment_obj(a) for a in m.attachments],
            "expires_at": m.expires_at}


def show_message(m: IncomingMessage, as_json: bool, c: Client | None = None) -> None:
    """A received message: ``[time] id who: text``, then its reply and file lines."""
    if m.identity_changed:
        err_console.print(f"[bold red]{t('recv.identity_changed', who=m.sender[:8])}[/]")
    who = f"@{safe_text(m.sender_username)}" if m.sender_username else m.sender[:8] + "…"
    if m.group is not None:
        where = group_name(c, m.group) if c is not None else m.group[:8] + "…"
        who = f"{where} {who}"
    text = t("msg.unsupported") if m.kind == "unsupported" else safe_text(m.text)
    if m.expires_at is not None:
        text += t("msg.disappearing")
    lines = [f"[{when(m.timestamp)}] {short(m.id)} {who}: {text}".rstrip()]
    if m.reply_to is not None:
        key = m.group if m.group is not None else m.sender
        quoted = _quote(c, key, m.reply_to) if c is not None else short(m.reply_to)
        lines.append("    " + t("msg.reply_to", quote=quoted))
    lines += ["    " + attachment_line(a) for a in m.attachments]
    emit(as_json, message_obj(m), "\n".join(lines))


def duration(seconds: int) -> str:
    """A timer as people say it: 30 seconds, 5 minutes, 1 day, 4 weeks."""
    if seconds % 604800 == 0:
        return tn("dur.week", seconds // 604800)
    if seconds % 86400 == 0:
        return tn("dur.day", seconds // 86400)
    if seconds % 3600 == 0:
        return tn("dur.hour", seconds // 3600)
    if seconds % 60 == 0:
        return tn("dur.minute", seconds // 60)
    return tn("dur.second", seconds)


def timer_text(who: str, seconds: int) -> str:
    return t("timer.set_by", who=who, duration=duration(seconds)) if seconds else \
        t("timer.off_by", who=who)


def _where(c: Client, conversation: str) -> str:
    """A group's name before a notice line; nothing for a 1:1 chat."""
    return group_name(c, conversation) + " " if len(conversation) == 64 else ""


def show_change(c: Client, event: Event, as_json: bool, typing: bool = False) -> bool:
    """Print an edit, deletion, reaction, receipt, expiry, timer change (or, with
    ``typing``, a typing notice) as one short line; False for other events."""
    if isinstance(event, MessageChanged):
        who, mid = name_of(c, event.account), short(event.message_id)
        obj: dict[str, Any] = {"event": event.change, "conversation": event.conversation,
                               "message_id": event.message_id, "account": event.account}
        if event.change == "edited":
            obj["text"] = event.text
            text = t("change.edited", who=who, id=mid, text=safe_text(event.text or ""))
        elif event.change == "deleted":
            text = t("change.deleted", who=who, id=mid)
        elif event.change == "reaction":
            obj["emoji"] = event.emoji
            text = t("change.reacted", who=who, id=mid, emoji=safe_text(event.emoji)) \
                if event.emoji else t("change.unreacted", who=who, id=mid)
        elif event.change == "delivered":
            text = t("change.delivered", who=who, id=mid)
        elif event.change == "read":
            text = t("change.read", who=who, id=mid)
        elif event.change == "expired":
            text = t("change.expired", id=mid)
        else:
            text = t("change.other", id=mid, change=safe_text(event.change))
    elif isinstance(event, TimerChanged):
        obj = {"event": "timer", "conversation": event.conversation,
               "seconds": event.seconds, "account": event.account}
        text = timer_text(name_of(c, event.account), event.seconds)
    elif isinstance(event, Typing) and typing:
        obj = {"event": "typing", "conversation": event.conversation,
               "account": event.account, "typing": event.typing}
        if not event.typing:
            return True
        text = t("change.typing", who=name_of(c, event.account))
    else:
        return False
    emit(as_json, obj, "· " + _where(c, event.conversation) + text)
    return True


def show_event(c: Client, event: Event, as_json: bool, typing: bool = False) -> None:
    """What ``veil recv`` and ``veil chat`` say of an event that is not a message."""
    if not show_change(c, event, as_json, typing):
        show_notice(c, event, as_json)


def history_obj(e: HistoryEntry) -> dict[str, Any]:
    return {"id": e.id, "direction": e.direction, "peer": e.peer, "text": e.text,
            "timestamp": e.timestamp, "kind": e.kind, "reply_to": e.reply_to,
            "attachments": [attachment_obj(a) for a in e.attachments],
            "edited": bool(e.edits), "edits": [text for text, _ in e.edits],
            "reactions": e.reactions, "deleted": e.deleted, "expires_at": e.expires_at,
            "timer_s": e.timer_s, "receipts": e.receipts, "read_at": e.read_at}


def history_line(c: Client, key: str, e: HistoryEntry, peer_name: str) -> str:
    """A line of ``veil history`` (and of ``veil chat``'s look back)."""
    who = t("chat.you") if e.direction == "out" else \
        (name_of(c, e.peer) if len(key) == 64 else peer_name)
    if e.kind == "timer":
        return f"[{when(e.timestamp)}] · " + timer_text(who, e.timer_s or 0)
    if e.deleted:
        text = t("msg.deleted")
    elif e.kind == "unsupported":
        text = t("msg.unsupported")
    else:
        text = safe_text(e.text)
    if e.edits and not e.deleted:
        text += t("msg.edited")
    if e.expires_at is not None:
        text += t("msg.disappearing")
    if e.direction == "out" and e.receipts:
        read = any("read" in r for r in e.receipts.values())
        text += t("msg.read_mark") if read else t("msg.delivered_mark")
    lines = [f"[{when(e.timestamp)}] {short(e.id)} {who}: {text}".rstrip()]
    if e.reply_to is not None:
        lines.append("    " + t("msg.reply_to", quote=_quote(c, key, e.reply_to)))
    lines += ["    " + attachment_line(a) for a in e.attachments]
    if e.reactions and not e.deleted:
        lines.append("    " + t("msg.reactions", reactions="  ".join(
            f"{safe_text(emoji)} {name_of(c, account)}"
            for account, emoji in sorted(e.reactions.items()))))
    return "\n".join(lines)


__all__ = [
    "SHORT",
    "conversation_key",
    "duration",
    "find_message",
    "group_name",
    "history_line",
    "history_obj",
    "message_obj",
    "name_of",
    "short",
    "show_change",
    "show_event",
    "show_message",
    "timer_text",
]
