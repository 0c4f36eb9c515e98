"""``veil server --tls self-signed`` and ``veil init --server https://… --pin SHA256``
(issue 13 §1): the pin is kept with the account, every later command checks it, and
every mistake is one line."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cli.test_cli import VEIL, lines, one_line_error, veil
from tests.integration.server.harness import free_port

_PROBE = ssl.create_default_context()
_PROBE.check_hostname, _PROBE.verify_mode = False, ssl.CERT_NONE


class VeilServer:
    """``veil server --tls self-signed`` (the CLI's front end, serve.py) on loopback."""

    def __init__(self, data: Path) -> None:
        self.data, self.out = data, data.parent / "server.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> VeilServer:
        for _ in range(5):          # a probed port may be taken before the server binds
            self.port = free_port()
            with self.out.open("wb") as log:
                self.proc = subprocess.Popen(
                    [*VEIL, "server", "--data", str(self.data), "--port", str(self.port),
                     "--tls", "self-signed"], stdout=log, stderr=log,
                    env=dict(os.environ, VEIL_LANG="en"))
            if self._ready(30):
                return self
        raise RuntimeError("veil server could not bind a free port five times")

    def _ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                said = self.out.read_text()
                if "in use" in said or "Errno 98" in said:
                    return False
                raise RuntimeError(f"veil server exited: {said[-500:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1,
                                            context=_PROBE) as r:
                    if r.status == 200:
                        return True
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("veil server did not start")

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VeilServer]:
    server = VeilServer(Path(tmp_path_factory.mktemp("veil-tls-cli")) / "data").start()
    yield server
    server.stop()


def _printed_pin(server: VeilServer) -> str:
    said = server.out.read_text()
    found = re.search(r"--pin ([0-9a-f]{64})", said)
    assert found is not None, said
    return found.group(1)


def test_init_with_the_printed_pin_then_send_and_receive(tls_server: VeilServer,
                                                         tmp_path: Path) -> None:
    pin = _printed_pin(tls_server)
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    made = lines(veil(alice, "init", "--server", tls_server.url, "--pin", pin,
                      "--username", "alice_pin", "--json"))[0]
    assert made["tls_pin"] == pin
    colons = ":".join(pin[i:i + 2] for i in range(0, 64, 2)).upper()
    text = veil(bob, "init", "--server", tls_server.url, "--pin", colons,
                "--username", "bob_pin").stdout
    assert f"TLS certificate {pin} (pinned)" in text
    assert lines(veil(bob, "id", "--json"))[0]["tls_pin"] == pin
    veil(alice, "send", "@bob_pin", "hello over TLS")
    got = [m["text"] for m in lines(veil(bob, "recv", "--json")) if "event" not in m]
    assert got == ["hello over TLS"]


def test_pin_mistakes_are_one_line(tls_server: VeilServer, tmp_path: Path) -> None:
    one_line_error(veil(tmp_path / "mitm", "init", "--server", tls_server.url, "--pin",
                        "0" * 64, check=False), "is not the pinned one")
    assert not (tmp_path / "mitm" / "veil.db").exists()
    typo = veil(tmp_path / "typo", "init", "--server", tls_server.url, "--pin", "xyz",
                check=False)
    one_line_error(typo, "not a sha-256 certificate fingerprint")
    assert typo.returncode == 2
    plain = veil(tmp_path / "plain", "init", "--server", "http://127.0.0.1:9", "--pin",
                 "0" * 64, check=False)
    one_line_error(plain, "needs an https:// server url")
    one_line_error(veil(tmp_path / "nopin", "init", "--server", tls_server.url,
                        check=False), "not trusted")


def test_a_wrong_pin_is_explained_in_chinese(tls_server: VeilServer, tmp_path: Path) -> None:
    env = dict(os.environ, VEIL_HOME=str(tmp_path / "zh"), VEIL_PASSPHRASE="pw",
               VEIL_LANG="zh_CN.UTF-8")
    proc = subprocess.run([*VEIL, "init", "--server", tls_server.url, "--pin", "0" * 64],
                          capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "TLS 证书与你固定的指纹不一致" in proc.stderr


def test_server_tls_flags_are_checked(tmp_path: Path) -> None:
    def server(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*VEIL, "server", "--data", str(tmp_path / "d"), *flags],
                              capture_output=True, text=True, timeout=60, check=False,
                              env=dict(os.environ, VEIL_LANG="en"))

    both = server("--tls", "self-signed", "--tls-cert", "a.pem", "--tls-key", "b.pem")
    assert both.returncode == 2 and "not both" in both.stderr
    half = server("--tls-cert", "a.pem")
    assert half.returncode == 2 and "go together" in half.stderr
    missing = server("--tls-cert", str(tmp_path / "a.pem"), "--tls-key",
                     str(tmp_path / "b.pem"), "--port", str(free_port()))
    one_line_error(missing, "cannot read the tls certificate")
    public = server("--host", "0.0.0.0", "--port", str(free_port()))
    one_line_error(public, "refusing to serve plain http on 0.0.0.0")
    assert sys.executable  # the same interpreter runs every process here
