"""The fan-out bus: how "a new envelope for device D" reaches the connection holding D.

Services publish to a device key; connection handlers subscribe a sink for the device
they serve. The in-process bus (default, one server process) calls the sinks directly;
a Redis bus for several server nodes implements the same interface later. A publish to
a device with no subscriber is a no-op: the envelope is in storage and is delivered when
the device connects.

``publish`` and the sink methods never block (a bus that talks to a network hands the
event to a background writer): a publisher is typically a storage callback on the hot
path, and a slow recipient must never stall a sender.
"""

from __future__ import annotations

import abc
from typing import Any, Protocol

DeviceKey = tuple[bytes, int]


class Sink(Protocol):
    def deliver(self, event: dict[str, Any]) -> None:
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
    def publish(self, key: DeviceKey, event: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def connected(self) -> int:
        """Number of subscribed devices on this node."""


class InProcessBus(Bus):
    def __init__(self) -> None:
        self._sinks: dict[DeviceKey, Sink] = {}

    async def subscribe(self, key: DeviceKey, sink: Sink) -> None:
        old = self._sinks.get(key)
        self._sinks[key] = sink
        if old is not None and old is not sink:
            old.replaced()

    async def unsubscribe(self, key: DeviceKey, sink: Sink) -> None:
        if self._sinks.get(key) is sink:
            del self._sinks[key]

    def publish(self, key: DeviceKey, event: dict[str, Any]) -> None:
        sink = self._sinks.get(key)
        if sink is not None:
            sink.deliver(event)

    def connected(self) -> int:
        return len(self._sinks)
