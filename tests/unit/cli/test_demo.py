from __future__ import annotations

import json
import subprocess
import sys


def test_demo_shows_what_people_read_and_what_the_server_stored() -> None:
    proc = subprocess.run([sys.executable, "-m", "veil.cli.main", "demo", "--json"],
                          capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(proc.stdout)
    steps = result["steps"]
    assert steps[0]["read"] == []                                   # Bob was offline
    assert len(steps[1]["read"]) == 2 and steps[1]["read"][0].startswith("Hi Bob!")
    assert len(steps[0]["server_stored"]) == 1 and len(steps[1]["server_stored"]) == 2
    assert steps[2]["sealed"] is True                             # Bob answers sealed
    columns = steps[0]["server_stored"][0]["columns"]
    assert not any("sender" in c or "from" in c for c in columns)
    for step in steps:
        for row in step["server_stored"]:
            assert set(row) == {"recipient", "device", "bytes", "body_starts", "columns"}
    assert result["safety_numbers_match"] is True
    assert len(result["safety_number"].replace(" ", "")) == 60
    # the plaintext never appears in what the demo reports of the server
    server_view = json.dumps([s["server_stored"] for s in steps])
    assert "Bob" not in server_view and "offline" not in server_view


def test_unknown_command_is_one_line_and_nonzero() -> None:
    proc = subprocess.run([sys.executable, "-m", "veil.cli.main", "no-such-command"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
