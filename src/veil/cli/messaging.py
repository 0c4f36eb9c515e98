"""The messaging commands: init, id, send, recv, chat, safety, verify, conversations.

Scripts use them without a terminal: the passphrase comes from ``VEIL_PASSPHRASE``, no
command prompts when standard input is not a terminal, and ``--json`` prints one JSON
object per line.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from veil.cli.common import (
    USERNAME,
    BadValue,
    emit,
    err_console,
    home_options,
    home_path,
    pad,
    passphrase_for,
    qr_text,
    safe_text,
    server_url,
    when,
    with_client,
)
from veil.cli.groups import group_info, is_group, show_notice
from veil.cli.i18n import explain, t, tn
from veil.client import (
    Client,
    IncomingMessage,
    OutboxFailed,
    OutboxSent,
    SentMessage,
    contact_link,
)
from veil.client.errors import ClientError, ServerUnreachable
from veil.client.events import MessageReceived
from veil.client.store import Store
from veil.core.errors import VeilError


def _message_obj(m: IncomingMessage) -> dict[str, Any]:
    return {"id": m.id, "sender": m.sender, "sender_username": m.sender_username,
            "device": m.device, "text": m.text, "timestamp": m.timestamp,
            "identity_changed": m.identity_changed, "group": m.group}


def _group_name(c: Client, group_id: str) -> str:
    for g in c.groups():
        if g.id == group_id:
            return "#" + safe_text(g.name)
    return group_id[:8] + "…"


def _show(m: IncomingMessage, as_json: bool, c: Client | None = None) -> None:
    if m.identity_changed:
        err_console.print(f"[bold red]{t('recv.identity_changed', who=m.sender[:8])}[/]")
    who = f"@{m.sender_username}" if m.sender_username else m.sender[:8] + "…"
    if m.group is not None:
        where = _group_name(c, m.group) if c is not None else m.group[:8] + "…"
        who = f"{where} {who}"
    emit(as_json, _message_obj(m), f"[{when(m.timestamp)}] {who}: {safe_text(m.text)}")


@click.command(help=t("cmd.init"))
@click.option("--server", required=True, help=t("opt.init.server"))
@click.option("--username", default=None, help=t("opt.init.username"))
@click.option("--invite", default=None, help=t("opt.init.invite"))
@click.option("--no-passphrase", is_flag=True, help=t("opt.init.no_passphrase"))
@click.option("--passphrase-file", type=click.Path(dir_okay=False), default=None,
              help=t("opt.init.passphrase_file"))
@click.option("--trust-root", "trust_root", default=None, metavar="FINGERPRINT",
              help=t("opt.init.trust_root"))
@home_options
async def init(server: str, username: str | None, invite: str | None, no_passphrase: bool,
               passphrase_file: str | None, trust_root: str | None, home: str | None,
               as_json: bool, proxy: str | None) -> None:
    """Create an identity and register it with a server."""
    path = home_path(home)
    if Store.exists(path):
        raise click.ClickException(t("init.exists", path=path))
    server = server_url(server)
    if username is not None and not USERNAME.fullmatch(username):
        raise BadValue(t("err.bad_username", value=repr(username)))
    passphrase = passphrase_for(path, True, no_passphrase, passphrase_file)
    client = await Client.register(path, server, username=username, invite=invite,
                                   passphrase=passphrase,
                                   proxy=proxy, trust_root=trust_root)
    try:
        root = client.trust_root_fingerprint()
        emit(as_json, {"account_id": client.account, "username": client.me.username,
                        "device_id": client.me.device_id, "home": str(path),
                        "trust_root": root, "trust_root_pinned": trust_root is not None},
              (t("init.registered_as", account=client.account, username=client.me.username,
                 device=client.me.device_id, path=path) if client.me.username else
               t("init.registered", account=client.account, device=client.me.device_id,
                 path=path))
              + "\n" + (t("init.root_pinned", root=root) if trust_root is not None else
                        t("init.root_presented", root=root)))
    finally:
        await client.close()


@click.command("id", help=t("cmd.id"))
@click.option("--qr", is_flag=True, help=t("opt.id.qr"))
@home_options
async def show_id(qr: bool, home: str | None, as_json: bool, proxy: str | None) -> None:
    """Show this account id, username, identity fingerprint and pinned trust root."""
    async def body(c: Client) -> None:
        link = c.contact_link()
        emit(as_json, {"account_id": c.account, "username": c.me.username,
                        "device_id": c.me.device_id, "fingerprint": c.fingerprint(),
                        "server": c.me.server, "trust_root": c.trust_root_fingerprint(),
                        "contact_link": link},
              t("id.lines", account=c.account,
                username=("@" + c.me.username) if c.me.username else "-",
                device=c.me.device_id, key=c.fingerprint(), server=c.me.server,
                root=c.trust_root_fingerprint(), link=link))
        if not as_json:
            click.echo(t("id.link_hint"))
            if qr:
                click.echo(qr_text(link.encode("ascii")))
    await with_client(home, proxy, body)


@click.group(help=t("cmd.contact"))
def contact() -> None:
    pass


@contact.command("add", help=t("cmd.contact.add"))
@click.argument("link")
@home_options
async def contact_add(link: str, home: str | None, as_json: bool, proxy: str | None) -> None:
    async def body(c: Client) -> None:
        kept = c.add_contact(link)
        emit(as_json, {"account_id": kept.account, "username": kept.username,
                        "sealed": True},
              t("contact.added", who=_who(kept.account, kept.username),
                account=kept.account[:8] + "…"))
    await with_client(home, proxy, body)


def _who(account: str, username: str | None) -> str:
    return f"@{username}" if username else account[:8] + "…"


async def _display(c: Client, to: str) -> str:
    """How TO is shown: as typed, unless it is a contact link (then who it names)."""
    if not contact_link.is_link(to):
        return to
    kept = await c.resolve(to)
    return _who(kept.account, kept.username)


def via_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--via direct|mixnet and where to find the mixnet's signed directory."""
    fn = click.option("--via", type=click.Choice(["direct", "mixnet"]), default="direct",
                      show_default=True, help=t("opt.via"))(fn)
    fn = click.option("--mix-directory", envvar="VEIL_MIX_DIRECTORY", default=None,
                      help=t("opt.mix_directory"))(fn)
    return click.option("--mix-authority", envvar="VEIL_MIX_AUTHORITY", default=None,
                        help=t("opt.mix_authority"))(fn)


