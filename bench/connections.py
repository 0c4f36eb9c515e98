"""Server memory per idle authenticated WebSocket connection.

Registers N devices, then opens one authenticated WebSocket per device from several
client processes (each under the per-process file-descriptor limit, spread over several
loopback source addresses so ephemeral ports do not run out), waits until every socket
received its connect-time notice and the server is idle, and reports the server's RSS
growth per connection. Prints one JSON line.

Reference in the same run: unless ``--no-reference``, every Veil run is followed by a
run of the same load generator against the REFERENCE FLOOR (``bench/_reference.py``): a
minimal aiohttp server on the same event loop as the Veil server that accepts the
upgrade without checking the credentials, sends the same connect-time notice, and holds
the socket idle; NO storage, NO durability, NO authentication. It is the floor of the
stack, not a competitor. Runs interleave (Veil, reference, Veil, ...); the top-level keys
stay Veil's figures (medians over ``--runs``), ``reference_rss_per_connection_kib`` is
the floor's, and ``veil_vs_reference`` is Veil's RSS per connection over the
reference's, the median of the per-round ratios (``veil_vs_reference_runs``).

    .venv/bin/python bench/connections.py [--connections 20000] [--runs 3] [--quick]
                                          [--no-reference]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import (
    REFERENCE_LABEL,
    BenchServer,
    ReferenceServer,
    b64,
    cpu_seconds,
    ratio,
    register_body,
    rss_kib,
    veil_event_loop,
)

PER_PROCESS = 4500
# Thousands of idle sockets per client address measure memory, not the protection
# layers: the bench's addresses are exempt from per-address caps and rate limits.
BENCH_SETTINGS: dict[str, Any] = {"network": {"exempt": ["127.0.0.0/8", "::1/128"]}}


async def _register_all(url: str, n: int) -> list[str]:
    out: list[str] = []
    sem = asyncio.Semaphore(64)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        async def one() -> None:
            async with sem, http.post(url + "/v1/accounts", json=register_body()) as r:
                data = await r.json()
            user = f"{data['account_id']}.{data['device_id']}:{data['token']}"
            out.append("Basic " + b64(user.encode()))

        await asyncio.gather(*(one() for _ in range(n)))
    return out


async def _hold(url: str, auths: list[str], source: str, ready: Any, stop: Any) -> None:
    connector = aiohttp.TCPConnector(limit=0, local_addr=(source, 0))
    sockets = []
    async with aiohttp.ClientSession(connector=connector) as http:
        sem = asyncio.Semaphore(200)

        async def connect(auth: str) -> None:
            async with sem:
                ws = await http.ws_connect(url + "/v1/websocket", headers={"Authorization": auth},
                                           autoping=True, heartbeat=None)
                await ws.receive(timeout=60)  # the keys_low notice: fully set up
                sockets.append(ws)

        await asyncio.gather(*(connect(a) for a in auths))
        ready.put(len(sockets))
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        for ws in sockets:
            await ws.close()


def _worker(url: str, auths: list[str], source: str, ready: Any, stop: Any) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_hold(url, auths, source, ready, stop))


def run(n: int, reference: bool = False, first_source: int = 2) -> dict[str, Any]:
    """One run against a fresh Veil server, or (``reference``) the reference floor.

    Client sockets bind to 127.0.0.<first_source>, <first_source + 1>, ...: give each run
    its own addresses, so the ports the previous run left in TIME_WAIT are not in the way.
    """
    server: BenchServer | ReferenceServer = (
        ReferenceServer(loop=veil_event_loop()) if reference else BenchServer(BENCH_SETTINGS)
    )
    try:
        auths = asyncio.run(_register_all(server.url, n))
        time.sleep(0.5)
        before = rss_kib(server.proc.pid)
        ctx = mp.get_context("spawn")
        ready, stop = ctx.Queue(), ctx.Event()
        chunks = [auths[i:i + PER_PROCESS] for i in range(0, n, PER_PROCESS)]
        workers = [
            ctx.Process(target=_worker,
                        args=(server.url, chunk, f"127.0.0.{first_source + i}", ready, stop))
            for i, chunk in enumerate(chunks)
        ]
        start = time.perf_counter()
        for w in workers:
            w.start()
        connected = sum(ready.get(timeout=600) for _ in workers)
        connect_s = time.perf_counter() - start
        time.sleep(2.0)  # let the server settle: idle sockets only
        after = rss_kib(server.proc.pid)
        with __import__("urllib.request").request.urlopen(server.url + "/health") as r:
            health = json.loads(r.read())
        stop.set()
        for w in workers:
            w.join(60)
        return {
            "workload": "idle_connections",
            "connections": connected,
            "server_reported_connections": health["connections"],
            "connect_s": round(connect_s, 2),
            "server_rss_before_mb": round(before / 1024, 1),
            "server_rss_after_mb": round(after / 1024, 1),
            "rss_per_connection_kib": round((after - before) / max(connected, 1), 2),
            "server_cpu_s": round(cpu_seconds(server.proc.pid), 2),
            "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        }
    finally:
        server.close()


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs; connections the least (the worst)."""
    summary = dict(results[0])
    for key, value in summary.items():
        if isinstance(value, (int, float)) and key != "fd_limit":
            summary[key] = statistics.median(r[key] for r in results)
    summary["connections"] = min(r["connections"] for r in results)
    summary["server_reported_connections"] = min(
        r["server_reported_connections"] for r in results)
    summary["runs"] = len(results)
    summary["rss_per_connection_kib_runs"] = [r["rss_per_connection_kib"] for r in results]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3,
                        help="fresh server per run; medians are reported (shared machines)")
    parser.add_argument("--quick", action="store_true", help="200 connections, 1 run")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the interleaved runs against the no-storage reference floor")
    args = parser.parse_args()
    n = 200 if args.quick else args.connections
    if args.quick:
        args.runs = 1
    # The server needs a descriptor per connection plus a few of its own.
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if n > limit - 64:
        print(f"connections: capped at {limit - 64} by the file-descriptor limit {limit}",
              file=sys.stderr)
        n = limit - 64
    os.environ.setdefault("PYTHONHASHSEED", "0")
    per_run = -(-n // PER_PROCESS)  # client processes, one source address each
    if 2 + 2 * args.runs * per_run > 254:
        parser.error("too many runs for distinct loopback source addresses")
    veil: list[dict[str, Any]] = []
    floor: list[dict[str, Any]] = []
    source = 2
    for _ in range(args.runs):  # interleaved: Veil, reference, Veil, reference, ...
        veil.append(run(n, first_source=source))
        source += per_run
        if not args.no_reference:
            floor.append(run(n, reference=True, first_source=source))
            source += per_run
    summary = summarize(veil)
    if floor:
        ref = summarize(floor)
        per_round = [ratio(v["rss_per_connection_kib"], r["rss_per_connection_kib"])
                     for v, r in zip(veil, floor, strict=True)]
        known = [x for x in per_round if x is not None]
        summary["reference_rss_per_connection_kib"] = ref["rss_per_connection_kib"]
        summary["veil_vs_reference"] = statistics.median(known) if known else None
        summary["veil_vs_reference_runs"] = per_round
        summary["reference"] = {
            "what": REFERENCE_LABEL,
            "event_loop": veil_event_loop(),
            **{k: ref[k] for k in (
                "connections", "server_reported_connections", "connect_s",
                "server_rss_before_mb", "server_rss_after_mb", "rss_per_connection_kib",
                "server_cpu_s", "rss_per_connection_kib_runs")},
        }
    summary["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
