"""One server per data directory: an advisory lock held for the life of the process.

Issue 10 §5, item 1. Two servers on one SQLite file would each believe they own the
queue, the caches and the checkpoints; two on one data directory would also share its
log files. :class:`DataDirectoryLock` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on
``DATA/server.lock`` and keeps the descriptor open until :meth:`release` or the end of
the process. The kernel drops the lock when the process ends, however it ends
(``kill -9`` included), so a lock file left behind never blocks a restart; the file is
never deleted (unlinking a lock file races with a process opening it). It holds the
holder's pid, for the error message only.

The descriptor is not inherited by child processes (Python opens it close-on-exec).
Commands that only read the directory or write through SQLite's own locking
(``veil server invite``, ``backup``) do not take the lock: they work while the server runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path
from types import TracebackType

from veil.server.errors import ConfigError, DataDirectoryInUse

LOCK_FILE = "server.lock"


def _holder(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        text = path.read_text(encoding="ascii").strip()
        return int(text) if text else None
    return None


class DataDirectoryLock:
    """The exclusive lock of one data directory; :meth:`acquire` takes it or raises."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirectoryLock:
        """Take the lock, creating the directory (mode 0700) and the lock file if needed.

        Raises :class:`DataDirectoryInUse` when another process holds it, and
        :class:`ConfigError` when the file system cannot lock (or the directory cannot be
        made).
        """
        path = data_dir / LOCK_FILE
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(data_dir, 0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot open the lock file {path}: {exc.strerror or exc}") from None
        try:
            _lock(fd)
        except BlockingIOError:
            os.close(fd)
            pid = _holder(path)
            who = f"another veil server (pid {pid})" if pid else "another veil server"
            raise DataDirectoryInUse(
                f"{who} is already running on the data directory {data_dir} (it holds "
                f"{path}); stop it first or use another --data", pid) from None
        except OSError as exc:
            os.close(fd)
            raise ConfigError(
                f"cannot lock {path} (the file system may not support locks: "
                f"{exc.strerror or exc}); use a local data directory") from None
        # Ours now: record who holds it (for the message another process prints).
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return cls(data_dir, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (idempotent). The file stays; its content is cleared."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> DataDirectoryLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


if sys.platform != "win32":
    import fcntl

    def _lock(fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise BlockingIOError(exc.errno, exc.strerror) from None
            raise
else:  # pragma: no cover - the server targets Unix; Windows gets msvcrt's byte lock
    import msvcrt

    def _lock(fd: int) -> None:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            raise BlockingIOError(errno.EWOULDBLOCK, str(exc)) from None


__all__ = [
    "LOCK_FILE",
    "DataDirectoryLock",
]
