"""Client, mixes and provider in one process over loopback; the HTTP sink."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections import Counter

import pytest

from veil.core.sphinx import Deliver, SphinxError
from veil.mixnet.client import MixClient
from veil.mixnet.directory import ROLE_MIX, ROLE_PROVIDER
from veil.mixnet.errors import MixnetError, QueueFull, TransportError
from veil.mixnet.fragment import FRAGMENT_DATA_SIZE, split
from veil.mixnet.node import MixNode
from veil.mixnet.provider import Provider
from veil.mixnet.sink import HttpSink, QueueSink

from .nethelpers import THREE_LAYERS, directory_for, until


async def _network(sink, roles=THREE_LAYERS):
    directory, keys = directory_for(roles)
    servers = [MixNode(k, directory) for k in keys[:-1]]
    provider = Provider(keys[-1], directory, sink, retry_delay=0.01)
    servers.append(provider)
    for server, node in zip(servers, directory.nodes, strict=True):
        await server.start("127.0.0.1", int(node.address.rsplit(":", 1)[1]))
    return directory, servers, provider


async def _close(client, servers) -> None:
    await client.close()
    for server in servers:
        await server.close()


async def test_messages_arrive_once_and_cover_traffic_flows() -> None:
    sink = QueueSink()
    directory, servers, provider = await _network(sink)
    client = MixClient(directory, rate=400.0, mean_delay=0.002, loop_fraction=0.5)
    messages = [os.urandom(n) for n in (0, 10, FRAGMENT_DATA_SIZE, 3 * FRAGMENT_DATA_SIZE + 5)]
    messages += [b"msg %d" % i for i in range(30)]
    for message in messages:
        client.send(message)
    await client.start()
    got = [await asyncio.wait_for(sink.queue.get(), 30) for _ in messages]
    # Cover keeps flowing once the real queue is empty: run the Poisson process until it
    # has drawn at least one loop and one drop, however slowly it is scheduled.
    assert await until(lambda: client.counters["sent_loop"] > 0
                       and client.counters["sent_drop"] > 0), client.stats()
    # Then stop, and wait (not sleep) until everything sent has left the mixes: the
    # drain markers follow every packet on every path; the loops are home by then.
    assert await client.drain(30), client.stats()
    assert await until(lambda: client.counters["loops_returned"]
                       + client.counters["loops_lost"] >= client.counters["sent_loop"])
    await _close(client, servers)
    assert Counter(got) == Counter(messages)
    assert sink.queue.empty()
    stats, sent = provider.stats(), client.stats()
    assert stats["delivered"] == len(messages)
    assert sent["sent_real"] == len(messages) - 4 + 1 + 1 + 1 + 4
    assert sent["sent_loop"] > 0 and sent["sent_drop"] > 0
    assert stats["cover_drop"] == sent["sent_drop"]
    # Loops only pass through the provider and come back to the client (and so do the
    # markers, loops sent by drain() and counted apart).
    assert sent["markers_returned"] == sent["sent_marker"] == 1
    assert stats["relayed"] == sent["sent_loop"] + sent["sent_marker"]
    assert sent["loops_returned"] == sent["sent_loop"]
    assert len(client.loop_rtts) == sent["sent_loop"]


async def test_drain_returns_once_every_packet_has_left_the_mixes() -> None:
    # Two mixes per layer (eight paths) and delays long enough that, without waiting for
    # the markers, many packets would still be held somewhere.
    roles = [(ROLE_MIX, layer) for layer in (1, 2, 3) for _ in range(2)]
    sink = QueueSink()
    directory, servers, provider = await _network(sink, [*roles, (ROLE_PROVIDER, 0)])
    client = MixClient(directory, rate=500.0, mean_delay=0.02, loop_fraction=0.5)
    await client.start()
    assert await until(lambda: client.counters["sent_loop"] >= 20
                       and client.counters["sent_drop"] >= 20)
    assert await client.drain(30), client.stats()
    # No wait of any kind between the markers' return and these checks.
    sent, exit_stats = client.stats(), provider.stats()
    assert sent["sent_marker"] == sent["markers_returned"] == 8
    assert all(s.stats()["pending"] == 0 for s in servers)
    assert exit_stats["cover_drop"] == sent["sent_drop"]
    assert exit_stats["relayed"] == sent["sent_loop"] + sent["sent_marker"]
    total = sent["sent_loop"] + sent["sent_drop"] + sent["sent_marker"]
    for layer in (0, 1, 2):
        assert sum(s.stats()["relayed"] for s in servers[2 * layer: 2 * layer + 2]) == total
    assert sent["loops_returned"] == sent["sent_loop"]
    await _close(client, servers)


async def test_every_counter_is_reported_before_it_first_counts() -> None:
    directory, keys = directory_for(THREE_LAYERS)
    fresh = MixClient(directory).stats()
    for name in ("sent_real", "sent_loop", "sent_drop", "loops_returned", "loops_lost",
                 "sent_marker", "markers_returned", "max_delay_ms"):
        assert fresh[name] == 0, name
    node = MixNode(keys[0], directory).stats()
    assert node["relayed"] == node["received"] == node["dropped_sphinx_replay"] == 0
    exit_stats = Provider(keys[-1], directory, QueueSink()).stats()
    assert exit_stats["cover_drop"] == exit_stats["delivered"] == exit_stats["exited"] == 0


async def test_client_send_queue_is_bounded() -> None:
    directory, _ = directory_for(THREE_LAYERS)
    client = MixClient(directory, max_queue=3)
    client.send(bytes(2 * FRAGMENT_DATA_SIZE))
    with pytest.raises(QueueFull):
        client.send(bytes(2 * FRAGMENT_DATA_SIZE))
    assert client.queued == 2
    with pytest.raises(MixnetError):
        MixClient(directory, rate=0)


async def test_paths_take_one_mix_per_layer_then_the_provider() -> None:
    directory, _ = directory_for(THREE_LAYERS * 2)
    client = MixClient(directory)
    for _ in range(20):
        path = client.choose_path()
        assert [n.layer for n in path] == [1, 2, 3, 0]
        assert path[-1].role == "provider"


class FailingSink:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.got: list[bytes] = []

    async def deliver(self, payload: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise TransportError("down")
        self.got.append(payload)


async def test_provider_retries_a_failing_sink() -> None:
    sink = FailingSink(failures=2)
    directory, servers, provider = await _network(sink)
    client = MixClient(directory, rate=200.0, mean_delay=0.0)
    client.send(b"persist")
    await client.start()
    assert await until(lambda: sink.got)
    await _close(client, servers)
    assert sink.got == [b"persist"]
    assert provider.stats()["delivered"] == 1


async def test_http_sink_posts_json_and_checks_the_status() -> None:
    requests: list[bytes] = []
    status = [b"204 No Content"]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        requests.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 " + status[0] + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = HttpSink(f"http://127.0.0.1:{port}/v1/submit?via=mixnet")
    await sink.deliver(b"\x00envelope")
    head, body = requests[0].split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /v1/submit?via=mixnet HTTP/1.1\r\n")
    assert json.loads(body) == {"submission": base64.b64encode(b"\x00envelope").decode()}
    await HttpSink(f"http://127.0.0.1:{port}/v1/put", method="PUT").deliver(b"y")
    assert requests[1].startswith(b"PUT /v1/put HTTP/1.1\r\n")
    status[0] = b"500 Internal Server Error"
    with pytest.raises(TransportError, match="500"):
        await sink.deliver(b"x")
    server.close()
    with pytest.raises(TransportError):
        await HttpSink(f"http://127.0.0.1:{port}/").deliver(b"x")
    with pytest.raises(TransportError):
        HttpSink("ftp://example/")
    with pytest.raises(TransportError):
        HttpSink("http://example/", method="GET")


async def test_the_provider_answers_through_a_reply_block() -> None:
    sink = QueueSink()
    directory, servers, provider = await _network(sink)
    client = MixClient(directory, rate=200.0, mean_delay=0.001, loop_fraction=0.0)
    await client.start()
    surb = client.reply_block()
    client.send(b"please ack" + surb)
    message = await asyncio.wait_for(sink.queue.get(), 30)
    assert message.startswith(b"please ack")
    provider.send_reply(message[len(b"please ack"):], b"ack: received")
    reply = await asyncio.wait_for(client.replies.get(), 30)
    assert reply == b"ack: received"
    # Single use: the same block again is a replay at its first hop, and never arrives
    # (once its first hop has dropped it, it cannot).
    provider.send_reply(message[len(b"please ack"):], b"second")
    assert await until(lambda: sum(s.stats()["dropped_sphinx_replay"] for s in servers) >= 1)
    assert client.replies.empty()
    assert sum(s.stats()["dropped_sphinx_replay"] for s in servers) == 1
    await _close(client, servers)
    with pytest.raises(SphinxError):
        provider.send_reply(b"not a surb", b"x")


async def test_loops_that_never_return_are_counted_lost() -> None:
    # No network at all: every loop is lost; the outstanding set stays bounded. The SURBs
    # age on a clock the test moves, not on however long eight ticks take under load.
    directory, _ = directory_for(THREE_LAYERS)
    now = [1000.0]
    client = MixClient(directory, loop_fraction=1.0, max_outstanding=5, surb_timeout=0.05,
                       monotonic=lambda: now[0])
    for _ in range(8):
        client.tick()
    assert client.stats()["outstanding_surbs"] == 5
    assert client.counters["loops_lost"] == 3
    now[0] += 0.06
    client.tick()
    assert client.counters["loops_lost"] == 8
    assert client.stats()["outstanding_surbs"] == 1
    await client.close()


async def test_the_provider_bounds_what_waits_for_a_stuck_sink() -> None:
    class StuckSink:
        async def deliver(self, payload: bytes) -> None:
            await asyncio.Event().wait()

    directory, keys = directory_for(THREE_LAYERS)
    provider = Provider(keys[-1], directory, StuckSink(), max_queue_bytes=3 * 1000)
    await provider.start("127.0.0.1", 0)
    for _ in range(6):
        for fragment in split(os.urandom(1000)):
            provider._on_exit(Deliver(bytes(16), 0, fragment.encode()))
        await asyncio.sleep(0.001)  # the worker takes what it can
    stats = provider.stats()
    # One message is with the sink, three wait (3,000 bytes), two are dropped.
    assert stats["sink_queue"] == 3
    assert stats["dropped_sink_queue_full"] == 2
    await provider.close()
