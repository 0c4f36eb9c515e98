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
    pin_value,
    qr_text,
    safe_text,
    server_url,
    when,
    with_client,
)
from veil.cli.display import (
    conversation_key,
    group_name,
    history_line,
    history_obj,
    show_event,
    show_message,
)
from veil.cli.groups import group_info, is_group
from veil.cli.i18n import explain, t, tn
from veil.cli.transfer import (
    TransferView,
    conversation_of,
    flush_outbox,
    save_files,
    size_text,
)
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


def _group_name(c: Client, group_id: str) -> str:
    return group_name(c, group_id)


def _show(m: IncomingMessage, as_json: bool, c: Client | None = None) -> None:
    show_message(m, as_json, c)


@click.command(help=t("cmd.init"))
@click.option("--server", required=True, help=t("opt.init.server"))
@click.option("--username", default=None, help=t("opt.init.username"))
@click.option("--invite", default=None, help=t("opt.init.invite"))
@click.option("--no-passphrase", is_flag=True, help=t("opt.init.no_passphrase"))
@click.option("--passphrase-file", type=click.Path(dir_okay=False), default=None,
              help=t("opt.init.passphrase_file"))
@click.option("--trust-root", "trust_root", default=None, metavar="FINGERPRINT",
              help=t("opt.init.trust_root"))
@click.option("--pin", "pin", default=None, metavar="SHA256", help=t("opt.init.pin"))
@home_options
async def init(server: str, username: str | None, invite: str | None, no_passphrase: bool,
               passphrase_file: str | None, trust_root: str | None, pin: str | None,
               home: str | None, as_json: bool, proxy: str | None) -> None:
    """Create an identity and register it with a server."""
    path = home_path(home)
    if Store.exists(path):
        raise click.ClickException(t("init.exists", path=path))
    server = server_url(server)
    tls_pin = pin_value(pin, server)
    if username is not None and not USERNAME.fullmatch(username):
        raise BadValue(t("err.bad_username", value=repr(username)))
    passphrase = passphrase_for(path, True, no_passphrase, passphrase_file)
    client = await Client.register(path, server, username=username, invite=invite,
                                   passphrase=passphrase,
                                   proxy=proxy, trust_root=trust_root, pin=tls_pin)
    try:
        root = client.trust_root_fingerprint()
        emit(as_json, {"account_id": client.account, "username": client.me.username,
                        "device_id": client.me.device_id, "home": str(path),
                        "trust_root": root, "trust_root_pinned": trust_root is not None,
                        "tls_pin": tls_pin},
              (t("init.registered_as", account=client.account, username=client.me.username,
                 device=client.me.device_id, path=path) if client.me.username else
               t("init.registered", account=client.account, device=client.me.device_id,
                 path=path))
              + "\n" + (t("init.root_pinned", root=root) if trust_root is not None else
                        t("init.root_presented", root=root))
              + ("\n" + t("init.tls_pinned", pin=tls_pin) if tls_pin else ""))
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
                        "tls_pin": c.me.tls_pin or None,
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
    """What earlier commands left in the outbox goes first (reported on stderr); an
    upload a killed or cut-off command left goes on from where it stopped."""
    if not c.outbox():
        return
    try:
        sent = await flush_outbox(c, TransferView(as_json))
    except ServerUnreachable:
        return
    for message in sent:
        if as_json:
            emit(True, {**_sent_obj(message), "from_outbox": True}, "")
        else:
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
@click.option("--file", "file", type=click.Path(dir_okay=False), default=None,
              help=t("opt.send.file"))
@click.option("--wait", is_flag=True, help=t("opt.send.wait"))
@via_options
@home_options
async def send(to: str, text: str | None, text_file: str | None, file: str | None,
               wait: bool, via: str, mix_directory: str | None, mix_authority: str | None,
               home: str | None, as_json: bool, proxy: str | None) -> None:
    """Send TEXT to TO (an account id, @username or contact link); TEXT '-' reads
    standard input.

    The message is saved in the outbox first: if the server cannot be reached it is
    sent by the next veil command that connects (or, with --wait, by this one)."""
    message = "" if file is not None and text is None and text_file is None else \
        _read_text(text, text_file)

    async def body(c: Client) -> None:
        relay = None
        if via == "mixnet":
            from veil.cli.relay import attach_mixnet
            relay = await attach_mixnet(c, mix_directory, mix_authority, proxy)
        await _flush_first(c, as_json)
        if file is not None:
            await _send_file(c, to, Path(file), message, wait, as_json)
            if relay is not None:
                await relay.finish(timeout=120)
            return
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


