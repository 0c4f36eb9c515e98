"""Groups through the product: fan-out to connected members, stored copies and server
cost per message, commit round trips (issue 11 §5), as JSON lines.

    .venv/bin/python bench/groups.py            # the three workloads below
    .venv/bin/python bench/groups.py --quick    # 200 sockets, 2,000 sockets, n = 100

A real server process (``python -m veil.server``, SQLite) is the MLS Delivery Service.

* ``fanout``: one sender posts real MLS PrivateMessages (a group created with
  ``veil.core.mls``, private handshakes) to the group mailbox, paced at ``--rate`` a
  second; 1,000 members are real WebSockets (the anonymous ``/v1/websocket/sealed``)
  spread over several subscriber processes, each subscribed with the epoch's read
  capability. Latency is from just before the sender's ``POST`` to the frame's arrival
  at a member (wall clock; one machine), over the paced messages; ``messages_per_s``
  is member deliveries a second while ``--burst`` more messages are posted back to
  back. Members do not decrypt: the delivery path is the product's, one member's
  decryption is ``decrypt_ms`` (library, this run). ``lost`` counts member deliveries
  that never came. Medians over ``--runs`` runs.
* ``fanout_10k``: the same with 10,000 sockets, plus what the server wrote:
  ``stored_copies`` (rows in ``group_messages`` per message sent — one copy whatever
  the group size), ``stored_bytes_per_message`` (the message bytes those rows hold),
  ``disk_write_bytes_per_message`` (the server process's ``write_bytes`` in
  /proc/PID/io: database, WAL and log together) and ``server_cpu_ms_per_message`` (the
  fan-out to every socket included), next to the same figures of the 1,000-socket run.
* ``commit``: an ``n``-member group whose tree is in steady state (``bench/mls.py``
  ``warm_pair``, at epoch 0, registered with the Delivery Service); a committer adds one
  member and removes one: ``commit_ms`` is commit + merge + ``POST …/commits`` (the
  server's ordering and verifier swap), ``process_ms`` is another member's
  ``GET …/messages`` + processing. ``library_commit_ms`` / ``library_process_ms`` are
  the library calls alone, timed inside the same operations.

The bench raises the server's sealed-socket cap (``max_sealed_connections``, 1,000 by
default) to fit 10,000 members; nothing else differs from the embedded defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import json
import multiprocessing as mp
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import BenchServer, cpu_seconds
from mls import NOW, SUITE, warm_pair

from veil.core.mls import Credential, Group

READ, WRITE = b"veil ds read", b"veil ds write"
SETTINGS = {"max_sealed_connections": 20_000, "sealed_idle_timeout_s": 600.0}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def caps(group: Group) -> tuple[bytes, bytes]:
    return group.export_secret(READ, b"", 32), group.export_secret(WRITE, b"", 32)


def sha(data: bytes) -> str:
    return b64(hashlib.sha256(data).digest())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def register_group(http: aiohttp.ClientSession, url: str, group: Group) -> None:
    read, write = caps(group)
    async with http.post(url + "/v1/groups", json={
            "group_id": b64(group.group_id), "read_verifier": sha(read),
            "write_verifier": sha(write)}) as r:
        assert r.status == 201, await r.text()


# --- subscribers (one process each) -----------------------------------------------------

def subscriber(url: str, group_id: str, read: str, sockets: int, expect: int,
               ready: Any, results: Any) -> None:
    results.put(asyncio.run(_subscribe(url, group_id, read, sockets, expect, ready)))


async def _subscribe(url: str, group_id: str, read: str, sockets: int, expect: int,
                     ready: Any) -> dict[int, list[float]]:
    arrivals: dict[int, list[float]] = {}
    ws_url = url.replace("http", "ws") + "/v1/websocket/sealed"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        async def one(i: int) -> aiohttp.ClientWebSocketResponse:
            ws = await http.ws_connect(ws_url, max_msg_size=1 << 20)
            await ws.send_str(json.dumps({"type": "group_subscribe", "req": i,
                                          "group_id": group_id, "epoch": 0, "read": read}))
            while True:
                frame = json.loads((await ws.receive(timeout=120)).data)
                if frame["type"] == "group_subscribed":
                    return ws
                if frame["type"] == "error":
                    raise RuntimeError(frame["error"]["message"])
        conns = []
        for start in range(0, sockets, 100):      # a hundred handshakes at a time
            conns += await asyncio.gather(*(one(i) for i in range(start,
                                                                  min(sockets, start + 100))))
        ready.put(len(conns))

        async def read_all(ws: aiohttp.ClientWebSocketResponse) -> None:
            got = 0
            while got < expect:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                frame = json.loads(msg.data)
                if frame["type"] == "group_message":
                    arrivals.setdefault(frame["seq"], []).append(time.time())
                    got += 1
        try:
            await asyncio.wait_for(asyncio.gather(*(read_all(ws) for ws in conns)),
                                   timeout=60 + expect)
        except TimeoutError:
            pass                                      # what did not come is "lost"
        for ws in conns:
            await ws.close()
    return arrivals


# --- fan-out ----------------------------------------------------------------------------

def _disk_writes(pid: int) -> int:
    """Bytes the server process caused to be written to storage (/proc/PID/io)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _stored(server: BenchServer) -> tuple[int, int]:
    """Rows in group_messages, and the bytes of the messages they hold."""
    conn = sqlite3.connect(f"file:{server.data / 'veil.sqlite3'}?mode=ro", uri=True)
    try:
        rows, size = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM group_messages"
        ).fetchone()
        return int(rows), int(size)
    finally:
        conn.close()


