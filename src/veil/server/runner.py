"""Run one server process: open storage, build services, serve HTTP and WebSockets.

``python -m veil.server`` and ``veil server`` are thin front-ends of :func:`run` and
:func:`mint_invites`.
Shutdown on SIGINT/SIGTERM is graceful (connections closed, database thread joined);
``kill -9`` loses nothing acknowledged (see ``veil.server.storage.sqlite``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from veil.protocol import Codec
from veil.server.bus import InProcessBus
from veil.server.certificates import CertificateAuthority
from veil.server.config import ServerConfig
from veil.server.errors import ConfigError
from veil.server.http.app import create_app
from veil.server.http.context import Context
from veil.server.services.accounts import AccountService
from veil.server.services.keys import KeyService
from veil.server.services.messages import MessageService
from veil.server.storage import storage_for

log = logging.getLogger("veil.server")
LOG_FILE = "logs/server.log"


def event_loop_factory(
    config: ServerConfig,
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed and enabled (about twice the throughput), else asyncio's."""
    if not config.use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def now_ms() -> int:
    return int(time.time() * 1000)


def setup_logging(config: ServerConfig) -> None:
    root = logging.getLogger("veil")
    root.setLevel(config.log_level.upper())
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not root.handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        root.addHandler(stream)
        if config.log_to_file:
            path = config.data_dir / LOG_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path)
            handler.setFormatter(fmt)
            root.addHandler(handler)


@dataclass
class RunningServer:
    context: Context
    runner: web.AppRunner
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.context.storage.close()


async def build_context(
    config: ServerConfig, clock_ms: Callable[[], int] = now_ms
) -> Context:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(config.data_dir, 0o700)
    storage = storage_for(config)
    await storage.open()
    bus = InProcessBus()
    return Context(
        config=config,
        storage=storage,
        bus=bus,
        accounts=AccountService(storage, config, clock_ms),
        keys=KeyService(storage, bus, config),
        messages=MessageService(storage, bus, config, clock_ms),
        ca=CertificateAuthority(config.data_dir, clock_ms()),
        codec=Codec(config.wire_limits()),
        clock_ms=clock_ms,
    )


async def start(config: ServerConfig) -> RunningServer:
    context = await build_context(config)
    runner = web.AppRunner(create_app(context), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=4096, reuse_address=True)
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
    return RunningServer(context, runner, port)


def run(config: ServerConfig, announce: Callable[[str], None] = print) -> None:
    """Serve until SIGINT or SIGTERM (blocking), on uvloop when available."""
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(config)) as runner:
            runner.run(serve(config, announce))
    except KeyboardInterrupt:
        pass


async def mint_invites(config: ServerConfig, count: int, hours: int) -> list[str]:
    """Single-use invite tokens, stored (hashed) in the deployment's database."""
    storage = storage_for(config)
    await storage.open()
    try:
        service = AccountService(storage, config, now_ms)
        return [await service.mint_invite(hours * 3600) for _ in range(count)]
    finally:
        await storage.close()


async def serve(config: ServerConfig, announce: Callable[[str], None] = print) -> None:
    setup_logging(config)
    running = await start(config)
    # Everything allocated so far lives as long as the process: keep it out of the
    # collector's way, so full collections stay short under load.
    gc.collect()
    gc.freeze()
    url = f"http://{config.host}:{running.port}"
    announce(f"veil server listening on {url} (data in {config.data_dir})")
    ca = running.context.ca
    announce(f"trust root fingerprint {ca.fingerprint} (server key {ca.key_id})")
    announce(f"connect a client with: veil init --server {url} --trust-root {ca.fingerprint}")
    if ca.generated_root:
        announce("made a throw-away trust root and kept no copy of its private key: this "
                 "server key can never be rotated or revoked (for a lasting deployment see "
                 "'veil server keys --help')")
    announce(f"API docs: {url}/docs")
    log.info("listening on port %d, registration %s", running.port, config.registration)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Event loops without Unix signal support raise here; Ctrl-C still stops them.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await running.close()

__all__ = [
    "event_loop_factory",
    "mint_invites",
    "run",
    "serve",
    "start",
]
