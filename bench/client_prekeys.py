"""Per-envelope receive cost of the client against its one-time prekey stock (issue 8,
item 9).

Under mass claiming a device piles up to 10,000 one-time keys of each kind. The old
layout kept them (and the replay memory) in one store record that was read and parsed
on every envelope. The per-record layout (``veil.client.prekey_store``) reads nothing
of it for a ratchet message and a few records for an initial message.

For each stock (100 and 10,000; ``--quick``: 100 and 1,000) a home is built offline
and ``Client._decrypt_and_store`` — the whole receive path: open the sealed envelope,
decrypt, commit session, message and history — is timed on prepared envelopes:

- ``ratchet``: the next message of an established session;
- ``initial``: a new sender's first message, consuming one one-time key of each kind.

In the same run the old single-blob layout is measured on the same homes: the same
path with the prekeys read from, parsed from and (for initial messages) written back
to one record holding everything, as the client did before. Envelopes of the two
layouts alternate, so load on a shared machine hits both alike. One JSON line: medians
in milliseconds per stock and layout, and ``ratio`` = median at the large stock over
median at the small one (1.0: independent of the stock).

Usage: ``python bench/client_prekeys.py [--quick] [--envelopes N]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.client.helpers import (
    DAY_MS,
    FakeClock,
    OfflineHome,
    initial_message,
    offline_client,
    seal_from,
)
from veil.client import Client, contacts, prekey_store, sessions
from veil.client.content import Content
from veil.client.records import Contact, HistoryEntry
from veil.client.store import Store
from veil.core import keys, sealed
from veil.core.encoding import Writer
from veil.core.prekeys import PreKeys, decode_kem, decode_one_time

_INLINE = ("self", "prekeys_inline")


def _old_receive(client: Client, envelope: bytes, server_ts: int) -> str:
    """The receive path as it was with the single blob (everything else the same)."""
    store = client._store
    now = client._clock()
    opened = sealed.open_envelope(client._identity, envelope, client.me.trust_root,
                                  min(server_ts, now))
    account, device = opened.certificate.account_id.hex(), opened.certificate.device_id
    with store.transaction():
        contact = contacts.get(store, account) or Contact(account)
        raw = store.get(*_INLINE)
        assert raw is not None
        prekeys = PreKeys.from_bytes(raw, verify=False)
        held, plaintext, used = sessions.decrypt(
            sessions.load(store, account, device), opened.content, client._identity,
            lambda: prekeys, opened.sender_identity, now)
        content = Content.decode(plaintext)
        contacts.note_identity(contact, opened.sender_identity)
        sessions.save(store, account, device, held)
        if used is not None:
            store.put(*_INLINE, prekeys.to_bytes())
        contacts.save(store, contact)
        store.put("seen", f"{account}:{content.id}", b"")
        store.append_history(account, HistoryEntry(content.id, "in", account, content.text,
                                                   content.timestamp, device).encode())
    return content.text


def _home(root: Path, stock: int) -> OfflineHome:
    """A home with ``stock`` one-time keys per kind, per record, and the same keys as
    one inline blob (the old layout) in another record of the same store."""
    home = offline_client(root / f"stock{stock}", clock=FakeClock(), one_time=0)
    store, identity = home.client._store, home.client._identity
    with store.transaction():
        pre = prekey_store.load(store)
        while len(pre.one_time) < stock:
            pre.add_one_time(identity, min(500, stock - len(pre.one_time)))
        prekey_store.save(store, pre)
        small = pre.to_bytes()
        one_time, one_time_kem = dict(pre.one_time.items()), dict(pre.one_time_kem.items())
    # The old layout: the same small part, then every table inline (format of
    # veil.core.prekeys with its "inline" flag set), as one record.
    assert small[-1:] == b"\x00"
    w = Writer().raw(small[:-1]).u8(1)
    for mapping in (one_time, one_time_kem):
        w.u32(len(mapping))
        for key_id, value in mapping.items():
            w.u32(key_id).var(value)
    blob = w.u32(0).finish()
    assert len(PreKeys.from_bytes(blob, verify=False).one_time) == stock
    store.put(*_INLINE, blob)
    return home


def _bundles(client: Client, skip: int, count: int) -> list[keys.PreKeyBundle]:
    with client._store.transaction():
        pre = prekey_store.load(client._store)
        opks = itertools.islice(pre.one_time.values(), skip, skip + count)
        kems = itertools.islice(pre.one_time_kem.values(), skip, skip + count)
        return [keys.PreKeyBundle(pre.identity, pre.current_signed_prekey(),
                                  pre.current_last_resort(), decode_one_time(opk)[1],
                                  decode_kem(kem, pre.identity)[1])
                for opk, kem in zip(opks, kems, strict=True)]


def _conversation(home: OfflineHome, receive: Callable[[bytes, int], object], count: int
                  ) -> list[bytes]:
    """A sender's session with the home, answered once (so the sender's messages are
    plain ratchet messages), then ``count`` more envelopes of it."""
    client, clock = home.client, home.client._clock
    sender, account = keys.IdentityKeyPair.generate(), os.urandom(16)
    bundle = _bundles(client, 0, 1)[0]
    held, first = initial_message(sender, bundle, "hello", clock())
    receive(seal_from(sender, account, home.server_key, client.identity, first,
                      clock() + DAY_MS), clock())
    with client._store.transaction():
        bob_side = sessions.load(client._store, account.hex(), 1)
        reply = bob_side[0].encrypt(b"reply")
        sessions.save(client._store, account.hex(), 1, bob_side)
    held.decrypt(reply)
    return [seal_from(sender, account, home.server_key, client.identity,
                      held.encrypt(Content(os.urandom(16).hex(), clock(), f"m{i}").encode()),
                      clock() + DAY_MS) for i in range(count)]


def _initials(home: OfflineHome, bundles: list[keys.PreKeyBundle]) -> list[bytes]:
    client, clock = home.client, home.client._clock
    out = []
    for bundle in bundles:
        sender = keys.IdentityKeyPair.generate()
        _, message = initial_message(sender, bundle, "first", clock())
        out.append(seal_from(sender, os.urandom(16), home.server_key, client.identity,
                             message, clock() + DAY_MS))
    return out


class _Run:
    """One home and its prepared envelopes: per kind, (per-record, single-blob) lists."""

    def __init__(self, root: Path, stock: int, count: int) -> None:
        started = time.perf_counter()
        self.home = home = _home(root, stock)
        self.build_s = time.perf_counter() - started
        self.stock, self.root = stock, root
        client = home.client
        self.sizes = {"single_blob_record_bytes": len(client._store.get(*_INLINE) or b""),
                      "per_record_prekeys_record_bytes":
                          len(client._store.get("self", "prekeys") or b"")}
        # Distinct one-time keys for each layout (each consumes its own copy of them).
        bundles = _bundles(client, 1, 2 * count)
        self.work = {
            "ratchet": (_conversation(home, self.new, count),
                        _conversation(home, self.old, count)),
            "initial": (_initials(home, bundles[:count]), _initials(home, bundles[count:]))}
        self.timings = {kind: {"per_record_ms": [], "single_blob_ms": []}
                        for kind in self.work}

    def new(self, envelope: bytes, ts: int) -> object:
        message, _ = self.home.client._decrypt_and_store(envelope, ts)
        assert message is not None
        return message

    def old(self, envelope: bytes, ts: int) -> object:
        return _old_receive(self.home.client, envelope, ts)

    def step(self, kind: str, i: int) -> None:
        new_envs, old_envs = self.work[kind]
        for layout, receive, envelope in (("per_record_ms", self.new, new_envs[i]),
                                          ("single_blob_ms", self.old, old_envs[i])):
            t = time.perf_counter()
            receive(envelope, self.home.client._clock())
            self.timings[kind][layout].append((time.perf_counter() - t) * 1000)

    def report(self) -> dict[str, Any]:
        store = self.home.client._store
        result: dict[str, Any] = {"stock": self.stock, "build_s": round(self.build_s, 1),
                                  **self.sizes}
        for kind, per_layout in self.timings.items():
            result[kind] = {layout: round(statistics.median(v), 3)
                            for layout, v in per_layout.items()}
        store.close()
        t = time.perf_counter()
        Store.open(self.root / f"stock{self.stock}", "pw").close()
        result["open_and_verify_ms"] = round((time.perf_counter() - t) * 1000, 1)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="stocks 100 and 1,000")
    parser.add_argument("--envelopes", type=int, default=None,
                        help="envelopes per kind and layout (default 40, quick 8)")
    args = parser.parse_args()
    small, large = (100, 1000) if args.quick else (100, 10_000)
    count = args.envelopes or (8 if args.quick else 40)
    with tempfile.TemporaryDirectory(prefix="veil-bench-") as tmp:
        runs = [_Run(Path(tmp), stock, count) for stock in (small, large)]
        # Envelope by envelope, both stocks and both layouts take turns: load from other
        # processes on a shared machine hits all four alike.
        for kind in ("ratchet", "initial"):
            for i in range(count):
                for run in runs:
                    run.step(kind, i)
        reports = [run.report() for run in runs]
    ratio = {kind: {layout: round(reports[1][kind][layout] / reports[0][kind][layout], 2)
                    for layout in ("per_record_ms", "single_blob_ms")}
             for kind in ("ratchet", "initial")}
    print(json.dumps({"bench": "client_prekeys", "envelopes_per_kind": count,
                      "small": reports[0], "large": reports[1],
                      "ratio_large_over_small": ratio,
                      "python": platform.python_version(), "machine": platform.machine()}))


if __name__ == "__main__":
    main()
