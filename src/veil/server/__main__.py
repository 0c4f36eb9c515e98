"""``python -m veil.server``: the server without the ``veil`` command-line tool.

    python -m veil.server [--data DIR] [--host H] [--port P] [--config FILE]
                          [--tls-cert FILE --tls-key FILE | --tls self-signed]
                          [--insecure-public]
    python -m veil.server [--data DIR] [--config FILE] invite [--count N] [--hours H]
    python -m veil.server [--data DIR] [--config FILE] backup --out FILE
    python -m veil.server restore --from FILE --data DIR

The same as ``veil server``; kept here so the server runs without the user-facing CLI
layer (imports point downwards only). Configuration errors print one line, exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from veil.core.errors import VeilError
from veil.server.backup import backup, restore
from veil.server.config import ServerConfig, load_config
from veil.server.runner import mint_invites, run


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def tls_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace
                  ) -> dict[str, object]:
    """The TLS flags over the config file's ``tls_*`` keys (as ``veil server`` does)."""
    out: dict[str, object] = {}
    if args.tls is not None:
        if args.tls_cert is not None or args.tls_key is not None:
            parser.error("give either --tls self-signed or --tls-cert/--tls-key, not both")
        out.update(tls_self_signed=True, tls_cert="", tls_key="")
    elif args.tls_cert is not None or args.tls_key is not None:
        if args.tls_cert is None or args.tls_key is None:
            parser.error("--tls-cert and --tls-key go together")
        out.update(tls_cert=args.tls_cert, tls_key=args.tls_key, tls_self_signed=False)
    if args.insecure_public:
        out["insecure_public"] = True
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m veil.server",
                                     description="Run the Veil server.")
    parser.add_argument("--data", help="data directory (default ./veil-data)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8470)")
    parser.add_argument("--config", help="TOML file overriding the embedded defaults")
    parser.add_argument("--tls-cert", metavar="FILE", help="TLS certificate (PEM) for HTTPS")
    parser.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    parser.add_argument("--tls", choices=["self-signed"],
                        help="make and keep a self-signed certificate under DATA/tls")
    parser.add_argument("--insecure-public", action="store_true",
                        help="serve plain HTTP on a non-loopback address")
    commands = parser.add_subparsers(dest="command")
    invite = commands.add_parser("invite", help="mint single-use invite tokens")
    invite.add_argument("--count", type=_bounded(1, 1000), default=1)
    invite.add_argument("--hours", type=_bounded(1, 24 * 365), default=72)
    save = commands.add_parser("backup", help="online backup of the database and key files")
    save.add_argument("--out", required=True, help="the backup file to write")
    load = commands.add_parser("restore", help="restore a backup into a new data directory")
    load.add_argument("--from", dest="source", required=True, help="the backup file")
    args = parser.parse_args(argv)
    if args.command == "restore" and args.data is None:
        parser.error("restore needs --data DIR: the new (or empty) data directory")
    try:
        if args.command == "restore":
            for line in restore(Path(args.source), Path(args.data)).lines:
                print(line)
            return 0
        overrides = tls_overrides(parser, args)

        def read_config() -> ServerConfig:  # again on SIGHUP: the same file and flags
            return load_config(Path(args.config) if args.config else None,
                               data_dir=args.data, host=args.host, port=args.port,
                               **overrides)

        config = read_config()
        if args.command == "backup":
            for line in backup(config, Path(args.out)).lines:
                print(line)
        elif args.command == "invite":
            for token in asyncio.run(mint_invites(config, args.count, args.hours)):
                print(token)
        else:
            run(config, announce=lambda line: print(line, flush=True),
                reload_config=read_config)
    except VeilError as exc:
        print(f"veil: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
