"""The Veil server's API (the routes in docs/server.md) over a :class:`Transport`.

Requests and answers are the types of :mod:`veil.protocol` (:meth:`Api.call`). Every
error answer becomes :class:`ServerRejected` carrying the server's stable error code,
and an answer that does not decode as its type a ``bad_response`` one, so callers above
never see transport exceptions or tracebacks from parsing. The transport is
injectable (``Api(url, transport=...)``): unit tests drive real client logic against an
in-memory server (tests/unit/client/memory_server.py).

A request that carries an access key and no credentials is *sealed*: it goes to the
transport with ``sealed=True``, so that it never shares a connection with an
authenticated one (issue 10 §4, item 1; :mod:`veil.client.transport`).
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Iterator
from typing import Any, TypeVar

from msgspec import UNSET

from veil.client.errors import ServerRejected
from veil.client.transport import AiohttpTransport, Transport, WebSocket
from veil.protocol import ProtocolError, convert, given, to_builtins
from veil.protocol.requests import Request
from veil.protocol.responses import ErrorResponse, Response

T = TypeVar("T", bound=Response)

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
    """One server, one device's credentials (set after registration). ``pin``: the
    server's pinned TLS certificate (veil.client.pinning), for the default transport."""

    def __init__(self, base_url: str, proxy: str | None = None,
                 transport: Transport | None = None, pin: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._transport: Transport = transport or AiohttpTransport(proxy, pin)
        self._auth: str | None = None

    def set_credentials(self, account_hex: str, device_id: int, token: bytes) -> None:
        raw = f"{account_hex}.{device_id}:{b64(token)}".encode()
        self._auth = "Basic " + base64.b64encode(raw).decode()

    @property
    def authorization(self) -> str | None:
        """The device's ``Authorization`` value, for the blob uploads that go beside
        this API (``veil.client.blob_http``); None before registration."""
        return self._auth

    async def close(self) -> None:
        await self._transport.close()

    def _headers(self, auth: bool, access_key: bytes | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if auth and self._auth:
            headers["Authorization"] = self._auth
        if access_key is not None:
            headers["Veil-Access-Key"] = b64(access_key)
        return headers

    async def request(self, method: str, path: str, body: Request | None = None, *,
                      auth: bool = True, access_key: bytes | None = None) -> Any:
        """The answer's JSON as it came (for answers without a body, such as 204)."""
        headers = self._headers(auth, access_key)
        url, data = self.base_url + path, None if body is None else to_builtins(body)
        if is_sealed(headers):
            status, answer = await self._transport.request(method, url, data, headers,
                                                           sealed=True)
        else:
            status, answer = await self._transport.request(method, url, data, headers)
        if status >= 400:
            raise _rejected(status, answer)
        return answer

    async def call(self, method: str, path: str, answer: type[T], body: Request | None = None,
                   *, auth: bool = True, access_key: bytes | None = None) -> T:
        """The answer, decoded as ``answer``; one that does not is ``bad_response``."""
        data = await self.request(method, path, body, auth=auth, access_key=access_key)
        return decode_answer(data, answer)

    async def group_call(self, method: str, path: str, answer: type[T],
                         body: Request | None = None, *, read: bytes | None = None,
                         write: bytes | None = None) -> T:
        """A group mailbox request (docs/groups.md): a capability header, never
        credentials or an access key, and always on the sealed pool, so the server
        cannot tie the group to this device's connections."""
        headers: dict[str, str] = {}
        if read is not None:
            headers["Veil-Group-Read"] = b64(read)
        if write is not None:
            headers["Veil-Group-Write"] = b64(write)
        data = None if body is None else to_builtins(body)
        status, got = await self._transport.request(method, self.base_url + path, data,
                                                    headers, sealed=True)
        if status >= 400:
            raise _rejected(status, got)
        return decode_answer(got, answer)

    async def websocket(self) -> WebSocket:
        return await self._transport.websocket(self.base_url + "/v1/websocket",
                                               self._headers(True, None))


def is_sealed(headers: dict[str, str]) -> bool:
    """Whether a request with these headers is sealed: an access key, no credentials."""
    return "Veil-Access-Key" in headers and "Authorization" not in headers


def decode_answer(data: Any, answer: type[T]) -> T:
    try:
        return convert(data, answer, "answer")
    except ProtocolError as exc:
        raise ServerRejected(502, "bad_response",
                             f"the server's {answer.__name__} answer is malformed: "
                             f"{exc.message}") from None


def _rejected(status: int, answer: Any) -> ServerRejected:
    try:
        error = convert(answer, ErrorResponse, "error").error
    except ProtocolError:
        text = answer if isinstance(answer, str) else ""
        return ServerRejected(status, "http_error", text[:200] or "no detail")
    return ServerRejected(status, error.code, error.message,
                          None if error.details is UNSET else error.details)

__all__ = [
    "Api",
    "account_hex",
    "b64",
    "decode_answer",
    "given",
    "is_sealed",
    "server_data",
    "unb64",
]
