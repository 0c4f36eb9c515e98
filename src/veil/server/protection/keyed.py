"""Keyed hashes that stand for identifiers in events, logs and alerts (issue 13 §2, §3).

An event about one account's keys (``target``) or one address must let the detection
layer count per target without naming it. ``keyed(value)`` is BLAKE2b keyed with a
secret drawn when the process starts, cut to 16 hex characters: stable for the life of
the process (so counters and rules line up), meaningless outside it. The audit layer
has its own rotating key (``protection.audit.keyed``) for what it stores; this one is
for what never leaves the process.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

_SECRET = os.urandom(32)


def keyed(value: str | bytes) -> str:
    """A 16-hex-character keyed hash of ``value`` (see the module docstring)."""
    data = value.encode() if isinstance(value, str) else value
    return hashlib.blake2b(data, key=_SECRET, digest_size=8).hexdigest()


def keyed_for(protection: Any, value: str | bytes) -> str:
    """The audit layer's keyed hash (``protection.audit.keyed``) when it is there, so
    events and audit records agree; else :func:`keyed`."""
    audit_keyed = getattr(getattr(protection, "audit", None), "keyed", None)
    if audit_keyed is not None:
        text = value.hex() if isinstance(value, bytes) else value
        result: str = audit_keyed(text)
        return result
    return keyed(value)


__all__ = ["keyed", "keyed_for"]