def _decrypt_ms() -> float:
    """One member decrypting one 200-byte group message (library, warm)."""
    one, other = warm_pair(2)
    other.process(one.encrypt(b"warm-up"), now=NOW)
    times = []
    for _ in range(9):
        probe = one.encrypt(b"m" * 200)
        gc.collect()
        t = time.perf_counter()
        other.process(probe, now=NOW)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


async def fanout_run(members: int, processes: int, messages: int, rate: float,
                     burst: int) -> dict[str, Any]:
    server = BenchServer(SETTINGS)
    ctx = mp.get_context("spawn")
    try:
        sender = Group.create(SUITE, Credential.basic(b"bench-sender"), now=NOW,
                              private_handshakes=True)
        read, write = caps(sender)
        async with aiohttp.ClientSession() as http:
            await register_group(http, server.url, sender)
            ready, results = ctx.Queue(), ctx.Queue()
            share = [members // processes + (1 if i < members % processes else 0)
                     for i in range(processes)]
            procs = [ctx.Process(target=subscriber, args=(
                server.url, b64(sender.group_id), b64(read), n, messages + burst, ready,
                results))
                for n in share]
            for p in procs:
                p.start()
            connected = sum(ready.get(timeout=600) for _ in procs)
            assert connected == members
            pid = server.proc.pid
            writes_before, cpu_before = _disk_writes(pid), cpu_seconds(pid)
            sent_at: dict[int, float] = {}
            path = f"{server.url}/v1/groups/{sender.group_id.hex()}/messages"
            headers = {"Veil-Group-Write": b64(write)}

            async def post() -> None:
                body = {"epoch": 0, "message": b64(sender.encrypt(b"m" * 200))}
                at = time.time()
                async with http.post(path, json=body, headers=headers) as r:
                    answer = await r.json()
                    assert r.status == 200, answer
                sent_at[answer["seq"]] = at
            start = time.time()
            for i in range(messages):          # paced: latency of one message
                await post()
                pause = start + (i + 1) / rate - time.time()
                if pause > 0:
                    await asyncio.sleep(pause)
            paced = set(sent_at)
            await asyncio.sleep(max(0.0, 1.0 - (time.time() - start - messages / rate)))
            burst_start = time.time()
            for _ in range(burst):             # back to back: deliveries a second
                await post()
            arrivals: dict[int, list[float]] = {}
            for _ in procs:
                for seq, times in results.get(timeout=600).items():
                    arrivals.setdefault(seq, []).extend(times)
            for p in procs:
                p.join(30)
            total = messages + burst
            cpu = cpu_seconds(pid) - cpu_before
            written = _disk_writes(pid) - writes_before
            rows, stored_bytes = _stored(server)
        latencies = [(t - sent_at[seq]) * 1000 for seq in paced
                     for t in arrivals.get(seq, [])]
        burst_times = [t for seq, times in arrivals.items() if seq not in paced
                       for t in times]
        delivered = sum(len(times) for times in arrivals.values())
        span = (max(burst_times) - burst_start) if burst_times else 0.0
        return {"members": members, "messages": total,
                "p50_ms": pct(latencies, 0.5), "p99_ms": pct(latencies, 0.99),
                "messages_per_s": len(burst_times) / span if span else 0.0,
                "lost": total * members - delivered,
                "stored_copies": rows / total,
                "stored_bytes_per_message": stored_bytes / total,
                "disk_write_bytes_per_message": written / total,
                "server_cpu_ms_per_message": cpu * 1000 / total,
                "decrypt_ms": _decrypt_ms()}
    finally:
        server.close()


