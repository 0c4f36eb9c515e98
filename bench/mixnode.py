"""Mix node benchmarks: Sphinx packets per second per core, and latency through 3 layers.

Prints one JSON line per workload:

* ``x25519_reference``: raw X25519 exchanges/s, measured interleaved with the next
  workload (a hop's floor: one exchange for the shared secret, one to blind alpha);
* ``sphinx_process``: packets/s one ``SphinxNode`` unwraps on one core (median of runs),
  and its cost in units of one X25519 exchange;
* ``node_tcp``: packets/s a full asyncio ``MixNode`` takes in over TCP, processes and
  forwards over TCP, all in one process (so on one core);
* ``latency_3_layers``: end-to-end latency through 3 in-process mix layers and a
  provider, against the configured mean per-hop delay (expected added latency 3x mean).

    .venv/bin/python bench/mixnode.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from veil.core.sphinx import (
    PACKET_SIZE,
    PathHop,
    ReplayTagStore,
    SphinxNode,
    create_forward_packet,
)
from veil.mixnet.client import MixClient
from veil.mixnet.directory import ROLE_MIX, ROLE_PROVIDER, Directory, NodeKey
from veil.mixnet.node import MixNode
from veil.mixnet.provider import Provider
from veil.mixnet.transport import read_packets

TARGET_PER_CORE = 10_000


class TimingSink:
    """A provider sink that records when each message arrived."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[bytes, float]] = []

    async def deliver(self, payload: bytes) -> None:
        self.arrivals.append((payload, time.perf_counter()))


def emit(**fields: object) -> None:
    print(json.dumps(fields, sort_keys=True), flush=True)


def _x25519_rate(n: int) -> float:
    key = X25519PrivateKey.generate()
    peer = X25519PrivateKey.generate().public_key().public_bytes_raw()
    start = time.perf_counter()
    for _ in range(n):
        key.exchange(X25519PublicKey.from_public_bytes(peer))
    return n / (time.perf_counter() - start)


def _sphinx_rate(n: int) -> float:
    node = SphinxNode(X25519PrivateKey.generate(), ReplayTagStore(n + 1))
    other = X25519PrivateKey.generate().public_key().public_bytes_raw()
    path = [PathHop(b"a" * 16, node.public_key), PathHop(b"b" * 16, other),
            PathHop(b"c" * 16, other)]
    packets = [create_forward_packet(path, [10, 10, 0], bytes(16), b"m") for _ in range(n)]
    start = time.perf_counter()
    for packet in packets:
        node.process(packet)
    return n / (time.perf_counter() - start)


def bench_process(n: int, runs: int) -> None:
    """Sphinx unwrapping, interleaved run by run with the raw X25519 reference."""
    sphinx, x25519 = [], []
    for _ in range(runs):
        x25519.append(_x25519_rate(n))
        sphinx.append(_sphinx_rate(n))
    median, reference = statistics.median(sphinx), statistics.median(x25519)
    emit(workload="x25519_reference", runs=runs, n=n,
         median_exchanges_per_s=round(reference),
         note="a hop needs two scalar multiplications (shared secret, blinding) and the "
              "blinding also loads a fresh private scalar")
    emit(workload="sphinx_process", runs=runs, packets_per_run=n,
         median_packets_per_s=round(median), per_packet_us=round(1e6 / median, 1),
         min_packets_per_s=round(min(sphinx)), max_packets_per_s=round(max(sphinx)),
         x25519_exchanges_per_packet_equivalent=round(reference / median, 2),
         target_packets_per_s=TARGET_PER_CORE, meets_target=median >= TARGET_PER_CORE,
         reference_loopix_python_relay_msgs_per_s=300,
         reference_nym_simulation_assumed_per_node=1000)


