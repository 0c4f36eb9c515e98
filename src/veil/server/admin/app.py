"""The admin listener (issue 13 §4): metrics, health, the admin API and the dashboard,
on an address of its own (``[admin]`` host and port; loopback by default).

- ``GET /metrics``: Prometheus text format (:mod:`veil.server.protection.metrics`).
  Like ``/health`` and ``/ready`` it needs no token: a scraper on the same host
  should not hold the key to the admin API, and the figures name no one.
- ``GET /health``: the process is alive (200).
- ``GET /ready``: the database answers and its schema is this code's (200, else 503).
- ``/admin/api/…``: the admin API (:mod:`.api`, :mod:`.stream`), token required.
- ``/admin/``: the dashboard (:mod:`.dashboard`).

The listener writes its URL to ``DATA/admin/address`` once it listens and removes it
when it stops; the token is ``DATA/admin/token`` (:mod:`.files`). Outside loopback it
refuses to start without TLS unless ``[admin] insecure_public`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from veil.server.admin import api, dashboard, stream
from veil.server.admin.auth import AdminAuth
from veil.server.admin.files import load_or_create_token, remove_address, write_address
from veil.server.admin.sources import ServerView
from veil.server.admin.state import ADMIN, AdminState
from veil.server.errors import ConfigError, ServerError
from veil.server.http.context import Context, error_response, json_response
from veil.server.protection.metrics import CONTENT_TYPE
from veil.server.storage.migrations import SCHEMA_VERSION

log = logging.getLogger("veil.server.admin")

READY_TIMEOUT_S = 2.0
MAX_BODY = 64 * 1024

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _answers(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Errors in the one JSON shape; the security headers on every answer."""
    try:
        response = await handler(request)
    except ServerError as exc:
        response = json_response({"error": {"code": exc.code, "message": exc.message}},
                                 status=exc.status)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="veil-admin"'
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response("not_found" if exc.status == 404 else "bad_request",
                                  exc.reason or "error", exc.status)
    headers = response.headers
    headers.setdefault("Content-Security-Policy", dashboard.CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Cache-Control", "no-store")
    return response


async def metrics(request: web.Request) -> web.Response:
    state = request.app[ADMIN]
    body = state.metrics.exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    state = request.app[ADMIN]
    storage = state.context.storage
    checks: dict[str, object] = {}
    ok = True
    try:
        start = state.view.clock()
        version = await asyncio.wait_for(storage.schema_version(), READY_TIMEOUT_S)
        state.metrics.observe_storage("schema_version", state.view.clock() - start)
        checks["storage"] = "ok"
        checks["schema_version"] = version
        if version != SCHEMA_VERSION:
            ok = False
            checks["migrations"] = f"schema {version}, this code needs {SCHEMA_VERSION}"
        else:
            checks["migrations"] = "done"
    except (TimeoutError, ServerError, OSError) as exc:
        ok = False
        checks["storage"] = f"unreachable ({type(exc).__name__})"
    except Exception as exc:  # a database driver's own error: still "not ready"
        ok = False
        checks["storage"] = f"failed ({type(exc).__name__})"
    return json_response({"status": "ready" if ok else "not_ready", "checks": checks},
                         status=200 if ok else 503)


def create_admin_app(state: AdminState) -> web.Application:
    app = web.Application(middlewares=[_answers], client_max_size=MAX_BODY)
    app[ADMIN] = state
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    api.add_routes(app)
    stream.add_routes(app)
    dashboard.add_routes(app)
    return app


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminListener:
    """The admin listener of one server process."""

    def __init__(self, context: Context, ssl_context: ssl.SSLContext | None = None) -> None:
        self.context = context
        self.settings = context.config.admin
        self.ssl_context = ssl_context
        self.view = ServerView(context)
        self.state: AdminState | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.port = 0

    async def start(self, listener_url: str = "") -> str:
        """Listen; return the URL (also written to ``DATA/admin/address``)."""
        settings = self.settings
        if not _loopback(settings.host) and self.ssl_context is None and \
                not settings.insecure_public:
            raise ConfigError(
                f"the admin listener on {settings.host} would serve the admin token in "
                "clear: give the server TLS, keep [admin] host on loopback, or set "
                "[admin] insecure_public")
        config = self.context.config
        token = load_or_create_token(config.data_dir)
        self.state = AdminState(self.context, self.view, AdminAuth(token))
        self.view.listener_url = listener_url
        metrics = self.context.protection.metrics
        metrics.bind(self.view)
        self.context.storage.set_observer(metrics.observe_storage)
        self.view.queued_envelopes()  # the first count, so the first scrape has it
        self._runner = web.AppRunner(create_admin_app(self.state), access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.host, settings.port,
                           ssl_context=self.ssl_context, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(f"cannot listen for admin on {settings.host}:{settings.port}: "
                              f"{exc.strerror or exc}") from None
        server = site._server
        self.port = settings.port
        if server is not None and getattr(server, "sockets", None):
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        scheme = "https" if self.ssl_context is not None else "http"
        host = settings.host if ":" not in settings.host else f"[{settings.host}]"
        self.url = f"{scheme}://{host}:{self.port}"
        self.view.admin_url = self.url
        write_address(config.data_dir, self.url)
        return self.url

    async def close(self) -> None:
        self.context.storage.set_observer(None)
        if self.url:
            remove_address(self.context.config.data_dir, self.url)
        if self.state is not None:
            self.state.closing.set()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None
        await self.view.close()


async def start_admin(context: Context, listener_url: str,
                      ssl_context: ssl.SSLContext | None = None) -> AdminListener | None:
    """The admin listener, started, or None when ``[admin] enabled`` is false."""
    settings = context.config.admin
    if not settings.enabled:
        return None
    # On loopback plain HTTP, as for the main listener: a certificate made for the
    # server's public name would not match 127.0.0.1 for ``veil admin`` anyway.
    listener = AdminListener(context, None if _loopback(settings.host) else ssl_context)
    await listener.start(listener_url)
    log.info("admin listener on port %d", listener.port)
    return listener


__all__ = [
    "AdminListener",
    "create_admin_app",
    "start_admin",
]
