"""Relay throughput and latency of one server process (SQLite, synchronous=FULL).

P sender/receiver pairs; each sender pushes M sealed 256-byte opaque envelopes over its
sealed WebSocket with at most 8 unacknowledged (not yet durably stored) at a time; each
receiver stays connected and acknowledges what it reads. Latency is send → receive,
timed with CLOCK_MONOTONIC stamped into the payload. Each run starts a fresh server;
the one JSON line printed holds the medians over the runs (lost/duplicated: the worst),
and the machine's load average, since the machine is shared.

Reference in the same run: unless ``--no-reference``, every Veil run is followed by a
run of the same load generator against the REFERENCE FLOOR (``bench/_reference.py``): a
minimal aiohttp relay on the same event loop as the Veil server that forwards each
envelope straight to the recipient's socket, with NO storage, NO durability and no
validation beyond ``json.loads``; a ``sent`` reply there means only "written to the
recipient's socket". It is the floor of the stack, not a competitor. Runs interleave
(Veil, reference, Veil, reference, ...) so load from other processes hits both alike.
The top-level keys stay Veil's figures; ``reference`` holds the floor's medians, and
``veil_vs_reference`` is Veil's delivered_per_s over the reference's, the median of the
per-round ratios (``veil_vs_reference_runs``); ``veil_vs_reference_by_metric`` divides
the medians of throughput, p99 and peak RSS.

    .venv/bin/python bench/relay.py [--pairs 20] [--messages 1000] [--runs 3] [--quick]
                                    [--no-reference]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import struct
import sys
import time
from pathlib import Path

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

PAYLOAD = 256
WINDOW = 8
_STAMP = struct.Struct(">QII")


async def _register(http: aiohttp.ClientSession, url: str) -> tuple[str, str, bytes]:
    access_key = os.urandom(16)
    async with http.post(url + "/v1/accounts",
                         json=register_body(access_key=b64(access_key))) as r:
        data = await r.json()
    user = f"{data['account_id']}.{data['device_id']}:{data['token']}"
    return data["account_id"], "Basic " + b64(user.encode()), access_key


async def _receiver(ws: aiohttp.ClientWebSocketResponse, expected: int,
                    latencies: list[float], seen: set[tuple[int, int]], dups: list[int],
                    done: asyncio.Event) -> None:
    """Acknowledge like a real client: everything read in one event-loop turn at once."""
    got = 0
    pending: list[int] = []
    loop = asyncio.get_running_loop()
    writes: set[asyncio.Future[None]] = set()

    def flush() -> None:
        ids = ",".join(map(str, pending))
        pending.clear()
        write = asyncio.ensure_future(ws.send_str(f'{{"type":"ack","ids":[{ids}]}}'))
        writes.add(write)
        write.add_done_callback(writes.discard)

    async for msg in ws:
        event = json.loads(msg.data)
        if event["type"] != "envelope":
            continue
        now = time.monotonic_ns()
        body = base64.b64decode(event["envelope"])
        sent_ns, pair, seq = _STAMP.unpack_from(body)
        latencies.append((now - sent_ns) / 1e6)
        if (pair, seq) in seen:
            dups.append(1)
        else:
            seen.add((pair, seq))
            got += 1
        if not pending:
            loop.call_soon(flush)
        pending.append(event["id"])
        if got >= expected:
            done.set()


async def _sender(ws: aiohttp.ClientWebSocketResponse, pair: int, to: str, key: bytes,
                  count: int) -> int:
    window = asyncio.Semaphore(WINDOW)
    errors = 0
    finished = asyncio.Event()
    acked = 0

    async def replies() -> None:
        nonlocal errors, acked
        async for msg in ws:
            reply = json.loads(msg.data)
            if reply["type"] != "sent":
                errors += 1
            acked += 1
            window.release()
            if acked == count:
                finished.set()
                return

    reader = asyncio.create_task(replies())
    filler = os.urandom(PAYLOAD - _STAMP.size)
    prefix = '{"type":"send","req":%d,"to":"' + to + '","access_key":"' + b64(key) + \
        '","messages":[{"device_id":1,"envelope":"'
    for seq in range(count):
        await window.acquire()
        body = _STAMP.pack(time.monotonic_ns(), pair, seq) + filler
        await ws.send_str(prefix % seq + b64(body) + '"}]}')
    await finished.wait()
    await reader
    return errors


def _start(reference: bool, synchronous: str) -> BenchServer | ReferenceServer:
    settings = {"sqlite_synchronous": synchronous}
    if reference:
        return ReferenceServer(loop=veil_event_loop(settings))
    return BenchServer(settings)


async def run(pairs: int, messages: int, synchronous: str = "full",
              reference: bool = False) -> dict[str, object]:
    """One run against a fresh Veil server, or (``reference``) the reference floor."""
    server = _start(reference, synchronous)
    cpu_before = time.process_time()
    try:
        limits = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=limits) as http:
            receivers = [await _register(http, server.url) for _ in range(pairs)]
            rx = [await http.ws_connect(server.url + "/v1/websocket",
                                        headers={"Authorization": auth})
                  for _, auth, _ in receivers]
            tx = [await http.ws_connect(server.url + "/v1/websocket/sealed")
                  for _ in range(pairs)]
            latencies: list[float] = []
            seen: set[tuple[int, int]] = set()
            dups: list[int] = []
            dones = [asyncio.Event() for _ in range(pairs)]
            recv_tasks = [
                asyncio.create_task(_receiver(ws, messages, latencies, seen, dups, d))
                for ws, d in zip(rx, dones, strict=True)
            ]
            start = time.perf_counter()
            errors = await asyncio.gather(*(
                _sender(ws, i, acct, key, messages)
                for i, (ws, (acct, _, key)) in enumerate(zip(tx, receivers, strict=True))
            ))
            try:
                await asyncio.wait_for(asyncio.gather(*(d.wait() for d in dones)), 30)
            except TimeoutError:
                pass
            elapsed = time.perf_counter() - start
            for ws in tx + rx:
                await ws.close()
            for t in recv_tasks:
                t.cancel()
        latencies.sort()
        q = statistics.quantiles(latencies, n=100, method="inclusive") if latencies else [0] * 99
        total = pairs * messages
        result: dict[str, object] = {
            "workload": "relay",
            "pairs": pairs,
            "messages_per_pair": messages,
            "payload_bytes": PAYLOAD,
            "window": WINDOW,
            "delivered": len(seen),
            "elapsed_s": round(elapsed, 3),
            "delivered_per_s": round(len(seen) / elapsed, 1),
            "p50_ms": round(q[49], 2),
            "p95_ms": round(q[94], 2),
            "p99_ms": round(q[98], 2),
            "lost": total - len(seen),
            "duplicated": len(dups),
            "send_errors": sum(errors),
            "server_peak_rss_mb": round(rss_kib(server.proc.pid, "VmHWM") / 1024, 1),
            "server_cpu_s": round(cpu_seconds(server.proc.pid), 2),
            "loadgen_cpu_s": round(time.process_time() - cpu_before, 2),
        }
        if not reference:
            result["sqlite_synchronous"] = synchronous
        return result
    finally:
        server.close()


_FIXED = ("pairs", "messages_per_pair", "payload_bytes", "window", "delivered")


def summarize(results: list[dict[str, object]]) -> dict[str, object]:
    """Medians over the runs; delivered the least, lost/duplicated/errors the worst."""
    summary = dict(results[0])
    for key, value in summary.items():
        if isinstance(value, (int, float)) and key not in _FIXED:
            summary[key] = statistics.median(float(r[key]) for r in results)  # type: ignore[arg-type]
    summary["delivered"] = min(int(r["delivered"]) for r in results)  # type: ignore[call-overload]
    for key in ("lost", "duplicated", "send_errors"):
        summary[key] = max(int(r[key]) for r in results)  # type: ignore[call-overload]
    summary["runs"] = len(results)
    summary["delivered_per_s_runs"] = [r["delivered_per_s"] for r in results]
    summary["p99_ms_runs"] = [r["p99_ms"] for r in results]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3,
                        help="fresh server per run; medians are reported (shared machines)")
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full")
    parser.add_argument("--quick", action="store_true", help="2 pairs x 50 messages, 1 run")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the interleaved runs against the no-storage reference floor")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.messages, args.runs = 2, 50, 1
    veil: list[dict[str, object]] = []
    floor: list[dict[str, object]] = []
    for _ in range(args.runs):  # interleaved: Veil, reference, Veil, reference, ...
        veil.append(asyncio.run(run(args.pairs, args.messages, args.synchronous)))
        if not args.no_reference:
            floor.append(asyncio.run(run(args.pairs, args.messages, reference=True)))
    summary = summarize(veil)
    if floor:
        ref = summarize(floor)
        per_round = [ratio(float(v["delivered_per_s"]), float(r["delivered_per_s"]))  # type: ignore[arg-type]
                     for v, r in zip(veil, floor, strict=True)]
        summary["reference"] = {
            "what": REFERENCE_LABEL,
            "event_loop": veil_event_loop({"sqlite_synchronous": args.synchronous}),
            **{k: ref[k] for k in (
                "delivered", "elapsed_s", "delivered_per_s", "p50_ms", "p95_ms", "p99_ms",
                "lost", "duplicated", "send_errors", "server_peak_rss_mb", "server_cpu_s",
                "loadgen_cpu_s", "delivered_per_s_runs", "p99_ms_runs")},
        }
        known = [x for x in per_round if x is not None]
        summary["veil_vs_reference"] = statistics.median(known) if known else None
        summary["veil_vs_reference_runs"] = per_round
        summary["veil_vs_reference_by_metric"] = {
            k: ratio(float(summary[k]), float(ref[k]))  # type: ignore[arg-type]
            for k in ("delivered_per_s", "p99_ms", "server_peak_rss_mb")
        }
    summary["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
