"""Attacks against a real server while normal users talk (issue 13 §6, "Evidence").

A real server process (``python -m veil.server``, SQLite) with every protection layer
on and its defaults, except ``[network] exempt = []``: loopback is exempt from limits
and blocks by default, and the bench must not hide behind that. The normal users are
N pairs (bench/_normal.py), each pair on an address of its own in 127.0.1.0/24 (people
are not all behind one address: 32 registrations from one would exceed the default
``register.address`` limit that a real household never reaches), sending paced
messages the whole run, well inside the default limits; every message is counted, so
``lost`` is exact. Then each attack in turn (bench/_attacks.py, a child process each
at nice 19, so its event loop does not slow the normal users' load generator), from
its own address 127.0.0.2, 127.0.0.3, … (the slowloris from ten, 127.0.4.1-10, 200
connections each: under the per-address cap, so the slowloris rule must catch it).
With two CPUs or more the server is pinned to one (``taskset``) and the normal users'
load generator to the others, as if the server had a machine of its own (``--no-pin``).
The attackers run on the server's core, at nice 19: on machines of their own they
could not slow the people's machines down, and on this one the kernel's work for their
packets (handshakes, resets: not subject to nice) then falls on the server's core, as
it would on a server machine; their own user-space code takes only what the server
leaves idle. ``--attackers-with-loadgen`` puts them beside the load generator instead.

    registration_storm  accounts with full prekey uploads, 8 at a time
    auth_bruteforce     wrong tokens for a real account
    key_draining        claims of one victim's prekey bundle
    message_flood       one account's envelopes into one (offline) victim's queue
    connection_flood    thousands of idle TCP connections from one address
    slowloris           connections that never finish their headers
    malformed_storm     WebSocket frames that are not JSON / not a frame, bad bodies

Before each attack a quiet window measures the baseline; the attack then runs for a
fixed time. One JSON row per attack:

- ``detected`` / ``seconds_to_detect``: an alert of the attack's rule appeared in the
  admin API (``GET /admin/api/alerts``, token and address from DATA/admin/) — or, when
  the admin API is not there, a rule-firing counter rose on ``/metrics``, or without an
  admin listener the detector's ``alert <rule>:`` log line appeared — and how long
  after the attack started (polled every 0.1 s);
- ``contained``: the attacker is refused at the end (403 blocked, 429 limited, or its
  connections refused), the normal users lost nothing and saw no errors during the
  attack, and the attack's own check (``checks``: e.g. the flood victim's friends can
  still send to the victim; the drained victim keeps one-time prekeys; no slowloris
  connection outlives the header timeout);
- ``baseline_p99_ms`` / ``during_p99_ms`` / ``p99_ratio``: the normal users' send →
  receive latency without an attack (every quiet window of the run together: one
  window's p99 is its 4th slowest message, which one hiccup of a shared machine moves;
  ``baseline_p99_ms_just_before`` is the window before this attack alone) and during
  it; ``lost``: messages the normal users sent during the attack that never arrived
  (or were refused).

Then one row ``{"workload": "protection_overhead", "on_vs_off": …}``: the relay
throughput of the normal users (closed loop, 8 in flight per sender, no attack; 64
pairs) on a server with every layer on vs. one with them off (``[limits] enabled =
false``, ``[rules] enabled = false``, ``[admin] enabled = false``, network caps at the
proxy caps). A closed loop sends far faster than a person, so on the protected server
the five send-frame buckets are raised, not removed: every frame still takes its
tokens, none is refused. Both servers run side by side and are driven in turns, a
round of each (150 messages per pair, about a second) right after the other, in the
order on, off, off, on, …; the first round of each is a warm-up. The row gives the
median of the per-round ratios (``on_vs_off``), the ratio of the totals, and the
server CPU time per message on and off, which other load on a shared machine disturbs
less.

Diagnostics in each row besides the issue's keys: p50s, ``after_detect_p99_ms`` (from
one second after detection), ``during_p99_ms_by_second``, ``loadgen_lag_p99_ms`` (how
late the load generator's own event loop woke: client-side delay that is in every
latency it measures), ``checks.server_cpu_share`` (server CPU seconds per second).
``--quick`` shortens ``[network] header_timeout_s`` to 3 s so a slowloris outlives it,
and ``tarpit_s`` to 0.5 s.

    .venv/bin/python bench/attack.py [--pairs 16] [--rate 4] [--runs 9] [--quick]
                                     [--only ATTACK ...] [--no-overhead] [--no-pin]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import queue as queue_mod
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _attacks import ATTACKS, child
from _normal import Account, Ledger, Pair, drain, make_pairs, register
from _server import _ServerProcess, b64, cpu_seconds, free_port

# The alert rules that count as detecting each attack (protection/rules.py).
RULES: dict[str, tuple[str, ...]] = {
    "registration_storm": ("registration_storm",),
    "auth_bruteforce": ("auth_bruteforce",),
    "key_draining": ("key_draining", "key_draining_target"),
    "message_flood": ("message_flood", "message_flood_target", "message_volume"),
    "connection_flood": ("connection_flood",),
    "slowloris": ("slowloris",),
    "malformed_storm": ("malformed_storm",),
}
HEADER_TIMEOUT_QUICK_S = 3.0
SERVER_CPU = min(os.sched_getaffinity(0))


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # str, int, float, bool, list of str: the same in TOML


class AttackServer(_ServerProcess):
    """The Veil server with a TOML config of flat keys and ``[section]`` tables."""

    def __init__(self, sections: dict[str, dict[str, Any]], pin: bool = False) -> None:
        tmp = tempfile.TemporaryDirectory(prefix="veil-bench-attack-")
        self.data = Path(tmp.name) / "data"
        port = free_port()
        cfg = Path(tmp.name) / "config.toml"
        lines = ['log_to_file = false', 'log_level = "WARNING"']
        for name, table in sections.items():
            lines.append(f"[{name}]")
            lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
        cfg.write_text("\n".join(lines) + "\n")
        # Pinned: the server has a core to itself, as on a machine of its own; the
        # attackers and the normal users share the others (pin_clients).
        prefix = ["taskset", "-c", str(SERVER_CPU)] if pin else []
        super().__init__(
            [*prefix, sys.executable, "-m", "veil.server", "--data", str(self.data), "--host",
             "127.0.0.1", "--port", str(port), "--config", str(cfg)],
            port, "127.0.0.1", tmp)


def can_pin() -> bool:
    return len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset") is not None


def pin_clients() -> None:
    """This process (and the attackers it starts) off the server's core."""
    os.sched_setaffinity(0, os.sched_getaffinity(0) - {SERVER_CPU})


