"""Client homes made without a server, a clock tests move by hand, and envelopes as a
peer (or a hostile server holding a server key) would write them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from veil.client import Client, prekey_store
from veil.client.content import Content
from veil.client.records import SelfRecord
from veil.client.store import FAST, Store
from veil.core import keys, sealed, session
from veil.core.prekeys import PreKeys

T0 = 1_760_000_000_000
DAY_MS = 24 * 3600 * 1000


class FakeClock:
    """Milliseconds since the epoch that move only when the test says so."""

    def __init__(self, start: int = T0) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@dataclass
class OfflineHome:
    client: Client
    root: sealed.TrustRoot
    server_key: sealed.ServerKey


def offline_client(home: Path, *, clock: FakeClock | None = None, one_time: int = 100,
                   server_url: str = "http://127.0.0.1:9") -> OfflineHome:
    """A registered-looking home (no server contacted): its own root and server key."""
    clock = clock or FakeClock()
    identity = keys.IdentityKeyPair.generate()
    prekeys = PreKeys.generate(identity, now_ms=clock(), one_time=one_time)
    root = sealed.TrustRoot.generate()
    server_key = sealed.ServerKey.generate(root, 1, clock() + 3650 * DAY_MS)
    store = Store.create(home, "pw", FAST)
    me = SelfRecord(server_url, os.urandom(16).hex(), 1, os.urandom(32), None,
                    os.urandom(32), 1, root.public)
    with store.transaction():
        store.put("self", "me", me.encode())
        store.put("self", "identity", identity.to_bytes())
        prekey_store.store_new(store, prekeys)
    return OfflineHome(Client(store, me, identity, clock=clock), root, server_key)


def seal_from(sender: keys.IdentityKeyPair, account: bytes, server_key: sealed.ServerKey,
              recipient: keys.IdentityPublicKey, message: bytes, expires_ms: int) -> bytes:
    """A sealed envelope with a sender certificate ``server_key`` issued for ``account``."""
    cert = server_key.issue(account, 1, sender.public, expires_ms)
    return sealed.seal(sender, cert, recipient, message)


def initial_message(sender: keys.IdentityKeyPair, bundle: keys.PreKeyBundle, text: str,
                    now_ms: int) -> tuple[session.Session, bytes]:
    content = Content.text_message(text, now_ms, os.urandom(32)).encode()
    return session.initiate(sender, bundle, content)
