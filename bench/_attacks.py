"""The attackers of bench/attack.py (issue 13 §6), each run in a child process of its own.

An attacker binds every socket to its own loopback address (127.0.0.2, 127.0.0.3, …),
so the server sees one attacking address and the normal users elsewhere are not in
its way; it runs in a separate process so its event loop does not steal time from the
normal users' load generator, whose latencies are what the bench measures.

Each attack runs for ``params["duration"]`` seconds, then probes the server once more
with the same kind of request (``probe``: was the attacker refused at the end?) and
returns counters. Outcomes of a request are classified by :func:`_outcome`; "refused"
means the server said no to the attacker (403 blocked, 429 rate limited, or the
connection was refused/aborted), as opposed to answering it normally.

    child(name, url, source, params, queue)   # multiprocessing target
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import resource
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _keys import b64, basic_auth, registration_bytes

REFUSED = frozenset({"403", "429", "conn"})
JSON = {"Content-Type": "application/json"}


class Stats:
    """Counters of one attack: outcomes by category, and when the first refusal came."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.first_refused_at: float | None = None
        self.last_ok_at: float | None = None
        self.extra: dict[str, Any] = {}

    def add(self, outcome: str, ok: bool = False) -> None:
        self.outcomes[outcome] += 1
        now = time.monotonic()
        if outcome in REFUSED and self.first_refused_at is None:
            self.first_refused_at = now
        if ok:
            self.last_ok_at = now

    def result(self, probe_refused: bool) -> dict[str, Any]:
        return {"outcomes": dict(self.outcomes), "attempts": sum(self.outcomes.values()),
                "first_refused_at": self.first_refused_at, "last_ok_at": self.last_ok_at,
                "probe_refused": probe_refused, **self.extra}


async def _outcome(make: Callable[[], Any]) -> tuple[str, Any]:
    """Run one request; its category ("2xx", "401", "403", "429", "4xx", "5xx", "conn",
    "timeout") and the decoded JSON body when there is one."""
    try:
        async with make() as r:
            body = await r.read()
            status = r.status
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError):
        return "conn", None
    except TimeoutError:
        return "timeout", None
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if 200 <= status < 300:
        return "2xx", data
    if status in (401, 403, 429):
        return str(status), data
    return ("5xx" if status >= 500 else "4xx"), data


def _session(source: str, limit: int = 0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, local_addr=(source, 0),
                                       force_close=False),
        timeout=aiohttp.ClientTimeout(total=10))


async def _workers(n: int, duration: float, one: Callable[[], Awaitable[None]]) -> None:
    deadline = time.monotonic() + duration

    async def loop() -> None:
        while time.monotonic() < deadline:
            await one()

    await asyncio.gather(*(loop() for _ in range(n)))


async def _probe(one: Callable[[], Awaitable[str]], tries: int = 3) -> bool:
    """True when the attacker's own kind of request is refused every time."""
    results = []
    for _ in range(tries):
        results.append(await one())
        await asyncio.sleep(0.05)
    return all(r in REFUSED for r in results)


async def _register(http: aiohttp.ClientSession, url: str) -> str | None:
    """The attacker's own account (a Basic authorization), or None when refused."""
    outcome, data = await _outcome(lambda: http.post(url + "/v1/accounts",
                                                     data=registration_bytes(), headers=JSON))
    if outcome != "2xx":
        return None
    return basic_auth(data["account_id"], data["device_id"], data["token"])


# --- registration storm: accounts with full prekey uploads, as fast as possible -------

async def registration_storm(url: str, source: str, p: dict[str, Any]) -> dict[str, Any]:
    stats = Stats()
    body = registration_bytes()
    async with _session(source) as http:
        async def one() -> str:
            outcome, _ = await _outcome(lambda: http.post(url + "/v1/accounts", data=body,
                                                          headers=JSON))
            stats.add(outcome, ok=outcome == "2xx")
            return outcome

        async def work() -> None:
            await one()

        await _workers(p["concurrency"], p["duration"], work)
        refused = await _probe(one)
    stats.extra["registered"] = stats.outcomes["2xx"]
    return stats.result(refused)