def protection_on(quick: bool) -> dict[str, dict[str, Any]]:
    network: dict[str, Any] = {"exempt": []}
    if quick:  # a slowloris must outlive the header timeout within a quick run
        network.update(header_timeout_s=HEADER_TIMEOUT_QUICK_S, slow_after_s=1.0)
        # and a blocked attacker's last requests and refusal probes wait out the
        # tarpit: a short one keeps the smoke test short.
        network.update(tarpit_s=0.5)
    return {"network": network}


def protection_off() -> dict[str, dict[str, Any]]:
    return {"network": {"exempt": [], "max_connections_per_address": 20_000,
                        "max_websockets_per_address": 20_000,
                        "max_sealed_websockets_per_address": 900},
            "limits": {"enabled": False}, "rules": {"enabled": False},
            "admin": {"enabled": False}}


class Monitor:
    """Polls the admin API's alerts (or /metrics' rule counters) and remembers when each
    alert was first seen (monotonic seconds)."""

    def __init__(self, data: Path, log: Path) -> None:
        self.data = data
        self.log = log
        self.log_offset = 0
        self.base = ""
        self.token = ""
        self.seen: dict[str, tuple[str, float]] = {}  # alert id -> (rule, first seen)
        self.counters: dict[str, float] = {}  # rule -> firings on /metrics
        self.source = "none"
        self.error = ""

    async def open(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        address, token = self.data / "admin" / "address", self.data / "admin" / "token"
        while time.monotonic() < deadline:
            if address.exists() and token.exists():
                text = address.read_text().strip()
                self.base = text if text.startswith("http") else "http://" + text
                self.token = token.read_text().strip()
                return
            await asyncio.sleep(0.1)
        self.error = "no DATA/admin/address or DATA/admin/token"

    async def poll_forever(self) -> None:
        if not self.base:  # no admin listener: the detector's WARNING lines in the log
            self.source = "server_log"
            while True:
                self._poll_log()
                await asyncio.sleep(0.1)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while True:
                try:
                    await self._poll(http)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    self.error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.1)

    async def _poll(self, http: aiohttp.ClientSession) -> None:
        now = time.monotonic()
        headers = {"Authorization": "Bearer " + self.token}
        async with http.get(self.base + "/admin/api/alerts", headers=headers) as r:
            if r.status == 200:
                data = await r.json()
                alerts = data.get("alerts", data) if isinstance(data, dict) else data
                for a in alerts:
                    key = str(a.get("id", json.dumps(a, sort_keys=True)))
                    self.seen.setdefault(key, (str(a.get("rule")), now))
                self.source = "admin_api"
                return
        async with http.get(self.base + "/metrics", headers=headers) as r:
            if r.status != 200:
                self.error = f"alerts and metrics answered {r.status}"
                return
            text = await r.text()
        self.source = "metrics"
        for line in text.splitlines():
            if line.startswith("#") or 'rule="' not in line or "_total" not in line:
                continue
            rule = line.split('rule="', 1)[1].split('"', 1)[0]
            value = float(line.rsplit(" ", 1)[1])
            if value > self.counters.get(rule, 0.0):
                self.counters[rule] = value
                self.seen[f"metrics:{rule}:{value}"] = (rule, now)

    def _poll_log(self) -> None:
        """``alert <rule>: …`` lines (protection/rules.py logs one per firing)."""
        now = time.monotonic()
        with self.log.open("rb") as fh:
            fh.seek(self.log_offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1
        self.log_offset += end
        for n, line in enumerate(chunk[:end].decode(errors="replace").splitlines()):
            if " alert " in line and ":" in line.split(" alert ", 1)[1]:
                rule = line.split(" alert ", 1)[1].split(":", 1)[0].strip()
                self.seen[f"log:{self.log_offset}:{n}"] = (rule, now)

    def first(self, rules: tuple[str, ...], since: float, until: float) -> float | None:
        times = [t for rule, t in self.seen.values() if rule in rules and since <= t <= until]
        return min(times) if times else None

    def rules_between(self, since: float, until: float) -> list[str]:
        return sorted({rule for rule, t in self.seen.values() if since <= t <= until})


@dataclass
class Phase:
    attack: str
    baseline: tuple[float, float]
    during: tuple[float, float] = (0.0, 0.0)
    detected_at: float | None = None
    rules_seen: list[str] = field(default_factory=list)
    attacker: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)


