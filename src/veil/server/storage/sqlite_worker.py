"""The database thread of the SQLite backend: group commit and off-path checkpoints.

Every storage call is a function of a ``sqlite3.Connection`` run on one dedicated
thread. The thread takes all the calls that are waiting, runs each inside its own
SAVEPOINT of a single transaction and commits once (group commit); only after COMMIT
returns are the callers' futures resolved, so a submission is acknowledged only once
its envelope is durable (see ``veil.server.storage.sqlite`` for what "durable" means
under each ``synchronous`` setting). Calls queued in one event-loop turn are handed to
the thread together, so the event loop wakes it once per turn, not once per call.

A second thread checkpoints the WAL into the database file from its own connection
(PASSIVE: never blocks the writer), so no commit ever waits for a checkpoint's fsyncs.

Maintenance that SQLite refuses inside a transaction (incremental vacuum, a TRUNCATE
checkpoint: the retention job's ``reclaim``, issue 12 §4) is submitted with
:meth:`DatabaseThread.submit_outside` and runs on the same thread between batches.
Every connection deletes with ``secure_delete`` on and, for a new database, uses
incremental auto-vacuum, so deleted ciphertext is zeroed and its pages can be given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from veil.server.errors import ServerError, StorageError

T = TypeVar("T")
log = logging.getLogger("veil.server.storage")

_MAX_BATCH = 1024
_CHECKPOINT_INTERVAL_S = 0.5
# The third element: True runs the call in a savepoint of the batch, False without one,
# None outside any transaction (between batches).
Job = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", bool | None]


class _PartialWrite(Exception):
    """A call without its own savepoint failed after writing: the batch must roll back."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _PartialWrite):
        return f"a call failed after writing ({exc})"
    # SQLite's own messages name tables and constraints, never bound values.
    return f"{type(exc).__name__}: {exc}"


