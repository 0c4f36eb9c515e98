"""``veil mix``: run mix nodes and providers, make keys, sign and check the directory.

A node prints one JSON line ``{"event": "listening", ...}`` when it serves, and on
SIGTERM/SIGINT one JSON line ``{"event": "stopped", "stats": {...}}`` with its counters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from veil.cli.i18n import explain, localized, t
from veil.mixnet.client import MixClient
from veil.mixnet.directory import (
    ROLE_MIX,
    ROLE_PROVIDER,
    Directory,
    NodeDescriptor,
    NodeKey,
    load_authority_key,
    load_directory,
    parse_authority_public,
    save_authority_key,
    split_address,
)
from veil.mixnet.errors import DirectoryError, MixnetError
from veil.mixnet.node import MixNode
from veil.mixnet.provider import Provider
from veil.mixnet.sink import HttpSink
from veil.mixnet.socks import socks5_connector
from veil.mixnet.transport import tcp_connect

_PATH = click.Path(path_type=Path)
_EXISTING = click.Path(path_type=Path, exists=True, dir_okay=False)


def _emit(event: str, **fields: object) -> None:
    click.echo(json.dumps({"event": event, **fields}, sort_keys=True))


@click.group(help=t("cmd.mix"))
def mix() -> None:
    """Anonymous routing: Sphinx mix nodes, providers and the signed directory."""


@mix.command("keygen", help=t("cmd.mix.keygen"))
@click.option("--out", type=_PATH, required=True, help=t("opt.mix.keygen.out"))
def keygen(out: Path) -> None:
    """Make a node key (16-byte id and the seed of its per-epoch Sphinx keys)."""
    key = NodeKey.generate()
    key.save(out)
    _emit("keygen", node_id=key.node_id.hex())


@mix.command("descriptor", help=t("cmd.mix.descriptor"))
@click.option("--key", "key_file", type=_EXISTING, required=True)
@click.option("--role", type=click.Choice([ROLE_MIX, ROLE_PROVIDER]), default=ROLE_MIX)
@click.option("--layer", type=int, default=0, help=t("opt.mix.layer"))
@click.option("--address", required=True, help=t("opt.mix.address"))
@click.option("--epoch-seconds", type=click.IntRange(1), default=3600)
@click.option("--epochs", type=click.IntRange(1, 1000), default=24,
              help=t("opt.mix.epochs"))
@click.option("--out", type=_PATH, required=True)
def descriptor(key_file: Path, role: str, layer: int, address: str, epoch_seconds: int,
               epochs: int, out: Path) -> None:
    """Write a node's public descriptor for the directory authority."""
    split_address(address)
    if (role == ROLE_MIX) != (layer > 0):
        raise localized(DirectoryError(t("mix.layer_rule")))
    now = int(time.time() // epoch_seconds)
    desc = NodeKey.load(key_file).descriptor(role, layer, address, range(now, now + epochs))
    out.write_text(json.dumps(desc.to_json(), indent=1))
    _emit("descriptor", node_id=desc.node_id.hex(), first_epoch=now, epochs=epochs)


@mix.group("directory", help=t("cmd.mix.directory"))
def directory_group() -> None:
    """Make the authority key, sign a directory, verify one."""


@directory_group.command("keygen", help=t("cmd.mix.directory.keygen"))
@click.option("--out", type=_PATH, required=True, help=t("opt.mix.authority_out"))
def authority_keygen(out: Path) -> None:
    """Make the directory authority's Ed25519 key; prints its public key."""
    key = Ed25519PrivateKey.generate()
    save_authority_key(key, out)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    _emit("authority_keygen", public_key=public.hex())


@directory_group.command("sign", help=t("cmd.mix.directory.sign"))
@click.option("--authority-key", type=_EXISTING, required=True)
@click.option("--layers", type=click.IntRange(1, 3), default=3)
@click.option("--epoch-seconds", type=click.IntRange(1), default=3600)
@click.option("--out", type=_PATH, required=True)
@click.argument("descriptors", nargs=-1, type=_EXISTING, required=True)
def directory_sign(authority_key: Path, layers: int, epoch_seconds: int, out: Path,
                   descriptors: tuple[Path, ...]) -> None:
    """Sign a directory listing DESCRIPTORS (files written by ``veil mix descriptor``)."""
    nodes = []
    for path in descriptors:
        try:
            nodes.append(NodeDescriptor.from_json(json.loads(path.read_text())))
        except ValueError as exc:
            raise localized(DirectoryError(t("mix.not_a_descriptor", path=path))) from exc
    body = Directory(layers, epoch_seconds, int(time.time()), tuple(nodes)).body()
    directory = Directory.from_body(body)  # the same checks a verifier runs
    out.write_bytes(directory.sign(load_authority_key(authority_key)))
    _emit("directory_signed", nodes=len(nodes), layers=layers)


@directory_group.command("verify", help=t("cmd.mix.directory.verify"))
@click.option("--authority", required=True, help=t("opt.mix.authority_public"))
@click.argument("document", type=_EXISTING)
def directory_verify(authority: str, document: Path) -> None:
    """Check a directory's signature and print its nodes by layer."""
    directory = load_directory(document, parse_authority_public(authority))
    layers = {str(layer): [n.node_id.hex() for n in directory.mixes(layer)]
              for layer in range(1, directory.layers + 1)}
    _emit("directory_ok", layers=layers,
          providers=[n.node_id.hex() for n in directory.providers()],
          epoch=directory.epoch_at(time.time()))


def _load(key_file: Path, directory_file: Path, authority: str
          ) -> tuple[NodeKey, Directory, NodeDescriptor]:
    key = NodeKey.load(key_file)
    directory = load_directory(directory_file, parse_authority_public(authority))
    return key, directory, directory.node(key.node_id)


async def _serve(server: MixNode | Provider, host: str, port: int) -> dict[str, int]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound_host, bound_port = await server.start(host, port)
    _emit("listening", host=bound_host, port=bound_port)
    await stop.wait()
    stats = server.stats()
    await server.close()
    return stats


_IDLE_TIMEOUT = click.option(
    "--idle-timeout", type=click.FloatRange(0, min_open=True), default=60.0,
    help=t("opt.mix.idle_timeout"))

_COMMON = [
    click.option("--key", "key_file", type=_EXISTING, required=True),
    click.option("--directory", "directory_file", type=_EXISTING, required=True),
    click.option("--authority", required=True, help=t("opt.mix.authority")),
    click.option("--listen", default=None, help=t("opt.mix.listen")),
    click.option("--verbose", is_flag=True),
]


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_COMMON):
        f = option(f)
    return f