async def _send_file(c: Client, to: str, path: Path, text: str, wait: bool,
                     as_json: bool) -> None:
    """``veil send TO --file PATH``: encrypted here, uploaded with a progress bar, and
    sent; a cut-off upload waits in the outbox and goes on from where it stopped."""
    before = {m.id for m in c.outbox()}
    view = TransferView(as_json)
    try:
        message_id = await c.send_file(to, path, text, progress=view)
    except ServerUnreachable as exc:
        view.close()
        queued = [m for m in c.outbox() if m.id not in before]
        if not queued:                          # a group's upload: nothing was kept
            raise
        if not wait:
            emit(as_json, {"status": "queued", "id": queued[-1].id, "to": to,
                           "file": path.name, "reason": str(exc)},
                 t("send.file_queued", reason=explain(exc)))
            return
        sent = await _wait_for(c, queued[-1].id, as_json)
        message_id = sent.id
    finally:
        view.close()
    size = path.stat().st_size if path.exists() else 0
    where = _group_name(c, c.group(to).id) if is_group(to) else await _display(c, to)
    emit(as_json, {"status": "sent", "id": message_id, "to": to,
                   "file": {"name": path.name, "size": size},
                   "resumed_at": view.resumed[0].resumed_at if view.resumed else None},
         t("send.file_sent", name=safe_text(path.name), size=size_text(size),
           to=where))


async def _wait_for(c: Client, message_id: str, as_json: bool) -> SentMessage:
    """Retry the outbox with backoff until ``message_id`` has gone out."""
    if not as_json:
        err_console.print(t("send.waiting"))
    delay = 1.0
    while True:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
        with contextlib.suppress(ServerUnreachable):
            for sent in await flush_outbox(c, TransferView(as_json)):
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
            files = {m.id for m in c.outbox() if m.uploads}
            view = TransferView(as_json)
            try:
                for sent in await flush_outbox(c, view):
                    obj = _sent_obj(sent)
                    text = _sent_text(sent.recipient, sent)
                    if sent.id in files:
                        resumed = [p.resumed_at for p in view.resumed if p.resumed_at]
                        obj["resumed_at"] = resumed[0] if resumed else None
                        text = t("outbox.file_sent", id=sent.id[:8]) + "\n" + text
                    emit(as_json, obj, text)
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
                            "text": m.text, "uploads": len(m.uploads)},
                  tn("outbox.line", m.attempts, id=m.id[:8], when=when(m.timestamp),
                     to=safe_text(to), text=safe_text(m.text[:60]),
                     stage=t("outbox.stage.queued") if m.stage == "queued"
                     else t("outbox.stage.sealed"),
                     error=t("outbox.last_error", error=m.last_error) if m.last_error
                     else "") + (t("outbox.file_waiting") if m.uploads else ""))
        if not waiting and not as_json:
            click.echo(t("outbox.empty"))
    await with_client(home, proxy, body)


