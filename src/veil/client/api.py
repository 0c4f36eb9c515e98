"""HTTP and WebSocket access to a Veil server (the routes in docs/server.md).

Maps every transport failure to :class:`ServerUnreachable` and every error answer to
:class:`ServerRejected` carrying the server's stable error code, so callers above never
see aiohttp exceptions.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
from aiohttp_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError

from veil.client.errors import ServerRejected, ServerUnreachable

_PROXY_ERRORS = (ProxyConnectionError, ProxyError, ProxyTimeoutError)

TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


class Api:
    """One server, one device's credentials (set after registration)."""

    def __init__(self, base_url: str, proxy: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._proxy = proxy
        self._session: aiohttp.ClientSession | None = None
        self._auth: str | None = None

    def set_credentials(self, account_hex: str, device_id: int, token: bytes) -> None:
        raw = f"{account_hex}.{device_id}:{b64(token)}".encode()
        self._auth = "Basic " + base64.b64encode(raw).decode()

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

    def _headers(self, auth: bool, access_key: bytes | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if auth and self._auth:
            headers["Authorization"] = self._auth
        if access_key is not None:
            headers["Veil-Access-Key"] = b64(access_key)
        return headers

    async def request(self, method: str, path: str, body: Any = None, *, auth: bool = True,
                      access_key: bytes | None = None) -> Any:
        session = await self._http()
        url = self.base_url + path
        try:
            async with session.request(method, url, json=body,
                                       headers=self._headers(auth, access_key)) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise _rejected(resp.status, text)
                return json.loads(text) if text else None
        except _PROXY_ERRORS as exc:
            raise ServerUnreachable(f"the proxy failed to reach {self.base_url} "
                                    f"({type(exc).__name__})") from None
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise ServerUnreachable(f"cannot reach the server at {self.base_url} "
                                    f"({type(exc).__name__})") from None
        except json.JSONDecodeError:
            raise ServerRejected(502, "bad_response", "the server's answer is not JSON") from None

    async def websocket(self) -> aiohttp.ClientWebSocketResponse:
        session = await self._http()
        try:
            return await session.ws_connect(self.base_url + "/v1/websocket",
                                            headers=self._headers(True, None), heartbeat=30,
                                            max_msg_size=4 << 20)
        except aiohttp.WSServerHandshakeError as exc:
            raise ServerRejected(exc.status, "websocket_refused", exc.message) from None
        except (*_PROXY_ERRORS, TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise ServerUnreachable(f"cannot reach the server at {self.base_url} "
                                    f"({type(exc).__name__})") from None


def _rejected(status: int, text: str) -> ServerRejected:
    try:
        error = json.loads(text)["error"]
        details = error.get("details")
        return ServerRejected(status, str(error["code"]), str(error["message"]),
                              details if isinstance(details, dict) else None)
    except (ValueError, KeyError, TypeError):
        return ServerRejected(status, "http_error", text[:200] or "no detail")
