"""3 layers x 2 mix nodes and a provider as separate processes on loopback.

A client in this process, whose connections leave from 127.0.0.23, sends a few hundred
messages (some spanning several packets) at a Poisson rate with cover traffic. The
provider POSTs each reassembled message to a real HTTP sink on 127.0.0.1. Every message
must arrive exactly once, and nothing the sink saw may carry the client's address.

The nodes report their counters only when they stop, so the test must know that the
network is quiescent before it stops them, and it waits for events, never for a time
(a loaded machine stretches every time): the sink has answered every message and the
provider has closed the request; the proxy's links have been closed by the first mixes,
so those have read the one-shot sender's packets; the client's markers
(:meth:`MixClient.drain`), which follow every packet along every path, are back, so
every node has released every packet; and every loop is home.
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

from tests.unit.mixnet.nethelpers import until
from tests.unit.mixnet.socks_server import Socks5Server
from veil.mixnet.client import MixClient
from veil.mixnet.transport import bound_connector

from .netfixture import build

CLIENT_HOST = "127.0.0.23"
MESSAGES = 300
LARGE = 10  # messages of several fragments


class Sink:
    """A minimal HTTP server that records every POST body and the peer it came from.

    ``got`` is set once ``expected`` requests are complete: answered, and closed by the
    provider, which counts a message delivered once it has read the answer and closed,
    so that the provider's count is final before the markers pass it.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, int, bytes, bytes]] = []
        self.completed = 0
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
        await reader.read()  # until the provider, having read the answer, closes
        writer.close()
        self.completed += 1
        if self.completed >= self.expected:
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
        # Cover flows once the real queue is empty: let the Poisson process run until it
        # has drawn at least one loop and one drop, however slowly it is scheduled.
        assert await until(lambda: client.counters["sent_loop"] > 0
                           and client.counters["sent_drop"] > 0, 60), client.stats()
        await client.stop_sending()
        # One more message from `veil mix send` in its own process, through SOCKS5. The
        # proxy passes on half closes, so that a link it no longer serves has been
        # closed by the mix too: the mix has read everything the sender sent on it.
        socks = Socks5Server(half_close=True)
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
        assert await socks.wait_idle(60), "the first mixes never closed the sender's links"
        assert socks.targets and {host for host, _ in socks.targets} == {"127.0.0.1"}
        proxy.close()
        # Instead of sleeping for the mixes' delays: markers that follow every packet,
        # ours and the sender's, along every path, held longer than any of them, and
        # back here only once every node has released (or, for a drop, discarded)
        # everything sent before. Anything extra (a duplicate) has exited by then, and
        # the loops, held less long at the home mix than the markers, are home.
        assert await client.drain(60, min_delay_ms=sender_stats["max_delay_ms"]), (
            client.stats())
        assert await until(lambda: client.counters["loops_returned"]
                           + client.counters["loops_lost"] >= client.counters["sent_loop"],
                           60), client.stats()
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
        # Every counter is reported, at 0 when nothing was counted: no drop of any kind.
        assert not [k for k, v in node_stats.items() if k.startswith("dropped") and v], (
            node_stats)
    # Every packet crossed each layer once: each layer relayed what the clients sent
    # (the markers are loops the client sent too, and are counted apart).
    assert sender_stats["sent_loop"] == 0
    markers = sent["sent_marker"]
    assert markers == sent["markers_returned"] == 8  # 2 x 2 x 2 paths
    total = (sent["sent_real"] + sent["sent_loop"] + sent["sent_drop"] + markers
             + sender_stats["sent_real"] + sender_stats["sent_drop"])
    for layer in range(3):
        assert sum(s["relayed"] for s in stats[2 * layer: 2 * layer + 2]) == total
    # Real and drop packets exit at the provider; loops pass it and come home.
    drops = sent["sent_drop"] + sender_stats["sent_drop"]
    assert provider["exited"] == sent["sent_real"] + sender_stats["sent_real"] + drops
    assert provider["cover_drop"] == drops
    assert provider["relayed"] == sent["sent_loop"] + markers
    assert sum(s["mailbox_delivered"] for s in stats[:2]) == sent["sent_loop"] + markers
    assert sent["loops_returned"] == sent["sent_loop"]