def _steps(start: float, end: float, step: float) -> list[float]:
    return [start + i * step for i in range(int((end - start) / step + 0.999))]


def _params(quick: bool) -> dict[str, dict[str, Any]]:
    d = 3.0 if quick else 10.0
    return {
        "registration_storm": {"concurrency": 8, "duration": d},
        "auth_bruteforce": {"concurrency": 8, "duration": d},
        "key_draining": {"concurrency": 4, "duration": d},
        "message_flood": {"concurrency": 4, "duration": d + 1},
        "connection_flood": {"connections": 600 if quick else 5000,
                             "duration": 4.0 if quick else 12.0},
        # 2,000 as in the outside test, 200 per address: under the per-address
        # cap (256), so the slowloris rule must catch them, not the cap.
        "slowloris": {"connections": 100 if quick else 2000,
                      "sources": [] if quick else [f"127.0.4.{i}" for i in range(1, 11)],
                      "interval": 0.5 if quick else 1.0,
                      "duration": HEADER_TIMEOUT_QUICK_S + 2.5 if quick else 14.0},
        "malformed_storm": {"concurrency": 4, "duration": d},
    }


class Bench:
    """One server with every layer on, the normal pairs, and the attacks in turn."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.server = AttackServer(protection_on(args.quick), pin=args.pin)
        self.url = self.server.url
        self.ledger = Ledger()
        self.monitor = Monitor(self.server.data, self.server.log)
        self.sessions: list[aiohttp.ClientSession] = []

    def session(self, source: str) -> aiohttp.ClientSession:
        s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)),
                                  timeout=aiohttp.ClientTimeout(total=30))
        self.sessions.append(s)
        return s

    async def run(self) -> list[dict[str, Any]]:
        await self.monitor.open()
        poller = asyncio.create_task(self.monitor.poll_forever())
        lag = asyncio.create_task(self.lag_probe())
        self.pairs = await make_pairs(self.url, self.args.pairs, self.ledger)
        # Victims and friends: other people, on addresses of their own.
        self.drain_victim = await register(self.session("127.0.2.1"), self.url)
        self.flood_victim_http = self.session("127.0.2.2")
        self.flood_victim = await register(self.flood_victim_http, self.url)
        self.friend_http = self.session("127.0.2.3")
        self.friend = await register(self.friend_http, self.url)
        stop = asyncio.Event()
        pacers = [asyncio.create_task(p.paced(self.ledger, self.args.rate, stop))
                  for p in self.pairs]
        await asyncio.sleep(1.0)  # warm-up, not counted
        phases = []
        params = _params(self.args.quick)
        for k, name in enumerate(self.args.only):
            phases.append(await self.attack(name, f"127.0.0.{2 + k}", params[name]))
        stop.set()
        await asyncio.gather(*pacers)
        await drain(self.ledger, 20.0)
        poller.cancel()
        lag.cancel()
        self.quiet = [p.baseline for p in phases]
        rows = [self.row(p) for p in phases]
        for p in self.pairs:
            await p.close()
        for s in self.sessions:
            await s.close()
        return rows

    async def attack(self, name: str, source: str, params: dict[str, Any]) -> Phase:
        b0 = time.monotonic()
        await asyncio.sleep(self.args.baseline)
        phase = Phase(name, (b0, time.monotonic()))
        params = {**params, "host": self.server.host, "port": self.server.port,
                  "victim_account": self._victim(name),
                  "cpus": [SERVER_CPU] if self.args.pin and not self.args.attackers_with_loadgen
                  else []}
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=child, args=(name, self.url, source, params, queue))
        proc.start()
        loop = asyncio.get_running_loop()
        kind, t0 = await loop.run_in_executor(None, queue.get, True, 60)
        assert kind == "started"
        cpu0 = cpu_seconds(self.server.proc.pid)
        during = asyncio.create_task(self.during(name, t0, params["duration"]))
        try:
            kind, phase.attacker = await loop.run_in_executor(None, queue.get, True, 300)
        except queue_mod.Empty:
            phase.attacker = {"error": "the attacker process gave no result"}
        t_end = t0 + params["duration"]
        phase.during = (t0, t_end)
        phase.checks["server_cpu_share"] = round(
            (cpu_seconds(self.server.proc.pid) - cpu0) / max(time.monotonic() - t0, 1e-3), 2)
        await loop.run_in_executor(None, proc.join, 30)
        if proc.is_alive():
            proc.kill()
        phase.checks.update(await during)
        phase.checks.update(await self.after(name, phase.checks))
        phase.detected_at = self.monitor.first(RULES[name], t0, time.monotonic())
        phase.rules_seen = self.monitor.rules_between(t0, time.monotonic())
        await asyncio.sleep(2.0)  # let the attack's aftermath settle before the next baseline
        return phase

    async def lag_probe(self) -> None:
        """How late this process's event loop wakes up (its own scheduling delay, which
        is in every latency it measures): on a loaded machine, the attacker and other
        processes on the load generator's core show here, not in the server."""
        self.lags: list[tuple[float, float]] = []
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.lags.append((now, (now - t - 0.01) * 1000))

    def lag_p99(self, t0: float, t1: float) -> float:
        lags = sorted(v for t, v in self.lags if t0 <= t < t1)
        return round(lags[int(0.99 * (len(lags) - 1))], 2) if lags else 0.0

    def _victim(self, name: str) -> str:
        if name == "key_draining":
            return self.drain_victim.account_id
        if name == "message_flood":
            return self.flood_victim.account_id
        return self.pairs[0].receiver.account_id  # brute force: a real, active account

    async def during(self, name: str, t0: float, duration: float) -> dict[str, Any]:
        """What a normal person checks while the attack runs."""
        if name == "message_flood":  # the victim's friend writes near the end of the flood
            await asyncio.sleep(max(0.0, t0 + duration * 0.7 - time.monotonic()))
            return await self.friend_writes()
        if name == "registration_storm":  # a newcomer can still register
            await asyncio.sleep(max(0.0, t0 + duration * 0.7 - time.monotonic()))
            try:
                await register(self.session("127.0.3.1"), self.url)
                return {"newcomer_registered": True}
            except (RuntimeError, aiohttp.ClientError) as exc:
                return {"newcomer_registered": False, "newcomer_error": str(exc)[:200]}
        return {}

    async def friend_writes(self, n: int = 20) -> dict[str, Any]:
        """The flood victim's friend sends n envelopes; then the victim comes online and
        must find all of them behind whatever the flood left in the queue."""
        marks = [b"friend:%d:" % i + os.urandom(16) for i in range(n)]
        codes: dict[str, int] = {}
        for mark in marks:
            body = {"messages": [{"device_id": 1, "envelope": b64(mark)}]}
            async with self.friend_http.put(f"{self.url}/v1/messages/"
                                            f"{self.flood_victim.account_id}", json=body,
                                            headers={"Authorization": self.friend.auth}) as r:
                data = await r.json()
                code = "ok" if r.status == 200 else data.get("error", {}).get("code", str(r.status))
                codes[code] = codes.get(code, 0) + 1
            await asyncio.sleep(0.05)
        return {"friend_sends": codes, "friend_marks": marks}

    async def after(self, name: str, checks: dict[str, Any]) -> dict[str, Any]:
        if name == "message_flood":
            marks = checks.pop("friend_marks", [])
            return {"friend_received": await self.victim_reads(marks, 60.0)}
        if name == "key_draining":
            async with self.session("127.0.2.1").get(
                    self.url + "/v1/keys/status",
                    headers={"Authorization": self.drain_victim.auth}) as r:
                status = await r.json()
            return {"victim_one_time_prekeys_left": status.get("one_time_prekeys"),
                    "victim_one_time_kem_prekeys_left": status.get("one_time_kem_prekeys")}
        if name == "auth_bruteforce":
            p = self.pairs[0]
            assert p.http is not None
            async with p.http.get(self.url + "/v1/accounts/me",
                                  headers={"Authorization": p.receiver.auth}) as r:
                return {"victim_can_log_in": r.status == 200}
        return {}

    async def victim_reads(self, marks: list[bytes], timeout: float) -> int:
        """The flood victim connects and reads its queue; how many friend marks arrived."""
        want, found = set(marks), 0
        ws = await self.flood_victim_http.ws_connect(
            self.url + "/v1/websocket", headers={"Authorization": self.flood_victim.auth})
        deadline = time.monotonic() + timeout
        try:
            while found < len(want) and time.monotonic() < deadline:
                msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                event = json.loads(msg.data)
                if event["type"] != "envelope":
                    continue
                if base64.b64decode(event["envelope"]) in want:
                    found += 1
                await ws.send_str(json.dumps({"type": "ack", "ids": [event["id"]]}))
        except TimeoutError:
            pass
        finally:
            await ws.close()
        return found

    def row(self, p: Phase) -> dict[str, Any]:
        # The baseline is every quiet window of the run together: one 5-second window
        # holds ~320 messages, whose p99 is their 4th slowest (one hiccup of the machine
        # moves it); the quiet window just before this attack is reported too.
        base = self.ledger.windows(self.quiet)
        before = self.ledger.window(*p.baseline)
        during = self.ledger.window(*p.during)
        detected = p.detected_at is not None
        checks = dict(p.checks)
        specific = self._specific(p.attack, p.attacker, checks)
        normal_ok = during["lost"] == 0 and not during["send_errors"]
        attacker_refused = bool(p.attacker.get("probe_refused"))
        ratio = round(during["p99_ms"] / base["p99_ms"], 2) if base["p99_ms"] else None
        # The same figures from one second after detection to the end: what the normal
        # users see once the attacker is blocked.
        after = self.ledger.window(p.detected_at + 1.0, p.during[1]) \
            if p.detected_at is not None and p.detected_at + 1.0 < p.during[1] else None
        return {
            "attack": p.attack,
            "detected": detected,
            "seconds_to_detect": (round(p.detected_at - p.during[0], 2)
                                  if p.detected_at is not None else None),
            "contained": attacker_refused and normal_ok and specific,
            "baseline_p99_ms": base["p99_ms"],
            "during_p99_ms": during["p99_ms"],
            "p99_ratio": ratio,
            "lost": during["lost"],
            "baseline_p99_ms_just_before": before["p99_ms"],
            "baseline_p50_ms": base["p50_ms"],
            "during_p50_ms": during["p50_ms"],
            "after_detect_p99_ms": after["p99_ms"] if after else None,
            "during_p99_ms_by_second": [
                self.ledger.window(t, min(t + 1.0, p.during[1]))["p99_ms"]
                for t in _steps(p.during[0], p.during[1], 1.0)],
            "loadgen_lag_p99_ms": {"baseline": self.lag_p99(*p.baseline),
                                   "during": self.lag_p99(*p.during)},
            "baseline_per_s": base["per_s"],
            "during_per_s": during["per_s"],
            "normal_sent": during["sent"],
            "normal_send_errors": during["send_errors"],
            "attacker_refused": attacker_refused,
            "attack_check_ok": specific,
            "rules_seen": p.rules_seen,
            "detection_source": self.monitor.source,
            "attacker": {k: v for k, v in p.attacker.items()
                         if k not in ("first_refused_at", "last_ok_at")},
            "checks": checks,
        }

    def _specific(self, name: str, attacker: dict[str, Any], checks: dict[str, Any]) -> bool:
        if "error" in attacker:
            return False
        if name == "key_draining":
            return bool(checks.get("victim_one_time_prekeys_left"))
        if name == "message_flood":
            sends: dict[str, int] = checks.get("friend_sends", {})
            total = sum(sends.values())
            return bool(sends.get("ok", 0) == total > 0 and checks.get("friend_received") == total)
        if name == "auth_bruteforce":
            return bool(checks.get("victim_can_log_in"))
        if name == "registration_storm":
            return bool(checks.get("newcomer_registered"))
        if name == "connection_flood":
            return int(attacker.get("held_at_end", 1 << 30)) <= 256  # the per-address cap
        if name == "slowloris":
            # The header timeout, and slack for the attacker's 0.5-1 s between lines.
            limit = (HEADER_TIMEOUT_QUICK_S if self.args.quick else 10.0) + 1.5
            return float(attacker.get("max_lifetime_s", 1e9)) <= limit
        return True


