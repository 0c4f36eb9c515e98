"""``bench/mls.py --quick`` still runs and prints one JSON object per line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]


def test_bench_quick_mode() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "mls.py"), "--sizes", "4,10", "--batch", "3",
         "--state-sizes", "10"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    workloads = {(d["workload"], d.get("n")) for d in lines}
    for n in (4, 10):
        for w in ("create", "join", "cold_update", "create_batched", "add", "update",
                  "remove"):
            assert (w, n) in workloads
    batched = [d for d in lines if d["workload"] == "create_batched" and d["n"] == 10]
    assert batched[0]["commits"] == 3 and batched[0]["batch"] == 3
    sizes = [d for d in lines if d["workload"] == "state_bytes"]
    assert [d["senders"] for d in sizes] == [1]
    assert sizes[0]["hot_bytes"] < sizes[0]["slow_bytes"] < sizes[0]["v1_bytes"]
