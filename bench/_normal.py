"""The normal users of bench/attack.py: pairs exchanging messages, every one counted.

Each pair is a sender and a receiver registered with a full prekey upload; a pair
connects from an address of its own in 127.0.1.0/24 (a household, not the attackers'
127.0.0.x), so per-address limits see what they would see of real people. Receivers
hold an authenticated device WebSocket and acknowledge what they read; senders push
256-byte envelopes over a sealed WebSocket (every fourth pair, with the receiver's
access key) or over their own authenticated device WebSocket. Every envelope carries
(CLOCK_MONOTONIC at send, pair, seq): latency is send → receive, and the ledger knows
exactly which messages were sent when and which arrived, so ``lost`` is exact.

Two ways to drive the pairs: ``paced`` (each sender sends ``rate`` messages/s until
stopped: the background load the attacks are measured against) and ``closed_loop``
(each sender keeps ``window`` messages unacknowledged until ``count`` are sent: the
relay throughput of the protection-overhead row).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import statistics
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _keys import b64, basic_auth, registration

PAYLOAD = 256
_STAMP = struct.Struct(">QII")


@dataclass
class Account:
    account_id: str
    auth: str
    access_key: bytes


@dataclass
class Ledger:
    """Send and receive times of every message, by (pair, seq)."""

    sent: dict[tuple[int, int], int] = field(default_factory=dict)
    received: dict[tuple[int, int], int] = field(default_factory=dict)
    errors: dict[tuple[int, int], str] = field(default_factory=dict)
    duplicates: int = 0

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """Figures of the messages *sent* in [t0, t1) (monotonic seconds)."""
        return self.windows([(t0, t1)])

    def windows(self, spans: list[tuple[float, float]]) -> dict[str, Any]:
        """Figures of the messages sent in any of ``spans`` (monotonic seconds)."""
        bounds = [(int(t0 * 1e9), int(t1 * 1e9)) for t0, t1 in spans]
        keys = [k for k, ns in self.sent.items() if any(a <= ns < b for a, b in bounds)]
        seconds = sum(t1 - t0 for t0, t1 in spans)
        lat = sorted((self.received[k] - self.sent[k]) / 1e6 for k in keys
                     if k in self.received)
        q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 \
            else [lat[0] if lat else 0.0] * 99
        codes = Counter(self.errors[k] for k in keys if k in self.errors)
        return {"sent": len(keys), "delivered": len(lat), "lost": len(keys) - len(lat),
                "p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2),
                "per_s": round(len(keys) / seconds, 1) if seconds > 0 else 0.0,
                "send_errors": dict(codes)}


async def register(http: aiohttp.ClientSession, url: str) -> Account:
    key = os.urandom(16)
    async with http.post(url + "/v1/accounts", json=registration(key)) as r:
        data = await r.json()
        if r.status != 201:
            raise RuntimeError(f"registration failed: {r.status} {data}")
    return Account(data["account_id"], basic_auth(data["account_id"], data["device_id"],
                                                  data["token"]), key)


class Pair:
    """One sender and one receiver, with their own session bound to ``source``."""

    def __init__(self, index: int, source: str, sealed: bool) -> None:
        self.index = index
        self.source = source
        self.sealed = sealed
        self.http: aiohttp.ClientSession | None = None
        self.tx_ws: aiohttp.ClientWebSocketResponse | None = None
        self.rx_ws: aiohttp.ClientWebSocketResponse | None = None
        self.seq = 0
        self.pending: dict[int, tuple[int, int]] = {}  # req -> (pair, seq)
        self.tasks: list[asyncio.Task[None]] = []

    async def setup(self, url: str) -> None:
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=0, local_addr=(self.source, 0)))
        self.sender = await register(self.http, url)
        self.receiver = await register(self.http, url)

    async def connect(self, url: str, ledger: Ledger) -> None:
        assert self.http is not None
        self.rx_ws = await self.http.ws_connect(
            url + "/v1/websocket", headers={"Authorization": self.receiver.auth},
            heartbeat=None)
        if self.sealed:
            self.tx_ws = await self.http.ws_connect(url + "/v1/websocket/sealed",
                                                    heartbeat=None)
        else:
            self.tx_ws = await self.http.ws_connect(
                url + "/v1/websocket", headers={"Authorization": self.sender.auth},
                heartbeat=None)
        self.tasks = [asyncio.create_task(self._receive(ledger)),
                      asyncio.create_task(self._replies(ledger))]
        self.filler = os.urandom(PAYLOAD - _STAMP.size)
        access = ',"access_key":"' + b64(self.receiver.access_key) + '"' if self.sealed else ""
        self.prefix = ('{"type":"send","req":%d,"to":"' + self.receiver.account_id + '"' +
                       access + ',"messages":[{"device_id":1,"envelope":"')
        self.window = asyncio.Semaphore(1 << 30)

    async def _receive(self, ledger: Ledger) -> None:
        """Acknowledge like a real client: what one event-loop turn read, at once."""
        assert self.rx_ws is not None
        ws, pending = self.rx_ws, list[int]()
        loop = asyncio.get_running_loop()
        writes: set[asyncio.Future[None]] = set()

        def flush() -> None:
            ids = ",".join(map(str, pending))
            pending.clear()
            if not ws.closed:
                write = asyncio.ensure_future(ws.send_str(f'{{"type":"ack","ids":[{ids}]}}'))
                writes.add(write)
                write.add_done_callback(writes.discard)

        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            event = json.loads(msg.data)
            if event["type"] != "envelope":
                continue
            now = time.monotonic_ns()
            _sent_ns, pair, seq = _STAMP.unpack_from(base64.b64decode(event["envelope"]))
            if (pair, seq) in ledger.received:
                ledger.duplicates += 1
            else:
                ledger.received[(pair, seq)] = now
            if not pending:
                loop.call_soon(flush)
            pending.append(event["id"])

    async def _replies(self, ledger: Ledger) -> None:
        assert self.tx_ws is not None
        async for msg in self.tx_ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            reply = json.loads(msg.data)
            key = self.pending.pop(reply.get("req", -1), None)
            if key is None:
                continue
            if reply["type"] == "error":
                ledger.errors[key] = reply["error"]["code"]
            self.window.release()

    async def send_one(self, ledger: Ledger) -> None:
        assert self.tx_ws is not None
        self.seq += 1
        now = time.monotonic_ns()
        key = (self.index, self.seq)
        self.pending[self.seq] = key
        ledger.sent[key] = now
        body = _STAMP.pack(now, self.index, self.seq) + self.filler
        try:
            await self.tx_ws.send_str(self.prefix % self.seq + b64(body) + '"}]}')
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            ledger.errors[key] = "socket_closed"

    async def paced(self, ledger: Ledger, rate: float, stop: asyncio.Event) -> None:
        """``rate`` messages/s with jitter (people do not send in lockstep)."""
        rng = random.Random(self.index)
        await asyncio.sleep(rng.random() / rate)
        while not stop.is_set():
            await self.send_one(ledger)
            await asyncio.sleep(rng.uniform(0.5, 1.5) / rate)

    async def closed_loop(self, ledger: Ledger, count: int, window: int) -> None:
        self.window = asyncio.Semaphore(window)
        for _ in range(count):
            await self.window.acquire()
            await self.send_one(ledger)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for ws in (self.tx_ws, self.rx_ws):
            if ws is not None:
                await ws.close()
        if self.http is not None:
            await self.http.close()


def pair_source(i: int) -> str:
    return f"127.0.1.{i + 1}"


async def make_pairs(url: str, n: int, ledger: Ledger) -> list[Pair]:
    pairs = [Pair(i, pair_source(i), sealed=i % 4 == 0) for i in range(n)]
    for p in pairs:
        await p.setup(url)
    for p in pairs:
        await p.connect(url, ledger)
    return pairs


async def drain(ledger: Ledger, timeout: float) -> None:
    """Wait until every message sent has arrived or failed, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(k in ledger.received or k in ledger.errors for k in list(ledger.sent)):
            return
        await asyncio.sleep(0.05)