# --- authentication brute force: wrong tokens for a real account ---------------------

async def auth_bruteforce(url: str, source: str, p: dict[str, Any]) -> dict[str, Any]:
    stats = Stats()
    victim = p["victim_account"]
    async with _session(source) as http:
        async def one() -> str:
            auth = basic_auth(victim, 1, b64(os.urandom(32)))
            outcome, _ = await _outcome(lambda: http.get(url + "/v1/accounts/me",
                                                         headers={"Authorization": auth}))
            stats.add(outcome, ok=outcome == "2xx")
            return outcome

        async def work() -> None:
            await one()

        await _workers(p["concurrency"], p["duration"], work)
        refused = await _probe(one)
    return stats.result(refused)


# --- prekey draining: claims of one victim's bundle ----------------------------------

async def key_draining(url: str, source: str, p: dict[str, Any]) -> dict[str, Any]:
    stats = Stats()
    victim = p["victim_account"]
    drained = 0
    async with _session(source) as http:
        auth = await _register(http, url)
        headers = {"Authorization": auth} if auth else {}

        async def one() -> str:
            nonlocal drained
            outcome, data = await _outcome(lambda: http.get(f"{url}/v1/keys/{victim}/*",
                                                            headers=headers))
            if outcome == "2xx" and isinstance(data, dict):
                drained += sum(1 for d in data.get("devices", [])
                               if d.get("one_time_prekey") is not None)
            stats.add(outcome, ok=outcome == "2xx")
            return outcome

        async def work() -> None:
            await one()

        await _workers(p["concurrency"], p["duration"], work)
        refused = await _probe(one)
    stats.extra["registered_attacker"] = auth is not None
    stats.extra["one_time_prekeys_claimed"] = drained
    return stats.result(refused)


# --- message flood into one victim's queue ------------------------------------------

async def message_flood(url: str, source: str, p: dict[str, Any]) -> dict[str, Any]:
    stats = Stats()
    victim = p["victim_account"]
    envelope = b64(os.urandom(256))
    body = json.dumps({"messages": [{"device_id": 1, "envelope": envelope}]}).encode()
    deadline = time.monotonic() + p["duration"]
    async with _session(source) as http:
        auth = await _register(http, url)
        headers = {"Authorization": auth or "", **JSON}

        async def put() -> str:
            outcome, data = await _outcome(lambda: http.put(f"{url}/v1/messages/{victim}",
                                                            data=body, headers=headers))
            if outcome not in ("2xx", *REFUSED) and isinstance(data, dict):
                outcome = "err:" + str(data.get("error", {}).get("code", outcome))
            stats.add(outcome, ok=outcome == "2xx")
            return outcome

        async def http_worker() -> None:
            while time.monotonic() < deadline:
                await put()

        async def socket_worker() -> None:
            """Send frames over the attacker's own device socket, WINDOW in flight."""
            try:
                ws = await http.ws_connect(url + "/v1/websocket",
                                           headers={"Authorization": auth or ""})
            except (aiohttp.ClientError, OSError):
                stats.add("conn")
                return
            window = asyncio.Semaphore(32)
            frame = ('{"type":"send","req":%d,"to":"' + victim +
                     '","messages":[{"device_id":1,"envelope":"' + envelope + '"}]}')

            async def replies() -> None:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    reply = json.loads(msg.data)
                    if reply.get("type") == "sent":
                        stats.add("2xx", ok=True)
                    elif reply.get("type") == "error":
                        code = reply.get("error", {}).get("code", "?")
                        stats.add("429" if code == "rate_limited" else "err:" + code)
                    else:
                        continue
                    window.release()

            reader = asyncio.create_task(replies())
            req = 0
            try:
                while time.monotonic() < deadline and not ws.closed:
                    try:
                        await asyncio.wait_for(window.acquire(), 1.0)
                    except TimeoutError:
                        continue
                    req += 1
                    await ws.send_str(frame % req)
            except (aiohttp.ClientError, ConnectionError):
                pass
            if ws.closed:
                stats.add("conn")
            reader.cancel()
            await ws.close()

        await asyncio.gather(socket_worker(), *(http_worker() for _ in range(p["concurrency"])))
        refused = await _probe(put)
    stats.extra["accepted"] = stats.outcomes["2xx"]
    return stats.result(refused)


