"""How the client reaches a server: a small interface, so client logic can be driven
without a server process (as httpx's ``MockTransport`` allows), and the default
implementation over aiohttp (optionally through SOCKS5).

A :class:`Transport` answers one HTTP request with ``(status, decoded JSON)`` and opens
WebSockets. It maps every failure to reach the server to :class:`ServerUnreachable`;
the meaning of statuses and error bodies is :class:`veil.client.api.Api`'s business.

Sealed requests (issue 10 §4, item 1) are the ones :class:`~veil.client.api.Api` sends
with an access key and without credentials (``request(..., sealed=True)``). A sealed
request that travelled on a keep-alive connection that also carried the device's
``Authorization`` header would name its sender to the server, so
:class:`AiohttpTransport` keeps two pools that share nothing: one keep-alive session for
authenticated and anonymous requests and the WebSocket, and one for sealed requests that
opens a new connection per request (``force_close``), with no cookie jar, so sealed
requests are not linked to each other either. Through a SOCKS5 proxy without
credentials, each sealed request also presents its own random SOCKS username and
password: Tor (``IsolateSOCKSAuth``, its default) then puts it on its own circuit.
What the pools cannot hide is the client's network address, without such a proxy.

With a pinned certificate (``pin``, :mod:`veil.client.pinning`) every request and the
WebSocket, on both pools, accept only that certificate; a refused one is
:class:`~veil.client.errors.CertificateMismatch` (or ``CertificateUntrusted`` without a
pin), never a plain ``ServerUnreachable``.
"""

from __future__ import annotations

import json
import secrets
from contextlib import AsyncExitStack
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError

from veil.client.errors import ServerRejected, ServerUnreachable
from veil.client.pinning import certificate_error, tls_check

_PROXY_ERRORS = (ProxyConnectionError, ProxyError, ProxyTimeoutError)

TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
MAX_FRAME = 4 << 20


class WebSocket(Protocol):
    """One open socket: text frames in, JSON out."""

    async def receive_text(self) -> str | None:
        """The next text frame; None once the socket closed (or sent a non-text frame)."""
        ...

    async def send_json(self, data: Any) -> None:
        """Raises ConnectionError or OSError when the socket is gone."""
        ...

    async def close(self) -> None: ...


class Transport(Protocol):
    async def request(self, method: str, url: str, body: Any,
                      headers: dict[str, str], *, sealed: bool = False) -> tuple[int, Any]:
        """``(status, JSON body or None)``. A non-JSON error body comes back as a str;
        a non-JSON success body is a ``bad_response`` :class:`ServerRejected`.

        ``sealed``: a request without credentials that carries an access key; it must
        not share a connection with requests that carry credentials. :class:`Api`
        passes the keyword only when it is true, so a transport written before it
        still serves every other request."""
        ...

    async def websocket(self, url: str, headers: dict[str, str]) -> WebSocket:
        """Raises :class:`ServerRejected` when the upgrade is refused."""
        ...

    async def close(self) -> None: ...


class _AiohttpSocket:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    async def receive_text(self) -> str | None:
        msg = await self._ws.receive()
        return msg.data if msg.type == aiohttp.WSMsgType.TEXT else None

    async def send_json(self, data: Any) -> None:
        await self._ws.send_json(data)

    async def close(self) -> None:
        await self._ws.close()


class AiohttpTransport:
    """The default transport, through ``proxy`` (socks5://) if set: a keep-alive aiohttp
    session for authenticated requests and WebSockets, and a separate one, a new
    connection each time, for sealed requests. ``pin``: the server certificate's SHA-256
    (hex), checked on every connection of both."""

    def __init__(self, proxy: str | None = None, pin: str | None = None) -> None:
        self._proxy = proxy
        self._ssl = tls_check(pin)
        self._session: aiohttp.ClientSession | None = None
        self._sealed_session: aiohttp.ClientSession | None = None

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = None
            if self._proxy:
                from veil.client.socks import socks_connector
                connector = socks_connector(self._proxy)
            self._session = aiohttp.ClientSession(timeout=TIMEOUT, connector=connector)
        return self._session

    def _isolated_proxy(self) -> str | None:
        """The proxy URL for one sealed connection: with fresh random SOCKS credentials
        unless the configured URL has its own (a proxy may require those)."""
        if not self._proxy:
            return None
        parts = urlsplit(self._proxy)
        if parts.username is not None or not parts.hostname:
            return self._proxy               # socks_connector reports a malformed URL
        user, password = secrets.token_hex(8), secrets.token_hex(8)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    async def _sealed_http(self, stack: AsyncExitStack) -> aiohttp.ClientSession:
        """The session for one sealed request: never the keep-alive one."""
        proxy = self._isolated_proxy()
        if proxy is not None:
            # Its own connector (and SOCKS credentials), closed after this request.
            from veil.client.socks import socks_connector
            session = aiohttp.ClientSession(timeout=TIMEOUT, connector=socks_connector(proxy),
                                            cookie_jar=aiohttp.DummyCookieJar())
            await stack.enter_async_context(session)
            return session
        if self._sealed_session is None or self._sealed_session.closed:
            self._sealed_session = aiohttp.ClientSession(
                timeout=TIMEOUT, connector=aiohttp.TCPConnector(force_close=True),
                cookie_jar=aiohttp.DummyCookieJar())
        return self._sealed_session

    async def close(self) -> None:
        for session in (self._session, self._sealed_session):
            if session is not None:
                await session.close()
        self._session = self._sealed_session = None

    async def request(self, method: str, url: str, body: Any,
                      headers: dict[str, str], *, sealed: bool = False) -> tuple[int, Any]:
        if sealed and "Authorization" in headers:
            raise ValueError("a sealed request must not carry credentials")
        async with AsyncExitStack() as stack:
            session = await (self._sealed_http(stack) if sealed else self._http())
            return await self._request(session, method, url, body, headers)

    async def _request(self, session: aiohttp.ClientSession, method: str, url: str,
                       body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        try:
            async with session.request(method, url, json=body, headers=headers,
                                       ssl=self._ssl) as resp:
                status, text = resp.status, await resp.text()
        except _PROXY_ERRORS as exc:
            raise ServerUnreachable(f"the proxy failed to reach {_origin(url)} "
                                    f"({type(exc).__name__})") from None
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise _unreachable(exc, url) from None
        if not text:
            return status, None
        try:
            return status, json.loads(text)
        except ValueError:
            if status >= 400:
                return status, text
            raise ServerRejected(502, "bad_response", "the server's answer is not JSON") from None

    async def websocket(self, url: str, headers: dict[str, str]) -> WebSocket:
        session = await self._http()
        try:
            ws = await session.ws_connect(url, headers=headers, heartbeat=30,
                                          max_msg_size=MAX_FRAME, ssl=self._ssl)
        except aiohttp.WSServerHandshakeError as exc:
            raise ServerRejected(exc.status, "websocket_refused", exc.message) from None
        except (*_PROXY_ERRORS, TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise _unreachable(exc, url) from None
        return _AiohttpSocket(ws)


def _unreachable(exc: BaseException, url: str) -> ServerUnreachable:
    """A refused certificate as its own error; any other failure as it is."""
    return certificate_error(exc, _origin(url)) or ServerUnreachable(
        f"cannot reach the server at {_origin(url)} ({type(exc).__name__})")


def _origin(url: str) -> str:
    """The server part of a URL for messages: paths name accounts, which are not logged."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"

__all__ = [
    "AiohttpTransport",
    "Transport",
    "WebSocket",
]
