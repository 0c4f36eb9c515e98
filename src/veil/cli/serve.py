"""``veil server``: run the server, ``veil server invite`` to mint invite tokens,
``veil server keys`` to keep the trust root out of the data directory (review issue 8,
item 6), and ``veil server backup`` / ``restore`` (issue 10 §5, item 3; see
docs/server.md).

TLS on the listener (issue 13 §1, ``veil.server.tls``): ``--tls-cert FILE --tls-key
FILE`` or ``--tls self-signed``; ``--insecure-public`` serves plain HTTP outside
loopback. On the command line they win over the config file's ``tls_*`` keys."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from veil.cli.i18n import localized, said, t
from veil.server.config import ServerConfig, load_config

if TYPE_CHECKING:
    from veil.core.sealed import TrustRoot


def _config(data: str | None, config: str | None, **overrides: object) -> ServerConfig:
    return load_config(Path(config) if config else None, data_dir=data, **overrides)


def tls_overrides(tls_cert: str | None, tls_key: str | None, tls: str | None,
                  insecure_public: bool) -> dict[str, object]:
    """The TLS settings the flags ask for, over the config file's (absent: the file's);
    ``python -m veil.server`` follows the same rule."""
    out: dict[str, object] = {}
    if tls is not None:
        if tls_cert is not None or tls_key is not None:
            raise click.UsageError(t("server.tls_twice"))
        out.update(tls_self_signed=True, tls_cert="", tls_key="")
    elif tls_cert is not None or tls_key is not None:
        if tls_cert is None or tls_key is None:
            raise click.UsageError(t("server.tls_pair"))
        out.update(tls_cert=tls_cert, tls_key=tls_key, tls_self_signed=False)
    if insecure_public:
        out["insecure_public"] = True
    return out


@click.group(name="server", invoke_without_command=True, help=t("cmd.server"))
@click.option("--data", "data", type=click.Path(file_okay=False), default=None,
              help=t("opt.server.data"))
@click.option("--host", default=None, help=t("opt.server.host"))
@click.option("--port", type=int, default=None, help=t("opt.server.port"))
@click.option("--config", "config", type=click.Path(dir_okay=False, exists=True),
              default=None, help=t("opt.server.config"))
@click.option("--tls-cert", "tls_cert", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help=t("opt.server.tls_cert"))
@click.option("--tls-key", "tls_key", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help=t("opt.server.tls_key"))
@click.option("--tls", "tls", type=click.Choice(["self-signed"]), default=None,
              help=t("opt.server.tls"))
@click.option("--insecure-public", "insecure_public", is_flag=True,
              help=t("opt.server.insecure_public"))
@click.pass_context
def server(
    ctx: click.Context, data: str | None, host: str | None, port: int | None,
    config: str | None, tls_cert: str | None, tls_key: str | None, tls: str | None,
    insecure_public: bool,
) -> None:
    """Run the Veil server (SQLite under --data; nothing else to install)."""
    ctx.obj = {"data": data, "config": config}
    if ctx.invoked_subcommand is not None:
        return
    from veil.server.runner import run

    overrides = tls_overrides(tls_cert, tls_key, tls, insecure_public)

    def load() -> ServerConfig:  # again on SIGHUP: the same file and flags
        return _config(data, config, host=host, port=port, **overrides)

    run(load(), announce=lambda news: click.echo(said(news)), reload_config=load)


@server.command(name="invite", help=t("cmd.server.invite"))
@click.option("--count", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.option("--hours", type=click.IntRange(1, 24 * 365), default=72, show_default=True,
              help=t("opt.invite.hours"))
@click.pass_context
def invite(ctx: click.Context, count: int, hours: int) -> None:
    """Mint single-use invite tokens for invite-only registration."""
    from veil.server.runner import mint_invites

    settings = _config(ctx.obj["data"], ctx.obj["config"])
    for token in asyncio.run(mint_invites(settings, count, hours)):
        click.echo(token)


@server.command(name="backup", help=t("cmd.server.backup"))
@click.option("--data", "data", type=click.Path(file_okay=False), default=None,
              help=t("opt.backup.data"))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help=t("opt.backup.out"))
@click.pass_context
def backup_command(ctx: click.Context, data: str | None, out: str) -> None:
    """Back up the database (online, while the server runs) and the key files."""
    from veil.server.backup import backup

    report = backup(_config(data or ctx.obj["data"], ctx.obj["config"]), Path(out))
    for line in report.lines:
        click.echo(said(line))


@server.command(name="restore", help=t("cmd.server.restore"))
@click.option("--from", "source", required=True, type=click.Path(dir_okay=False),
              help=t("opt.restore.from"))
@click.option("--data", "data", type=click.Path(file_okay=False), default=None,
              help=t("opt.restore.data"))
@click.pass_context
def restore_command(ctx: click.Context, source: str, data: str | None) -> None:
    """Restore a backup into a new (or empty) data directory."""
    from veil.server.backup import restore

    target = data or ctx.obj["data"]
    if target is None:
        raise click.UsageError(t("restore.needs_data"))
    report = restore(Path(source), Path(target))
    for line in report.lines:
        click.echo(said(line))


COMMANDS: list[click.Command] = [server]


# --- keys: the trust root stays out of the data directory (review issue 8, item 6) -------

def _now_ms() -> int:
    return int(time.time() * 1000)


def _data_dir(ctx: click.Context, data: str | None) -> Path:
    return _config(data or ctx.obj["data"], ctx.obj["config"]).data_dir


def _load_root(path: str) -> TrustRoot:
    from veil.core.errors import CoreError
    from veil.core.sealed import TrustRoot
    from veil.server.errors import ConfigError
    try:
        return TrustRoot.from_bytes(Path(path).read_bytes())
    except OSError as exc:
        raise localized(ConfigError(t("keys.cannot_read_root", path=path,
                                      reason=exc.strerror))) from None
    except CoreError as exc:
        raise localized(ConfigError(t("keys.not_a_root", path=path, reason=exc))) from None


@server.group(name="keys", help=t("cmd.server.keys"))
def keys_group() -> None:
    """The trust root (kept offline) and the server signing key it certifies."""


@keys_group.command(name="init-root", help=t("cmd.keys.init_root"))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help=t("opt.init_root.out"))
def init_root(out: str) -> None:
    """Create a trust root; print the fingerprint clients pin (veil init --trust-root)."""
    from veil.core.sealed import TrustRoot
    from veil.core.sealed import trust_root_fingerprint as fingerprint
    from veil.server.certificates import write_secret
    from veil.server.errors import ConfigError

    root = TrustRoot.generate()
    try:
        write_secret(Path(out), root.to_bytes())
    except FileExistsError:
        raise localized(ConfigError(t("keys.root_exists", path=out))) from None
    click.echo(t("keys.root_written", path=out))
    click.echo(t("keys.fingerprint", fingerprint=fingerprint(root.public)))


@keys_group.command(name="certify", help=t("cmd.keys.certify"))
@click.option("--root", "root_file", required=True, type=click.Path(dir_okay=False),
              help=t("opt.certify.root"))
@click.option("--data", "data", type=click.Path(file_okay=False), default=None,
              help=t("opt.keys.data"))
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True,
              help=t("opt.certify.days"))
@click.option("--key-id", type=click.IntRange(1, 0xFFFFFFFF), default=None,
              help=t("opt.certify.key_id"))
@click.option("--revoke-older", is_flag=True, help=t("opt.certify.revoke_older"))
@click.pass_context
def certify_command(ctx: click.Context, root_file: str, data: str | None, days: int,
                    key_id: int | None, revoke_older: bool) -> None:
    """Make a fresh server signing key, certified by the root, in the data directory."""
    from veil.core.sealed import trust_root_fingerprint as fingerprint
    from veil.server.certificates import certify

    data_dir = _data_dir(ctx, data)
    root = _load_root(root_file)
    key = certify(data_dir, root, _now_ms(), days=days, key_id=key_id,
                  revoke_older=revoke_older)
    click.echo(t("keys.certified", key_id=key.certificate.key_id, days=days, path=data_dir,
                 revoked=t("keys.older_revoked") if revoke_older else ""))
    click.echo(t("keys.fingerprint", fingerprint=fingerprint(root.public)))


@keys_group.command(name="move-root", help=t("cmd.keys.move_root"))
@click.option("--data", "data", type=click.Path(file_okay=False), default=None,
              help=t("opt.keys.data"))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help=t("opt.move_root.out"))
@click.pass_context
def move_root_command(ctx: click.Context, data: str | None, out: str) -> None:
    """Take the trust root out of a data directory written by an earlier version."""
    from veil.core.sealed import trust_root_fingerprint as fingerprint
    from veil.server.certificates import move_root
    from veil.server.errors import ConfigError

    data_dir = _data_dir(ctx, data)
    try:
        root = move_root(data_dir, Path(out), _now_ms())
    except FileExistsError:
        raise localized(ConfigError(t("keys.target_exists", path=out))) from None
    click.echo(t("keys.root_moved", path=out, fingerprint=fingerprint(root.public)))


@keys_group.command(name="show", help=t("cmd.keys.show"))
@click.option("--data", "data", type=click.Path(file_okay=False), default=None,
              help=t("opt.keys.data"))
@click.pass_context
def show_keys(ctx: click.Context, data: str | None) -> None:
    """Print the root fingerprint, server key id and expiry, and the revocation floor."""
    from veil.server.certificates import CertificateAuthority

    data_dir = _data_dir(ctx, data)
    if not (data_dir / "server_signing.key").exists():
        from veil.server.errors import ConfigError
        raise localized(ConfigError(t("keys.no_server_key", path=data_dir)))
    ca = CertificateAuthority(data_dir, _now_ms())
    expires = time.strftime("%Y-%m-%d", time.gmtime(ca.expires_ms / 1000))
    click.echo(t("keys.show", fingerprint=ca.fingerprint, key_id=ca.key_id, expires=expires,
                 floor=ca.min_key_id))

__all__ = [
    "COMMANDS",
    "server",
]
