"""The server benchmarks still run (quick mode) and report the keys the issue names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench"


def _run(script: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, str(BENCH / script), "--quick"], capture_output=True,
                         text=True, timeout=180, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1
    return dict(json.loads(lines[0]))


def test_relay_quick():
    result = _run("relay.py")
    for key in ("delivered_per_s", "p50_ms", "p95_ms", "p99_ms", "lost", "duplicated",
                "server_peak_rss_mb"):
        assert key in result
    assert result["lost"] == 0 and result["duplicated"] == 0
    assert result["delivered"] == 100


def test_connections_quick():
    result = _run("connections.py")
    assert result["connections"] == 200 == result["server_reported_connections"]
    assert 0 < float(result["rss_per_connection_kib"]) < 200  # type: ignore[arg-type]
