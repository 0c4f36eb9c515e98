"""The ``veil`` console script's entry point, kept free of imports: a Ctrl-C while the
command's modules are still loading (the first few tenths of a second) ends it with
one line and exit 130, like a Ctrl-C at any later moment (issue 10 §2)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    try:
        from veil.cli.main import main as run
    except KeyboardInterrupt:
        sys.stderr.write("veil: interrupted\n")
        raise SystemExit(130) from None
    run()
