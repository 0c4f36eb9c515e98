"""The crypto benchmark runs in quick mode and prints well-formed JSON (it cannot rot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "crypto.py"


def test_crypto_bench_quick() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True,
                          text=True, timeout=240, check=True)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["workload"] for line in lines] == [
        "ratchet_one_way", "ratchet_ping_pong", "session_setup", "sealed_sender",
        "message_aead"]
    for line in lines[:-1]:
        assert line["veil"]["per_s"] > 0 and line["vodozemac"]["per_s"] > 0
    aead = lines[-1]
    assert aead["veil"]["per_s"] > 0 and aead["aes_gcm_fixed_nonce"]["per_s"] > 0
