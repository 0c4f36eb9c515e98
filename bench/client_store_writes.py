"""Bytes the client writes to its local store per received 1:1 message.

A real server process on loopback, two clients in this process; Alice sends one message
at a time and Bob receives it (``receive_pending``). The figure is the growth of this
process's ``wchar`` (``/proc/self/io``: every byte handed to ``write``/``pwrite``, so the
SQLite WAL frames, the database and nothing of the server's) around each receive.
Prints one JSON line with the median and quartiles.

The same script runs against older code for a same-session comparison:
``PYTHONPATH=/tmp/old/src python bench/client_store_writes.py`` (it uses only the
``Client`` API both have).

Usage: ``python bench/client_store_writes.py [--messages N] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _wchar() -> int:
    with open("/proc/self/io") as fh:
        for line in fh:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no wchar")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    for _ in range(5):
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "veil.server", "--data", str(data),
                                 "--port", str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1):
                    return proc, url
            except OSError:
                time.sleep(0.05)
        proc.kill()
        proc.wait()
    raise RuntimeError("the server did not start")


async def run(messages: int) -> dict[str, object]:
    from veil.client import Client
    from veil.client.store import FAST

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc, url = _start_server(root / "server")
        try:
            alice = await Client.register(root / "alice", url, username="alice",
                                          passphrase="pw", kdf=FAST)
            bob = await Client.register(root / "bob", url, username="bob",
                                        passphrase="pw", kdf=FAST)
            await alice.send("@bob", "first")            # sets the session up
            await bob.receive_pending()
            await bob.send("@alice", "ack")
            await alice.receive_pending()
            sizes = []
            for i in range(messages):
                await alice.send("@bob", f"message {i:06d} " + "x" * 40)
                before = _wchar()
                got = await bob.receive_pending()
                sizes.append(_wchar() - before)
                assert len(got) == 1
            await alice.close()
            await bob.close()
        finally:
            proc.terminate()
            proc.wait(10)
    q = statistics.quantiles(sizes, n=4)
    return {"bench": "client_store_writes", "unit": "bytes written per received message",
            "messages": messages, "median": statistics.median(sizes), "q1": q[0],
            "q3": q[2], "code": os.environ.get("PYTHONPATH") or "this checkout"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    print(json.dumps(asyncio.run(run(8 if opts.quick else opts.messages))), flush=True)


if __name__ == "__main__":
    main()
