"""The server benchmarks still run (quick mode) and report the keys the issue names,
for Veil and for the no-storage reference floor they are compared against."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


def _run(script: str, *extra: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, str(BENCH / script), "--quick", *extra],
                         capture_output=True, text=True, timeout=180, check=True).stdout
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
    reference = result["reference"]
    assert isinstance(reference, dict)
    assert "no-storage" in reference["what"] and "not a competitor" in reference["what"]
    for key in ("delivered_per_s", "p50_ms", "p95_ms", "p99_ms", "server_peak_rss_mb"):
        assert float(reference[key]) > 0
    assert reference["delivered"] == 100
    assert reference["lost"] == reference["duplicated"] == reference["send_errors"] == 0
    assert float(result["veil_vs_reference"]) > 0  # type: ignore[arg-type]
    assert len(result["veil_vs_reference_runs"]) == 1  # type: ignore[arg-type]


def test_relay_quick_without_reference():
    result = _run("relay.py", "--no-reference")
    assert result["delivered"] == 100
    assert "reference" not in result and "veil_vs_reference" not in result


def test_connections_quick():
    result = _run("connections.py")
    assert result["connections"] == 200 == result["server_reported_connections"]
    assert 0 < float(result["rss_per_connection_kib"]) < 200  # type: ignore[arg-type]
    reference = result["reference"]
    assert isinstance(reference, dict)
    assert "no-storage" in reference["what"]
    assert reference["connections"] == 200 == reference["server_reported_connections"]
    assert 0 < float(result["reference_rss_per_connection_kib"]) < 200  # type: ignore[arg-type]
    assert float(result["veil_vs_reference"]) > 0  # type: ignore[arg-type]


def test_protocol_bench_quick() -> None:
    """bench/protocol.py decodes with msgspec and both references it is measured against."""
    bench = Path(__file__).resolve().parents[3] / "bench" / "protocol.py"
    out = subprocess.run([sys.executable, str(bench), "--rounds", "1"], capture_output=True,
                         text=True, timeout=180, check=True).stdout.strip().splitlines()
    rows = {row["workload"]: row for row in map(json.loads, out)}
    assert set(rows) == {"decode_send_frame", "decode_ack_frame", "decode_registration",
                         "encode_envelope_frame"}
    for name in ("decode_send_frame", "decode_ack_frame", "decode_registration"):
        assert set(rows[name]["median_us"]) >= {"msgspec", "pydantic"}
        assert all(v > 0 for v in rows[name]["median_us"].values())


ATTACK_KEYS = {"attack", "detected", "seconds_to_detect", "contained", "baseline_p99_ms",
               "during_p99_ms", "p99_ratio", "lost"}


@pytest.mark.slow
def test_attack_bench_quick() -> None:
    """bench/attack.py (issue 13 §6): one row per attack, each detected, and the
    protection-overhead row. Timing targets are the full run's business, not CI's."""
    out = subprocess.run([sys.executable, str(BENCH / "attack.py"), "--quick"],
                         capture_output=True, text=True, timeout=280, check=True).stdout
    rows = [json.loads(line) for line in out.strip().splitlines()]
    attacks = {row["attack"]: row for row in rows if "attack" in row}
    assert set(attacks) == {"registration_storm", "auth_bruteforce", "key_draining",
                            "message_flood", "connection_flood", "slowloris",
                            "malformed_storm"}
    for name, row in attacks.items():
        assert ATTACK_KEYS <= set(row), name
        assert row["detected"] is True, row
        assert isinstance(row["seconds_to_detect"], float | int), row
        assert isinstance(row["contained"], bool) and isinstance(row["lost"], int), row
        assert float(row["baseline_p99_ms"]) > 0 and float(row["during_p99_ms"]) > 0, row
    overhead = [row for row in rows if row.get("workload") == "protection_overhead"]
    assert len(overhead) == 1 and len(rows) == 8
    assert float(overhead[0]["on_vs_off"]) > 0
