"""3 layers x 2 mix nodes and a provider as separate processes on loopback.

A client in this process, whose connections leave from 127.0.0.23, sends a few hundred
messages (some spanning several packets) at a Poisson rate with cover traffic. The
provider POSTs each reassembled message to a real HTTP sink on 127.0.0.1. Every message
must arrive exactly once, and nothing the sink saw may carry the client's address.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.unit.mixnet.socks_server import Socks5Server
from veil.mixnet.client import MixClient
from veil.mixnet.transport import bound_connector

from .netfixture import build

CLIENT_HOST = "127.0.0.23"
MESSAGES = 300
LARGE = 10  # messages of several fragments


class Sink:
    """A minimal HTTP server that records every POST body and the peer it came from."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, int, bytes, bytes]] = []
        self.got = asyncio.Event()
        self.expected = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        body = await reader.readexactly(length)
        self.requests.append((peer[0], peer[1], head, body))
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
        if len(self.requests) >= self.expected:
            self.got.set()


async def _spawn(args: list[str]) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONPATH=str(Path.cwd() / "src"))
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "veil.cli.mix", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)


async def _stop(proc: asyncio.subprocess.Process) -> dict[str, int]:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    stopped = [line for line in lines if line["event"] == "stopped"]
    assert stopped, err.decode()[-2000:]
    return stopped[0]["stats"]


@pytest.mark.slow
async def test_messages_cross_three_layers_once_without_the_client_address(tmp_path: Path
                                                                           ) -> None:
    net = build(tmp_path)
    sink = Sink()
    sink.expected = MESSAGES
    server = await asyncio.start_server(sink.handle, "127.0.0.1", 0)
    sink_port = server.sockets[0].getsockname()[1]
    procs: list[asyncio.subprocess.Process] = []
    common = ["--directory", str(net.directory_file), "--authority", net.authority_public]
    for node in net.nodes:
        if node.role == "mix":
            args = ["node", "--layer", str(node.layer), "--key", str(node.key_file), *common]
        else:
            args = ["provider", "--key", str(node.key_file), *common,
                    "--sink-url", f"http://127.0.0.1:{sink_port}/v1/mixnet/submit"]
        procs.append(await _spawn(args))
    client = MixClient(net.directory, rate=300.0, mean_delay=0.005,
                       connect=bound_connector(CLIENT_HOST))
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert json.loads(line)["event"] == "listening", line
        messages = [json.dumps({"n": i, "pad": os.urandom(8).hex()}).encode()
                    for i in range(MESSAGES - LARGE)]
        messages += [os.urandom(4000) for _ in range(LARGE)]
        await client.start()
        for message in messages:
            client.send(message)
        await asyncio.wait_for(sink.got.wait(), 90)
        await client.stop_sending()
        # Anything extra (a duplicate) would land now, and the last loops come home.
        await asyncio.sleep(0.6)
        # One more message from `veil mix send` in its own process, through SOCKS5.
        socks = Socks5Server()
        proxy = await asyncio.start_server(socks.handle, "127.0.0.1", 0)
        proxy_port = proxy.sockets[0].getsockname()[1]
        (tmp_path / "message").write_bytes(b"via socks5")
        sink.got.clear()
        sink.expected = MESSAGES + 1
        sender = await _spawn(["send", *common, "--rate", "100", "--mean-delay", "0.005",
                               "--proxy", f"socks5://127.0.0.1:{proxy_port}",
                               str(tmp_path / "message")])
        out, err = await asyncio.wait_for(sender.communicate(), 60)
        assert sender.returncode == 0, err.decode()[-2000:]
        sender_stats = json.loads(out.decode().splitlines()[-1])["stats"]
        assert sender_stats["sent_real"] == 1
        await asyncio.wait_for(sink.got.wait(), 30)
        await asyncio.sleep(0.3)  # the sender's last cover packets
        assert socks.targets and {host for host, _ in socks.targets} == {"127.0.0.1"}
        proxy.close()
    finally:
        await client.close()
        stats = [await _stop(proc) for proc in procs]
        server.close()

    received = Counter(base64.b64decode(json.loads(body)["submission"])
                       for _, _, _, body in sink.requests)
    assert received == Counter([*messages, b"via socks5"])
    # The sink's only peer is the provider, and nothing it received names the client.
    assert {host for host, _, _, _ in sink.requests} == {"127.0.0.1"}
    for _, _, head, body in sink.requests:
        assert CLIENT_HOST.encode() not in head + body
    provider = stats[-1]
    assert provider["delivered"] == MESSAGES + 1
    sent = client.stats()
    assert sent["sent_real"] == MESSAGES - LARGE + LARGE * 3
    assert sent["sent_drop"] > 0 and sent["sent_loop"] > 0
    for node_stats in stats:
        assert not [k for k in node_stats if k.startswith("dropped")], node_stats
    # Every packet crossed each layer once: each layer relayed what the clients sent.
    assert sender_stats.get("sent_loop", 0) == 0
    total = (sent["sent_real"] + sent["sent_loop"] + sent["sent_drop"]
             + sender_stats["sent_real"] + sender_stats.get("sent_drop", 0))
    for layer in range(3):
        assert sum(s.get("relayed", 0) for s in stats[2 * layer: 2 * layer + 2]) == total
    # Real and drop packets exit at the provider; loops pass it and come home.
    drops = sent["sent_drop"] + sender_stats.get("sent_drop", 0)
    assert provider["exited"] == sent["sent_real"] + sender_stats["sent_real"] + drops
    assert provider["cover_drop"] == drops
    assert provider.get("relayed", 0) == sent["sent_loop"]
    assert sum(s.get("mailbox_delivered", 0) for s in stats[:2]) == sent["sent_loop"]
    assert sent["loops_returned"] == sent["sent_loop"]
