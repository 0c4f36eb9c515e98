"""The client's typed event stream: ``async for event in client.events()``.

Events are frozen dataclasses:

- :class:`MessageReceived` — a message was decrypted and committed to the store (over
  the WebSocket or by ``pending()``), with the conversation it belongs to;
- :class:`IdentityChanged` — a contact's device presented another identity key than the
  one on record (committed before the event is emitted);
- :class:`KeysLow` — the server holds fewer one-time prekeys than the client keeps in
  stock (a top-up follows);
- :class:`ConnectionState` — the live connection is ``connecting``, ``connected`` or
  ``disconnected`` (with a reason, never an identifier);
- :class:`OutboxSent` — a message that waited in the outbox reached the server;
- :class:`OutboxFailed` — a message that waited in the outbox cannot be sent (the
  recipient is unknown, a safety number changed, ...): it left the outbox unsent;
- :class:`DeviceLinked` — a contact gained a device its identity approved;
- :class:`SentSynced` — another device of this account sent a message (now in history);
- :class:`GroupUpdated` — a group's members, name or admins changed, or this device
  joined or was removed (docs/groups.md);
- :class:`GroupMessagesMissing` — a member's group messages were not delivered (a gap
  in its sequence numbers), or one arrived after a later one (reordered);
- :class:`GroupStalled` — this device cannot follow a group any more (a commit
  withheld or refused, the read capability refused), told once while it lasts;
- :class:`MessageChanged` — a line was edited, deleted for everyone, reacted to,
  delivered, read, or expired (veil.client.conversations);
- :class:`TimerChanged` — someone set a conversation's disappearing timer;
- :class:`Typing` — someone started or stopped typing.

Each subscriber has its own bounded queue (:data:`QUEUE_SIZE`). A message is never
dropped: when a subscriber's queue is full, receiving waits for it (backpressure; the
envelope is acknowledged only after that, and the message is in the history anyway).
Other events are dropped for a subscriber whose queue is full (a warning is logged),
so a slow reader cannot stall sending. Only subscribers present when an event happens
receive it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("veil.client")

QUEUE_SIZE = 256


@dataclass(frozen=True)
class AttachmentInfo:
    """What a message says of one attachment (the key and token stay in the store):
    ``Client.download(conversation, message_id, index)`` fetches it."""

    name: str
    size: int
    media_type: str
    path: str | None = None        # where it was saved on this device, once downloaded


@dataclass(frozen=True)
class IncomingMessage:
    id: str
    sender: str                    # account id (hex)
    sender_username: str | None
    device: int
    text: str
    timestamp: int                 # sender's clock, ms
    identity_changed: bool = False  # warn loudly: the sender's key is not the verified one
    group: str | None = None       # a group message: the group id (64 hex), else None
    # "text", or "unsupported": a kind from a newer client (kept, shown as such).
    kind: str = "text"
    reply_to: str | None = None    # the id of the message this one answers
    attachments: tuple[AttachmentInfo, ...] = ()
    expires_at: int | None = None  # ms: deleted from this device then (disappearing)


@dataclass(frozen=True)
class MessageReceived:
    message: IncomingMessage
    # The key of ``history()``: the peer's account id (32 hex) for a 1:1 message, the
    # group id (64 hex) for a group message (``message.group``).
    conversation: str


@dataclass(frozen=True)
class IdentityChanged:
    account: str                   # the contact whose key changed
    verified_before: bool          # True: sending to it is refused until verified again


@dataclass(frozen=True)
class KeysLow:
    one_time_prekeys: int          # as the server counts them
    one_time_kem_prekeys: int


@dataclass(frozen=True)
class ConnectionState:
    state: Literal["connecting", "connected", "disconnected"]
    reason: str | None = None      # for "disconnected": why (a short code)


@dataclass(frozen=True)
class OutboxSent:
    message_id: str
    conversation: str              # the recipient account
    sealed: bool


@dataclass(frozen=True)
class OutboxFailed:
    message_id: str
    to: str                        # as typed
    code: str                      # the error's stable code
    reason: str                    # one line, for people


@dataclass(frozen=True)
class DeviceLinked:
    """A contact gained a device its identity approved ("bob linked a new device"):
    the safety number is the same, nothing to verify again."""

    account: str
    device_id: int


@dataclass(frozen=True)
class SentSynced:
    """One of this account's other devices sent a message; it is in the history as
    outgoing (docs/devices.md, sync)."""

    message_id: str
    conversation: str              # the recipient account
    text: str
    timestamp: int
    device: int                    # which of our devices sent it


@dataclass(frozen=True)
class GroupUpdated:
    """Something changed in a group (committed to the store before the event).

    ``change``: ``joined``, ``added``, ``removed``, ``left`` (a member left),
    ``removed_me`` (this device was removed), ``renamed``, ``admins``, or
    ``policy_violation`` (a non-admin's commit changed membership or metadata: merged,
    so the group does not fork, but its metadata change was ignored).
    ``by``: the account that made the change, when known; ``accounts``: whom it
    concerns."""

    group: str                     # group id, 64 hex
    change: str
    by: str | None = None
    accounts: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupMessagesMissing:
    """A member's group messages did not all arrive as sent (committed before the event).

    Each group message carries, inside the encryption, its sender device's sequence
    number (1, 2, 3, ... across epochs; docs/groups.md, "Missing messages"). ``missing``
    messages of ``sender``'s ``device`` were skipped: the server (or something on the
    way) dropped them, or they are still to come out of order. ``reordered``: a message
    numbered below one already received arrived now (``missing`` is 0 then)."""

    group: str                     # group id, 64 hex
    sender: str                    # account id
    device: int
    missing: int
    reordered: bool = False


StallReason = Literal["commit_withheld", "commit_refused", "capability_refused"]


@dataclass(frozen=True)
class GroupStalled:
    """This device cannot follow ``group`` past ``epoch`` (told once while it lasts).

    ``reason``: ``commit_withheld`` (the server says the epoch ended but serves no
    commit for it), ``commit_refused`` (the commit it served does not verify), or
    ``capability_refused`` (the mailbox refuses this device's read capability: the
    epoch expired, or the server changed it). Nothing is lost by waiting: the device
    stays in its epoch, posts are refused, and it catches up if the server serves the
    commit; otherwise it must be invited again."""

    group: str                     # group id, 64 hex
    epoch: int
    reason: StallReason


@dataclass(frozen=True)
class MessageChanged:
    """A line of a conversation changed (committed before the event): ``change`` is
    ``edited`` (``text`` is the new text), ``deleted`` (deleted for everyone: its text
    and attachments are gone), ``reaction`` (``account`` reacted ``emoji``, or took it
    back: ``emoji`` None), ``delivered`` or ``read`` (``account``'s receipt for one of
    our messages), or ``expired`` (its disappearing timer ran out: gone from here)."""

    conversation: str
    message_id: str
    change: str
    account: str | None = None     # who did it (None: expiry)
    text: str | None = None
    emoji: str | None = None


@dataclass(frozen=True)
class TimerChanged:
    """``account`` set the conversation's disappearing timer (0: off)."""

    conversation: str
    seconds: int
    account: str


