"""An in-memory Veil server behind a :class:`veil.client.transport.Transport`: enough of
the API (docs/server.md) to drive real ``Client`` logic without a server process, as
httpx's ``MockTransport`` allows.

Tests can stall or replace any route with ``hold(method, prefix)`` / ``answer(...)``,
and look at what the client did in ``requests`` and ``keys``.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from veil.client.errors import ServerUnreachable
from veil.client.transport import WebSocket
from veil.core import keys, sealed
from veil.protocol import responses as rs
from veil.protocol import to_builtins

DAY_MS = 24 * 3600 * 1000
Reply = tuple[int, Any]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _error(status: int, code: str, details: dict[str, Any] | None = None) -> Reply:
    error: dict[str, Any] = {"code": code, "message": code.replace("_", " ")}
    if details is not None:
        error["details"] = details
    return status, {"error": error}


@dataclass
class Device:
    token: bytes
    signed_prekey: str
    last_resort: str
    one_time: list[dict[str, Any]] = field(default_factory=list)
    one_time_kem: list[dict[str, Any]] = field(default_factory=list)
    registration_id: int = 1
    approval: str | None = None     # base64 of the device's approval (docs/devices.md)
    queue: dict[int, tuple[int, str]] = field(default_factory=dict)   # id → (ts, envelope)


@dataclass
class Account:
    identity: bytes
    access_key: bytes
    username: str | None
    devices: dict[int, Device] = field(default_factory=dict)


class MemorySocket:
    def __init__(self, server: MemoryServer, account: str, device: int) -> None:
        self.server, self.account, self.device = server, account, device
        self.frames: asyncio.Queue[str | None] = asyncio.Queue()
        self.acked: list[int] = []
        self.closed = False

    async def receive_text(self) -> str | None:
        return await self.frames.get()

    async def send_json(self, data: Any) -> None:
        if self.closed:
            raise ConnectionError("closed")
        if data.get("type") == "ack":
            for envelope_id in data["ids"]:
                self.acked.append(envelope_id)
                self.server.accounts[self.account].devices[self.device].queue.pop(
                    envelope_id, None)
            self.server.changed()

    async def close(self) -> None:
        self.closed = True
        self.frames.put_nowait(None)


class MemoryServer:
    def __init__(self, clock: Callable[[], int]) -> None:
        self.clock = clock
        self.root = sealed.TrustRoot.generate()
        self.server_key = sealed.ServerKey.generate(self.root, 1, clock() + 3650 * DAY_MS)
        self.accounts: dict[str, Account] = {}
        self.requests: list[tuple[str, str]] = []
        self.sealed_requests: list[tuple[str, str]] = []    # sent with sealed=True
        self.sockets: list[MemorySocket] = []
        self.reachable = True
        self._next_id = 1
        self._overrides: list[tuple[str, str, Callable[[Any], Awaitable[Reply | None]]]] = []
        self._changed = asyncio.Condition()

    # --- test controls -----------------------------------------------------------------

    def answer(self, method: str, prefix: str,
               reply: Callable[[Any], Awaitable[Reply | None]]) -> None:
        """Route ``method prefix…`` to ``reply(body)`` first; None falls through."""
        self._overrides.append((method, prefix, reply))

    def hold(self, method: str, prefix: str) -> tuple[asyncio.Event, asyncio.Event]:
        """Stall matching requests: (reached, release)."""
        reached, release = asyncio.Event(), asyncio.Event()

        async def stall(_: Any) -> None:
            reached.set()
            await release.wait()
        self.answer(method, prefix, stall)
        return reached, release

    def changed(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()
        asyncio.get_running_loop().create_task(notify())

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``condition()`` holds, woken by server-side changes."""
        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(condition)
        await asyncio.wait_for(until(), timeout)

    def deliver(self, account: str, device: int, envelope: bytes, ts: int | None = None) -> int:
        """Queue an envelope (and push it to open sockets of that device)."""
        envelope_id = self._next_id
        self._next_id += 1
        when = self.clock() if ts is None else ts
        self.accounts[account].devices[device].queue[envelope_id] = (when, _b64(envelope))
        for ws in self.sockets:
            if (ws.account, ws.device) == (account, device) and not ws.closed:
                ws.frames.put_nowait(_frame(envelope_id, when, _b64(envelope)))
        self.changed()
        return envelope_id

    def bundle(self, account: str, device: int = 1) -> keys.PreKeyBundle:
        dev = self.accounts[account].devices[device]
        opk = dev.one_time.pop(0) if dev.one_time else None
        pq = dev.one_time_kem.pop(0) if dev.one_time_kem else None
        return keys.PreKeyBundle.from_parts(
            self.accounts[account].identity, _unb64(dev.signed_prekey),
            _unb64(dev.last_resort), _unb64(opk["key"]) if opk else None,
            _unb64(pq["key"]) if pq else None)

    # --- the transport -----------------------------------------------------------------

    async def request(self, method: str, url: str, body: Any,
                      headers: dict[str, str], *, sealed: bool = False) -> Reply:
        if not self.reachable:
            raise ServerUnreachable("cannot reach the server at memory://")
        path = urlsplit(url).path
        query = urlsplit(url).query
        self.requests.append((method, path))
        if sealed:
            self.sealed_requests.append((method, path))
        for m, prefix, reply in list(self._overrides):
            if m == method and path.startswith(prefix):
                got = await reply(body)
                if got is not None:
                    return got
        result = self._route(method, path, query, body, headers)
        self.changed()
        return result

    async def websocket(self, url: str, headers: dict[str, str]) -> WebSocket:
        if not self.reachable:
            raise ServerUnreachable("cannot reach the server at memory://")
        who = self._auth(headers)
        if who is None:
            from veil.client.errors import ServerRejected
            raise ServerRejected(401, "websocket_refused", "unauthorised")
        ws = MemorySocket(self, *who)
        for envelope_id, (ts, env) in self.accounts[who[0]].devices[who[1]].queue.items():
            ws.frames.put_nowait(_frame(envelope_id, ts, env))
        self.sockets.append(ws)
        self.changed()
        return ws

    async def close(self) -> None:
        return None

    # --- routes ------------------------------------------------------------------------

    def _auth(self, headers: dict[str, str]) -> tuple[str, int] | None:
        raw = headers.get("Authorization", "")
        if not raw.startswith("Basic "):
            return None
        user, _, token = base64.b64decode(raw[6:]).decode().partition(":")
        account, _, device = user.partition(".")
        acct = self.accounts.get(account)
        if acct is None or int(device) not in acct.devices or \
                acct.devices[int(device)].token != _unb64(token):
            return None
        return account, int(device)

    def _route(self, method: str, path: str, query: str, body: Any,
               headers: dict[str, str]) -> Reply:
        parts = path.strip("/").split("/")[1:]          # without "v1"
        if (method, parts) == ("GET", ["certificate", "trust_root"]):
            return 200, {"public_key": _b64(self.root.public)}
        if (method, parts) == ("POST", ["accounts"]):
            return self._register(body)
        if method == "GET" and parts[:1] == ["usernames"]:
            for account, acct in self.accounts.items():
                if acct.username == parts[1]:
                    return 200, {"account_id": account, "username": acct.username}
            return _error(404, "not_found")
        if method == "PUT" and parts[:1] == ["messages"]:
            return self._submit(parts[1], body, headers)
        if method == "GET" and parts[:1] == ["keys"] and len(parts) == 3 and \
                self._auth(headers) is None:
            target = self.accounts.get(parts[1])
            access = headers.get("Veil-Access-Key")
            if target is None or access is None or _unb64(access) != target.access_key:
                return _error(401, "unauthorised")
            return self._claim(parts[1], parts[2])
        who = self._auth(headers)
        if who is None:
            return _error(401, "unauthorised")
        account, device = who
        me = self.accounts[account]
        if (method, parts) == ("GET", ["certificate"]):
            cert = self.server_key.issue(bytes.fromhex(account), device,
                                         keys.IdentityPublicKey.from_bytes(me.identity),
                                         self.clock() + DAY_MS, me.username)
            return 200, to_builtins(rs.SenderCertificate(
                certificate=cert.to_bytes(), server_certificate=cert.server_certificate.to_bytes(),
                expires=cert.expires_at))
        if (method, parts) == ("PUT", ["accounts", "me", "approval"]):
            me.devices[device].approval = body["approval"]
            return 204, None
        if (method, parts) == ("GET", ["accounts", "me", "devices"]):
            return 200, {"devices": [
                {"device_id": d, "registration_id": dev.registration_id, "created_at": 0,
                 **({"approval": dev.approval} if dev.approval else {})}
                for d, dev in sorted(me.devices.items())]}
        if (method, parts) == ("GET", ["keys", "status"]):
            dev = me.devices[device]
            return 200, self._status(dev)
        if (method, parts) == ("PUT", ["keys"]):
            dev = me.devices[device]
            dev.one_time += body.get("one_time_prekeys", [])
            dev.one_time_kem += body.get("one_time_kem_prekeys", [])
            dev.signed_prekey = body.get("signed_prekey", dev.signed_prekey)
            dev.last_resort = body.get("last_resort_kem_prekey", dev.last_resort)
            return 200, self._status(dev)
        if method == "GET" and parts[:1] == ["keys"]:
            if parts[1] not in self.accounts:
                return _error(404, "not_found")
            return self._claim(parts[1], parts[2])
        if (method, parts) == ("GET", ["messages"]):
            queue = me.devices[device].queue
            return 200, {"messages": [{"id": i, "ts": ts, "envelope": env}
                                      for i, (ts, env) in queue.items()], "more": False}
        if method == "DELETE" and parts[:1] == ["messages"]:
            me.devices[device].queue.pop(int(parts[1]), None)
            return 200, {}
        return _error(404, "no_route")

    def _claim(self, account: str, which: str) -> Reply:
        target = self.accounts[account]
        wanted = list(target.devices) if which == "*" else [int(which)]
        out = []
        for d in wanted:
            dev = target.devices[d]
            out.append({"device_id": d, "registration_id": dev.registration_id,
                        **({"approval": dev.approval} if dev.approval else {}),
                        "identity_key": _b64(target.identity),
                        "signed_prekey": dev.signed_prekey,
                        "last_resort_kem_prekey": dev.last_resort,
                        "one_time_prekey": dev.one_time.pop(0) if dev.one_time else None,
                        "one_time_kem_prekey":
                            dev.one_time_kem.pop(0) if dev.one_time_kem else None})
        return 200, {"account_id": account, "devices": out}

    def _register(self, body: Any) -> Reply:
        account = os.urandom(16).hex()
        dev = Device(_unb64(body["token"]), body["signed_prekey"],
                     body["last_resort_kem_prekey"], list(body["one_time_prekeys"]),
                     list(body["one_time_kem_prekeys"]), body["registration_id"])
        self.accounts[account] = Account(_unb64(body["identity_key"]),
                                         _unb64(body["access_key"]),
                                         body.get("username"), {1: dev})
        return 201, {"account_id": account, "device_id": 1}

    @staticmethod
    def _status(dev: Device) -> dict[str, Any]:
        return to_builtins(rs.PrekeyStatus(
            one_time_prekeys=len(dev.one_time), one_time_kem_prekeys=len(dev.one_time_kem),
            has_signed_prekey=True, has_last_resort_kem_prekey=True, low=False))

    def add_device(self, account: str, device: int, like: int = 1,
                   approval: bytes | None = None, registration_id: int = 1) -> None:
        """A second device of ``account`` (sharing the first one's keys: enough to test
        the device lists); contacts refuse it unless ``approval`` is the account
        identity's for it (veil.core.devices)."""
        first = self.accounts[account].devices[like]
        self.accounts[account].devices[device] = Device(
            os.urandom(32), first.signed_prekey, first.last_resort,
            list(first.one_time), list(first.one_time_kem), registration_id,
            None if approval is None else _b64(approval))

    def _submit(self, to: str, body: Any, headers: dict[str, str]) -> Reply:
        target = self.accounts.get(to)
        if target is None:
            return _error(404, "not_found")
        access = headers.get("Veil-Access-Key")
        if self._auth(headers) is None and (access is None
                                            or _unb64(access) != target.access_key):
            return _error(401, "unauthorised")
        given = {int(m["device_id"]) for m in body["messages"]}
        missing, extra = sorted(set(target.devices) - given), sorted(given - set(target.devices))
        if missing or extra:
            return _error(409, "mismatched_devices",
                          {"missing_devices": missing, "extra_devices": extra})
        stored = [rs.StoredEnvelope(device_id=int(m["device_id"]), ts=self.clock(),
                                    id=self.deliver(to, int(m["device_id"]),
                                                    _unb64(m["envelope"])))
                  for m in body["messages"]]
        return 200, to_builtins(rs.Accepted(messages=stored))


def _frame(envelope_id: int, ts: int, envelope: str) -> str:
    import json
    return json.dumps({"type": "envelope", "id": envelope_id, "ts": ts, "envelope": envelope})
