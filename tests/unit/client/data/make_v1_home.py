"""Writes ``v1_home/`` and ``v1_home.json``: a home as the client wrote it before the
outside review (store format 1, prekeys blob version 1, session state version 1).

Run it with the pre-review code on the path (commit e096e37), not with this tree:

    git archive e096e37 | tar -x -C /tmp/veil-old
    PYTHONPATH=/tmp/veil-old/src python tests/unit/client/data/make_v1_home.py

The secrets in the JSON are throw-away test keys: the tests use them to write new
messages to this home.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from veil.client.content import Content
from veil.client.records import Contact, HistoryEntry, SelfRecord
from veil.client.store import FAST, Store
from veil.core import keys, sealed, session

HERE = Path(__file__).parent
HOME = HERE / "v1_home"
ALICE = "a1" * 16
BOB = "b0" * 16


def main() -> None:
    shutil.rmtree(HOME, ignore_errors=True)
    bob_identity = keys.IdentityKeyPair.generate()
    alice_identity = keys.IdentityKeyPair.generate()
    prekeys = keys.PreKeys.generate(bob_identity, one_time=3)
    root = sealed.TrustRoot.generate()
    server_key = sealed.ServerKey.generate(root, 1, 4_000_000_000_000)
    me = SelfRecord("http://127.0.0.1:9", BOB, 1, os.urandom(32), "bob", os.urandom(32), 7,
                    root.public)
    alice_session, first = session.initiate(
        alice_identity, prekeys.bundle(),
        Content.text_message("hello from v1", 1_700_000_000_000, os.urandom(32)).encode())
    bob_session, plaintext = session.respond(bob_identity, prekeys, first,
                                             expected_identity=alice_identity.public)
    content = Content.decode(plaintext)
    store = Store.create(HOME, "pw", FAST)
    with store.transaction():
        store.put("self", "me", me.encode())
        store.put("self", "identity", bob_identity.to_bytes())
        store.put("self", "prekeys", prekeys.to_bytes())
        from veil.client import sessions
        sessions.save(store, ALICE, 1, [bob_session])
        store.put("contact", ALICE, Contact(ALICE, "alice", alice_identity.public.to_bytes(),
                                            devices=[1]).encode())
        store.put("seen", f"{ALICE}:{content.id}", b"")
        store.append_history(ALICE, HistoryEntry(content.id, "in", ALICE, content.text,
                                                 content.timestamp, 1).encode())
        store.append_history(ALICE, HistoryEntry("c" * 32, "out", ALICE, "hi alice",
                                                 1_700_000_000_001, 0).encode())
    store.close()
    (HERE / "v1_home.json").write_text(json.dumps({
        "passphrase": "pw", "bob": BOB, "alice": ALICE,
        "alice_identity": alice_identity.to_bytes().hex(),
        "bob_identity_public": bob_identity.public.to_bytes().hex(),
        "server_key": server_key.to_bytes().hex(),
        "one_time_left": len(prekeys.one_time),
        "alice_session_v1": alice_session.to_bytes().hex(),
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