def _directory(keys: list[NodeKey], roles: list[tuple[str, int]], ports: list[int]
               ) -> Directory:
    epoch = int(time.time() // 3600)
    nodes = tuple(k.descriptor(role, layer, f"127.0.0.1:{port}", range(epoch - 1, epoch + 2))
                  for k, (role, layer), port in zip(keys, roles, ports, strict=True))
    return Directory(max(layer for _, layer in roles), 3600, int(time.time()), nodes)


async def bench_node_tcp(n: int) -> None:
    received = 0
    done = asyncio.Event()

    async def next_hop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        async for _ in read_packets(reader):
            received += 1
            if received >= n:
                done.set()

    sink = await asyncio.start_server(next_hop, "127.0.0.1", 0)
    sink_port = sink.sockets[0].getsockname()[1]
    keys = [NodeKey.generate(), NodeKey.generate()]
    directory = _directory(keys, [(ROLE_MIX, 1), (ROLE_MIX, 2)], [1, sink_port])
    node = MixNode(keys[0], directory, max_pending=n + 1, replay_capacity=n + 1)
    host, port = await node.start("127.0.0.1", 0)
    epoch = directory.epoch_at(time.time())
    path = [directory.nodes[0].hop(epoch), directory.nodes[1].hop(epoch)]
    packets = [create_forward_packet(path, [0, 0], bytes(16), b"m") for _ in range(n)]
    _, writer = await asyncio.open_connection(host, port)
    start = time.perf_counter()
    for i in range(0, n, 64):
        writer.write(b"".join(packets[i:i + 64]))
        await writer.drain()
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - start
    writer.close()
    await node.close()
    sink.close()
    emit(workload="node_tcp", packets=n, packets_per_s=round(n / elapsed),
         note="receive over TCP, unwrap, forward over TCP; feeder and next hop in the "
              "same process and core", dropped=sum(v for k, v in node.stats().items()
                                                   if k.startswith("dropped")))


async def bench_latency(messages: int, mean_delay: float) -> None:
    keys = [NodeKey.generate() for _ in range(7)]
    roles = [(ROLE_MIX, layer) for layer in (1, 2, 3) for _ in range(2)] + [(ROLE_PROVIDER, 0)]
    from socket import SO_REUSEADDR, SOL_SOCKET, socket
    ports, reserved = [], []
    for _ in keys:
        # Kept bound (SO_REUSEADDR, not listening) until the node binds it, so no other
        # process is handed the port in between (a probe-and-release raced under load).
        s = socket()
        s.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        reserved.append(s)
        ports.append(s.getsockname()[1])
    directory = _directory(keys, roles, ports)
    sink = TimingSink()
    servers: list[MixNode | Provider] = [MixNode(k, directory) for k in keys[:-1]]
    provider = Provider(keys[-1], directory, sink)
    servers.append(provider)
    for server, port in zip(servers, ports, strict=True):
        await server.start("127.0.0.1", port)
    for s in reserved:
        s.close()
    client = MixClient(directory, rate=1.0, mean_delay=mean_delay)
    for i in range(messages):
        client.send(struct.pack(">Id", i, time.perf_counter()) + os.urandom(8))
        client.tick()  # send now: measure the network, not the Poisson wait
        await asyncio.sleep(0.005)
    end = time.perf_counter() + 60
    while len(sink.arrivals) < messages and time.perf_counter() < end:
        await asyncio.sleep(0.01)
    latencies = [arrived - struct.unpack_from(">Id", message)[1]
                 for message, arrived in sink.arrivals]
    await client.close()
    for server in servers:
        await server.close()
    latencies.sort()
    emit(workload="latency_3_layers", messages=messages, arrived=len(latencies),
         mean_delay_per_hop_s=mean_delay,
         expected_mean_added_s=round(3 * mean_delay, 4),
         measured_mean_s=round(statistics.fmean(latencies), 4),
         measured_median_s=round(statistics.median(latencies), 4),
         measured_p99_s=round(latencies[int(0.99 * (len(latencies) - 1))], 4),
         packet_size=PACKET_SIZE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    args = parser.parse_args()
    if args.quick:
        bench_process(100, 3)
        asyncio.run(bench_node_tcp(200))
        asyncio.run(bench_latency(20, 0.01))
    else:
        bench_process(3000, 7)
        asyncio.run(bench_node_tcp(5000))
        asyncio.run(bench_latency(300, 0.05))


if __name__ == "__main__":
    main()
