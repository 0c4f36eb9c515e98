"""How the client reaches a server: a small interface, so client logic can be driven
without a server process (as httpx's ``MockTransport`` allows), and the default
implementation over aiohttp (optionally through SOCKS5).

A :class:`Transport` answers one HTTP request with ``(status, decoded JSON)`` and opens
WebSockets. It maps every failure to reach the server to :class:`ServerUnreachable`;
the meaning of statuses and error bodies is :class:`veil.client.api.Api`'s business.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import aiohttp
from aiohttp_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError

from veil.client.errors import ServerRejected, ServerUnreachable

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
                      headers: dict[str, str]) -> tuple[int, Any]:
        """``(status, JSON body or None)``. A non-JSON error body comes back as a str;
        a non-JSON success body is a ``bad_response`` :class:`ServerRejected`."""
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
    """The default transport: one aiohttp session, through ``proxy`` (socks5://) if set."""

    def __init__(self, proxy: str | None = None) -> None:
        self._proxy = proxy
        self._session: aiohttp.ClientSession | None = None

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = None
            if self._proxy:
                from veil.client.socks import socks_connector
                connector = socks_connector(self._proxy)
            self._session = aiohttp.ClientSession(timeout=TIMEOUT, connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, url: str, body: Any,
                      headers: dict[str, str]) -> tuple[int, Any]:
        session = await self._http()
        try:
            async with session.request(method, url, json=body, headers=headers) as resp:
                status, text = resp.status, await resp.text()
        except _PROXY_ERRORS as exc:
            raise ServerUnreachable(f"the proxy failed to reach {_origin(url)} "
                                    f"({type(exc).__name__})") from None
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise ServerUnreachable(f"cannot reach the server at {_origin(url)} "
                                    f"({type(exc).__name__})") from None
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
                                          max_msg_size=MAX_FRAME)
        except aiohttp.WSServerHandshakeError as exc:
            raise ServerRejected(exc.status, "websocket_refused", exc.message) from None
        except (*_PROXY_ERRORS, TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise ServerUnreachable(f"cannot reach the server at {_origin(url)} "
                                    f"({type(exc).__name__})") from None
        return _AiohttpSocket(ws)


def _origin(url: str) -> str:
    """The server part of a URL for messages: paths name accounts, which are not logged."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"

__all__ = [
    "AiohttpTransport",
    "Transport",
    "WebSocket",
]
