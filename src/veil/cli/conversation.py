"""What people do in a conversation besides writing (issue 12 §2, §3): ``veil reply``,
``react``, ``edit``, ``delete``, ``timer``, ``receipts`` and ``download``.

CONV names the conversation as everywhere (``@username``, an account id, a contact
link, ``#group`` or a group id); MESSAGE_ID is a message's id or a unique start of it
(8 hex digits or more), as ``veil history`` and ``veil recv`` show it. Everything goes
through the outbox: with the server out of reach it waits there and is sent by the next
command that connects.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import click

from veil.cli.common import BadValue, emit, home_options, safe_text, with_client
from veil.cli.display import (
    conversation_key,
    duration,
    find_message,
    short,
)
from veil.cli.i18n import explain, t
from veil.cli.transfer import TransferView, save_files
from veil.client import Client
from veil.client.errors import ServerUnreachable
from veil.client.events import AttachmentInfo, IncomingMessage

_DURATION = re.compile(r"(\d+)\s*([smhdw]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_timer(value: str) -> int:
    """``off`` or ``0``, a number of seconds, or 30s / 5m / 1h / 1d / 1w."""
    text = value.strip().lower()
    if text in ("off", "0"):
        return 0
    match = _DURATION.fullmatch(text)
    if match is None:
        raise BadValue(t("err.bad_timer", value=repr(value)))
    return int(match.group(1)) * _UNIT[match.group(2)]


async def _queued(as_json: bool, body: Callable[[], Awaitable[None]], done: str,
                  obj: dict[str, object]) -> None:
    """Run ``body``; with the server out of reach, what it sent waits in the outbox."""
    try:
        await body()
    except ServerUnreachable as exc:
        emit(as_json, {**obj, "status": "queued", "reason": str(exc)},
             t("conv.queued", reason=explain(exc)))
        return
    emit(as_json, {**obj, "status": "sent"}, done)


@click.command(help=t("cmd.reply"))
@click.argument("conv")
@click.argument("message_id")
@click.argument("text", required=False)
@click.option("--file", "file", type=click.Path(dir_okay=False), default=None,
              help=t("opt.reply.file"))
@home_options
async def reply(conv: str, message_id: str, text: str | None, file: str | None,
                home: str | None, as_json: bool, proxy: str | None) -> None:
    if text is None and file is None:
        raise BadValue(t("err.no_text"))

    async def body(c: Client) -> None:
        key, _ = await conversation_key(c, conv)
        target = find_message(c, key, message_id)
        sent: list[str] = []

        async def go() -> None:
            if file is not None:
                with TransferView(as_json) as view:
                    sent.append(await c.send_file(conv, Path(file), text or "",
                                                  reply_to=target.id, progress=view))
            else:
                sent.append(await c.reply(conv, target.id, text or ""))
        await _queued(as_json, go, t("conv.replied", id=short(target.id)),
                      {"reply_to": target.id})
    await with_client(home, proxy, body)


@click.command(help=t("cmd.react"))
@click.argument("conv")
@click.argument("message_id")
@click.argument("emoji", required=False)
@click.option("--remove", is_flag=True, help=t("opt.react.remove"))
@home_options
async def react(conv: str, message_id: str, emoji: str | None, remove: bool,
                home: str | None, as_json: bool, proxy: str | None) -> None:
    if (emoji is None) != remove:
        raise BadValue(t("err.react_args"))

    async def body(c: Client) -> None:
        key, _ = await conversation_key(c, conv)
        target = find_message(c, key, message_id)
        done = t("conv.unreacted", id=short(target.id)) if remove else \
            t("conv.reacted", id=short(target.id), emoji=safe_text(emoji or ""))
        await _queued(as_json, lambda: c.react(conv, target.id, emoji), done,
                      {"message_id": target.id, "emoji": emoji})
    await with_client(home, proxy, body)


@click.command(help=t("cmd.edit"))
@click.argument("conv")
@click.argument("message_id")
@click.argument("text")
@home_options
async def edit(conv: str, message_id: str, text: str, home: str | None, as_json: bool,
               proxy: str | None) -> None:
    async def body(c: Client) -> None:
        key, _ = await conversation_key(c, conv)
        target = find_message(c, key, message_id)
        await _queued(as_json, lambda: c.edit(conv, target.id, text),
                      t("conv.edited", id=short(target.id)),
                      {"message_id": target.id, "text": text})
    await with_client(home, proxy, body)


@click.command(help=t("cmd.delete"))
@click.argument("conv")
@click.argument("message_id")
@click.option("--for-everyone", is_flag=True, help=t("opt.delete.for_everyone"))
@home_options
async def delete(conv: str, message_id: str, for_everyone: bool, home: str | None,
                 as_json: bool, proxy: str | None) -> None:
    async def body(c: Client) -> None:
        key, _ = await conversation_key(c, conv)
        target = find_message(c, key, message_id)
        if for_everyone:
            await _queued(as_json, lambda: c.delete_for_everyone(conv, target.id),
                          t("conv.deleted_everyone", id=short(target.id)),
                          {"message_id": target.id, "for_everyone": True})
            return
        await c.delete_for_me(conv, target.id)
        emit(as_json, {"status": "deleted", "message_id": target.id, "for_everyone": False},
             t("conv.deleted_me", id=short(target.id)))
    await with_client(home, proxy, body)


@click.command(help=t("cmd.timer"))
@click.argument("conv")
@click.argument("value", required=False)
@home_options
async def timer(conv: str, value: str | None, home: str | None, as_json: bool,
                proxy: str | None) -> None:
    seconds = None if value is None else parse_timer(value)

    async def body(c: Client) -> None:
        if seconds is None:
            now = await c.timer(conv)
            emit(as_json, {"conversation": conv, "seconds": now},
                 t("timer.is", duration=duration(now)) if now else t("timer.is_off"))
            return
        await _queued(as_json, lambda: c.set_timer(conv, seconds),
                      t("timer.now", duration=duration(seconds)) if seconds
                      else t("timer.now_off"), {"conversation": conv, "seconds": seconds})
    await with_client(home, proxy, body)


@click.command(help=t("cmd.receipts"))
@click.argument("who")
@click.argument("setting", type=click.Choice(["on", "off"]))
@home_options
async def receipts(who: str, setting: str, home: str | None, as_json: bool,
                   proxy: str | None) -> None:
    async def body(c: Client) -> None:
        await c.set_read_receipts(who, setting == "on")
        emit(as_json, {"who": who, "read_receipts": setting == "on"},
             t("receipts.on", who=safe_text(who)) if setting == "on"
             else t("receipts.off", who=safe_text(who)))
    await with_client(home, proxy, body)


@click.command(help=t("cmd.download"))
@click.argument("conv")
@click.argument("message_id")
@click.option("--download-dir", "directory", type=click.Path(file_okay=False), default=None,
              help=t("opt.recv.download_dir"))
@home_options
async def download(conv: str, message_id: str, directory: str | None, home: str | None,
                   as_json: bool, proxy: str | None) -> None:
    async def body(c: Client) -> None:
        key, group = await conversation_key(c, conv)
        line = find_message(c, key, message_id)
        infos = tuple(AttachmentInfo(str(a.get("name", "")), int(a.get("size", 0)),
                                     str(a.get("type", ""))) for a in line.attachments)
        if not infos:
            raise click.ClickException(t("file.none", id=short(line.id)))
        message = IncomingMessage(line.id, line.peer if not group else key, None,
                                  line.device, line.text, line.timestamp,
                                  group=key if group else None, attachments=infos)
        if not await save_files(c, message, Path(directory).resolve() if directory else None,
                                as_json):
            raise SystemExit(1)
    await with_client(home, proxy, body)


COMMANDS: list[click.Command] = [reply, react, edit, delete, timer, receipts, download]

__all__ = [
    "COMMANDS",
    "parse_timer",
]
