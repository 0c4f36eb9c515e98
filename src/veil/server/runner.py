"""Run one server process: open storage, build services, serve HTTP and WebSockets.

``python -m veil.server`` and ``veil server`` are thin front-ends of :func:`run` and
:func:`mint_invites`.
Shutdown on SIGINT/SIGTERM is graceful (connections closed, database thread joined);
``kill -9`` loses nothing acknowledged (see ``veil.server.storage.sqlite``).

A process holds its data directory's lock from before it opens the log file until it
exits (``veil.server.datadir_lock``, issue 10 §5 item 1). The log file rotates by size
(``log_max_bytes``, ``log_backups``), and a client that drops its connection mid-request
is one DEBUG line, not a traceback (:class:`ClientGoneFilter`, issue 10 §5 item 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import logging.handlers
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from veil.protocol import Codec
from veil.server.admin import AdminListener, start_admin
from veil.server.blobs import BLOBS_DIR, BlobLimits, FileBlobStore, run_blob_expiry
from veil.server.bus import InProcessBus
from veil.server.certificates import CertificateAuthority
from veil.server.config import ServerConfig
from veil.server.datadir_lock import DataDirectoryLock
from veil.server.errors import ConfigError, NotAServerDirectory, ServerError
from veil.server.http.app import create_app
from veil.server.http.context import Context
from veil.server.lines import Line, line
from veil.server.protection.facade import open_protection
from veil.server.protection.listener import GuardedSite
from veil.server.services.accounts import AccountService
from veil.server.services.devices import DeviceService
from veil.server.services.groups import GroupService
from veil.server.services.key_packages import KeyPackageService
from veil.server.services.keys import KeyService
from veil.server.services.messages import MessageService
from veil.server.services.retention import RetentionService, run_retention
from veil.server.storage import DATABASE_FILE, storage_for
from veil.server.tls import ServerTls, check_listener, plain_public, server_tls

log = logging.getLogger("veil.server")
LOG_FILE = "logs/server.log"


def event_loop_factory(
    config: ServerConfig,
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed and enabled (about twice the throughput), else asyncio's.

    Not with TLS: the guarded listener admits a socket before its handshake and then
    upgrades it with loop.start_tls (protection/connections.py), and uvloop's
    server-side start_tls loses handshakes under concurrency (20 at once: nearly all
    reset; asyncio's loop serves every one, and so does uvloop's own ``ssl=`` listener,
    which would admit only after the handshake)."""
    if not config.use_uvloop or config.tls_cert or config.tls_self_signed:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def now_ms() -> int:
    return int(time.time() * 1000)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers of the libraries the server runs on: their records go to the same handlers.
LIBRARY_LOGGERS = ("aiohttp", "asyncio")
# What a client causes by going away mid-request (reset, closed socket, broken pipe) or
# by sending bytes that are not HTTP: its business, not an error of the server.
CLIENT_FAULTS: tuple[type[BaseException], ...] = (
    ConnectionResetError, ConnectionAbortedError, BrokenPipeError, asyncio.CancelledError,
    HttpProcessingError,
)


def log_level(config: ServerConfig) -> int:
    """``config.log_level`` as a number; a name logging does not know is a ConfigError."""
    level = logging.getLevelName(config.log_level.upper())
    if not isinstance(level, int):
        raise ConfigError(f"log_level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL "
                          f"(not {config.log_level!r})")
    return level


class ClientGoneFilter(logging.Filter):
    """A library's record about a client that went away (or spoke no HTTP) becomes one
    DEBUG line without its traceback, and is dropped unless DEBUG is on for its logger.

    aiohttp logs such events at ERROR with the exception attached ("Error handling
    request", "Unhandled exception"); a scanner or a flaky mobile network would fill
    the log with tracebacks. Only records of :data:`LIBRARY_LOGGERS` are rewritten: the
    server's own (``veil.*``) already decide their level (``http/app.py`` ``guard``).
    """

    MARK = "veil_client_gone"  # set on a rewritten record: every handler sees it

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, self.MARK, False):
            if record.name.split(".", 1)[0] not in LIBRARY_LOGGERS or not record.exc_info:
                return True
            exc = record.exc_info[1]
            if not isinstance(exc, CLIENT_FAULTS):
                return True
            # One line, bounded: parser errors quote (part of) the client's bytes.
            text = " ".join(str(exc).split())[:200]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}" + (
                f": {text}" if text else "")
            record.args = ()
            record.exc_info = record.exc_text = record.stack_info = None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            setattr(record, self.MARK, True)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def log_handlers(config: ServerConfig) -> list[logging.Handler]:
    """Standard error, and with ``log_to_file`` ``DATA/logs/server.log`` rotated at
    ``log_max_bytes`` with ``log_backups`` older files kept; each with the one format and
    :class:`ClientGoneFilter`."""
    fmt = logging.Formatter(LOG_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.log_to_file:
        path = config.data_dir / LOG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(
            path, maxBytes=config.log_max_bytes, backupCount=config.log_backups,
            encoding="utf-8"))
    client_gone = ClientGoneFilter()
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(client_gone)
    return handlers


