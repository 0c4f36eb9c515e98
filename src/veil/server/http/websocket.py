"""WebSocket endpoints: live delivery to devices, and sends (sealed or authenticated).

Frames are JSON text; every frame a client sends is validated strictly. A malformed
frame (not JSON, unknown type or field, wrong type) closes *that* connection with 1008
and a reason; a frame over ``max_ws_frame_bytes`` closes it with 1009; binary frames
with 1003. Nothing a client sends on one socket affects another.

Device socket (``/v1/websocket``, device credentials on the upgrade request):

    server → {"type":"envelope","id":int,"ts":int,"envelope":base64}
    server → {"type":"keys_low","one_time_prekeys":int,"one_time_kem_prekeys":int}
    client → {"type":"ack","ids":[int, ...]}          (pushed here; then deleted)
    client → {"type":"send","req":int,"to":hex,"messages":[{"device_id":int,"envelope":b64}]}
    server → {"type":"sent","req":int,"messages":[{"device_id":int,"id":int,"ts":int}]}
    server → {"type":"error","req":int,"error":{"code":str,"message":str,"details"?:{}}}

Sealed socket (``/v1/websocket/sealed``, no credentials): only ``send`` frames, each with
the recipient's ``access_key`` (unless the recipient accepts sealed mail from anyone),
and the group frames below.

Group mailboxes, on both sockets (docs/groups.md):

    client → {"type":"group_subscribe","req":int,"group_id":b64,"epoch":int,"read":b64}
    server → {"type":"group_subscribed","req":int,"group_id":b64,"epoch":int,
              "current_epoch":int,"last_seq":int}
    server → {"type":"group_message","group_id":b64,"seq":int,"epoch":int,"ts":int,
              "commit":bool,"message":b64}
    server → {"type":"group_epoch","group_id":b64,"epoch":int}   (subscribe again)
    server → {"type":"group_dropped","group_id":b64,"epoch":int} (fell behind: fetch)
    client → {"type":"group_unsubscribe","group_id":b64}
    server → {"type":"mls_keys_low","one_time":int}  (device socket)
Held up to ``max_sealed_connections`` (a share of ``max_connections``) and closed after
``sealed_idle_timeout_s`` without a frame.

Flow control: a device socket holds at most ``push_window`` unacknowledged envelopes.
Queued envelopes are sent on connect in id order; live pushes go straight out; when the
window is full or the socket is congested the connection falls *behind* and later
refills from storage, so a slow reader never makes the server buffer without bound.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import struct
from functools import partial
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from msgspec import UNSET

from veil.protocol import InvalidFields, MalformedJson, encode
from veil.protocol import responses as rs
from veil.protocol.frames import (
    AckFrame,
    EnvelopeFrame,
    ErrorFrame,
    GroupDroppedFrame,
    GroupEpochFrame,
    GroupMessageFrame,
    GroupSubscribedFrame,
    GroupSubscribeFrame,
    GroupUnsubscribeFrame,
    KeysLowFrame,
    MlsKeysLowFrame,
    SendFrame,
    SentFrame,
)
from veil.server.bus import (
    DeviceRemoved,
    EnvelopeQueued,
    Event,
    GroupPosted,
    KeyPackagesLow,
    KeysLow,
)
from veil.server.encoding import log_id, parse_account_id
from veil.server.errors import (
    PayloadTooLarge,
    ServerError,
    TooManyConnections,
    TooManySubscriptions,
    ValidationFailed,
)
from veil.server.http.context import Context, error_detail
from veil.server.http.endpoint import Call
from veil.server.protection import events as ev
from veil.server.protection.connections import ConnectionGuard
from veil.server.protection.keyed import keyed_for
from veil.server.protection.policy import protection_of, request_key
from veil.server.services.messages import DeviceSender, Outgoing, SealedSender, Sender
from veil.server.storage.base import DeviceRecord, StoredEnvelope

log = logging.getLogger("veil.server.websocket")
CLOSE_REPLACED = 4000
CLOSE_REMOVED = 4001  # the device was unlinked (docs/devices.md)
_CONGESTED_BYTES = 256 * 1024
_TASKS: set[asyncio.Task[Any]] = set()
_SOCKET_NUMBERS = itertools.count(1)
SUBMIT_BATCH = 16  # send frames told to the detection layer as one event, at most
SUBMIT_FLUSH_S = 0.5  # and no later than this after the first of them
_NO_IDS: Any = frozenset()
_NO_GROUPS: Any = {}
_INTERNAL_ERROR = rs.ErrorDetail(code="internal_error", message="internal error")


def _text_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed, final text frame (RFC 6455 section 5.2).

    Written straight to the transport so several frames share one write; aiohttp also
    writes whole frames synchronously, so frames never interleave.
    """
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


