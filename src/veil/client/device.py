"""This device's own state, and what every component of the client shares.

:class:`DeviceState` keeps the :class:`~veil.client.records.SelfRecord` (which holds the
device token) private: the application sees :class:`DeviceInfo`, a read-only view
without the token or the profile key. :class:`Context` is what the components
(directory, outbox, inbox, prekeys, connection) are built from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from veil.client import contacts, trust
from veil.client.api import Api
from veil.client.events import EventHub, IdentityChanged
from veil.client.records import SelfRecord
from veil.client.store import Store
from veil.core import keys

Clock = Callable[[], int]


@dataclass(frozen=True)
class DeviceInfo:
    """Who this device is, for display (``veil id``): nothing secret."""

    server: str
    account: str
    device_id: int
    username: str | None
    trust_root: bytes
    min_server_key_id: int
    tls_pin: str = ""          # the server's pinned TLS certificate (hex), "" for none


class DeviceState:
    def __init__(self, store: Store, record: SelfRecord) -> None:
        self._store = store
        self._record = record

    @property
    def record(self) -> SelfRecord:
        """The full record, token included: for the client's components only."""
        return self._record

    @property
    def info(self) -> DeviceInfo:
        r = self._record
        return DeviceInfo(r.server, r.account, r.device_id, r.username, r.trust_root,
                          r.min_server_key_id, r.tls_pin)

    def min_server_key_id(self) -> int:
        return trust.min_server_key_id(self._store, self._record)

    def learn_statement(self, data: bytes) -> None:
        self._record = trust.learn_statement(self._store, self._record, data)


@dataclass
class Context:
    store: Store
    identity: keys.IdentityKeyPair
    api: Api
    clock: Clock
    device: DeviceState
    hub: EventHub
    identity_listener: Callable[[str], None] | None = None

    def announce(self, changed: bool, account: str) -> None:
        """Tell the application about an identity change, after it was committed."""
        if not changed:
            return
        contact = contacts.get(self.store, account)
        self.hub.emit(IdentityChanged(account, contact is not None
                                      and contact.identity_changed))
        if self.identity_listener is not None:
            self.identity_listener(account)

__all__ = [
    "Clock",
    "Context",
    "DeviceInfo",
    "DeviceState",
]