@mix.command("node", help=t("cmd.mix.node"))
@click.option("--layer", type=click.IntRange(1, 3), required=True)
@click.option("--max-pending", type=click.IntRange(1), default=50_000,
              help=t("opt.mix.max_pending"))
@click.option("--max-connections", type=click.IntRange(1), default=1024)
@click.option("--replay-capacity", type=click.IntRange(1), default=1 << 21,
              help=t("opt.mix.replay_capacity"))
@_IDLE_TIMEOUT
@_common
def node(layer: int, max_pending: int, max_connections: int, replay_capacity: int,
         idle_timeout: float, key_file: Path, directory_file: Path, authority: str,
         listen: str | None, verbose: bool) -> None:
    """Run a mix node of layer LAYER until SIGTERM."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    key, directory, me = _load(key_file, directory_file, authority)
    if me.role != ROLE_MIX or me.layer != layer:
        raise localized(DirectoryError(t("mix.listed_as", role=me.role, layer=me.layer)))
    host, port = split_address(listen or me.address)
    server = MixNode(key, directory, max_pending=max_pending, max_connections=max_connections,
                     replay_capacity=replay_capacity, idle_timeout=idle_timeout)
    _emit("stopped", stats=asyncio.run(_serve(server, host, port)))


@mix.command("provider", help=t("cmd.mix.provider"))
@click.option("--sink-url", required=True, help=t("opt.mix.sink_url"))
@click.option("--sink-method", type=click.Choice(["POST", "PUT"]), default="POST")
@_IDLE_TIMEOUT
@_common
def provider(sink_url: str, sink_method: str, idle_timeout: float, key_file: Path,
             directory_file: Path, authority: str, listen: str | None, verbose: bool
             ) -> None:
    """Run a provider (the mixnet's exit) that POSTs messages to SINK_URL."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    key, directory, me = _load(key_file, directory_file, authority)
    if me.role != ROLE_PROVIDER:
        raise localized(DirectoryError(t("mix.not_a_provider")))
    host, port = split_address(listen or me.address)
    server = Provider(key, directory, HttpSink(sink_url, method=sink_method),
                      idle_timeout=idle_timeout)
    _emit("stopped", stats=asyncio.run(_serve(server, host, port)))


@mix.command("send", help=t("cmd.mix.send"))
@click.option("--directory", "directory_file", type=_EXISTING, required=True)
@click.option("--authority", required=True, help=t("opt.mix.authority"))
@click.option("--rate", type=click.FloatRange(0.1), default=20.0, help=t("opt.mix.rate"))
@click.option("--mean-delay", type=click.FloatRange(0), default=0.05,
              help=t("opt.mix.mean_delay"))
@click.option("--proxy", default=None, help=t("opt.mix.proxy"))
@click.option("--loop-fraction", type=click.FloatRange(0, 1), default=0.0,
              help=t("opt.mix.loop_fraction"))
@click.option("--timeout", type=click.FloatRange(1), default=120.0)
@click.argument("message_file", type=click.File("rb"))
def send(directory_file: Path, authority: str, rate: float, mean_delay: float,
         proxy: str | None, loop_fraction: float, timeout: float,
         message_file: BinaryIO) -> None:
    """Send MESSAGE_FILE (``-`` for stdin) to the provider through the mixnet."""
    directory = load_directory(directory_file, parse_authority_public(authority))
    message = message_file.read()

    async def run() -> dict[str, int]:
        connect = socks5_connector(proxy) if proxy else tcp_connect
        client = MixClient(directory, rate=rate, mean_delay=mean_delay,
                           loop_fraction=loop_fraction, connect=connect)
        client.send(message)
        await client.start()
        await client.flush(timeout)
        # The last fragment is on its way; give the mixes its delays before leaving.
        await asyncio.sleep(min(timeout, 6 * mean_delay * directory.layers))
        stats = client.stats()
        await client.close()
        return stats

    stats = asyncio.run(run())
    if stats["queued"]:
        raise localized(MixnetError(t("mix.timeout")))
    _emit("sent", bytes=len(message), stats=stats)


COMMANDS: list[click.Command] = [mix]


def main() -> None:
    """``python -m veil.cli.mix``: the ``veil mix`` group on its own (used by tests)."""
    import sys

    from veil.cli.i18n import show_usage_error
    from veil.core.errors import VeilError

    try:
        mix.main(prog_name="veil mix", standalone_mode=False)
    except click.ClickException as exc:
        show_usage_error(exc)
        sys.exit(exc.exit_code)
    except VeilError as exc:
        click.echo(t("main.error_line", message=explain(exc)), err=True)
        sys.exit(1)

__all__ = [
    "COMMANDS",
    "mix",
]


if __name__ == "__main__":
    main()
