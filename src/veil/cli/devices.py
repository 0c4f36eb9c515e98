"""Linked devices (issue 11 §2, docs/devices.md): ``veil link`` on the new device,
``veil devices`` (list), ``veil devices approve CODE`` and ``veil devices remove ID``
on a device of the account.

``link`` shows a short code and a QR code, then waits: the approving device checks the
code against the key the server relays (a substituted key fails there), and sends the
account's identity, contacts and recent history end-to-end encrypted.
"""

from __future__ import annotations

import asyncio

import click

from veil.cli.common import (
    emit,
    home_options,
    home_path,
    pad,
    passphrase_for,
    pin_value,
    qr_text,
    quiet_client_logs,
    safe_text,
    server_url,
    when,
    with_client,
)
from veil.cli.i18n import t
from veil.client import Client, LinkedDeviceInfo
from veil.client.store import Store


@click.command(help=t("cmd.link"))
@click.option("--server", required=True, help=t("opt.link.server"))
@click.option("--no-passphrase", is_flag=True, help=t("opt.init.no_passphrase"))
@click.option("--passphrase-file", type=click.Path(dir_okay=False), default=None,
              help=t("opt.init.passphrase_file"))
@click.option("--wait", "wait_s", type=click.IntRange(10, 3600), default=600,
              show_default=True, help=t("opt.link.wait"))
@click.option("--pin", "pin", default=None, metavar="SHA256", help=t("opt.init.pin"))
@home_options
async def link(server: str, no_passphrase: bool, passphrase_file: str | None, wait_s: int,
               pin: str | None, home: str | None, as_json: bool, proxy: str | None) -> None:
    quiet_client_logs()
    path = home_path(home)
    if Store.exists(path):
        raise click.ClickException(t("init.exists", path=path))
    url = server_url(server)
    tls_pin = pin_value(pin, url)
    passphrase = passphrase_for(path, True, no_passphrase, passphrase_file)
    pending = await Client.begin_link(path, url, passphrase=passphrase, proxy=proxy,
                                      pin=tls_pin)
    if as_json:
        emit(True, {"status": "waiting", "code": pending.code,
                    "qr_payload": pending.qr_payload, "expires": pending.expires}, "")
    else:
        click.echo(t("link.show", code=pending.code))
        click.echo(qr_text(pending.qr_payload.encode("ascii")))
        click.echo(t("link.waiting"))
    client = await pending.finish(timeout=wait_s)
    try:
        me = client.me
        emit(as_json, {"status": "linked", "account_id": client.account,
                       "username": me.username, "device_id": me.device_id,
                       "home": str(path)},
             t("link.done", device=me.device_id,
               who=f"@{me.username}" if me.username else client.account[:8] + "…",
               home=path))
    finally:
        await client.close()


def _device_obj(d: LinkedDeviceInfo) -> dict[str, object]:
    return {"device_id": d.device_id, "name": d.name, "linked_at": d.linked_at,
            "last_seen": d.last_seen, "current": d.current, "approved": d.approved}


def _device_line(d: LinkedDeviceInfo) -> str:
    return t("devices.line", id=d.device_id, name=pad(safe_text(d.name or "-"), 20),
             linked=when(d.linked_at) if d.linked_at else "-",
             seen=t("devices.this_one") if d.current
             else when(d.last_seen) if d.last_seen else t("devices.never"))


async def _list(home: str | None, as_json: bool, proxy: str | None) -> None:
    async def body(c: Client) -> None:
        for d in await c.devices():
            emit(as_json, _device_obj(d), _device_line(d))
    await with_client(home, proxy, body)


@click.group(help=t("cmd.devices"), invoke_without_command=True)
@click.option("--home", envvar="VEIL_HOME", default=None, help=t("opt.home"))
@click.option("--json", "as_json", is_flag=True, help=t("opt.json"))
@click.option("--proxy", envvar="VEIL_PROXY", default=None, help=t("opt.proxy"))
@click.pass_context
def devices(ctx: click.Context, home: str | None, as_json: bool, proxy: str | None) -> None:
    if ctx.invoked_subcommand is None:       # plain `veil devices` lists them
        asyncio.run(_list(home, as_json, proxy))


@devices.command("list", help=t("cmd.devices.list"))
@home_options
async def devices_list(home: str | None, as_json: bool, proxy: str | None) -> None:
    await _list(home, as_json, proxy)


@devices.command("approve", help=t("cmd.devices.approve"))
@click.argument("code")
@click.option("--name", default=None, help=t("opt.devices.name"))
@click.option("--history-days", type=click.IntRange(0, 3650), default=30, show_default=True,
              help=t("opt.devices.history_days"))
@home_options
async def devices_approve(code: str, name: str | None, history_days: int, home: str | None,
                          as_json: bool, proxy: str | None) -> None:
    async def body(c: Client) -> None:
        device_id = await c.approve_device(code, name=name, history_days=history_days)
        emit(as_json, {"status": "approved", "device_id": device_id},
             t("devices.approved", id=device_id))
    await with_client(home, proxy, body)


@devices.command("remove", help=t("cmd.devices.remove"))
@click.argument("device_id", type=click.IntRange(1, 2**31 - 1))
@home_options
async def devices_remove(device_id: int, home: str | None, as_json: bool,
                         proxy: str | None) -> None:
    async def body(c: Client) -> None:
        await c.remove_device(device_id)
        emit(as_json, {"status": "removed", "device_id": device_id},
             t("devices.removed", id=device_id))
    await with_client(home, proxy, body)


COMMANDS: list[click.Command] = [link, devices]

__all__ = [
    "COMMANDS",
]