async def _attacks(args: argparse.Namespace) -> list[dict[str, Any]]:
    bench = Bench(args)
    try:
        return await bench.run()
    finally:
        bench.server.close()


# --- protection overhead: relay throughput, layers on vs. off ----------------------

@dataclass
class RelayRound:
    delivered: int
    seconds: float  # first send to last arrival
    cpu_s: float  # the server's user + system CPU seconds in the round
    p99_ms: float
    lost: int
    send_errors: dict[str, int]

    @property
    def per_s(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


async def relay_round(server: AttackServer, ps: list[Pair], ledger: Ledger,
                      count: int) -> RelayRound:
    """Each pair sends ``count`` messages, 8 in flight; timed to the last arrival (not
    to the drain loop's next poll, which would add up to 50 ms to a short round)."""
    before = set(ledger.sent)
    cpu0 = cpu_seconds(server.proc.pid)
    start_ns = time.monotonic_ns()
    await asyncio.gather(*(p.closed_loop(ledger, count, 8) for p in ps))
    await drain(ledger, 30.0)
    cpu = cpu_seconds(server.proc.pid) - cpu0
    keys = [k for k in ledger.sent if k not in before]
    arrived = [ledger.received[k] for k in keys if k in ledger.received]
    end_ns = max(arrived, default=start_ns)
    w = ledger.window(start_ns / 1e9, time.monotonic() + 1.0)
    return RelayRound(len(arrived), (end_ns - start_ns) / 1e9, cpu, w["p99_ms"],
                      len(keys) - len(arrived), w["send_errors"])


async def interleaved_relay(pin: bool, pairs: int, rounds: int,
                            count: int) -> dict[str, list[RelayRound]]:
    """Two live servers, every layer on and every layer off, driven in turns (on, off,
    off, on, …) by the same pairs' code: a round of each lies within a second of the
    other, so what else the machine does at that moment weighs on both alike. The
    first round of each is a warm-up and not counted."""
    on = protection_on(False)
    # The closed loop sends far faster than a person: the send-frame buckets are raised
    # (not turned off) so every frame still takes its five tokens and nothing is refused.
    on["limits"] = {"rates": {f"submit.{d}": "1000000/1s burst 1000000"
                              for d in ("address", "account", "socket", "pair", "share")}}
    servers = {"on": AttackServer(on, pin=pin),
               "off": AttackServer(protection_off(), pin=pin)}
    ledgers = {name: Ledger() for name in servers}
    out: dict[str, list[RelayRound]] = {name: [] for name in servers}
    pair_sets: dict[str, list[Pair]] = {}
    try:
        for name, server in servers.items():
            pair_sets[name] = await make_pairs(server.url, pairs, ledgers[name])
        for r in range(rounds + 1):
            for name in (("on", "off") if r % 2 == 0 else ("off", "on")):
                result = await relay_round(servers[name], pair_sets[name], ledgers[name],
                                           count)
                if r > 0:
                    out[name].append(result)
    finally:
        for ps in pair_sets.values():
            for p in ps:
                await p.close()
        for server in servers.values():
            server.close()
    return out


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    pairs = 4 if args.quick else 64
    count = 20 if args.quick else 150
    runs = asyncio.run(interleaved_relay(args.pin, pairs, args.runs, count))
    on, off = runs["on"], runs["off"]
    ratios = [round(a.per_s / b.per_s, 3) for a, b in zip(on, off, strict=True) if b.per_s]
    total_on = sum(r.delivered for r in on) / sum(r.seconds for r in on)
    total_off = sum(r.delivered for r in off) / sum(r.seconds for r in off)

    def cpu_us(rs: list[RelayRound]) -> float:
        return round(sum(r.cpu_s for r in rs) / max(sum(r.delivered for r in rs), 1) * 1e6, 1)

    return {
        "workload": "protection_overhead",
        "on_vs_off": statistics.median(ratios) if ratios else None,
        "on_vs_off_rounds": ratios,
        "on_vs_off_total": round(total_on / total_off, 3) if total_off else None,
        "on_delivered_per_s": round(statistics.median(r.per_s for r in on), 1),
        "off_delivered_per_s": round(statistics.median(r.per_s for r in off), 1),
        # Less sensitive to other load on a shared machine than throughput: the server's
        # CPU time per delivered message (user + system), over all rounds.
        "on_server_cpu_us_per_message": cpu_us(on),
        "off_server_cpu_us_per_message": cpu_us(off),
        "on_p99_ms": statistics.median(r.p99_ms for r in on),
        "off_p99_ms": statistics.median(r.p99_ms for r in off),
        "lost": max(r.lost for r in on + off),
        "send_errors": [r.send_errors for r in on + off if r.send_errors],
        "pairs": pairs, "messages_per_pair_per_round": count, "rounds": args.runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--rate", type=float, default=4.0,
                        help="messages per second each normal sender sends")
    parser.add_argument("--baseline", type=float, default=5.0,
                        help="seconds of quiet baseline before each attack")
    parser.add_argument("--runs", type=int, default=9,
                        help="overhead rounds of each server, interleaved (medians)")
    parser.add_argument("--only", nargs="+", choices=list(ATTACKS), default=list(ATTACKS))
    parser.add_argument("--no-overhead", action="store_true")
    parser.add_argument("--attackers-with-loadgen", action="store_true",
                        help="run the attackers on the load generator's cores")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not give the server a CPU of its own (taskset)")
    parser.add_argument("--quick", action="store_true",
                        help="4 pairs, short attacks, 2 overhead rounds (CI smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.rate, args.baseline, args.runs = 4, 5.0, 1.5, 2
    os.environ.setdefault("PYTHONHASHSEED", "0")
    args.pin = can_pin() and not args.no_pin
    if args.pin:
        pin_clients()
    for row in asyncio.run(_attacks(args)):
        print(json.dumps(row), flush=True)
    if not args.no_overhead:
        row = overhead(args)
        row["load_average_1m"] = round(os.getloadavg()[0], 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()


__all__ = ["Account", "AttackServer", "Bench", "Monitor", "main"]
