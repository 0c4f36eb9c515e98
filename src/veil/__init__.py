"""Veil: self-hostable private communication (see docs/ARCHITECTURE.md)."""

import sys as _sys

__version__ = "0.1.0"

# Run as the `veil` console script, a Ctrl-C that lands while the command's modules
# are still importing (before veil.cli.entry's handler exists) ends it with one line
# rather than a traceback (issue 10 §2). Only for that program: importing veil into
# another one changes nothing of its own.
if _sys.argv and _sys.argv[0].rsplit("/", 1)[-1] == "veil":
    def _one_line_interrupt(kind: type[BaseException], value: BaseException,
                            tb: object) -> None:
        if issubclass(kind, KeyboardInterrupt):
            _sys.stderr.write("veil: interrupted\n")
            return
        _sys.__excepthook__(kind, value, tb)  # type: ignore[arg-type]

    _sys.excepthook = _one_line_interrupt

__all__ = [
    "__version__",
    "cli",
    "client",
    "core",
    "mixnet",
    "server",
]
