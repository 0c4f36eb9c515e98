from __future__ import annotations

import json
import subprocess
import sys


def test_demo_runs_and_reports_what_each_side_saw() -> None:
    proc = subprocess.run([sys.executable, "-m", "veil.cli.main", "demo", "--json"],
                          capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(proc.stdout)
    assert result["safety_numbers_match"] is True
    assert len(result["safety_number"].replace(" ", "")) == 60
    texts = [entry["text"] for entry in result["read"]]
    assert texts[0].startswith("Hi Bob!") and len(texts) == 5
    kinds = [entry["kind"] for entry in result["wire"]]
    assert kinds[:2] == ["prekey", "prekey"] and "message" in kinds
    # the observer's view holds sizes only
    assert all(set(entry) == {"from", "bytes", "kind"} for entry in result["wire"])


def test_unknown_command_is_one_line_and_nonzero() -> None:
    proc = subprocess.run([sys.executable, "-m", "veil.cli.main", "no-such-command"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
