"""The Veil server's API (the routes in docs/server.md) over a :class:`Transport`.

Every error answer becomes :class:`ServerRejected` carrying the server's stable error
code, and a malformed answer a ``bad_response`` one (:func:`server_data`), so callers
above never see transport exceptions or tracebacks from parsing. The transport is
injectable (``Api(url, transport=...)``): unit tests drive real client logic against an
in-memory server (tests/unit/client/memory_server.py).
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Iterator
from typing import Any

from veil.client.errors import ServerRejected
from veil.client.transport import AiohttpTransport, Transport, WebSocket

_ACCOUNT_HEX = re.compile(r"[0-9a-f]{32}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


@contextlib.contextmanager
def server_data(what: str) -> Iterator[None]:
    """A malformed answer from the server is a typed error, never a traceback."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ServerRejected(502, "bad_response",
                             f"the server's {what} is malformed ({type(exc).__name__})") from None


def account_hex(value: object) -> str:
    if not isinstance(value, str) or not _ACCOUNT_HEX.fullmatch(value):
        raise ValueError("not an account id")
    return value


class Api:
    """One server, one device's credentials (set after registration)."""

    def __init__(self, base_url: str, proxy: str | None = None,
                 transport: Transport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._transport: Transport = transport or AiohttpTransport(proxy)
        self._auth: str | None = None

    def set_credentials(self, account_hex: str, device_id: int, token: bytes) -> None:
        raw = f"{account_hex}.{device_id}:{b64(token)}".encode()
        self._auth = "Basic " + base64.b64encode(raw).decode()

    async def close(self) -> None:
        await self._transport.close()

    def _headers(self, auth: bool, access_key: bytes | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if auth and self._auth:
            headers["Authorization"] = self._auth
        if access_key is not None:
            headers["Veil-Access-Key"] = b64(access_key)
        return headers

    async def request(self, method: str, path: str, body: Any = None, *, auth: bool = True,
                      access_key: bytes | None = None) -> Any:
        status, answer = await self._transport.request(
            method, self.base_url + path, body, self._headers(auth, access_key))
        if status >= 400:
            raise _rejected(status, answer)
        return answer

    async def websocket(self) -> WebSocket:
        return await self._transport.websocket(self.base_url + "/v1/websocket",
                                               self._headers(True, None))


def _rejected(status: int, answer: Any) -> ServerRejected:
    try:
        error = answer["error"]
        details = error.get("details")
        return ServerRejected(status, str(error["code"]), str(error["message"]),
                              details if isinstance(details, dict) else None)
    except (KeyError, TypeError, AttributeError):
        text = answer if isinstance(answer, str) else ""
        return ServerRejected(status, "http_error", text[:200] or "no detail")

__all__ = [
    "Api",
    "account_hex",
    "b64",
    "server_data",
    "unb64",
]
