"""Shared by the server benchmarks: start a real server process, read its memory use."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _ServerProcess:
    """A server in a child process, ready once ``GET /health`` answers; ``close`` stops it."""

    def __init__(self, argv: list[str], port: int, host: str, tmp: tempfile.TemporaryDirectory[str]
                 ) -> None:
        self.tmp = tmp
        self.port = port
        self.host = host
        self.log = Path(self.tmp.name) / "server.out"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    detail = self.log.read_text(errors="replace")[-2000:]
                    self.close()
                    raise RuntimeError(f"server did not start:\n{detail}") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.tmp.cleanup()


class BenchServer(_ServerProcess):
    """The Veil server (``python -m veil.server``) with a fresh data directory."""

    label = "veil"

    def __init__(self, settings: dict[str, Any] | None = None, host: str = "127.0.0.1") -> None:
        tmp = tempfile.TemporaryDirectory(prefix="veil-bench-")
        self.data = Path(tmp.name) / "data"
        port = free_port()
        cfg = Path(tmp.name) / "config.toml"
        settings = {"log_to_file": False, "log_level": "WARNING", **(settings or {})}
        # Flat keys first, then one [section] per dict value (the protection layers').
        flat = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()
                       if not isinstance(v, dict))
        tables = "".join(f"[{k}]\n" + "".join(f"{kk} = {json.dumps(vv)}\n"
                                              for kk, vv in v.items())
                         for k, v in settings.items() if isinstance(v, dict))
        cfg.write_text(flat + tables)
        super().__init__(
            [sys.executable, "-m", "veil.server", "--data", str(self.data), "--host", host,
             "--port", str(port), "--config", str(cfg)],
            port, host, tmp,
        )


def veil_event_loop(settings: dict[str, Any] | None = None) -> str:
    """``"uvloop"`` or ``"asyncio"``: what a BenchServer with these settings runs on."""
    from veil.server.config import load_config
    from veil.server.runner import event_loop_factory

    return "asyncio" if event_loop_factory(load_config(None, **(settings or {}))) is None \
        else "uvloop"


REFERENCE_LABEL = ("no-durability, no-storage floor: minimal in-memory aiohttp relay "
                   "(bench/_reference.py), not a competitor")


class ReferenceServer(_ServerProcess):
    """The REFERENCE FLOOR (``bench/_reference.py``): a minimal in-memory aiohttp relay
    with no storage, no durability and no validation. Not a competitor: the cost of
    aiohttp itself, against which Veil's own costs are measured in the same run."""

    label = "reference"

    def __init__(self, loop: str = "uvloop", host: str = "127.0.0.1") -> None:
        tmp = tempfile.TemporaryDirectory(prefix="veil-bench-reference-")
        port = free_port()
        super().__init__(
            [sys.executable, str(Path(__file__).resolve().parent / "_reference.py"),
             "--host", host, "--port", str(port), "--loop", loop],
            port, host, tmp,
        )


def ratio(veil: float, reference: float) -> float | None:
    """Veil's figure divided by the reference's (None when the reference is 0)."""
    return round(veil / reference, 3) if reference else None


_IDENTITY: list[bytes] = []


def register_body(**extra: Any) -> dict[str, Any]:
    """A registration; every bench device shares one real identity key (the server does
    not care, and generating thousands would dominate the setup time)."""
    if not _IDENTITY:
        from veil.core.keys import IdentityKeyPair

        _IDENTITY.append(IdentityKeyPair.generate().public.to_bytes())
    return {"identity_key": b64(_IDENTITY[0]), "registration_id": 1, **extra}
