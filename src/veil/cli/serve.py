"""``veil server``: run the server, and ``veil server invite`` to mint invite tokens."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from veil.server.config import ServerConfig, load_config


def _config(data: str | None, config: str | None, **overrides: object) -> ServerConfig:
    return load_config(Path(config) if config else None, data_dir=data, **overrides)


@click.group(name="server", invoke_without_command=True)
@click.option("--data", "data", type=click.Path(file_okay=False), default=None,
              help="Data directory (database, keys, logs). Default: ./veil-data")
@click.option("--host", default=None, help="Address to listen on. Default: 127.0.0.1")
@click.option("--port", type=int, default=None, help="Port to listen on. Default: 8470")
@click.option("--config", "config", type=click.Path(dir_okay=False, exists=True),
              default=None, help="TOML file overriding the embedded defaults.")
@click.pass_context
def server(
    ctx: click.Context, data: str | None, host: str | None, port: int | None,
    config: str | None,
) -> None:
    """Run the Veil server (SQLite under --data; nothing else to install)."""
    ctx.obj = {"data": data, "config": config}
    if ctx.invoked_subcommand is not None:
        return
    from veil.server.runner import run

    run(_config(data, config, host=host, port=port), announce=click.echo)


@server.command(name="invite")
@click.option("--count", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.option("--hours", type=click.IntRange(1, 24 * 365), default=72, show_default=True,
              help="How long each invite stays valid.")
@click.pass_context
def invite(ctx: click.Context, count: int, hours: int) -> None:
    """Mint single-use invite tokens for invite-only registration."""
    from veil.server.runner import mint_invites

    settings = _config(ctx.obj["data"], ctx.obj["config"])
    for token in asyncio.run(mint_invites(settings, count, hours)):
        click.echo(token)


COMMANDS: list[click.Command] = [server]
