"""What the server keeps after a real conversation: no plaintext, no sender, no full ids."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.integration.client.conftest import new_client
from tests.integration.server.harness import ServerProcess
from veil.client import Client
from veil.server.storage import DATABASE_FILE

SECRETS = ["the eagle lands at midnight", "bring the blue folder", "meet me by the old mill"]


def _all_bytes(root: Path) -> bytes:
    return b"".join(f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file())


async def test_server_view_after_a_conversation(tmp_path: Path, clients: list[Client]) -> None:
    server = ServerProcess(tmp_path / "server-data").start()
    try:
        alice = await new_client(clients, tmp_path, server, "alice", "alice_view")
        bob = await new_client(clients, tmp_path, server, "bob", "bob_view")
        await alice.send("@bob_view", SECRETS[0])
        await bob.receive_pending()
        await bob.send(alice.account, SECRETS[1])            # sealed: Bob knows Alice's key
        await alice.receive_pending()
        await alice.send(bob.account, SECRETS[2])             # queued while Bob is offline
        db = sqlite3.connect(server.data_dir / DATABASE_FILE)
        rows = db.execute("SELECT * FROM envelopes").fetchall()
        columns = [r[1] for r in db.execute("PRAGMA table_info(envelopes)")]
        db.close()
        assert rows, "the offline message should be queued"
        assert not any("sender" in c or "source" in c for c in columns)
        alice_ids = [bytes.fromhex(alice.account), alice.account.encode(),
                     alice.identity.to_bytes(), alice.identity.signing, b"alice_view"]
        for row in rows:
            for value in row:
                if isinstance(value, bytes):
                    assert not any(ident in value for ident in alice_ids)
        assert [m.text for m in await bob.receive_pending()] == [SECRETS[2]]
    finally:
        server.stop()
    everything = _all_bytes(server.data_dir) + _all_bytes(server.data_dir.parent)
    for secret in SECRETS:
        assert secret.encode() not in everything
    logs = b"".join(f.read_bytes() for f in server.data_dir.parent.rglob("*")
                    if f.suffix in (".log", ".out"))
    assert alice.account.encode() not in logs and bob.account.encode() not in logs
