"""Shared machinery for the fuzz harnesses: discovery and the guarded call."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType

from tests.fuzz import harnesses


def harness_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(harnesses.__path__))


def load(name: str) -> ModuleType:
    return importlib.import_module(f"tests.fuzz.harnesses.{name}")


def guarded(module: ModuleType) -> Callable[[bytes], None]:
    """The harness's target with its documented errors swallowed; anything else escapes."""
    target: Callable[[bytes], None] = module.target
    allowed: tuple[type[BaseException], ...] = module.ALLOWED

    def run(data: bytes) -> None:
        try:
            target(data)
        except allowed:
            pass

    return run
