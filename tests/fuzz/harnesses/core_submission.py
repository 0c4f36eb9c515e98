"""Envelope submissions arriving from a mixnet provider."""

from __future__ import annotations

from veil.core.errors import MalformedMessage
from veil.core.submission import Submission

ALLOWED = (MalformedMessage,)
SEEDS = [Submission(bytes(16), b"k" * 16, ((1, b"envelope"),)).encode()]


def target(data: bytes) -> None:
    sub = Submission.decode(data)
    assert Submission.decode(sub.encode()) == sub
