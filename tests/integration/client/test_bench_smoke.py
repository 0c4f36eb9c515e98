"""The client benchmarks still run (quick mode) and report what their issues ask."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_attachments_bench_quick() -> None:
    """bench/attachments.py: one row per size, Veil next to curl, memory, resume."""
    out = subprocess.run([sys.executable, str(BENCH / "attachments.py"), "--quick"],
                         capture_output=True, text=True, timeout=240,
                         check=True).stdout.strip().splitlines()
    rows = [json.loads(line) for line in out]
    assert [row["size_mib"] for row in rows] == [1, 3]
    for row in rows:
        assert row["runs"] == 1
        for key in ("upload_mb_s", "download_mb_s", "plain_upload_mb_s",
                    "plain_download_mb_s", "upload_vs_plain", "download_vs_plain",
                    "client_peak_rss_mb", "server_peak_rss_mb"):
            assert row[key] > 0, key
        for key in ("client_rss_growth_mb", "server_rss_growth_mb", "resume_overhead_s",
                    "upload_resume_overhead_s", "download_resume_overhead_s"):
            assert isinstance(row[key], float | int), key
        assert row["resume_overhead_s"] == max(row["upload_resume_overhead_s"],
                                               row["download_resume_overhead_s"])
        assert row["target_vs_plain"] == 0.5 and row["target_resume_overhead_s"] == 1.0
        assert set(row["meets_targets"]) == {"upload_vs_plain", "download_vs_plain",
                                             "resume_overhead_s", "memory_bounded"}
        assert len(row["upload_vs_plain_runs"]) == 1
