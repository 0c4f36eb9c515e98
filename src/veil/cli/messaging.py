"""The messaging commands: init, id, send, recv, chat, safety, verify, conversations.

Scripts use them without a terminal: the passphrase comes from ``VEIL_PASSPHRASE``, no
command prompts when standard input is not a terminal, and ``--json`` prints one JSON
object per line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from veil.client import Client, IncomingMessage
from veil.client.store import Store

T = TypeVar("T")
DEFAULT_HOME = Path.home() / ".veil"
_err = Console(stderr=True)


def _home(value: str | None) -> Path:
    return Path(value).expanduser() if value else DEFAULT_HOME


def _passphrase(home: Path, creating: bool, no_passphrase: bool = False) -> str | None:
    env = os.environ.get("VEIL_PASSPHRASE")
    if env is not None:
        return env or None
    if no_passphrase or not sys.stdin.isatty():
        return None
    if creating:
        value = click.prompt("Passphrase for the local store (empty: key file instead)",
                             default="", hide_input=True, confirmation_prompt=True,
                             show_default=False)
        return value or None
    if (home / "store.key").exists():
        return None
    return str(click.prompt("Passphrase", hide_input=True))


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c != 0x09}


def _safe(text: str) -> str:
    """Peer text for a terminal: control characters shown, not obeyed (no forged lines,
    no escape sequences that hide a warning). JSON output needs none of this."""
    return text.translate(_CONTROL)


def _emit(as_json: bool, obj: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(obj) if as_json else text)


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _message_obj(m: IncomingMessage) -> dict[str, Any]:
    return {"id": m.id, "sender": m.sender, "sender_username": m.sender_username,
            "device": m.device, "text": m.text, "timestamp": m.timestamp,
            "identity_changed": m.identity_changed}


def _show(m: IncomingMessage, as_json: bool) -> None:
    if m.identity_changed:
        _err.print(f"[bold red]WARNING: the safety number with {m.sender[:8]}… changed. "
                   "Verify it again before trusting this conversation.[/]")
    who = f"@{m.sender_username}" if m.sender_username else m.sender[:8] + "…"
    _emit(as_json, _message_obj(m), f"[{_when(m.timestamp)}] {who}: {_safe(m.text)}")


def home_options(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Adds --home/--json/--proxy and runs the coroutine command."""
    @click.option("--home", envvar="VEIL_HOME", default=None,
                  help="Identity directory (default ~/.veil; env VEIL_HOME).")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    @click.option("--proxy", envvar="VEIL_PROXY", default=None,
                  help="Route connections through SOCKS5, e.g. socks5://127.0.0.1:9050 (Tor).")
    @wraps(fn)
    def wrapper(**kwargs: Any) -> None:
        asyncio.run(fn(**kwargs))
    return wrapper


async def _open(home: str | None, proxy: str | None) -> Client:
    path = _home(home)
    return await Client.open(path, passphrase=_passphrase(path, creating=False)
                             if Store.exists(path) else None, proxy=proxy)


async def _with_client(home: str | None, proxy: str | None,
                       body: Callable[[Client], Awaitable[T]]) -> T:
    client = await _open(home, proxy)
    try:
        return await body(client)
    finally:
        await client.close()


@click.command()
@click.option("--server", required=True, help="Server URL, e.g. http://127.0.0.1:8470")
@click.option("--username", default=None, help="Optional unique username.")
@click.option("--invite", default=None, help="Invite token (invite-only servers).")
@click.option("--no-passphrase", is_flag=True,
              help="Protect the store with a key file (mode 0600) instead of a passphrase.")
@click.option("--trust-root", "trust_root", default=None, metavar="FINGERPRINT",
              help="The server's trust-root fingerprint, from its operator: registration "
              "is refused if the server presents another.")
@home_options
async def init(server: str, username: str | None, invite: str | None, no_passphrase: bool,
               trust_root: str | None, home: str | None, as_json: bool,
               proxy: str | None) -> None:
    """Create an identity and register it with a server."""
    path = _home(home)
    if Store.exists(path):
        raise click.ClickException(f"{path} already holds a Veil identity")
    client = await Client.register(path, server, username=username, invite=invite,
                                   passphrase=_passphrase(path, True, no_passphrase),
                                   proxy=proxy, trust_root=trust_root)
    try:
        root = client.trust_root_fingerprint()
        _emit(as_json, {"account_id": client.account, "username": client.me.username,
                        "device_id": client.me.device_id, "home": str(path),
                        "trust_root": root, "trust_root_pinned": trust_root is not None},
              f"Registered {client.account}"
              + (f" as @{client.me.username}" if client.me.username else "")
              + f" (device {client.me.device_id}) in {path}\n"
              + (f"trust root {root} (pinned)" if trust_root is not None else
                 f"trust root {root} (as the server presented it: compare it with the "
                 "fingerprint the operator published)"))
    finally:
        await client.close()


@click.command("id")
@home_options
async def show_id(home: str | None, as_json: bool, proxy: str | None) -> None:
    """Show this account id, username, identity fingerprint and pinned trust root."""
    async def body(c: Client) -> None:
        _emit(as_json, {"account_id": c.account, "username": c.me.username,
                        "device_id": c.me.device_id, "fingerprint": c.fingerprint(),
                        "server": c.me.server, "trust_root": c.trust_root_fingerprint()},
              f"account  {c.account}\nusername {('@' + c.me.username) if c.me.username else '-'}"
              f"\ndevice   {c.me.device_id}\nkey      {c.fingerprint()}\nserver   {c.me.server}"
              f"\nroot     {c.trust_root_fingerprint()}")
    await _with_client(home, proxy, body)