def recv_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Where received files go, and whether what is shown counts as read."""
    fn = click.option("--no-read-receipts", "no_read", is_flag=True,
                      help=t("opt.recv.no_read"))(fn)
    fn = click.option("--no-download", is_flag=True, help=t("opt.recv.no_download"))(fn)
    return click.option("--download-dir", "download_dir",
                        type=click.Path(file_okay=False), default=None,
                        help=t("opt.recv.download_dir"))(fn)


class Shown:
    """What ``veil recv`` and ``veil chat`` do with a message once it is shown: save its
    files (one at a time, in order) and mark it read (a read receipt goes)."""

    def __init__(self, c: Client, as_json: bool, download_dir: str | None,
                 no_download: bool, no_read: bool) -> None:
        self._c = c
        self._json = as_json
        self._dir = Path(download_dir).resolve() if download_dir else None
        self._download = not no_download
        self._read = not no_read
        self._lock = asyncio.Lock()
        self.ok = True

    async def handle(self, messages: list[IncomingMessage]) -> None:
        async with self._lock:
            if self._download:
                for m in messages:
                    if m.attachments and not await save_files(self._c, m, self._dir,
                                                              self._json):
                        self.ok = False
            if self._read:
                by_conversation: dict[str, list[str]] = {}
                for m in messages:
                    by_conversation.setdefault(conversation_of(m), []).append(m.id)
                for key, ids in by_conversation.items():
                    with contextlib.suppress(ClientError):
                        await self._c.mark_read(key, ids)


@click.command(help=t("cmd.recv"))
@click.option("--follow", "-f", is_flag=True, help=t("opt.recv.follow"))
@recv_options
@home_options
async def recv(follow: bool, download_dir: str | None, no_download: bool, no_read: bool,
               home: str | None, as_json: bool, proxy: str | None) -> None:
    """Print received messages (sender, time, text), and warnings about groups."""
    async def body(c: Client) -> None:
        await _flush_first(c, as_json)
        after = Shown(c, as_json, download_dir, no_download, no_read)
        shown: list[IncomingMessage] = []
        with c.notices() as notices:
            async for message in c.pending():
                for event in notices():      # a gap is told before what follows it
                    show_event(c, event, as_json)
                _show(message, as_json, c)
                shown.append(message)
            for event in notices():
                show_event(c, event, as_json)
        await after.handle(shown)
        if follow:
            # Messages disappear while it runs, as their timers end (told as lines).
            expiry = asyncio.create_task(c.run_expiry())
            try:
                async for event in c.events():
                    if isinstance(event, MessageReceived):
                        _show(event.message, as_json, c)
                        await after.handle([event.message])
                    else:
                        show_event(c, event, as_json, typing=True)
            finally:
                expiry.cancel()
        if not after.ok:
            raise SystemExit(1)
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


async def _chat_file(c: Client, to: str, path: str, as_json: bool) -> None:
    """``/file PATH`` in chat: send that file (a progress bar on a terminal)."""
    with TransferView(as_json) as view:
        try:
            message_id = await c.send_file(to, Path(path), progress=view)
        except ServerUnreachable:
            emit(as_json, {"status": "queued"}, t("chat.pending"))
            return
        except VeilError as exc:
            emit(as_json, {"status": "failed", "error": {"code": exc.code,
                                                         "message": str(exc)}},
                 t("chat.not_sent", reason=explain(exc)))
            return
    emit(as_json, {"status": "sent", "id": message_id, "file": Path(path).name},
         t("chat.file_sent", name=safe_text(Path(path).name)))


@click.command(help=t("cmd.chat"))
@click.argument("to")
@via_options
@recv_options
@home_options
async def chat(to: str, via: str, mix_directory: str | None, mix_authority: str | None,
               download_dir: str | None, no_download: bool, no_read: bool,
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
        c.expire_messages()
        expiry = asyncio.create_task(c.run_expiry())
        for entry in c.history(conversation, 20):
            emit(as_json, {"history": True, **history_obj(entry)},
                 history_line(c, conversation, entry, name))
        after = Shown(c, as_json, download_dir, no_download, no_read)
        handling: set[asyncio.Task[None]] = set()

        async def incoming() -> None:
            async for event in c.events():
                if isinstance(event, MessageReceived):
                    _show(event.message, as_json, c)
                    task = asyncio.create_task(after.handle([event.message]))
                    handling.add(task)
                    task.add_done_callback(handling.discard)
                elif isinstance(event, OutboxSent):
                    emit(as_json, {"status": "sent", "id": event.message_id},
                          t("chat.sent_from_outbox", id=event.message_id[:8]))
                elif isinstance(event, OutboxFailed):
                    emit(as_json, {"status": "failed", "id": event.message_id,
                                    "error": {"code": event.code, "message": event.reason}},
                          t("chat.outbox_failed", id=event.message_id[:8],
                            reason=event.reason))
                else:
                    show_event(c, event, as_json, typing=True)

        listener = asyncio.create_task(incoming())
        lines = _stdin_lines()
        try:
            while True:
                line = await lines.get()
                if not line:
                    break
                if line.startswith("/file "):
                    await _chat_file(c, to, line[len("/file "):].strip(), as_json)
                elif line.strip():
                    await _chat_send(c, to, line.rstrip("\n"), as_json)
        finally:
            for task in list(handling):
                with contextlib.suppress(Exception):
                    await task
            expiry.cancel()
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
        c.expire_messages()
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
        key, group = await conversation_key(c, to)
        name = _group_name(c, key) if group else safe_text(await _display(c, to))
        c.expire_messages()                  # what disappeared is not shown
        for e in c.history(key, limit):
            emit(as_json, history_obj(e), history_line(c, key, e, name))
    await with_client(home, proxy, body)


COMMANDS = [init, show_id, contact, send, outbox, recv, chat, safety, verify, conversations,
            history]

__all__ = [
    "COMMANDS",
]
