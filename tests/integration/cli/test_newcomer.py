"""A newcomer follows README's quick start (issue 10, evidence): the commands of its
"With the server running" block, run as written in a terminal (a pty, answering the
passphrase prompts as a person would), against a real server. Only the server URL,
the port and the home folders are replaced (tests run side by side). Fails if any step
prints a traceback or exits non-zero."""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.server.harness import ServerProcess

ROOT = Path(__file__).resolve().parents[3]


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) >= 2, "the quick start lost its second block"
    commands = []
    for line in blocks[1].splitlines():
        command = line.split("#", 1)[0].strip()
        if command:
            commands.append(command)
    return commands


def _in_a_terminal(argv: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run ``argv`` on a pty; type "pw" at every passphrase prompt."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env,
                            close_fds=True)
    os.close(follower)
    out = b""
    answered = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                out += chunk
                prompts = len(re.findall(rb"[Pp]assphrase[^:\n]*:|[Rr]epeat[^:\n]*:", out))
                while answered < prompts:
                    os.write(leader, b"pw\n")
                    answered += 1
            elif proc.poll() is not None:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out.decode(errors="replace")


def test_the_quick_start_works_as_written(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        veil = str(Path(sys.executable).with_name("veil"))
        env = {k: v for k, v in os.environ.items() if k not in ("VEIL_PASSPHRASE", "VEIL_HOME")}
        outputs = []
        for command in _quick_start_commands():
            command = (command.replace("http://127.0.0.1:8470", server.url)
                       .replace("/tmp/alice", str(tmp_path / "alice"))
                       .replace("/tmp/bob", str(tmp_path / "bob")))
            argv = shlex.split(command)
            assert argv[0] == ".venv/bin/veil", command
            code, out = _in_a_terminal([veil, *argv[1:]], env)
            assert "Traceback" not in out, f"{command}\n{out}"
            assert code == 0, f"{command} exited {code}\n{out}"
            outputs.append(out)
        assert "hello" in outputs[3]                 # bob reads what alice sent
    finally:
        server.stop()
