"""Prints, at the end of a session, how many vector cases per file passed or were skipped."""

from __future__ import annotations

from typing import Any

from tests.vectors.loader import TALLY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = TALLY.lines()
    if not lines:
        return
    terminalreporter.section("test vectors")
    for line in lines:
        terminalreporter.write_line(line)