# --- raw TCP: connection flood and slowloris ----------------------------------------

def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _connect(source: str, host: str, port: int) -> socket.socket | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.bind((source, 0))
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, (host, port)), 5)
    except (OSError, TimeoutError):
        s.close()
        return None
    return s


def _is_open(s: socket.socket) -> bool:
    """Still held by the server: no EOF and no reset (a connection the server has not
    accepted yet sits in its backlog and counts as held too)."""
    try:
        return s.recv(4096, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


async def _http_probe(host: str, port: int, source: str) -> str:
    """One GET /health on a fresh connection from the attacker's address."""
    s = await _connect(source, host, port)
    if s is None:
        return "conn"
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(s, f"GET /health HTTP/1.1\r\nHost: {host}\r\n"
                                   "Connection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(loop.sock_recv(s, 4096), 5)
    except (OSError, TimeoutError):
        return "conn"
    finally:
        s.close()
    if not data:
        return "conn"
    status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "?"
    return status if status in ("403", "429") else "2xx" if status.startswith("2") else "4xx"


async def connection_flood(url: str, source: str, p: dict[str, Any]) -> dict[str, Any]:
    """Thousands of idle TCP connections from one address, refilled as the server drops
    them; counts how many the server still holds at the end."""
    _raise_nofile()
    stats = Stats()
    host, port = p["host"], p["port"]
    held: list[socket.socket] = []
    sem = asyncio.Semaphore(256)
    deadline = time.monotonic() + p["duration"]
    peak = 0

    async def open_one() -> None:
        async with sem:
            s = await _connect(source, host, port)
        if s is None:
            stats.add("conn")
        else:
            stats.add("opened")
            held.append(s)

    while time.monotonic() < deadline:
        for s in [s for s in held if not _is_open(s)]:
            stats.add("dropped_by_server")
            held.remove(s)
            s.close()
        peak = max(peak, len(held))
        missing = p["connections"] - len(held)
        if missing > 0:
            await asyncio.gather(*(open_one() for _ in range(missing)))
        await asyncio.sleep(0.5)
    still = [s for s in held if _is_open(s)]
    stats.extra.update(held_at_end=len(still), peak_held=max(peak, len(still)),
                       target=p["connections"])
    for s in held:
        s.close()
    refused = await _probe(lambda: _http_probe(host, port, source))
    return stats.result(refused)


async def slowloris(url: str, source: str, p: dict[str, Any]) -> dict[str, Any]:
    """Connections that never finish their headers: one more header line every
    ``interval`` seconds; closed ones are replaced while the attack lasts. Spread over
    ``sources`` addresses (default: ``source`` alone) so that each stays under the
    per-address connection cap, and the slowloris rule, not the cap, must catch it."""
    _raise_nofile()
    stats = Stats()
    host, port = p["host"], p["port"]
    sources: list[str] = p.get("sources") or [source]
    deadline = time.monotonic() + p["duration"]
    lifetimes: list[float] = []
    loop = asyncio.get_running_loop()

    async def one_connection(src: str) -> None:
        while time.monotonic() < deadline:
            s = await _connect(src, host, port)
            if s is None:
                stats.add("conn")
                await asyncio.sleep(0.5)
                continue
            stats.add("opened")
            opened = time.monotonic()
            try:
                await loop.sock_sendall(s, f"GET /health HTTP/1.1\r\nHost: {host}\r\n".encode())
                n = 0
                while time.monotonic() < deadline:
                    await asyncio.sleep(p["interval"])
                    if not _is_open(s):
                        raise ConnectionResetError
                    n += 1
                    await loop.sock_sendall(s, f"X-Slow-{n}: {n}\r\n".encode())
            except OSError:
                stats.add("dropped_by_server")
                lifetimes.append(time.monotonic() - opened)
                continue
            finally:
                s.close()
            lifetimes.append(time.monotonic() - opened)  # still open when the attack ended
            stats.extra["held_at_end"] += 1

    stats.extra["held_at_end"] = 0
    await asyncio.gather(*(one_connection(sources[i % len(sources)])
                           for i in range(p["connections"])))
    stats.extra["max_lifetime_s"] = round(max(lifetimes, default=0.0), 2)
    stats.extra["addresses"] = len(sources)
    refused = [await _probe(functools.partial(_http_probe, host, port, src)) for src in sources]
    stats.extra["addresses_refused_at_end"] = sum(refused)
    return stats.result(all(refused))


# --- malformed-frame storm ----------------------------------------------------------

_BAD_FRAMES = ("this is not JSON {", '{"type":"send","req":1}', '{"type":"nope"}',
               '[1, 2, 3]', '{"type":"send","req":"x","to":7,"messages":{}}')


async def malformed_storm(url: str, source: str, p: dict[str, Any]) -> dict[str, Any]:
    """Sealed WebSockets fed frames that are not JSON or not a valid frame (the server
    closes each), binary frames, and HTTP requests with bodies that do not decode."""
    stats = Stats()
    counter = iter(range(1 << 62))
    async with _session(source) as http:
        async def ws_bad(text: str | None) -> str:
            try:
                async with http.ws_connect(url + "/v1/websocket/sealed") as ws:
                    if text is None:
                        await ws.send_bytes(b"\x00\xffnot a text frame")
                    else:
                        await ws.send_str(text)
                    with contextlib.suppress(TimeoutError):
                        await ws.receive(timeout=5)
                return "closed"
            except aiohttp.WSServerHandshakeError as exc:
                return str(exc.status) if exc.status in (403, 429) else "4xx"
            except (aiohttp.ClientError, OSError, TimeoutError):
                return "conn"

        async def http_bad() -> str:
            outcome, _ = await _outcome(lambda: http.put(
                f"{url}/v1/messages/{'ab' * 16}", data=b'{"messages": [', headers=JSON))
            return outcome

        async def one() -> str:
            i = next(counter)
            kind = i % (len(_BAD_FRAMES) + 2)
            if kind < len(_BAD_FRAMES):
                outcome = await ws_bad(_BAD_FRAMES[kind])
            elif kind == len(_BAD_FRAMES):
                outcome = await ws_bad(None)
            else:
                outcome = await http_bad()
            stats.add(outcome)
            return outcome

        async def work() -> None:
            await one()

        await _workers(p["concurrency"], p["duration"], work)
        refused = await _probe(one)
    return stats.result(refused)


ATTACKS: dict[str, Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "registration_storm": registration_storm,
    "auth_bruteforce": auth_bruteforce,
    "key_draining": key_draining,
    "message_flood": message_flood,
    "connection_flood": connection_flood,
    "slowloris": slowloris,
    "malformed_storm": malformed_storm,
}


def child(name: str, url: str, source: str, params: dict[str, Any], queue: Any) -> None:
    """multiprocessing target: tell the parent when the attack starts, then its result."""
    registration_bytes()  # key generation before the clock starts
    # On a small machine the attacker shares a core with the normal users' load
    # generator (on separate machines it could not slow it down): let that one go first.
    # Measured: a child that only burns CPU here, touching no server, raised the normal
    # users' p99 1.8x on a loaded 2-core machine.
    os.nice(19)
    if params.get("cpus"):  # the server's core (attack.py's docstring says why)
        os.sched_setaffinity(0, set(params["cpus"]))

    async def main() -> dict[str, Any]:
        queue.put(("started", time.monotonic()))
        return await ATTACKS[name](url, source, params)

    try:
        queue.put(("done", asyncio.run(main())))
    except Exception as exc:  # reported in the row, not lost in a child's stderr
        queue.put(("done", {"error": f"{type(exc).__name__}: {exc}"}))
