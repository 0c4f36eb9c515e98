"""The fan-out bus: how "a new envelope for device D" reaches the connection holding D.

Services publish to a device key; connection handlers subscribe a sink for the device
they serve. The in-process bus (default, one server process) calls the sinks directly;
a Redis bus for several server nodes implements the same interface later. A publish to
a device with no subscriber is a no-op: the envelope is in storage and is delivered when
the device connects.

``publish`` and the sink methods never block (a bus that talks to a network hands the
event to a background writer): a publisher is typically a storage callback on the hot
path, and a slow recipient must never stall a sender.

Events are typed values, not wire frames: services say what happened, and only the
WebSocket layer (``http/websocket.py``) decides how a device hears of it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Protocol

DeviceKey = tuple[bytes, int]


@dataclass(slots=True)  # not frozen: that construction costs 3x, once per envelope
class EnvelopeQueued:
    """An envelope committed to the device's queue (treat as immutable)."""

    id: int
    ts: int
    envelope: bytes


@dataclass(frozen=True, slots=True)
class KeysLow:
    """The device's one-time prekey stocks ran low (advisory: it should upload more)."""

    one_time_prekeys: int
    one_time_kem_prekeys: int


@dataclass(frozen=True, slots=True)
class KeyPackagesLow:
    """The device's one-time MLS KeyPackages ran low (advisory: it should upload more)."""

    one_time: int


@dataclass(frozen=True, slots=True)
class DeviceRemoved:
    """The device was unlinked: its credentials are gone, its connection must close."""


Event = EnvelopeQueued | KeysLow | KeyPackagesLow | DeviceRemoved


@dataclass(slots=True)
class GroupPosted:
    """A message committed to a group mailbox (treat as immutable). ``frame`` caches
    the encoded push, built once however many sockets subscribe."""

    group_id: bytes
    seq: int
    epoch: int
    ts: int
    commit: bool
    message: bytes
    frame: bytes | None = None


class GroupSink(Protocol):
    def deliver_group(self, event: GroupPosted) -> None:
        """Push one committed group message (the sink filters by the epoch it proved)."""


class Sink(Protocol):
    def deliver(self, event: Event) -> None:
        """Push one event (already committed to storage) to the connected device."""

    def replaced(self) -> None:
        """Another connection took over this device."""


class Bus(abc.ABC):
    @abc.abstractmethod
    async def subscribe(self, key: DeviceKey, sink: Sink) -> None:
        """Route ``key``'s events to ``sink``; a previous sink of the key is replaced."""

    @abc.abstractmethod
    async def unsubscribe(self, key: DeviceKey, sink: Sink) -> None:
        """Stop routing to ``sink`` (no-op if it was already replaced)."""

    @abc.abstractmethod
    def publish(self, key: DeviceKey, event: Event) -> None: ...

    @abc.abstractmethod
    def connected(self) -> int:
        """Number of subscribed devices on this node."""

    # Groups: many sinks per key (every subscribed socket of the group's members).
    @abc.abstractmethod
    def subscribe_group(self, group_id: bytes, sink: GroupSink) -> None: ...

    @abc.abstractmethod
    def unsubscribe_group(self, group_id: bytes, sink: GroupSink) -> None:
        """No-op if ``sink`` is not subscribed."""

    @abc.abstractmethod
    def publish_group(self, event: GroupPosted) -> None: ...

    @abc.abstractmethod
    def group_subscribers(self, group_id: bytes) -> int: ...


class InProcessBus(Bus):
    def __init__(self) -> None:
        self._sinks: dict[DeviceKey, Sink] = {}
        self._groups: dict[bytes, dict[GroupSink, None]] = {}

    async def subscribe(self, key: DeviceKey, sink: Sink) -> None:
        old = self._sinks.get(key)
        self._sinks[key] = sink
        if old is not None and old is not sink:
            old.replaced()

    async def unsubscribe(self, key: DeviceKey, sink: Sink) -> None:
        if self._sinks.get(key) is sink:
            del self._sinks[key]

    def publish(self, key: DeviceKey, event: Event) -> None:
        sink = self._sinks.get(key)
        if sink is not None:
            sink.deliver(event)

    def connected(self) -> int:
        return len(self._sinks)

    def subscribe_group(self, group_id: bytes, sink: GroupSink) -> None:
        self._groups.setdefault(group_id, {})[sink] = None

    def unsubscribe_group(self, group_id: bytes, sink: GroupSink) -> None:
        sinks = self._groups.get(group_id)
        if sinks is not None:
            sinks.pop(sink, None)
            if not sinks:
                del self._groups[group_id]

    def publish_group(self, event: GroupPosted) -> None:
        sinks = self._groups.get(event.group_id)
        if sinks:
            for sink in list(sinks):  # a sink may unsubscribe while delivering
                sink.deliver_group(event)

    def group_subscribers(self, group_id: bytes) -> int:
        return len(self._groups.get(group_id, ()))

__all__ = [
    "Bus",
    "DeviceRemoved",
    "EnvelopeQueued",
    "Event",
    "GroupPosted",
    "GroupSink",
    "InProcessBus",
    "KeyPackagesLow",
    "KeysLow",
]