# The frames the server sends (veil.protocol.frames). Services and the bus hand over
# typed events; this module is the only place that turns them, and replies, into JSON.
def _keys_low_frame(event: KeysLow | KeyPackagesLow) -> bytes:
    if isinstance(event, KeyPackagesLow):
        return encode(MlsKeysLowFrame(one_time=event.one_time))
    return encode(KeysLowFrame(one_time_prekeys=event.one_time_prekeys,
                               one_time_kem_prekeys=event.one_time_kem_prekeys))


def _group_frame(event: GroupPosted) -> bytes:
    """The push of one group message, encoded once for every subscribed socket."""
    if event.frame is None:
        event.frame = encode(GroupMessageFrame(
            group_id=event.group_id, seq=event.seq, epoch=event.epoch, ts=event.ts,
            commit=event.commit, message=event.message))
    return event.frame


def _error_frame(req: int, exc: ServerError) -> bytes:
    return encode(ErrorFrame(req=req, error=error_detail(exc)))


def _spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


class _Socket(abc.ABC):
    """What both kinds of socket share: strict frames and bounded concurrent sends."""

    __slots__ = ("c", "closed", "groups", "inflight", "last_send", "outbox",
                 "outbox_bytes", "slot", "socket_key", "source", "submits", "submits_timer",
                 "transport", "ws")

    def __init__(self, ws: web.WebSocketResponse, c: Context, request: web.Request) -> None:
        self.ws = ws
        self.c = c
        self.transport = request.transport
        self.closed = False
        self.inflight = 0
        self.slot: asyncio.Future[None] | None = None
        self.outbox: list[bytes] | None = None
        self.outbox_bytes = 0
        # The client's address key: send frames are rate-limited per socket and per
        # (source, recipient) (issue 13 §2).
        self.source = request_key(protection_of(c), request)  # interned
        self.socket_key = ""  # this socket's bucket key, drawn at its first limited send
        # (recipient, pair bucket key, recipient's keyed hash) of the last send frame: a
        # socket mostly writes to one person, and the keyed hash is an HMAC. A hash kept
        # across an audit-key rotation still verifies: the key before is kept (audit_keys).
        self.last_send: tuple[str, str, str] | None = None
        # Send frames to that recipient not yet told to the detection layer: counted
        # here and told as one event (SUBMIT_BATCH of them, a new recipient, after
        # SUBMIT_FLUSH_S, or at close), so the rules' work is not per frame.
        self.submits = 0
        self.submits_timer: asyncio.TimerHandle | None = None
        # Group subscriptions: group id -> the epoch whose read capability was proved.
        # Idle sockets share one empty dict until they subscribe (memory per connection).
        self.groups: dict[bytes, int] = _NO_GROUPS

    def send_text(self, text: bytes) -> None:
        """Queue a text frame; frames queued in one event-loop turn leave in one write.

        Coalescing matters: a send(2) costs more than building a frame, and a busy
        socket gets several replies or envelopes per group commit.
        """
        if self.closed:
            return
        if self.outbox is None:
            self.outbox = []
            asyncio.get_running_loop().call_soon(self._flush)
        self.outbox.append(text)
        self.outbox_bytes += len(text)

    def _flush(self) -> None:
        out, self.outbox = self.outbox, None
        self.outbox_bytes = 0
        transport = self.transport
        if not out or self.closed or self.ws.closed or transport is None \
                or transport.is_closing():
            return
        transport.write(b"".join(_text_frame(text) for text in out))

    def congested(self) -> bool:
        transport = self.transport
        buffered = self.outbox_bytes
        if transport is not None:
            buffered += transport.get_write_buffer_size()
        return buffered > _CONGESTED_BYTES

    async def reject(self, code: int, reason: str) -> None:
        self.closed = True
        await self.ws.close(code=code, message=reason.encode()[:120])

    def idle_timeout(self) -> float | None:
        """Seconds without a frame after which the socket is closed (None: never)."""
        return None

    async def serve(self) -> None:
        receive = self.ws.receive
        while True:
            try:
                msg = await receive(self.idle_timeout())
            except TimeoutError:
                await self.reject(WSCloseCode.OK, "idle timeout")
                break
            if msg.type == WSMsgType.TEXT:
                try:
                    frame = self.c.codec.decode_client_frame(msg.data)
                    if isinstance(frame, GroupSubscribeFrame | GroupUnsubscribeFrame):
                        await self.group_frame(frame)
                    else:
                        await self.on_frame(frame)
                except PayloadTooLarge as exc:
                    await self.reject(WSCloseCode.MESSAGE_TOO_BIG, exc.message)
                except (MalformedJson, InvalidFields, ValidationFailed) as exc:
                    protection_of(self.c).events.emit(ev.MALFORMED, self.source,
                                                  route="websocket")
                    await self.reject(WSCloseCode.POLICY_VIOLATION, exc.message)
                except Exception:
                    # A bug, not the client's doing: this socket only, and say so.
                    log.exception("websocket frame handling failed")
                    await self.reject(WSCloseCode.INTERNAL_ERROR, "internal error")
            elif msg.type == WSMsgType.BINARY:
                protection_of(self.c).events.emit(ev.MALFORMED, self.source,
                                              route="websocket")
                await self.reject(WSCloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
            else:
                break  # close, error: aiohttp answers pings and closes itself
            if self.closed:
                break

    def limit_send(self, to: str) -> None:
        """The send-frame buckets: per socket, per (source, recipient) and the source's
        share of the recipient's queue, and per account on a device socket. Raises
        RateLimited (answered with an error frame; the socket stays open)."""
        source = self.source
        protection = protection_of(self.c)
        limits = protection.limits
        if limits.is_exempt(source):
            return
        if not self.socket_key:
            self.socket_key = f"{source}#{next(_SOCKET_NUMBERS)}"  # never reused, unlike id()
        last = self.last_send
        if last is None or last[0] != to:
            self.flush_submits()
            last = self.last_send = (to, f"{source}>{to}", keyed_for(protection, to))
        pair = last[1]
        account = self.account_key()
        if account is None:
            limits.check("submit", address=source, socket=self.socket_key, pair=pair,
                         share=pair)
        else:
            limits.check("submit", address=source, socket=self.socket_key, pair=pair,
                         share=pair, account=account)
        self.submits += 1
        if self.submits >= SUBMIT_BATCH:
            self.flush_submits()
        elif self.submits_timer is None:
            self.submits_timer = asyncio.get_running_loop().call_later(
                SUBMIT_FLUSH_S, self.flush_submits)

    def flush_submits(self) -> None:
        """Tell the detection layer the send frames counted since the last time."""
        if self.submits_timer is not None:
            self.submits_timer.cancel()
            self.submits_timer = None
        count, self.submits = self.submits, 0
        if count and self.last_send is not None:
            protection_of(self.c).events.emit(ev.MESSAGE_SUBMIT, self.source, count=count,
                                              target=self.last_send[2])

    def account_key(self) -> str | None:
        return None

    @abc.abstractmethod
    async def on_frame(self, frame: SendFrame | AckFrame) -> None:
        """Handle one decoded frame; raise ValidationFailed to close the socket."""

    # ---- group subscriptions (services/groups.py; both kinds of socket) -------------
    async def group_frame(self, frame: GroupSubscribeFrame | GroupUnsubscribeFrame) -> None:
        if isinstance(frame, GroupUnsubscribeFrame):
            self._drop_group(frame.group_id)
            return
        group_id, epoch = frame.group_id, frame.epoch
        limit = self.c.config.max_group_subscriptions_per_connection
        if group_id not in self.groups and len(self.groups) >= limit:
            self.send_text(_error_frame(frame.req, TooManySubscriptions(
                f"a socket holds at most {limit} group subscriptions")))
            return
        groups = self.c.groups
        try:
            await groups.check_read(group_id, epoch, frame.read)
            if self.closed:
                return
            # Registered before the state is read again: a message committed before
            # that read is at most last_seq (the client fetches it), any later one is
            # pushed; a message can come both ways, never neither (clients dedupe by seq).
            self._keep_group(group_id, epoch)
            view = await groups.check_read(group_id, epoch, frame.read)
        except ServerError as exc:
            self._drop_group(group_id)
            self.send_text(_error_frame(frame.req, exc))
            return
        if view.epoch != epoch:
            self._drop_group(group_id)  # the epoch ended: nothing more comes for it
        self.send_text(encode(GroupSubscribedFrame(
            req=frame.req, group_id=group_id, epoch=epoch, current_epoch=view.epoch,
            last_seq=view.last_seq)))

    def _keep_group(self, group_id: bytes, epoch: int) -> None:
        if self.groups is _NO_GROUPS:
            self.groups = {}
        if group_id not in self.groups:
            self.c.bus.subscribe_group(group_id, self)
        self.groups[group_id] = epoch

    def _drop_group(self, group_id: bytes) -> None:
        if self.groups.pop(group_id, None) is not None:
            self.c.bus.unsubscribe_group(group_id, self)

    def drop_all_groups(self) -> None:
        for group_id in list(self.groups):
            self._drop_group(group_id)

    def deliver_group(self, event: GroupPosted) -> None:
        """A committed group message: pushed if it is of the epoch this socket proved.
        A congested socket loses the subscription (told in a small frame) instead of
        making the server buffer for it; the commit that ends the epoch ends it too."""
        if self.closed or self.groups.get(event.group_id) != event.epoch:
            return
        if self.congested():
            self._drop_group(event.group_id)
            self.send_text(encode(GroupDroppedFrame(group_id=event.group_id,
                                                    epoch=event.epoch)))
            return
        self.send_text(_group_frame(event))
        if event.commit:
            self._drop_group(event.group_id)
            self.send_text(encode(GroupEpochFrame(group_id=event.group_id,
                                                  epoch=event.epoch + 1)))

    async def wait_for_slot(self) -> None:
        """Stop reading this socket until fewer than the allowed database calls (sends
        and acknowledgements) are in flight: back-pressure, bounded work per socket."""
        while self.inflight >= self.c.config.max_inflight_sends_per_connection:
            self.slot = asyncio.get_running_loop().create_future()
            await self.slot

    def release_slot(self) -> None:
        self.inflight -= 1
        if self.slot is not None and not self.slot.done():
            self.slot.set_result(None)

    async def start_send(self, frame: SendFrame, sender: Sender | None) -> None:
        """Submit a send frame; the reply leaves from a callback once the envelopes are
        durable. ``sender=None`` means sealed (the frame's access key)."""
        if sender is None:
            sender = SealedSender(None if frame.access_key is UNSET else frame.access_key)
        items = [Outgoing(m.device_id, m.envelope) for m in frame.messages]
        if self.congested():
            # Sending without reading the replies would make us buffer without bound.
            raise ValidationFailed("too many unread replies; read the socket")
        await self.wait_for_slot()
        try:
            recipient = parse_account_id(frame.to)
            self.limit_send(recipient.hex())
            stored = self.c.messages.submit_nowait(recipient, items, sender)
        except ServerError as exc:
            self.send_text(_error_frame(frame.req, exc))
            return
        self.inflight += 1
        stored.add_done_callback(partial(self._sent, frame.req))

    def _sent(self, req: int, stored: asyncio.Future[list[StoredEnvelope]]) -> None:
        """Reply once the envelopes are durable (no task per send: a callback)."""
        self.release_slot()
        if stored.cancelled():
            return
        exc = stored.exception()
        if exc is None:
            self.send_text(encode(SentFrame(req=req, messages=[
                rs.StoredEnvelope(device_id=e.device_id, id=e.id, ts=e.ts)
                for e in stored.result()
            ])))
        elif isinstance(exc, ServerError):
            self.send_text(_error_frame(req, exc))
        else:
            log.error("send over websocket failed: %s", type(exc).__name__)
            self.send_text(encode(ErrorFrame(req=req, error=_INTERNAL_ERROR)))


class DeviceConnection(_Socket):
    """The socket of one authenticated device; the bus sink for that device."""

    __slots__ = ("account_id", "acked_while_fetching", "behind", "device_id", "refilling",
                 "sent")

    def __init__(
        self, ws: web.WebSocketResponse, c: Context, request: web.Request, device: DeviceRecord
    ) -> None:
        super().__init__(ws, c, request)
        self.account_id = device.account_id
        self.device_id = device.device_id
        # Pushed, not yet deleted. Idle sockets share one empty set (memory per connection).
        self.sent: set[int] = _NO_IDS
        self.behind = True  # storage may hold envelopes not yet pushed
        self.refilling = False
        self.acked_while_fetching: set[int] | None = None

    async def on_frame(self, frame: SendFrame | AckFrame) -> None:
        if isinstance(frame, AckFrame):
            # This socket acknowledges what it pushed; anything else would be database
            # work a client could ask for without limit (ids that were never pushed
            # here, or one id a thousand times).
            sent = self.sent
            ids = [i for i in dict.fromkeys(frame.ids) if i in sent]
            if not ids:
                return
            await self.wait_for_slot()
            fut = self.c.messages.acknowledge_nowait(self.account_id, self.device_id, ids)
            self.inflight += 1
            fut.add_done_callback(partial(self._acked, ids))
        else:
            if frame.access_key is not UNSET:
                raise ValidationFailed("access_key belongs on the sealed socket")
            await self.start_send(frame, DeviceSender(self.account_id, self.device_id))

    def account_key(self) -> str | None:
        return self.account_id.hex()

    def _mark_sent(self, id_: int) -> None:
        if self.sent is _NO_IDS:
            self.sent = set()
        self.sent.add(id_)

    def _acked(self, ids: list[int], fut: asyncio.Future[int]) -> None:
        self.release_slot()
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("acknowledgement of %s failed", log_id(self.account_id))
            return  # keep them in `sent`: they are redelivered on the next connection
        if self.sent:
            self.sent.difference_update(ids)
        if self.acked_while_fetching is not None:
            self.acked_while_fetching.update(ids)
        if self.behind and not self.refilling and not self.closed:
            _spawn(self.refill())

    def deliver(self, event: Event) -> None:
        if self.closed:
            return
        if isinstance(event, DeviceRemoved):
            self.closed = True
            _spawn(self.ws.close(code=CLOSE_REMOVED, message=b"this device was unlinked"))
            return
        if not isinstance(event, EnvelopeQueued):
            # Notices are advisory and anyone can trigger some (keys_low by claiming
            # keys): never let them pile up behind a slow reader.
            if not self.congested():
                self.send_text(_keys_low_frame(event))
            return
        id_ = event.id
        if id_ in self.sent:
            return
        if (
            self.behind or self.refilling
            or len(self.sent) >= self.c.config.push_window
            or self.congested()
        ):
            self.behind = True
            return
        self._mark_sent(id_)
        self.send_text(encode(EnvelopeFrame(id=id_, ts=event.ts, envelope=event.envelope)))

    def replaced(self) -> None:
        self.closed = True
        _spawn(self.ws.close(code=CLOSE_REPLACED, message=b"replaced by a newer connection"))

    async def refill(self) -> None:
        """Push queued envelopes from storage, oldest first, up to the window.

        The storage snapshot may be older than acknowledgements that complete while it is
        read; those ids are remembered for the duration of the read and never re-sent.
        """
        if self.refilling:
            return
        self.refilling = True
        try:
            window = self.c.config.push_window
            while self.behind and not self.closed:
                if len(self.sent) >= window:
                    return  # acknowledgements restart the refill
                self.behind = False
                acked: set[int] = set()
                self.acked_while_fetching = acked
                try:
                    rows = await self.c.storage.fetch_envelopes(
                        self.account_id, self.device_id, window
                    )
                finally:
                    self.acked_while_fetching = None
                fresh = [r for r in rows if r.id not in self.sent and r.id not in acked]
                room = window - len(self.sent)
                pushed = 0
                for row in fresh[:room]:
                    if self.congested():
                        break  # a reader this slow gets the rest after its next ack
                    self._mark_sent(row.id)
                    self.send_text(encode(EnvelopeFrame(id=row.id, ts=row.ts, envelope=row.body)))
                    pushed += 1
                if len(rows) >= window or len(fresh) > pushed:
                    self.behind = True  # more than fitted: continue when acks free room
                if pushed < min(room, len(fresh)):
                    return  # congested: the next acknowledgement resumes
        finally:
            self.refilling = False


class SealedConnection(_Socket):
    """A socket without identity: sealed sends authorised per frame by access keys."""

    __slots__ = ()

    def idle_timeout(self) -> float | None:
        # Nobody is behind a sealed socket the server could name: an idle one only
        # holds a slot. That holds for one listening to groups too — anyone can make a
        # group and prove its capability, so a subscription must not keep a slot
        # forever: a listener sends a frame (a group_subscribe again) within the
        # timeout, or is closed and reconnects.
        return self.c.config.sealed_idle_timeout_s

    async def on_frame(self, frame: SendFrame | AckFrame) -> None:
        if not isinstance(frame, SendFrame):
            raise ValidationFailed("the sealed socket accepts only 'send' frames")
        await self.start_send(frame, None)


class _WebSocket(web.WebSocketResponse):
    """aiohttp closes oversized frames with 1009 but no reason; give it one."""

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message:
            message = b"frame larger than the server accepts"
        return await super().close(code=code, message=message, drain=drain)


def _prepare(request: web.Request, c: Context, *, sealed: bool = False) -> web.WebSocketResponse:
    if c.connections >= c.config.max_connections:
        raise TooManyConnections("the server holds its maximum number of connections")
    if sealed and c.sealed_connections >= c.config.max_sealed_connections:
        # Sealed sockets need no credentials: their own, smaller cap keeps strangers
        # from taking the slots of registered devices.
        raise TooManyConnections("the server holds its maximum number of sealed connections")
    # Device sockets are pinged (a vanished peer is closed); sealed ones have their
    # idle timeout and lifetime instead.
    return _WebSocket(
        max_msg_size=c.config.max_ws_frame_bytes, compress=False, autoping=True,
        heartbeat=None if sealed else c.config.network.websocket_heartbeat_s,
    )


async def _open_device_socket(
    request: web.Request, c: Context, device: DeviceRecord
) -> DeviceConnection:
    """Upgrade, subscribe and push what is queued. A separate coroutine so that none of
    its temporaries stay alive in the frame of an idle connection."""
    ws = _prepare(request, c)
    await ws.prepare(request)
    conn = DeviceConnection(ws, c, request, device)
    c.connections += 1
    try:
        await c.bus.subscribe((conn.account_id, conn.device_id), conn)
        notice = (await c.keys.status(conn.account_id, conn.device_id)).notice()
        if notice is not None:
            conn.send_text(_keys_low_frame(notice))
        mls_notice = (await c.key_packages.status(conn.account_id, conn.device_id)).notice()
        if mls_notice is not None:
            conn.send_text(_keys_low_frame(mls_notice))
        await conn.refill()
    except BaseException:
        await _close_device_socket(c, conn)
        raise
    return conn


async def _close_device_socket(c: Context, conn: DeviceConnection) -> None:
    conn.closed = True
    conn.flush_submits()
    conn.drop_all_groups()
    c.connections -= 1
    await c.bus.unsubscribe((conn.account_id, conn.device_id), conn)


def _guard(c: Context) -> ConnectionGuard | None:
    """The network layer's per-address WebSocket caps (absent in bare test contexts)."""
    return getattr(getattr(c, "protection", None), "connections", None)


async def device_socket(call: Call) -> web.WebSocketResponse:
    """The device socket; its route authenticates the upgrade (device credentials)."""
    c = call.c
    guard = _guard(c)
    # Per address (issue 13 §1): TooManyConnections over the cap, before the upgrade.
    key = guard.websocket_opened(call.request, False) if guard is not None else ""
    try:
        conn = await _open_device_socket(call.request, c, call.me)
        # This frame lives as long as the connection: keep only what serving needs.
        del call
        log.debug("device %s.%d connected", log_id(conn.account_id), conn.device_id)
        try:
            await conn.serve()
        finally:
            await _close_device_socket(c, conn)
            log.debug("device %s.%d disconnected", log_id(conn.account_id), conn.device_id)
    finally:
        if guard is not None:
            guard.websocket_closed(key, False)
    return conn.ws


async def sealed_socket(call: Call) -> web.WebSocketResponse:
    c, request = call.c, call.request
    del call  # this frame lives as long as the connection
    guard = _guard(c)
    key = guard.websocket_opened(request, True) if guard is not None else ""
    try:
        ws = _prepare(request, c, sealed=True)
        await ws.prepare(request)
        conn = SealedConnection(ws, c, request)
        c.connections += 1
        c.sealed_connections += 1
        # Closed after sealed_max_lifetime_s however busy: one client sending a frame
        # now and then must not keep its slots for ever (issue 13 §1).
        expiry = None if guard is None else guard.expire_sealed(
            key, lambda: _spawn(conn.reject(WSCloseCode.OK, "sealed socket lifetime reached")))
        try:
            await conn.serve()
        finally:
            if expiry is not None:
                expiry.cancel()
            conn.closed = True
            conn.flush_submits()
            conn.drop_all_groups()
            c.connections -= 1
            c.sealed_connections -= 1
    finally:
        if guard is not None:
            guard.websocket_closed(key, True)
    return ws

__all__ = [
    "DeviceConnection",
    "device_socket",
    "sealed_socket",
]