@dataclass(frozen=True)
class Typing:
    """``account`` started or stopped typing (never stored)."""

    conversation: str
    account: str
    typing: bool


Event = (MessageReceived | IdentityChanged | KeysLow | ConnectionState | OutboxSent
         | OutboxFailed | DeviceLinked | SentSynced | GroupUpdated | GroupMessagesMissing
         | GroupStalled | MessageChanged | TimerChanged | Typing)


class _Failure:
    """The live connection stopped with an error (each reader raises it), or, without
    one, the client closed (each reader's iteration ends)."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class EventHub:
    """Fan-out of events to subscribers, each with a bounded queue."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self._size = size
        self._queues: list[asyncio.Queue[Event | _Failure]] = []
        # Queues that take no messages (Client.notices): nothing waits on them, so a
        # one-shot receive can collect warnings without reading every message twice.
        self._no_messages: set[int] = set()
        # Told of every message as it is emitted, subscribers or not (the client's
        # delivery receipts: veil.client.chat).
        self.on_message: Callable[[IncomingMessage], None] | None = None

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def emit(self, event: Event) -> None:
        """For events that may be lost to a slow reader (everything but messages)."""
        for queue in self._queues:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("dropped a %s event for a reader that is not keeping up",
                            type(event).__name__)

    async def emit_message(self, event: MessageReceived) -> None:
        """Waits until every subscriber has room: messages are not dropped."""
        if self.on_message is not None:
            self.on_message(event.message)
        for queue in list(self._queues):
            if id(queue) not in self._no_messages:
                await queue.put(event)

    def fail(self, error: BaseException | None) -> None:
        """Every reader raises ``error`` (or, with None, ends) once it gets here."""
        for queue in self._queues:
            while queue.full():            # the end matters more than what it displaces
                queue.get_nowait()
            queue.put_nowait(_Failure(error))

    def end(self) -> None:
        """The client closed: every reader's iteration ends."""
        self.fail(None)

    def add(self, messages: bool = True) -> asyncio.Queue[Event | _Failure]:
        queue: asyncio.Queue[Event | _Failure] = asyncio.Queue(self._size)
        self._queues.append(queue)
        if not messages:
            self._no_messages.add(id(queue))
        return queue

    def remove(self, queue: asyncio.Queue[Event | _Failure]) -> None:
        self._queues.remove(queue)
        self._no_messages.discard(id(queue))
        while not queue.empty():           # wakes a message emit waiting for room
            queue.get_nowait()

    @staticmethod
    def drain(queue: asyncio.Queue[Event | _Failure]) -> list[Event]:
        """The events waiting in ``queue`` now (the end of the client is not one)."""
        out: list[Event] = []
        while not queue.empty():
            item = queue.get_nowait()
            if not isinstance(item, _Failure):
                out.append(item)
        return out

    @staticmethod
    async def read(queue: asyncio.Queue[Event | _Failure]) -> AsyncIterator[Event]:
        while True:
            item = await queue.get()
            if isinstance(item, _Failure):
                if item.error is None:
                    return
                raise item.error
            yield item

__all__ = [
    "AttachmentInfo",
    "ConnectionState",
    "DeviceLinked",
    "Event",
    "EventHub",
    "GroupMessagesMissing",
    "GroupStalled",
    "GroupUpdated",
    "IdentityChanged",
    "IncomingMessage",
    "KeysLow",
    "MessageChanged",
    "MessageReceived",
    "OutboxFailed",
    "OutboxSent",
    "SentSynced",
    "StallReason",
    "TimerChanged",
    "Typing",
]
