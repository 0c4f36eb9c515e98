"""Groups on the command line (issue 11 §3, docs/groups.md): ``veil group create|add|
remove|leave|rename|admin|members|list``; ``veil send '#name' TEXT`` and ``veil chat
'#name'`` take a group where they take a person (messaging.py asks :func:`is_group`).

A group is named ``#name`` (as this device knows it; two groups of one name need the
id) or by its 64-hex id. Names, members and admins live inside MLS: the server knows a
random id and an epoch only.

:func:`show_notice` prints the warnings ``veil recv`` and ``veil chat`` give about a
group: messages that did not arrive or came out of order (``GroupMessagesMissing``)
and a group this device cannot follow any more (``GroupStalled``).
"""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape

from veil.cli.common import emit, err_console, home_options, safe_text, with_client
from veil.cli.i18n import t, tn
from veil.client import Client
from veil.client.events import Event, GroupMessagesMissing, GroupStalled
from veil.client.groups import GroupInfo

_HEX = frozenset("0123456789abcdef")


def is_group(target: str) -> bool:
    """``#name`` or a 64-hex group id (account ids have 32)."""
    text = target.strip()
    return text.startswith("#") or (len(text) == 64 and set(text.lower()) <= _HEX)


def group_info(c: Client, ref: str) -> GroupInfo:
    """The group ``ref`` names (``#name`` or id); an unknown one is the client's
    ``UnknownGroup`` error."""
    return c.group(ref)


def info_obj(g: GroupInfo) -> dict[str, Any]:
    return {"id": g.id, "name": g.name, "description": g.description,
            "members": list(g.members), "admins": list(g.admins), "epoch": g.epoch,
            "active": g.active, "am_admin": g.am_admin}


def info_line(g: GroupInfo) -> str:
    role = t("group.you_admin") if g.am_admin else ""
    state = "" if g.active else t("group.inactive")
    return tn("group.line", len(g.members), name=g.name, id=g.id[:8], role=role,
              state=state)


def _where(c: Client, group_id: str) -> str:
    for g in c.groups():
        if g.id == group_id:
            return "#" + safe_text(g.name)
    return group_id[:8] + "…"


def _sender(c: Client, account: str) -> str:
    for contact in c.contacts():
        if contact.account == account and contact.username:
            return "@" + safe_text(contact.username)
    return account[:8] + "…"


def show_notice(c: Client, event: Event, as_json: bool) -> bool:
    """Print ``event`` if it is a group warning (False otherwise): on standard error
    for people, as a JSON object on standard output with ``--json``."""
    if isinstance(event, GroupMessagesMissing):
        where, who = _where(c, event.group), _sender(c, event.sender)
        obj: dict[str, Any] = {"event": "group_messages_missing", "group": event.group,
                               "sender": event.sender, "device": event.device,
                               "missing": event.missing, "reordered": event.reordered}
        text = t("group.reordered", where=where, who=who) if event.reordered else \
            tn("group.missing", event.missing, where=where, who=who)
    elif isinstance(event, GroupStalled):
        where = _where(c, event.group)
        obj = {"event": "group_stalled", "group": event.group, "epoch": event.epoch,
               "reason": event.reason}
        text = {"commit_withheld": t("group.stalled.commit_withheld", where=where),
                "commit_refused": t("group.stalled.commit_refused", where=where),
                "capability_refused": t("group.stalled.capability_refused", where=where),
                }[event.reason]
    else:
        return False
    if as_json:
        emit(as_json, obj, text)
    else:
        err_console.print(f"[bold yellow]{escape(text)}[/]")
    return True


def _emit_info(as_json: bool, g: GroupInfo, said: str) -> None:
    emit(as_json, info_obj(g), said + "\n  " + info_line(g))


@click.group(help=t("cmd.group"))
def group() -> None:
    pass


@group.command("create", help=t("cmd.group.create"))
@click.argument("name")
@click.option("--member", "members", multiple=True, metavar="WHO",
              help=t("opt.group.member"))
