"""One owner per home (issue 10 §2): a process that opens a Veil home holds an advisory
lock on it until it closes the home; another process that tries meanwhile is refused
with a message naming the owner, instead of silently splitting incoming messages with
it (two receivers acknowledge each other's envelopes) or racing it.

``fcntl.flock`` on ``HOME/lock``: released by the kernel when the owner exits, even by
``kill -9``, so a crash never leaves a home locked. Within one process the lock is
shared (opening a home twice in one program, as tests and the SDK may, is not a second
owner). The lock file says who holds it (pid and command), for the message.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

from veil.client.errors import ClientError

__all__ = ["HomeInUse", "HomeLock", "acquire"]

# A second short command (two scripts sending at once) waits this long for the first.
WAIT_S = 5.0


class HomeInUse(ClientError):
    code = "home_in_use"


def _command() -> str:
    args = [Path(sys.argv[0]).name, *sys.argv[1:2]] if sys.argv else ["python"]
    if args[0] in ("main.py", "__main__.py", "-m", "-c"):
        args[0] = "veil"
    return " ".join(a for a in args if not a.startswith("-"))[:60]


class HomeLock:
    """The lock on one home; :meth:`release` once per :func:`acquire`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd, self.count = path, fd, 1

    def release(self) -> None:
        self.count -= 1
        if self.count == 0:
            _HELD.pop(self.path, None)
            os.close(self.fd)          # closing the descriptor releases the flock


_HELD: dict[Path, HomeLock] = {}


def _owner(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"'{str(info['command'])[:60]}', pid {int(info['pid'])}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def acquire(home: Path, wait_s: float = WAIT_S) -> HomeLock:
    """Lock ``home`` for this process, waiting up to ``wait_s`` for another owner."""
    path = (home / "lock").resolve()
    held = _HELD.get(path)
    if held is not None:
        held.count += 1
        return held
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise HomeInUse(
                    f"this Veil home ({home}) is in use by {_owner(path)}; stop that "
                    "program first (one program receives for a home at a time), or use "
                    "another --home") from None
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "command": _command()}).encode())
    lock = _HELD[path] = HomeLock(path, fd)
    return lock
