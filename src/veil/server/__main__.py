"""``python -m veil.server``: the server without the ``veil`` command-line tool.

    python -m veil.server [--data DIR] [--host H] [--port P] [--config FILE]
    python -m veil.server [--data DIR] [--config FILE] invite [--count N] [--hours H]

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
from veil.server.config import load_config
from veil.server.runner import mint_invites, run


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m veil.server",
                                     description="Run the Veil server.")
    parser.add_argument("--data", help="data directory (default ./veil-data)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8470)")
    parser.add_argument("--config", help="TOML file overriding the embedded defaults")
    commands = parser.add_subparsers(dest="command")
    invite = commands.add_parser("invite", help="mint single-use invite tokens")
    invite.add_argument("--count", type=_bounded(1, 1000), default=1)
    invite.add_argument("--hours", type=_bounded(1, 24 * 365), default=72)
    args = parser.parse_args(argv)
    try:
        config = load_config(Path(args.config) if args.config else None, data_dir=args.data,
                             host=args.host, port=args.port)
        if args.command == "invite":
            for token in asyncio.run(mint_invites(config, args.count, args.hours)):
                print(token)
        else:
            run(config, announce=lambda line: print(line, flush=True))
    except VeilError as exc:
        print(f"veil: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
