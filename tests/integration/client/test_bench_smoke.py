"""The client benchmarks still run (quick mode) and report what their issues ask."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench"


def test_client_prekeys_quick() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "client_prekeys.py"), "--quick",
                          "--envelopes", "3"], capture_output=True, text=True, timeout=180,
                         check=True).stdout.strip().splitlines()
    assert len(out) == 1
    result = json.loads(out[0])
    small, large = result["small"], result["large"]
    assert (small["stock"], large["stock"]) == (100, 1000)
    # What every envelope touches stays the same size; the old blob grew with the stock.
    assert small["per_record_prekeys_record_bytes"] == large["per_record_prekeys_record_bytes"]
    assert large["single_blob_record_bytes"] > 9 * small["single_blob_record_bytes"]
    for kind in ("ratchet", "initial"):
        for layout in ("per_record_ms", "single_blob_ms"):
            assert small[kind][layout] > 0 and large[kind][layout] > 0
            assert result["ratio_large_over_small"][kind][layout] > 0


def test_client_store_writes_quick() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "client_store_writes.py"), "--quick"],
                         capture_output=True, text=True, timeout=180,
                         check=True).stdout.strip().splitlines()
    result = json.loads(out[-1])
    assert result["messages"] == 8
    # Every receive commits at least a session, the seen id and a history row.
    assert result["q1"] > 0 and result["median"] >= result["q1"]
