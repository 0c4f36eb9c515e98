"""The whole route: real clients, 3 layers x 2 mix nodes, the provider and the Veil
server, each mix and the provider a separate process, everything on loopback.

Alice's mixnet traffic leaves from 127.0.0.23; the provider hands submissions to the
server's ``POST /v1/mixnet/submissions`` from 127.0.0.1. Every message must reach Bob
exactly once, and nothing the server wrote may carry Alice's address.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.mixnet.netfixture import build
from tests.integration.mixnet.test_loopback import _spawn, _stop
from tests.integration.server.harness import ServerProcess
from veil.cli.relay import MixnetRelay
from veil.client import Client
from veil.client.store import FAST
from veil.mixnet.client import MixClient
from veil.mixnet.transport import bound_connector

CLIENT_HOST = "127.0.0.23"
MESSAGES = 200


@pytest.mark.slow
async def test_sealed_messages_through_the_mixnet_to_the_veil_server(tmp_path: Path) -> None:
    net = build(tmp_path)
    server = ServerProcess(tmp_path / "veil-data").start()
    procs: list[asyncio.subprocess.Process] = []
    people: list[Client] = []
    common = ["--directory", str(net.directory_file), "--authority", net.authority_public]
    try:
        for node in net.nodes:
            if node.role == "mix":
                args = ["node", "--layer", str(node.layer), "--key", str(node.key_file), *common]
            else:
                args = ["provider", "--key", str(node.key_file), *common,
                        "--sink-url", f"{server.url}/v1/mixnet/submissions"]
            procs.append(await _spawn(args))
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert json.loads(line)["event"] == "listening", line
        alice = await Client.register(tmp_path / "alice", server.url, passphrase="a", kdf=FAST)
        bob = await Client.register(tmp_path / "bob", server.url, passphrase="b", kdf=FAST)
        people += [alice, bob]
        await alice.send(bob.account, "first contact goes direct")
        await bob.receive_pending()
        await bob.send(alice.account, "now you know my profile key")
        await alice.receive_pending()
        mix = MixClient(net.directory, rate=300.0, mean_delay=0.005,
                        connect=bound_connector(CLIENT_HOST))
        await mix.start()
        relay = MixnetRelay(mix)
        alice.relay = relay
        texts = [f"through the mixnet #{i} {os.urandom(4).hex()}" for i in range(MESSAGES)]
        for text in texts:
            sent = await alice.send(bob.account, text)
            assert sent.via == "mixnet" and sent.sealed
        received: list[str] = []
        deadline = time.monotonic() + 120
        while len(received) < MESSAGES and time.monotonic() < deadline:
            received += [m.text for m in await bob.receive_pending()]
            await asyncio.sleep(0.2)
        await relay.finish(timeout=30)
        assert len(received) == len(set(received)), "a message arrived twice"
        assert set(received) == set(texts)
        # The CLI route: Carol sends with --via mixnet from another process.
        carol = tmp_path / "carol"
        env = dict(os.environ, VEIL_HOME=str(carol), VEIL_PASSPHRASE="c",
                   VEIL_MIX_DIRECTORY=str(net.directory_file),
                   VEIL_MIX_AUTHORITY=net.authority_public)
        veil = [sys.executable, "-m", "veil.cli.main"]
        made = subprocess.run([*veil, "init", "--server", server.url, "--json"], env=env,
                              capture_output=True, text=True, check=True, timeout=60)
        carol_id = json.loads(made.stdout)["account_id"]
        await bob.send(carol_id, "hi carol")
        subprocess.run([*veil, "recv"], env=env, capture_output=True, check=True, timeout=60)
        out = subprocess.run([*veil, "send", bob.account, "carol via the mixnet", "--via",
                              "mixnet", "--json"], env=env, capture_output=True, text=True,
                             check=True, timeout=120)
        assert json.loads(out.stdout)["via"] == "mixnet"
        got: list[str] = []
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            got = [m.text for m in await bob.receive_pending()]
            await asyncio.sleep(0.2)
        assert got == ["carol via the mixnet"]
    finally:
        for client in people:
            await client.close()
        stats = [await _stop(proc) for proc in procs]
        server.stop()
    written = b"".join(f.read_bytes() for f in server.data_dir.rglob("*") if f.is_file())
    assert CLIENT_HOST.encode() not in written
    provider_stats = stats[-1]
    assert provider_stats.get("dropped_sink_failed", 0) == 0, provider_stats
    assert provider_stats.get("delivered", 0) >= MESSAGES + 1, provider_stats
