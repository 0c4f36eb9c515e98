"""Linked devices from the command line (issue 11 §2), against a real server: `veil link`
shows a code, `veil devices approve CODE` links the device (history arrives), `veil
devices` lists both, a wrong code is one line, `veil devices remove` revokes at once."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.integration.cli.test_cli import VEIL, lines, veil
from tests.integration.server.harness import ServerProcess


def _env(home: Path) -> dict[str, str]:
    return dict(os.environ, VEIL_HOME=str(home), VEIL_PASSPHRASE="pw")


def test_link_approve_list_and_remove(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    linking: subprocess.Popen[str] | None = None
    try:
        alice, laptop, bob = tmp_path / "alice", tmp_path / "laptop", tmp_path / "bob"
        veil(alice, "init", "--server", server.url, "--username", "alice_dv")
        veil(bob, "init", "--server", server.url, "--username", "bob_dv")
        veil(bob, "send", "@alice_dv", "before the laptop")
        veil(alice, "recv")
        wrong = veil(alice, "devices", "approve", "-".join(["AAAA"] * 12),
                     check=False)
        assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
        assert len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
        linking = subprocess.Popen([*VEIL, "link", "--server", server.url, "--json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   stdin=subprocess.DEVNULL, env=_env(laptop))
        assert linking.stdout is not None
        waiting = json.loads(linking.stdout.readline())
        assert waiting["status"] == "waiting" and waiting["code"].count("-") == 11
        approved = lines(veil(alice, "devices", "approve", waiting["code"], "--name",
                              "laptop", "--json"))[0]
        assert approved == {"status": "approved", "device_id": 2}
        out, err = linking.communicate(timeout=60)
        assert linking.returncode == 0, err
        done = json.loads(out.strip().splitlines()[-1])
        assert done["status"] == "linked" and done["device_id"] == 2
        history = veil(laptop, "history", "@bob_dv").stdout
        assert "before the laptop" in history                 # recent history arrived
        listed = lines(veil(alice, "devices", "--json"))
        assert [(d["device_id"], d["name"], d["current"], d["approved"])
                for d in listed] == [(1, None, True, True), (2, "laptop", False, True)]
        human = veil(alice, "devices").stdout
        assert "(this device)" in human and "laptop" in human
        veil(bob, "send", "@alice_dv", "to both")
        assert "to both" in veil(laptop, "recv").stdout       # reaches the new device
        removed = lines(veil(alice, "devices", "remove", "2", "--json"))[0]
        assert removed == {"status": "removed", "device_id": 2}
        refused = veil(laptop, "recv", check=False)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert "does not know this device" in refused.stderr
    finally:
        if linking is not None and linking.poll() is None:
            linking.kill()
            linking.wait()
        server.stop()
