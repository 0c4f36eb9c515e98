"""The ``veil`` console script's entry point, kept free of imports: a Ctrl-C while the
command's modules are still loading (the first few tenths of a second) ends it with
one line and exit 130, like a Ctrl-C at any later moment (issue 10 §2). The line follows
the language rule of :mod:`veil.cli.i18n` (repeated here, which a test keeps equal)."""

from __future__ import annotations

import os
import sys

__all__ = ["main"]

INTERRUPTED = {"en": "veil: interrupted\n", "zh": "veil: 已中断\n"}


def language() -> str:
    for name in ("VEIL_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "").strip()
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


def main() -> None:
    try:
        from veil.cli.main import main as run
    except KeyboardInterrupt:
        sys.stderr.write(INTERRUPTED[language()])
        raise SystemExit(130) from None
    run()
