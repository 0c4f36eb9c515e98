"""Server memory per idle authenticated WebSocket connection.

Registers N devices, then opens one authenticated WebSocket per device from several
client processes (each under the per-process file-descriptor limit, spread over several
loopback source addresses so ephemeral ports do not run out), waits until every socket
received its connect-time notice and the server is idle, and reports the server's RSS
growth per connection. Prints one JSON line.

    .venv/bin/python bench/connections.py [--connections 20000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import BenchServer, b64, cpu_seconds, register_body, rss_kib

PER_PROCESS = 4500


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


def run(n: int) -> dict[str, Any]:
    server = BenchServer()
    try:
        auths = asyncio.run(_register_all(server.url, n))
        time.sleep(0.5)
        before = rss_kib(server.proc.pid)
        ctx = mp.get_context("spawn")
        ready, stop = ctx.Queue(), ctx.Event()
        chunks = [auths[i:i + PER_PROCESS] for i in range(0, n, PER_PROCESS)]
        workers = [
            ctx.Process(target=_worker,
                        args=(server.url, chunk, f"127.0.0.{2 + i}", ready, stop))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="200 connections")
    args = parser.parse_args()
    n = 200 if args.quick else args.connections
    # The server needs a descriptor per connection plus a few of its own.
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if n > limit - 64:
        print(f"connections: capped at {limit - 64} by the file-descriptor limit {limit}",
              file=sys.stderr)
        n = limit - 64
    os.environ.setdefault("PYTHONHASHSEED", "0")
    print(json.dumps(run(n)))


if __name__ == "__main__":
    main()