class DatabaseThread:
    def __init__(
        self, path: Path, *, synchronous: str, window_s: float,
        setup: Callable[[sqlite3.Connection], None], on_failure: Callable[[], None],
        check: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self._path = path
        self._check = check
        self._synchronous = synchronous.upper()
        self._window_s = window_s
        self._setup = setup
        self._on_failure = on_failure
        self._jobs: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self._outgoing: list[Job] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._open_error: BaseException | None = None
        # Told each transaction's duration (the metrics' storage latency), if set.
        self.observer: Callable[[str, float], None] | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="veil-sqlite", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        if self._open_error is not None:
            self._thread = None
            if isinstance(self._open_error, ServerError):  # already says what is wrong
                raise self._open_error
            raise StorageError(f"cannot open database: {self._open_error}")
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="veil-sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()

    async def stop(self) -> None:
        if self._thread is None:
            return
        if self._outgoing:
            self._hand_over()
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        self._stopping.set()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None

    def submit(
        self, fn: Callable[[sqlite3.Connection], T], *, savepoint: bool = True
    ) -> asyncio.Future[T]:
        """Queue a call; the future resolves after the COMMIT that includes it.

        ``savepoint=False`` is for calls that normally raise, if at all, before their
        first write: they skip the per-call savepoint. Should one fail after writing
        (a database error, or a bug), the whole batch fails and rolls back, so nothing
        is committed that its caller was told failed.
        """
        return self._queue(fn, savepoint)

    def submit_outside(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue a call to run outside any transaction, after the calls queued before it
        have committed (``VACUUM``-like statements; the call manages its own writes)."""
        return self._queue(fn, None)

    def _queue(self, fn: Callable[[sqlite3.Connection], T], savepoint: bool | None
               ) -> asyncio.Future[T]:
        if self._thread is None or self._loop is None:
            raise StorageError("storage is not open")
        fut: asyncio.Future[T] = self._loop.create_future()
        if not self._outgoing:
            self._loop.call_soon(self._hand_over)
        self._outgoing.append((fn, fut, savepoint))
        return fut

    def _hand_over(self) -> None:
        jobs, self._outgoing = self._outgoing, []
        if jobs:
            self._jobs.put(jobs)

    def _connect(self) -> sqlite3.Connection:
        if self._check is not None and self._path.exists():
            # On a read-only connection of its own, so a database this code must not use
            # stays byte for byte as it was: a read-write one would rewrite the header of
            # a database not in WAL mode yet (journal_mode), and on closing checkpoint a
            # WAL that a crashed writer left into the file.
            ro = sqlite3.connect(f"{self._path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                ro.execute("PRAGMA busy_timeout=10000")
                self._check(ro)
            finally:
                ro.close()
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            # Before journal_mode: switching to WAL writes the header of a new file, and
            # auto-vacuum can only be chosen before that (an existing database keeps its
            # mode until sqlite_retention.convert_auto_vacuum's one-time VACUUM).
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("PRAGMA journal_mode=WAL")
            # Deleted cells and freed pages are overwritten with zeros, not just unlinked:
            # acknowledged and expired ciphertext does not stay in the file's free space.
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpoint thread does it
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        try:
            conn = self._connect()
        except Exception as exc:  # reported by start()
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                first = self._jobs.get()
                if first is None:
                    break
                if self._window_s:
                    time.sleep(self._window_s)
                batch, stop = list(first), False
                while len(batch) < _MAX_BATCH:
                    try:
                        more = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.extend(more)
                self._run_jobs(conn, batch)
                if stop:
                    break
        finally:
            conn.close()

    def _run_jobs(self, conn: sqlite3.Connection, jobs: list[Job]) -> None:
        """Transactions of consecutive in-transaction calls; outside calls between them,
        in the order they were queued."""
        start = 0
        for i, job in enumerate(jobs):
            if job[2] is None:
                if start < i:
                    self._run_batch(conn, jobs[start:i])
                self._run_outside(conn, job)
                start = i + 1
        if start < len(jobs):
            self._run_batch(conn, jobs[start:])

    def _run_outside(self, conn: sqlite3.Connection, job: Job) -> None:
        fn = job[0]
        result: tuple[bool, Any]
        try:
            result = (True, fn(conn))
        except Exception as exc:
            result = (False, exc)
        finally:
            if conn.in_transaction:  # a failed call must not leave one open
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_resolve, [job], [result])

    def _run_batch(self, conn: sqlite3.Connection, batch: list[Job]) -> None:
        results: list[tuple[bool, Any]] = []
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _, savepoint in batch:
                if savepoint:
                    conn.execute("SAVEPOINT job")
                changes = conn.total_changes
                try:
                    results.append((True, fn(conn)))
                except Exception as exc:
                    if not savepoint:
                        if isinstance(exc, sqlite3.Error) or conn.total_changes != changes:
                            raise _PartialWrite(type(exc).__name__) from exc
                        results.append((False, exc))  # raised before writing
                        continue
                    conn.execute("ROLLBACK TO job")
                    results.append((False, exc))
                if savepoint:
                    conn.execute("RELEASE job")
            committing = time.perf_counter()
            conn.execute("COMMIT")
            if self.observer is not None:
                self._observe(started, committing)
        except (sqlite3.Error, _PartialWrite) as exc:
            # The type only: exception text can carry identifiers (a KeyError's key).
            log.error("database batch failed: %s", _describe(exc))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._on_failure()
            error = StorageError("the database failed to commit")
            results = [(False, error)] * len(batch)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_resolve, batch, results)

    def _observe(self, started: float, committing: float) -> None:
        done = time.perf_counter()
        observer = self.observer
        try:  # a fault in a metric must never stop the database thread
            if observer is not None:
                observer("transaction", done - started)
                observer("commit", done - committing)
        except Exception:
            log.debug("storage observer failed", exc_info=True)

    def _checkpoint_loop(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            while not self._stopping.wait(_CHECKPOINT_INTERVAL_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("checkpoint failed: %s", exc)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("final checkpoint failed: %s", exc)
        finally:
            conn.close()


def _resolve(batch: list[Job], results: list[tuple[bool, Any]]) -> None:
    for (_, fut, _), (ok, value) in zip(batch, results, strict=True):
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        elif isinstance(value, ServerError):
            fut.set_exception(value)
        else:
            # The type only: exception text can carry identifiers (a KeyError's key).
            log.error("database call failed: %s", type(value).__name__)
            fut.set_exception(StorageError("the database call failed"))

__all__ = [
    "DatabaseThread",
]
