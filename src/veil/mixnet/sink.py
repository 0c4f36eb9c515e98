"""Where a provider hands reassembled messages: the ``ProviderSink`` protocol.

The provider is the mixnet's exit and the Veil server's front door (Loopix section 3.1:
providers are the clients' entry to and exit from the network). It only ever passes on
the message bytes a client put in the mixnet, never a network address: by the time a
message reaches the sink, the only connection it travelled on is the last mix's.

:class:`HttpSink` POSTs each message to a configurable URL as a JSON body
``{"submission": "<base64>"}``; the Veil server's endpoint is a parameter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from typing import Protocol
from urllib.parse import urlsplit

from veil.mixnet.errors import TransportError

MAX_RESPONSE_HEAD = 16 * 1024


class ProviderSink(Protocol):
    async def deliver(self, payload: bytes) -> None:
        """Take one reassembled message; raise MixnetError to have it retried."""


class QueueSink:
    """A sink that keeps messages in a bounded in-memory queue (tests, embedding)."""

    def __init__(self, max_items: int = 100_000) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(max_items)

    async def deliver(self, payload: bytes) -> None:
        await self.queue.put(payload)


class HttpSink:
    """POST (or PUT) each message as JSON to ``url`` (http or https); 2xx means delivered."""

    def __init__(self, url: str, *, method: str = "POST", timeout: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if method not in ("POST", "PUT"):
            raise TransportError("the sink method is POST or PUT")
        self._method = method
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"sink URL must be http(s)://host[:port]/path, got {url!r}")
        self._host = parts.hostname
        self._tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._tls else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._ssl = ssl_context if ssl_context is not None else (
            ssl.create_default_context() if self._tls else None)

    async def deliver(self, payload: bytes) -> None:
        body = json.dumps({"submission": base64.b64encode(payload).decode()}).encode()
        try:
            await asyncio.wait_for(self._post(body), self._timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            raise TransportError(f"sink unreachable: {type(exc).__name__}") from exc

    async def _post(self, body: bytes) -> None:
        reader, writer = await asyncio.open_connection(self._host, self._port, ssl=self._ssl)
        try:
            head = (f"{self._method} {self._path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode() + body)
            await writer.drain()
            response = await reader.readuntil(b"\r\n\r\n")
            if len(response) > MAX_RESPONSE_HEAD:
                raise TransportError("sink response head too large")
            status_line = response.split(b"\r\n", 1)[0].split()
            if len(status_line) < 2 or not status_line[1].isdigit():
                raise TransportError("sink sent a malformed HTTP response")
            status = int(status_line[1])
            if not 200 <= status < 300:
                raise TransportError(f"sink answered HTTP {status}")
        finally:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

__all__ = [
    "HttpSink",
    "ProviderSink",
    "QueueSink",
]