@click.option("--description", default=None, help=t("opt.group.description"))
@home_options
async def create(name: str, members: tuple[str, ...], description: str | None,
                 home: str | None, as_json: bool, proxy: str | None) -> None:
    async def body(c: Client) -> None:
        made = await c.create_group(name, description, list(members))
        _emit_info(as_json, made, t("group.created", name=made.name))
    await with_client(home, proxy, body)


@group.command("add", help=t("cmd.group.add"))
@click.argument("group_ref", metavar="GROUP")
@click.argument("who", nargs=-1, required=True)
@home_options
async def add(group_ref: str, who: tuple[str, ...], home: str | None, as_json: bool,
              proxy: str | None) -> None:
    async def body(c: Client) -> None:
        grown = await c.invite(group_ref, *who)
        _emit_info(as_json, grown, t("group.added", name=grown.name))
    await with_client(home, proxy, body)


@group.command("remove", help=t("cmd.group.remove"))
@click.argument("group_ref", metavar="GROUP")
@click.argument("who")
@home_options
async def remove(group_ref: str, who: str, home: str | None, as_json: bool,
                 proxy: str | None) -> None:
    async def body(c: Client) -> None:
        shrunk = await c.remove(group_ref, who)
        _emit_info(as_json, shrunk, t("group.removed", name=shrunk.name))
    await with_client(home, proxy, body)


@group.command("leave", help=t("cmd.group.leave"))
@click.argument("group_ref", metavar="GROUP")
@home_options
async def leave(group_ref: str, home: str | None, as_json: bool, proxy: str | None) -> None:
    async def body(c: Client) -> None:
        await c.leave(group_ref)
        emit(as_json, {"status": "left", "group": group_ref}, t("group.left", name=group_ref))
    await with_client(home, proxy, body)


@group.command("rename", help=t("cmd.group.rename"))
@click.argument("group_ref", metavar="GROUP")
@click.argument("name")
@click.option("--description", default=None, help=t("opt.group.description"))
@home_options
async def rename(group_ref: str, name: str, description: str | None, home: str | None,
                 as_json: bool, proxy: str | None) -> None:
    async def body(c: Client) -> None:
        renamed = await c.rename(group_ref, name, description)
        _emit_info(as_json, renamed, t("group.renamed", name=renamed.name))
    await with_client(home, proxy, body)


@group.command("admin", help=t("cmd.group.admin"))
@click.argument("group_ref", metavar="GROUP")
@click.argument("who")
@click.option("--demote", is_flag=True, help=t("opt.group.demote"))
@home_options
async def admin(group_ref: str, who: str, demote: bool, home: str | None, as_json: bool,
                proxy: str | None) -> None:
    async def body(c: Client) -> None:
        changed = await c.set_admin(group_ref, who, not demote)
        _emit_info(as_json, changed, t("group.demoted", name=changed.name) if demote
                   else t("group.promoted", name=changed.name))
    await with_client(home, proxy, body)


@group.command("members", help=t("cmd.group.members"))
@click.argument("group_ref", metavar="GROUP")
@home_options
async def members(group_ref: str, home: str | None, as_json: bool,
                  proxy: str | None) -> None:
    async def body(c: Client) -> None:
        for m in c.members(group_ref):
            who = f"@{m.username}" if m.username else m.account[:8] + "…"
            emit(as_json, {"account_id": m.account, "username": m.username,
                           "devices": list(m.devices), "admin": m.admin},
                 tn("group.member", len(m.devices), who=who,
                    admin=t("group.admin_mark") if m.admin else ""))
    await with_client(home, proxy, body)


@group.command("list", help=t("cmd.group.list"))
@home_options
async def list_groups(home: str | None, as_json: bool, proxy: str | None) -> None:
    async def body(c: Client) -> None:
        found = c.groups()
        if not found and not as_json:
            click.echo(t("group.none"))
        for g in found:
            emit(as_json, info_obj(g), info_line(g))
    await with_client(home, proxy, body)


COMMANDS: list[click.Command] = [group]

__all__ = [
    "COMMANDS",
    "info_line",
    "info_obj",
    "is_group",
    "show_notice",
]
