"""The server's view: scan every byte the server wrote (database, WAL, logs, keys).

Clients encrypt before sending, so the server can only ever hold ciphertext; this test
stands in for the client's sealed-sender encryption with AES-GCM and checks that no
plaintext, no device token and no full identifier in logs ever reaches the disk, and
that stored envelopes name their recipient only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.integration.server.harness import ServerProcess, b64, recv_envelope, register
from veil.server.encoding import log_id


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


async def test_server_never_writes_plaintext_or_senders(tmp_path: Path):
    server = ServerProcess(tmp_path / "data", {"log_level": "DEBUG"}).start()
    try:
        async with aiohttp.ClientSession() as http:
            alice = await register(http, server.url, username="alice_view")
            bob = await register(http, server.url, username="bob_view")
            assert bob.access_key is not None
            key = AESGCM.generate_key(bit_length=256)
            plaintexts = [
                f"PLAINTEXT-{i}-{os.urandom(8).hex()} from {alice.account_id}".encode()
                for i in range(20)
            ]
            ciphertexts = []
            for i, plain in enumerate(plaintexts):
                nonce = os.urandom(12)
                ct = nonce + AESGCM(key).encrypt(nonce, plain, None)
                ciphertexts.append(ct)
                body = {"messages": [{"device_id": 1, "envelope": b64(ct)}]}
                if i % 3 == 0:  # device-authenticated: still no sender stored
                    headers = alice.auth()
                else:
                    headers = {"Veil-Access-Key": b64(bob.access_key)}
                async with http.put(f"{server.url}/v1/messages/{bob.account_id}", json=body,
                                    headers=headers) as r:
                    assert r.status == 200
            async with http.ws_connect(server.url + "/v1/websocket/sealed") as ws:
                ct = os.urandom(12) + AESGCM(key).encrypt(os.urandom(12), b"PLAINTEXT-ws", None)
                ciphertexts.append(ct)
                await ws.send_str(json.dumps({
                    "type": "send", "req": 1, "to": bob.account_id,
                    "access_key": b64(bob.access_key),
                    "messages": [{"device_id": 1, "envelope": b64(ct)}]}))
                await ws.receive(timeout=5)
            # Bob reads and acknowledges the first few; the rest stay queued on disk.
            async with http.ws_connect(server.url + "/v1/websocket", headers=bob.auth()) as ws:
                for _ in range(5):
                    event = await recv_envelope(ws)
                    await ws.send_json({"type": "ack", "ids": [event["id"]]})
            for _ in range(100):  # acknowledgements are applied asynchronously
                async with http.get(f"{server.url}/v1/messages", headers=bob.auth()) as r:
                    if len((await r.json())["messages"]) == len(ciphertexts) - 5:
                        break
                await asyncio.sleep(0.02)
            async with http.get(f"{server.url}/v1/usernames/bob_view", headers=alice.auth()):
                pass
            async with http.get(f"{server.url}/v1/certificate", headers=alice.auth()):
                pass
    finally:
        server.kill9()  # leave the WAL as it was, un-checkpointed

    written = _all_bytes(server.data_dir) + (tmp_path / "data.out").read_bytes()
    # The scan sees stored envelopes: the check below could fail.
    assert ciphertexts[-1][:24] in written
    assert b"PLAINTEXT" not in written
    for device in (alice, bob):
        assert device.token.encode() not in written
        assert base64.b64decode(device.token) not in written
    logs = b"".join(p.read_bytes() for p in (server.data_dir / "logs").rglob("*")) + \
        (tmp_path / "data.out").read_bytes()
    # It does log about these accounts, by short hash only.
    assert log_id(bytes.fromhex(bob.account_id)).encode() in logs
    for device in (alice, bob):
        assert device.account_id.encode() not in logs
        assert bytes.fromhex(device.account_id) not in logs
    assert b"alice_view" not in logs and b"bob_view" not in logs
    assert bob.access_key not in logs and b64(bob.access_key).encode() not in logs

    db = sqlite3.connect(server.data_dir / "veil.sqlite3")
    columns = [row[1] for row in db.execute("PRAGMA table_info(envelopes)")]
    assert columns == ["id", "account_id", "device_id", "ts", "body"]
    rows = db.execute("SELECT account_id, body FROM envelopes").fetchall()
    assert len(rows) == len(ciphertexts) - 5
    sender = bytes.fromhex(alice.account_id)
    for account_id, body in rows:
        assert bytes(account_id) == bytes.fromhex(bob.account_id)
        assert sender not in bytes(body) and alice.account_id.encode() not in bytes(body)
    db.close()