def _sent_obj(sent: SentMessage) -> dict[str, Any]:
    return {"status": "sent", "id": sent.id, "to": sent.recipient, "devices": sent.devices,
            "sealed": sent.sealed, "via": sent.via, "timestamp": sent.timestamp}


def _route(via: str) -> str:
    return {"direct": t("route.direct"), "mixnet": t("route.mixnet")}.get(via, via)


def _sent_text(to: str, sent: SentMessage) -> str:
    line = tn("send.sent", sent.devices, to=to, route=_route(sent.via),
              sealed=t("send.sealed") if sent.sealed else "")
    return line if sent.sealed else line + "\n" + t("send.unsealed", to=to)


async def _flush_first(c: Client, as_json: bool) -> None:
    """What earlier commands left in the outbox goes first (reported on stderr)."""
    if not c.outbox():
        return
    try:
        sent = await c.flush_outbox()
    except ServerUnreachable:
        return
    for message in sent:
        err_console.print(t("send.flushed", id=message.id[:8]))


def _read_text(text: str | None, text_file: str | None) -> str:
    if text_file is not None:
        if text is not None:
            raise BadValue(t("err.text_twice"))
        try:
            return Path(text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.ClickException(t("err.cannot_read", path=text_file,
                                         reason=getattr(exc, "strerror", None) or exc)
                                       ) from None
    if text is None:
        raise BadValue(t("err.no_text"))
    if text == "-":
        return sys.stdin.read()
    return text


@click.command(help=t("cmd.send"))
@click.argument("to")
@click.argument("text", required=False)
@click.option("--text-file", type=click.Path(dir_okay=False), default=None,
              help=t("opt.send.text_file"))
@click.option("--wait", is_flag=True, help=t("opt.send.wait"))
@via_options
@home_options
async def send(to: str, text: str | None, text_file: str | None, wait: bool, via: str,
               mix_directory: str | None, mix_authority: str | None, home: str | None,
               as_json: bool, proxy: str | None) -> None:
    """Send TEXT to TO (an account id, @username or contact link); TEXT '-' reads
    standard input.

    The message is saved in the outbox first: if the server cannot be reached it is
    sent by the next veil command that connects (or, with --wait, by this one)."""
    message = _read_text(text, text_file)

    async def body(c: Client) -> None:
        relay = None
        if via == "mixnet":
            from veil.cli.relay import attach_mixnet
            relay = await attach_mixnet(c, mix_directory, mix_authority, proxy)
        await _flush_first(c, as_json)
        if is_group(to):
            posted = await c.send_group(to, message)
            emit(as_json, {"status": "sent", "id": posted.id, "group": posted.group,
                           "seq": posted.seq, "timestamp": posted.timestamp},
                 t("send.group_sent", to=_group_name(c, posted.group)))
            return
        try:
            sent = await c.send(to, message)
        except ServerUnreachable as exc:
            queued = c.outbox()[-1]
            if not wait:
                emit(as_json, {"status": "queued", "id": queued.id, "to": to,
                                "reason": str(exc)},
                      t("send.queued", reason=explain(exc)))
                return
            sent = await _wait_for(c, queued.id, as_json)
        if relay is not None:
            await relay.finish(timeout=120)
        emit(as_json, _sent_obj(sent), _sent_text(await _display(c, to), sent))
    await with_client(home, proxy, body)


async def _wait_for(c: Client, message_id: str, as_json: bool) -> SentMessage:
    """Retry the outbox with backoff until ``message_id`` has gone out."""
    if not as_json:
        err_console.print(t("send.waiting"))
    delay = 1.0
    while True:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
        with contextlib.suppress(ServerUnreachable):
            for sent in await c.flush_outbox():
                if sent.id == message_id:
                    return sent
        if all(m.id != message_id for m in c.outbox()):
            raise click.ClickException(t("send.gave_up"))


@click.command(help=t("cmd.outbox"))
@click.option("--retry", is_flag=True, help=t("opt.outbox.retry"))
@click.option("--cancel", "cancel_id", default=None, metavar="ID",
              help=t("opt.outbox.cancel"))
@home_options
async def outbox(retry: bool, cancel_id: str | None, home: str | None, as_json: bool,
                 proxy: str | None) -> None:
    """List the messages the server has not acknowledged yet; retry or cancel them."""
    async def body(c: Client) -> None:
        if cancel_id is not None:
            matches = [m for m in c.outbox() if m.id.startswith(cancel_id.lower())]
            if len(matches) != 1:
                raise click.ClickException(
                    t("outbox.no_match", prefix=repr(cancel_id)) if not matches else
                    t("outbox.ambiguous", prefix=repr(cancel_id), count=len(matches)))
            c.cancel(matches[0].id)
            emit(as_json, {"status": "cancelled", "id": matches[0].id},
                  t("outbox.cancelled", id=matches[0].id[:8], to=matches[0].to)
                  + (t("outbox.may_arrive")
                     if matches[0].attempts and matches[0].stage == "sealed" else ""))
            return
        if retry:
            try:
                for sent in await c.flush_outbox():
                    emit(as_json, _sent_obj(sent), _sent_text(sent.recipient, sent))
            except ServerUnreachable as exc:
                raise click.ClickException(t("outbox.kept", reason=explain(exc))) from None
        waiting = c.outbox()
        for m in waiting:
            to = m.to
            if m.kind == "group":           # a group message: shown as #name
                try:
                    to = "#" + c.group(m.to).name
                except ClientError:
                    to = "#" + m.to[:16]
            emit(as_json, {"status": "pending", "id": m.id, "to": m.to, "kind": m.kind,
                            "stage": m.stage, "attempts": m.attempts,
                            "last_error": m.last_error, "timestamp": m.timestamp,
                            "text": m.text},
                  tn("outbox.line", m.attempts, id=m.id[:8], when=when(m.timestamp),
                     to=safe_text(to), text=safe_text(m.text[:60]),
                     stage=t("outbox.stage.queued") if m.stage == "queued"
                     else t("outbox.stage.sealed"),
                     error=t("outbox.last_error", error=m.last_error) if m.last_error
                     else ""))
        if not waiting and not as_json:
            click.echo(t("outbox.empty"))
    await with_client(home, proxy, body)


@click.command(help=t("cmd.recv"))
@click.option("--follow", "-f", is_flag=True, help=t("opt.recv.follow"))
@home_options
async def recv(follow: bool, home: str | None, as_json: bool, proxy: str | None) -> None:
    """Print received messages (sender, time, text), and warnings about groups."""
    async def body(c: Client) -> None:
        await _flush_first(c, as_json)
        with c.notices() as notices:
            async for message in c.pending():
                for event in notices():      # a gap is told before what follows it
                    show_notice(c, event, as_json)
                _show(message, as_json, c)
            for event in notices():
                show_notice(c, event, as_json)
        if follow:
            async for event in c.events():
                if isinstance(event, MessageReceived):
                    _show(event.message, as_json, c)
                else:
                    show_notice(c, event, as_json)
    await with_client(home, proxy, body)


def _stdin_lines() -> asyncio.Queue[str]:
    """Lines of standard input ('' at its end), read by a daemon thread: unlike the
    event loop's executor, nothing waits for it at exit, so one Ctrl-C ends chat at once
    instead of hanging until Enter."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=64)

    def read() -> None:
        while True:
            line = sys.stdin.readline()
            put = queue.put(line)          # waits while chat is behind (bounded)
            try:
                asyncio.run_coroutine_threadsafe(put, loop).result()
            except (RuntimeError, concurrent.futures.CancelledError):
                put.close()                # never ran: the loop is gone, chat ended
                return
            if not line:
                return
    threading.Thread(target=read, name="veil-chat-stdin", daemon=True).start()
    return queue


async def _chat_send(c: Client, to: str, text: str, as_json: bool) -> None:
    """One line of chat: an error is shown and chat goes on; an unreachable server
    leaves the line in the outbox, sent when the connection is back."""
    try:
        if is_group(to):
            await c.send_group(to, text)
        else:
            await c.send(to, text)
    except ServerUnreachable:
        emit(as_json, {"status": "queued", "id": c.outbox()[-1].id},
              t("chat.pending"))
    except VeilError as exc:
        emit(as_json, {"status": "failed", "error": {"code": exc.code, "message": str(exc)}},
              t("chat.not_sent", reason=explain(exc)))


@click.command(help=t("cmd.chat"))
@click.argument("to")
@via_options
@home_options
async def chat(to: str, via: str, mix_directory: str | None, mix_authority: str | None,
               home: str | None, as_json: bool, proxy: str | None) -> None:
    """Interactive chat with TO: type a line to send it; Ctrl-D to leave."""
    async def body(c: Client) -> None:
        relay = None
        if via == "mixnet":
            from veil.cli.relay import attach_mixnet
            relay = await attach_mixnet(c, mix_directory, mix_authority, proxy)
        if is_group(to):
            conversation = group_info(c, to).id
            name = _group_name(c, conversation)
        else:
            conversation = (await c.resolve(to)).account
            name = await _display(c, to)
        if not as_json:
            click.echo(t("chat.header", who=name))
        for entry in c.history(conversation, 20):
            who = t("chat.you") if entry.direction == "out" else name
            emit(as_json, {"history": True, "id": entry.id, "direction": entry.direction,
                            "text": entry.text, "timestamp": entry.timestamp},
                  f"[{when(entry.timestamp)}] {who}: {safe_text(entry.text)}")

        async def incoming() -> None:
            async for event in c.events():
                if isinstance(event, MessageReceived):
                    _show(event.message, as_json, c)
                elif isinstance(event, OutboxSent):
                    emit(as_json, {"status": "sent", "id": event.message_id},
                          t("chat.sent_from_outbox", id=event.message_id[:8]))
                elif isinstance(event, OutboxFailed):
                    emit(as_json, {"status": "failed", "id": event.message_id,
                                    "error": {"code": event.code, "message": event.reason}},
                          t("chat.outbox_failed", id=event.message_id[:8],
                            reason=event.reason))
                else:
                    show_notice(c, event, as_json)

        listener = asyncio.create_task(incoming())
        lines = _stdin_lines()
        try:
            while True:
                line = await lines.get()
                if not line:
                    break
                if line.strip():
                    await _chat_send(c, to, line.rstrip("\n"), as_json)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            if relay is not None:
                await relay.finish(timeout=120)
    await with_client(home, proxy, body)


@click.command(help=t("cmd.safety"))
@click.argument("to")
@home_options
async def safety(to: str, home: str | None, as_json: bool, proxy: str | None) -> None:
    """Show the safety number with TO, and a QR code to scan."""
    async def body(c: Client) -> None:
        number = await c.safety_number(to)
        contact = await c.resolve(to)
        payload = base64.b64encode(number.qr_payload).decode()
        if as_json:
            emit(True, {"with": contact.account, "safety_number": number.digits,
                         "qr_payload": payload, "verified": contact.verified}, "")
            return
        groups = number.groups()
        click.echo(t("safety.number", to=to, first=" ".join(groups[:6]),
                     second=" ".join(groups[6:])))
        click.echo(qr_text(number.qr_payload))
        click.echo(t("safety.verified") if contact.verified else
                   t("safety.not_verified", to=to))
    await with_client(home, proxy, body)


@click.command(help=t("cmd.verify"))
@click.argument("to")
@click.option("--number", default=None, help=t("opt.verify.number"))
@home_options
async def verify(to: str, number: str | None, home: str | None, as_json: bool,
                 proxy: str | None) -> None:
    """Mark TO's current identity key as verified."""
    async def body(c: Client) -> None:
        contact = await c.verify(to, number)
        emit(as_json, {"account_id": contact.account, "verified": True},
              t("verify.done", to=to))
    await with_client(home, proxy, body)


@click.command(help=t("cmd.conversations"))
@home_options
async def conversations(home: str | None, as_json: bool, proxy: str | None) -> None:
    """List conversations, most recent first."""
    async def body(c: Client) -> None:
        for conv in c.conversations():
            last = conv.last
            assert last is not None
            name = f"@{conv.username}" if conv.username else conv.peer
            emit(as_json, {"peer": conv.peer, "username": conv.username,
                            "verified": conv.verified, "last_text": last.text,
                            "last_timestamp": last.timestamp},
                  f"{pad(safe_text(name), 34)} {when(last.timestamp)}  "
                  f"{safe_text(last.text[:40])}")
    await with_client(home, proxy, body)


@click.command(help=t("cmd.history"))
@click.argument("to")
@click.option("--limit", default=50, show_default=True)
@home_options
async def history(to: str, limit: int, home: str | None, as_json: bool,
                  proxy: str | None) -> None:
    """Show the conversation with TO."""
    async def body(c: Client) -> None:
        contact = await c.resolve(to)
        for e in c.history(contact.account, limit):
            emit(as_json, {"id": e.id, "direction": e.direction, "text": e.text,
                            "timestamp": e.timestamp},
                  f"[{when(e.timestamp)}] {t('chat.you') if e.direction == 'out' else to}: "
                  f"{safe_text(e.text)}")
    await with_client(home, proxy, body)


COMMANDS = [init, show_id, contact, send, outbox, recv, chat, safety, verify, conversations,
            history]

__all__ = [
    "COMMANDS",
]
