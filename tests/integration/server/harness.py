"""A real server process on a free loopback port, and a minimal HTTP/WebSocket client.

The client side crypto is not needed here: the server treats envelopes as opaque bytes,
so tests send random bytes (or an AES-GCM ciphertext where plaintext must not leak).
Prekeys are different: the server verifies them, so the helpers below build real
``veil.core.keys`` records signed by one identity that every test account shares.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from veil.core.keys import (
    IdentityKeyPair,
    KemPreKeyPublic,
    OneTimePreKeyPublic,
    SignedPreKeyPublic,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# One identity for every test account: keys signed by it verify for any account registered
# with identity_key(), and the server does not mind accounts sharing an identity.
IDENTITY = IdentityKeyPair.generate()


def identity_key() -> bytes:
    """The shared identity's public key (the server verifies it)."""
    return IDENTITY.public.to_bytes()


def signed_prekey(key_id: int = 1) -> bytes:
    """A real signed X25519 prekey record, signed by the shared identity."""
    public = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    return SignedPreKeyPublic.create(IDENTITY, key_id, public).to_bytes()


def kem_prekey(key_id: int, last_resort: bool) -> bytes:
    """A real ML-KEM-768 prekey record, signed by the shared identity."""
    public = mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes_raw()
    return KemPreKeyPublic.create(IDENTITY, key_id, last_resort, public).to_bytes()


def last_resort_kem_prekey(key_id: int = 1) -> bytes:
    return kem_prekey(key_id, last_resort=True)


def one_time_prekey(key_id: int) -> bytes:
    public = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    return OneTimePreKeyPublic(key_id, public).to_bytes()


# The readiness probe of a TLS server checks only that it answers: pinning is the tests'.
_PROBE_TLS = ssl.create_default_context()
_PROBE_TLS.check_hostname = False
_PROBE_TLS.verify_mode = ssl.CERT_NONE


class ServerProcess:
    """``args``: more command-line flags (e.g. ``["--tls", "self-signed"]``)."""

    def __init__(self, data_dir: Path, settings: dict[str, Any] | None = None,
                 args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.settings = settings or {}
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def tls(self) -> bool:
        return bool({"--tls", "--tls-cert"} & set(self.args) or
                    self.settings.get("tls_self_signed") or self.settings.get("tls_cert"))

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> ServerProcess:
        # The probed port is free when chosen but not reserved: another process may take
        # it before the server binds. Then the server exits at once; try another port.
        for _ in range(5):
            if self._start_once(timeout):
                return self
            self.port = free_port()
        raise RuntimeError("server could not bind a free port five times")

    def _start_once(self, timeout: float) -> bool:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "veil.server", "--data", str(self.data_dir),
                "--port", str(self.port)]
        if self.settings:
            args += ["--config", str(self.write_config())]
        args += self.args
        log_path = self.data_dir.parent / f"{self.data_dir.name}.out"
        start_offset = log_path.stat().st_size if log_path.exists() else 0
        log = log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with log_path.open("rb") as fh:
                    fh.seek(start_offset)
                    said = fh.read().decode(errors="replace")
                if "in use" in said or "EADDRINUSE" in said or "Errno 98" in said:
                    return False
                raise RuntimeError(f"server exited with {self.proc.returncode}: {said[-500:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1,
                                            context=_PROBE_TLS if self.tls else None) as r:
                    if r.status == 200:
                        return True
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    @property
    def config_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.toml"

    def write_config(self) -> Path:
        """``settings`` as TOML: flat keys, then each dict-valued one as a ``[section]``
        table (its own dict values as inline tables)."""
        def value(v: Any) -> str:
            if isinstance(v, dict):
                return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}"
                                       for k, x in v.items()) + "}"
            return json.dumps(v)

        flat = [f"{k} = {value(v)}\n" for k, v in self.settings.items()
                if not isinstance(v, dict)]
        tables = [f"[{k}]\n" + "".join(f"{json.dumps(n)} = {value(x)}\n" for n, x in v.items())
                  for k, v in self.settings.items() if isinstance(v, dict)]
        self.config_path.write_text("".join(flat) + "\n".join(tables))
        return self.config_path

    def reload(self, settings: dict[str, Any]) -> None:
        """New settings in the config file, then SIGHUP (the server reloads it)."""
        assert self.proc is not None
        self.settings = settings
        self.write_config()
        self.proc.send_signal(signal.SIGHUP)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Device:
    account_id: str
    device_id: int
    token: str
    access_key: bytes | None = None

    def auth(self) -> dict[str, str]:
        user = f"{self.account_id}.{self.device_id}:{self.token}"
        return {"Authorization": "Basic " + b64(user.encode())}


async def register(session: aiohttp.ClientSession, url: str, **fields: Any) -> Device:
    access_key = fields.pop("access_key", os.urandom(16))
    body = {"identity_key": b64(identity_key()), "registration_id": 7, **fields}
    if access_key is not None:
        body["access_key"] = b64(access_key)
    async with session.post(url + "/v1/accounts", json=body) as r:
        data = await r.json()
        assert r.status == 201, data
    return Device(data["account_id"], data["device_id"], data["token"], access_key)


def one_time(n: int, start: int = 1, kem: bool = False) -> list[dict[str, Any]]:
    """``n`` real one-time records (X25519, or signed ML-KEM with ``kem``) with key ids
    ``start, start + 1, ...``, in the ``[{key_id, key}]`` shape of ``PUT /v1/keys``."""
    def make(key_id: int) -> bytes:
        return kem_prekey(key_id, last_resort=False) if kem else one_time_prekey(key_id)

    return [{"key_id": start + i, "key": b64(make(start + i))} for i in range(n)]


async def send_sealed(
    session: aiohttp.ClientSession, url: str, to: Device, envelopes: dict[int, bytes],
    access_key: bytes | None = None,
) -> tuple[int, Any]:
    headers = {}
    key = access_key if access_key is not None else to.access_key
    if key is not None:
        headers["Veil-Access-Key"] = b64(key)
    body = {"messages": [{"device_id": d, "envelope": b64(e)} for d, e in envelopes.items()]}
    async with session.put(f"{url}/v1/messages/{to.account_id}", json=body,
                           headers=headers) as r:
        return r.status, await r.json()


async def recv_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> Any:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def recv_envelope(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> Any:
    """The next envelope event, skipping notices such as ``keys_low``."""
    while True:
        event = await recv_json(ws, timeout)
        if event["type"] == "envelope":
            return event
