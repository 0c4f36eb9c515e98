"""The one loader for published test vectors in ``../shared/vectors/<family>/``.

It finds the vector directory (``VEIL_VECTORS_DIR`` overrides the default, which is
``shared/vectors`` next to the repository), loads a named JSON file and hands out its
cases untouched (hex stays hex: decoding is the test's business). Cases a build does
not support are skipped *by name* through :func:`skip_case`, and :data:`TALLY` counts
passes and skips per file so the session summary shows them next to each other.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def vectors_dir() -> Path:
    override = os.environ.get("VEIL_VECTORS_DIR")
    if override:
        return Path(override)
    return REPO_ROOT.parent / "shared" / "vectors"


def vector_path(family: str, name: str) -> Path:
    return vectors_dir() / family / name


def load_cases(family: str, name: str) -> list[dict[str, Any]]:
    """Every case of ``<family>/<name>``; a missing file fails loudly, never skips."""
    path = vector_path(family, name)
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise ValueError(f"{path} is not a JSON array of cases")
    return data


class Tally:
    """Per-file counts of passed and skipped vector cases, and the skip reasons."""

    def __init__(self) -> None:
        self.passed: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.skip_names: dict[str, list[str]] = {}
        self.suites: dict[tuple[str, str], set[int]] = {}

    def record_pass(self, file: str, suite: int | None = None) -> None:
        self.passed[file] += 1
        if suite is not None:
            self.suites.setdefault((file, "passed"), set()).add(suite)

    def record_skip(
        self, file: str, case_name: str, reason: str, suite: int | None = None
    ) -> None:
        self.skipped[file] += 1
        self.skip_names.setdefault(file, []).append(f"{case_name}: {reason}")
        if suite is not None:
            self.suites.setdefault((file, "skipped"), set()).add(suite)

    def _suites(self, file: str, kind: str) -> str:
        got = self.suites.get((file, kind))
        return f" (suites {','.join(map(str, sorted(got)))})" if got else ""

    def lines(self) -> list[str]:
        files = sorted(set(self.passed) | set(self.skipped))
        return [
            f"{f}: {self.passed[f]} passed{self._suites(f, 'passed')}, "
            f"{self.skipped[f]} skipped by name{self._suites(f, 'skipped')}"
            for f in files
        ]


TALLY = Tally()


def skip_case(file: str, case_name: str, reason: str, suite: int | None = None) -> NoReturn:
    """Record a named skip and skip the running test."""
    TALLY.record_skip(file, case_name, reason, suite)
    pytest.skip(f"{file} {case_name}: {reason}")


def case_params(
    family: str, name: str, label: Callable[[int, dict[str, Any]], str] | None = None
) -> list[Any]:
    """pytest params (one per case) with readable ids such as ``suite1-case0``."""
    cases = load_cases(family, name)

    def default_label(i: int, case: dict[str, Any]) -> str:
        suite = case.get("cipher_suite")
        return f"suite{suite}-case{i}" if suite is not None else f"case{i}"

    lab = label or default_label
    return [pytest.param(case, id=lab(i, case)) for i, case in enumerate(cases)]


def run_case(
    file: str, case_name: str, case: dict[str, Any], supported: Iterable[int] | None,
    check: Callable[[dict[str, Any]], None],
) -> None:
    """Skip by name when the case's cipher suite is unsupported, else check and count."""
    suite = case.get("cipher_suite")
    if supported is not None and suite is not None and suite not in set(supported):
        skip_case(file, case_name, f"cipher suite {suite} not supported", suite)
    check(case)
    TALLY.record_pass(file, suite)