def setup_logging(config: ServerConfig) -> None:
    """The ``veil`` logger and the libraries' (:data:`LIBRARY_LOGGERS`) write, at
    ``log_level``, to :func:`log_handlers` (once per process)."""
    level = log_level(config)
    root = logging.getLogger("veil")
    root.setLevel(level)
    if root.handlers:
        return
    handlers = log_handlers(config)
    for name in ("veil", *LIBRARY_LOGGERS):
        logger = logging.getLogger(name)
        if name != "veil":
            # Their warnings and errors count; their INFO chatter does not.
            logger.setLevel(max(level, logging.WARNING) if level > logging.DEBUG else level)
            logger.propagate = False
        for handler in handlers:
            logger.addHandler(handler)


@dataclass
class RunningServer:
    context: Context
    runner: web.AppRunner
    port: int
    lock: DataDirectoryLock | None = None
    # The retention job (services/retention.py: group messages, queued envelopes, and
    # the space they held), stopped before storage closes.
    expiry: asyncio.Task[None] | None = None
    blob_expiry: asyncio.Task[None] | None = None  # attachments' blobs (blobs/files.py)
    tls: ServerTls | None = None  # the listener's certificate (server/tls.py), if any
    admin: AdminListener | None = None  # metrics, health, admin API (server/admin/)

    async def close(self) -> None:
        try:
            if self.context.blobs is not None:  # running PATCHes save what arrived
                await self.context.blobs.close()
            for job in (self.expiry, self.blob_expiry):
                if job is not None:
                    job.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await job
            if self.admin is not None:  # first: ends the dashboards' live streams
                await self.admin.close()
            await self.runner.cleanup()
            await self.context.protection.close()
            await self.context.storage.close()
        finally:
            if self.lock is not None:
                self.lock.release()


async def build_context(
    config: ServerConfig, clock_ms: Callable[[], int] = now_ms
) -> Context:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(config.data_dir, 0o700)
    storage = storage_for(config)
    await storage.open()
    blobs = FileBlobStore(config.data_dir / BLOBS_DIR, BlobLimits.from_config(config), clock_ms)
    try:
        await blobs.open()
    except BaseException:
        await storage.close()
        raise
    bus = InProcessBus()
    accounts = AccountService(storage, config, clock_ms)
    try:
        protection = await open_protection(config, storage, clock_ms=clock_ms)
    except BaseException:
        await blobs.close()
        await storage.close()
        raise
    return Context(
        config=config,
        storage=storage,
        bus=bus,
        accounts=accounts,
        keys=KeyService(storage, bus, config),
        messages=MessageService(storage, bus, config, clock_ms),
        groups=GroupService(storage, bus, config, clock_ms),
        key_packages=KeyPackageService(storage, bus, config, clock_ms),
        devices=DeviceService(storage, bus, accounts, config, clock_ms,
                              audit=protection.audit),
        ca=CertificateAuthority(config.data_dir, clock_ms()),
        codec=Codec(config.wire_limits()),
        clock_ms=clock_ms,
        protection=protection,
        blobs=blobs,
    )


async def start(
    config: ServerConfig, *, lock: DataDirectoryLock | None = None,
    announce: Callable[[Line], None] | None = None,
) -> RunningServer:
    """Open storage and listen. Takes the data directory's lock unless ``lock`` is given
    (held, then, by the caller); either way the returned server releases it on close.
    Raises DataDirectoryInUse when another process holds the directory. ``announce``
    hears the retention job's lines (``serve`` passes the operator's)."""
    if lock is None:
        lock = DataDirectoryLock.acquire(config.data_dir)
    try:
        return await _start(config, lock, announce)
    except BaseException:
        lock.release()
        raise


async def _start(config: ServerConfig, lock: DataDirectoryLock,
                 announce: Callable[[Line], None] | None = None) -> RunningServer:
    check_listener(config)      # plain HTTP outside loopback: refused before anything
    tls = server_tls(config)    # a bad certificate too (issue 13 §1)
    context = await build_context(config)
    try:
        runner = web.AppRunner(create_app(context), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
    except BaseException:
        await context.storage.close()
        raise
    # Every accepted socket passes the network layer's guard (caps, deny lists, blocks,
    # slow and idle connections: protection/connections.py) before aiohttp sees it.
    site = GuardedSite(runner, config.host, config.port, context.protection.connections,
                       ssl_context=None if tls is None else tls.context,
                       backlog=4096, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await context.storage.close()
        raise ConfigError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
        ) from None
    server = site._server  # the bound port, when port 0 asked the OS to choose
    port = config.port
    if server is not None and getattr(server, "sockets", None):
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    retention = RetentionService(context.storage, context.messages, context.groups)
    expiry = asyncio.create_task(run_retention(retention, config.expiry_interval_s, announce))
    blob_expiry = None
    if context.blobs is not None:
        blob_expiry = asyncio.create_task(run_blob_expiry(context.blobs,
                                                          config.expiry_interval_s))
    running = RunningServer(context, runner, port, lock, expiry, blob_expiry, tls)
    try:
        host = f"[{config.host}]" if ":" in config.host else config.host
        running.admin = await start_admin(
            context, f"{'https' if tls else 'http'}://{host}:{port}",
            None if tls is None else tls.context)
    except BaseException:
        await running.close()
        raise
    return running


def run(config: ServerConfig, announce: Callable[[Line], None] = print,
        reload_config: Callable[[], ServerConfig] | None = None) -> None:
    """Serve until SIGINT or SIGTERM (blocking), on uvloop when available.
    ``reload_config`` reads the configuration again (SIGHUP, ``veil admin reload``)."""
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(config)) as runner:
            runner.run(serve(config, announce, reload_config))
    except KeyboardInterrupt:
        pass


