"""The live connection: a WebSocket to the server, kept up with exponential backoff.

While connected it hands each envelope to the inbox and acknowledges it after the
inbox committed it (a message the application has not read yet is in the store and in
its event queue: if the process stops before the acknowledgement, the server delivers
it again and the seen id catches it). It runs prekey maintenance on connect, on a
timer and when the server pushes ``keys_low``, and reports ``ConnectionState`` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from veil.client.device import Context
from veil.client.errors import ServerUnreachable
from veil.client.events import ConnectionState
from veil.client.inbox import Inbox
from veil.client.prekey_store import PrekeyMaintenance
from veil.client.transport import WebSocket
from veil.protocol import ProtocolError, decode_server_frame, to_builtins
from veil.protocol.frames import (
    AckFrame,
    EnvelopeFrame,
    GroupDroppedFrame,
    GroupEpochFrame,
    GroupMessageFrame,
    GroupSubscribedFrame,
    KeysLowFrame,
    MlsKeysLowFrame,
    ServerFrame,
)

GROUP_FRAMES = (GroupSubscribedFrame, GroupMessageFrame, GroupEpochFrame, GroupDroppedFrame)


class GroupFrames(Protocol):
    """What the connection needs of the groups component (veil.client.groups)."""

    def attach(self, ws: WebSocket) -> None: ...

    def detach(self) -> None: ...

    def on_frame(self, frame: ServerFrame) -> None: ...

    async def key_packages_low(self) -> None: ...

log = logging.getLogger("veil.client")

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_CONNECTION_S = 5.0        # a socket that lived shorter does not reset the backoff


class Backoff:
    """Exponential delays with jitter (0.5 s → 30 s): the one reconnect policy."""

    def __init__(self, start_s: float = BACKOFF_START_S, max_s: float = BACKOFF_MAX_S) -> None:
        self._start, self._max = start_s, max_s
        self.delay = start_s

    def reset(self) -> None:
        self.delay = self._start

    async def wait(self) -> None:
        await asyncio.sleep(self.delay * (0.5 + random.random()))   # noqa: S311 - jitter
        self.delay = min(self.delay * 2, self._max)


class Connection:
    def __init__(self, ctx: Context, inbox: Inbox, prekeys: PrekeyMaintenance,
                 housekeeping: Callable[[], Awaitable[None]],
                 groups: GroupFrames | None = None) -> None:
        self._ctx = ctx
        self._inbox = inbox
        self._prekeys = prekeys
        self._housekeeping = housekeeping
        self._groups = groups

    async def run(self) -> None:
        """Until cancelled. A refused connection (:class:`ServerRejected`) ends it."""
        hub, backoff = self._ctx.hub, Backoff()
        while True:
            hub.emit(ConnectionState("connecting"))
            started = time.monotonic()
            try:
                ws = await self._ctx.api.websocket()
            except ServerUnreachable as exc:
                hub.emit(ConnectionState("disconnected", exc.code))
                await backoff.wait()
                continue
            hub.emit(ConnectionState("connected"))
            try:
                reason = await self._serve(ws)
            finally:
                await ws.close()
            hub.emit(ConnectionState("disconnected", reason))
            if time.monotonic() - started >= STABLE_CONNECTION_S:
                backoff.reset()
            else:
                # Also when a server keeps accepting and dropping the connection.
                await backoff.wait()

    async def _serve(self, ws: WebSocket) -> str:
        """Frames until the socket ends; returns why it ended."""
        timer: asyncio.Task[None] | None = None
        try:
            await self._housekeeping()
            timer = asyncio.create_task(self._prekeys.timer())
            if self._groups is not None:
                self._groups.attach(ws)      # subscribes every group, catches up
            while True:
                text = await ws.receive_text()
                if text is None:
                    return "closed"
                try:
                    frame = decode_server_frame(text)
                except ProtocolError:
                    log.warning("the server sent a malformed frame; reconnecting")
                    return "malformed_frame"
                if self._prekeys.due():
                    await self._prekeys.run_quietly()
                if isinstance(frame, EnvelopeFrame):
                    await self._inbox.handle(frame.envelope, frame.ts)
                    try:
                        await ws.send_json(to_builtins(AckFrame(ids=[frame.id])))
                    except (ConnectionError, OSError):
                        return "ack_failed"    # redelivered after the reconnect, then seen
                elif isinstance(frame, KeysLowFrame):
                    await self._prekeys.run_quietly()
                elif self._groups is not None and isinstance(frame, GROUP_FRAMES):
                    self._groups.on_frame(frame)
                elif self._groups is not None and isinstance(frame, MlsKeysLowFrame):
                    await self._groups.key_packages_low()
        finally:
            if self._groups is not None:
                self._groups.detach()
            if timer is not None:
                timer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await timer

__all__ = [
    "Backoff",
    "Connection",
]
