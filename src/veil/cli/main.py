"""The ``veil`` command: one click group; each sub-command lives in its own module.

Every expected failure is printed as one line on standard error, never as a traceback:
a :class:`~veil.core.errors.VeilError` or a failed operation exits 1, a usage mistake
(unknown option, missing argument) exits 2, an interruption (Ctrl-C) exits 130. With
``--json`` the line is JSON too: ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import importlib
import json
import sys

import click

from veil import __version__
from veil.cli.i18n import explain, localize_click, show_usage_error, t, usage_message
from veil.core.errors import VeilError

# Each module exports ``COMMANDS``: the click commands or groups it adds to ``veil``.
_COMMAND_MODULES: tuple[str, ...] = (
    "veil.cli.demo",
    "veil.cli.messaging",
    "veil.cli.conversation",
    "veil.cli.devices",
    "veil.cli.groups",
    "veil.cli.serve",
    "veil.cli.mix",
    "veil.cli.admin",
)

EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
             help=t("cmd.veil"))
@click.version_option(__version__, prog_name="veil", help=t("opt.version"))
def cli() -> None:
    """Veil: private communication you can host yourself."""


for _name in _COMMAND_MODULES:
    for _command in importlib.import_module(_name).COMMANDS:
        cli.add_command(_command)
localize_click(cli)


def _explain(exc: VeilError) -> str:
    """The error as a person should read it."""
    if getattr(exc, "status", None) == 401 and getattr(exc, "server_code", "") == \
            "unauthorized":
        return t("err.device_unknown")
    return explain(exc)


def _fail(as_json: bool, code: str, message: str, exit_code: int) -> None:
    if as_json:
        click.echo(json.dumps({"error": {"code": code, "message": message}}), err=True)
    else:
        click.echo(t("main.error_line", message=message), err=True)
    sys.exit(exit_code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run ``veil`` and turn every failure into one line."""
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    try:
        cli.main(args=argv, prog_name="veil", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _fail(as_json, "interrupted", t("main.interrupted"), EXIT_INTERRUPTED)
    except click.UsageError as exc:
        if as_json:
            _fail(True, "usage", usage_message(exc), EXIT_USAGE)
        show_usage_error(exc)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        if as_json:
            _fail(True, "usage" if exc.exit_code == EXIT_USAGE else "failed",
                  usage_message(exc), exc.exit_code)
        show_usage_error(exc)
        sys.exit(exc.exit_code)
    except VeilError as exc:
        _fail(as_json, exc.code, _explain(exc), EXIT_USER_ERROR)

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "EXIT_USER_ERROR",
    "cli",
    "main",
]


if __name__ == "__main__":
    main()