def require_server(config: ServerConfig) -> None:
    """Raise NotAServerDirectory unless the data directory holds a server's database.

    For commands that act on an existing deployment (``invite``): run on a mistyped
    ``--data`` they would otherwise create an empty database there and answer with
    tokens that no server accepts. PostgreSQL deployments (``database_url``) keep the
    database elsewhere; their storage refuses to start on an unreachable one.
    """
    if config.database_url:
        return
    path = config.data_dir / DATABASE_FILE
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if size == 0:
        raise NotAServerDirectory(
            f"{config.data_dir} holds no Veil server (no {DATABASE_FILE}); give the --data "
            f"of an existing server, or start one there first with "
            f"'veil server --data {config.data_dir}'")


async def mint_invites(config: ServerConfig, count: int, hours: int) -> list[str]:
    """Single-use invite tokens, stored (hashed) in the deployment's database, which
    must exist (:func:`require_server`). Works while the server runs."""
    require_server(config)
    storage = storage_for(config)
    await storage.open()
    try:
        service = AccountService(storage, config, now_ms)
        return [await service.mint_invite(hours * 3600) for _ in range(count)]
    finally:
        await storage.close()


def announce_tls(tls: ServerTls, announce: Callable[[Line], None]) -> None:
    """The certificate's fingerprint (what clients pin) and how long it lasts."""
    expires = tls.not_after.date().isoformat()
    if tls.generated:
        announce(line("tls_generated", path=tls.cert_path))
    key = "tls_self_signed" if tls.self_signed else "tls_certificate"
    announce(line(key, fingerprint=tls.fingerprint, path=tls.cert_path, expires=expires))


async def serve(config: ServerConfig, announce: Callable[[Line], None] = print,
                reload_config: Callable[[], ServerConfig] | None = None) -> None:
    log_level(config)  # a bad level is refused before anything is touched
    check_listener(config)  # and plain HTTP on a public address (issue 13 §1)
    # The lock first: a second process must not even open (and rotate) the log file.
    lock = DataDirectoryLock.acquire(config.data_dir)
    try:
        setup_logging(config)
        running = await start(config, lock=lock, announce=announce)
    except BaseException:
        lock.release()
        raise
    # Everything allocated so far lives as long as the process: keep it out of the
    # collector's way, so full collections stay short under load.
    gc.collect()
    gc.freeze()
    tls = running.tls
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"{'https' if tls else 'http'}://{host}:{running.port}"
    announce(line("listening", url=url, data=config.data_dir))
    if tls is not None:
        announce_tls(tls, announce)
    elif plain_public(config):
        announce(line("plain_public", host=config.host or "*"))
        log.warning("serving plain HTTP without TLS on a public address "
                    "(insecure_public): credentials cross the network readable")
    ca = running.context.ca
    announce(line("trust_root", fingerprint=ca.fingerprint, key_id=ca.key_id))
    if tls is not None and tls.self_signed:
        announce(line("connect_pinned", url=url, fingerprint=ca.fingerprint,
                      pin=tls.fingerprint))
    else:
        announce(line("connect", url=url, fingerprint=ca.fingerprint))
    if ca.generated_root:
        announce(line("throwaway_root"))
    announce(line("api_docs", url=url))
    if running.admin is not None:
        announce(line("admin", url=running.admin.url,
                      token=config.data_dir / "admin" / "token"))
    log.info("listening on port %d, registration %s", running.port, config.registration)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Event loops without Unix signal support raise here; Ctrl-C still stops them.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    protection = running.context.protection
    protection.config_loader = reload_config

    def hang_up() -> None:
        # SIGHUP: the reloadable sections ([network], [rules]) from the file again; a
        # bad file changes nothing and says why (issue 13 §1).
        try:
            protection.reload()
        except ServerError as exc:
            log.error("configuration not reloaded: %s", exc)

    # Not a stub: event loops without Unix signals raise NotImplementedError, and a
    # platform without SIGHUP (Windows) has no signal.SIGHUP; reload then goes
    # through `veil admin reload` only.
    with contextlib.suppress(NotImplementedError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, hang_up)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await running.close()

__all__ = [
    "CLIENT_FAULTS",
    "LIBRARY_LOGGERS",
    "LOG_FILE",
    "ClientGoneFilter",
    "RunningServer",
    "event_loop_factory",
    "log_handlers",
    "log_level",
    "mint_invites",
    "require_server",
    "run",
    "serve",
    "setup_logging",
    "start",
]
