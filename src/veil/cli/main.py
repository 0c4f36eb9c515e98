"""The ``veil`` command: one click group; each sub-command lives in its own module.

Every expected failure is a :class:`~veil.core.errors.VeilError`; it is printed as one
line on standard error with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from veil import __version__
from veil.core.errors import VeilError

# Each module exports ``COMMANDS``: the click commands or groups it adds to ``veil``.
_COMMAND_MODULES: tuple[str, ...] = (
    "veil.cli.demo",
    "veil.cli.messaging",
    "veil.cli.serve",
    "veil.cli.mix",
)

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="veil")
def cli() -> None:
    """Veil: private communication you can host yourself."""


for _name in _COMMAND_MODULES:
    for _command in importlib.import_module(_name).COMMANDS:
        cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run ``veil`` and turn Veil errors into one line."""
    try:
        cli.main(args=argv, prog_name="veil", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("veil: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except VeilError as exc:
        click.echo(f"veil: {exc}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        click.echo("veil: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USER_ERROR",
    "cli",
    "main",
]


if __name__ == "__main__":
    main()