def via_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--via direct|mixnet and where to find the mixnet's signed directory."""
    fn = click.option("--via", type=click.Choice(["direct", "mixnet"]), default="direct",
                      show_default=True, help="Route sealed sends straight to the server "
                      "or through the mixnet (the server then never sees your address).")(fn)
    fn = click.option("--mix-directory", envvar="VEIL_MIX_DIRECTORY", default=None,
                      help="Signed mixnet directory file (env VEIL_MIX_DIRECTORY).")(fn)
    return click.option("--mix-authority", envvar="VEIL_MIX_AUTHORITY", default=None,
                        help="Directory authority public key, hex "
                        "(env VEIL_MIX_AUTHORITY).")(fn)


@click.command()
@click.argument("to")
@click.argument("text")
@via_options
@home_options
async def send(to: str, text: str, via: str, mix_directory: str | None,
               mix_authority: str | None, home: str | None, as_json: bool,
               proxy: str | None) -> None:
    """Send TEXT to TO (an account id or @username)."""
    async def body(c: Client) -> None:
        relay = None
        if via == "mixnet":
            from veil.cli.relay import attach_mixnet
            relay = await attach_mixnet(c, mix_directory, mix_authority, proxy)
        sent = await c.send(to, text)
        if relay is not None:
            await relay.finish(timeout=120)
        _emit(as_json, {"id": sent.id, "to": sent.recipient, "devices": sent.devices,
                        "sealed": sent.sealed, "via": sent.via, "timestamp": sent.timestamp},
              f"sent to {to} ({sent.devices} device{'s' if sent.devices != 1 else ''}"
              f"{', sealed sender' if sent.sealed else ''}, via {sent.via})")
    await _with_client(home, proxy, body)


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new messages.")
@home_options
async def recv(follow: bool, home: str | None, as_json: bool, proxy: str | None) -> None:
    """Print received messages (sender, time, text)."""
    async def body(c: Client) -> None:
        async for message in c.pending():
            _show(message, as_json)
        if follow:
            async for message in c.messages():
                _show(message, as_json)
    await _with_client(home, proxy, body)


@click.command()
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
        contact = await c.resolve(to)
        for entry in c.history(contact.account, 20):
            who = "you" if entry.direction == "out" else to
            click.echo(f"[{_when(entry.timestamp)}] {who}: {_safe(entry.text)}")

        async def incoming() -> None:
            async for message in c.messages():
                _show(message, as_json)

        listener = asyncio.create_task(incoming())
        loop = asyncio.get_running_loop()
        try:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    break
                if line.strip():
                    await c.send(to, line.rstrip("\n"))
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            if relay is not None:
                await relay.finish(timeout=120)
    await _with_client(home, proxy, body)


@click.command()
@click.argument("to")
@home_options
async def safety(to: str, home: str | None, as_json: bool, proxy: str | None) -> None:
    """Show the safety number with TO, and a QR code to scan."""
    async def body(c: Client) -> None:
        number = await c.safety_number(to)
        contact = await c.resolve(to)
        payload = base64.b64encode(number.qr_payload).decode()
        if as_json:
            _emit(True, {"with": contact.account, "safety_number": number.digits,
                         "qr_payload": payload, "verified": contact.verified}, "")
            return
        import segno
        groups = number.groups()
        click.echo("Safety number with " + to + ":\n  " + " ".join(groups[:6])
                   + "\n  " + " ".join(groups[6:]))
        buffer = io.StringIO()
        segno.make(number.qr_payload, error="m").terminal(out=buffer, compact=True)
        click.echo(buffer.getvalue())
        click.echo("verified" if contact.verified else
                   "not verified: compare in person, then run 'veil verify " + to + "'")
    await _with_client(home, proxy, body)


@click.command()
@click.argument("to")
@click.option("--number", default=None,
              help="The safety number you compared; refused if the key changed meanwhile.")
@home_options
async def verify(to: str, number: str | None, home: str | None, as_json: bool,
                 proxy: str | None) -> None:
    """Mark TO's current identity key as verified."""
    async def body(c: Client) -> None:
        contact = await c.verify(to, number)
        _emit(as_json, {"account_id": contact.account, "verified": True},
              f"{to} is now verified")
    await _with_client(home, proxy, body)


@click.command()
@home_options
async def conversations(home: str | None, as_json: bool, proxy: str | None) -> None:
    """List conversations, most recent first."""
    async def body(c: Client) -> None:
        for conv in c.conversations():
            last = conv.last
            assert last is not None
            name = f"@{conv.username}" if conv.username else conv.peer
            _emit(as_json, {"peer": conv.peer, "username": conv.username,
                            "verified": conv.verified, "last_text": last.text,
                            "last_timestamp": last.timestamp},
                  f"{name:<34} {_when(last.timestamp)}  {_safe(last.text[:40])}")
    await _with_client(home, proxy, body)


@click.command()
@click.argument("to")
@click.option("--limit", default=50, show_default=True)
@home_options
async def history(to: str, limit: int, home: str | None, as_json: bool,
                  proxy: str | None) -> None:
    """Show the conversation with TO."""
    async def body(c: Client) -> None:
        contact = await c.resolve(to)
        for e in c.history(contact.account, limit):
            _emit(as_json, {"id": e.id, "direction": e.direction, "text": e.text,
                            "timestamp": e.timestamp},
                  f"[{_when(e.timestamp)}] {'you' if e.direction == 'out' else to}: "
                  f"{_safe(e.text)}")
    await _with_client(home, proxy, body)


COMMANDS = [init, show_id, send, recv, chat, safety, verify, conversations, history]

__all__ = [
    "COMMANDS",
]