def _median_row(workload: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"workload": workload, "runs": len(runs)}
    for key in runs[0]:
        values = [r[key] for r in runs]
        value = statistics.median(values)
        row[key] = round(value, 3) if isinstance(value, float) else value
    row["lost"] = sum(r["lost"] for r in runs)
    return row


# --- commits ----------------------------------------------------------------------------

async def commit_rows(n: int, reps: int) -> list[dict[str, Any]]:
    server = BenchServer(SETTINGS)
    try:
        committer, receiver = warm_pair(n, epoch=0, private_handshakes=True)
        spare = [Group.key_package(SUITE, Credential.basic(f"spare-{i}".encode()), now=NOW)
                 for i in range(reps)]
        times: dict[str, dict[str, list[float]]] = {
            op: {"commit_ms": [], "process_ms": [], "library_commit_ms": [],
                 "library_process_ms": []} for op in ("add", "remove")}
        base = f"{server.url}/v1/groups/{committer.group_id.hex()}"
        async with aiohttp.ClientSession() as http:
            await register_group(http, server.url, committer)
            cursor = 0
            for rep in range(reps):
                for op in ("add", "remove"):
                    epoch = committer.epoch
                    read, write = caps(committer)
                    if op == "add":
                        change: dict[str, Any] = {"add": [spare[rep].key_package.encoded()]}
                    else:
                        victim = max(i for i, _ in committer.members()
                                     if i not in (committer.my_leaf, receiver.my_leaf))
                        change = {"remove": [victim]}
                    gc.collect()
                    t0 = time.perf_counter()
                    out = committer.commit(now=NOW, **change)
                    committer.merge_pending_commit()
                    t1 = time.perf_counter()
                    next_read, next_write = caps(committer)
                    async with http.post(base + "/commits", json={
                            "epoch": epoch, "message": b64(out.commit),
                            "next_read_verifier": sha(next_read),
                            "next_write_verifier": sha(next_write)},
                            headers={"Veil-Group-Write": b64(write)}) as r:
                        assert r.status == 200, await r.text()
                    t2 = time.perf_counter()
                    gc.collect()
                    t3 = time.perf_counter()
                    async with http.get(base + "/messages", params={
                            "epoch": str(epoch), "after": str(cursor)},
                            headers={"Veil-Group-Read": b64(read)}) as r:
                        page = await r.json()
                        assert r.status == 200, page
                    [item] = page["messages"]
                    cursor = item["seq"]
                    t4 = time.perf_counter()
                    receiver.process_and_merge(base64.b64decode(item["message"]), now=NOW)
                    t5 = time.perf_counter()
                    assert receiver.epoch_authenticator == committer.epoch_authenticator
                    row = times[op]
                    row["commit_ms"].append((t2 - t0) * 1000)
                    row["library_commit_ms"].append((t1 - t0) * 1000)
                    row["process_ms"].append((t5 - t3) * 1000)
                    row["library_process_ms"].append((t5 - t4) * 1000)
        return [{"workload": "commit", "op": op, "members": n, "reps": reps,
                 **{k: round(statistics.median(v), 2) for k, v in row.items()}}
                for op, row in times.items()]
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--rate", type=float, default=10.0, help="messages a second")
    parser.add_argument("--burst", type=int, default=20,
                        help="messages sent back to back after the paced ones")
    args = parser.parse_args()
    small, large = (200, 2_000) if args.quick else (1_000, 10_000)
    sizes = [100] if args.quick else [100, 1_000, 10_000]
    runs = 1 if args.quick else args.runs
    rows = [fanout_run_sync(small, 4, args.messages, args.rate, args.burst)
            for _ in range(runs)]
    print(json.dumps(_median_row("fanout", rows)), flush=True)
    big = fanout_run_sync(large, 8, max(10, args.messages // 3), args.rate, args.burst)
    print(json.dumps(_median_row("fanout_10k", [big])), flush=True)
    for n in sizes:
        for line in asyncio.run(commit_rows(n, 1 if args.quick else 3)):
            print(json.dumps(line), flush=True)


def fanout_run_sync(members: int, processes: int, messages: int, rate: float,
                    burst: int) -> dict[str, Any]:
    return asyncio.run(fanout_run(members, processes, messages, rate, burst))


if __name__ == "__main__":
    main()
