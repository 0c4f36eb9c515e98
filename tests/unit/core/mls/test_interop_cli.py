"""``python -m veil.core.mls.interop passive-client FILE`` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.vectors.loader import load_cases

ROOT = Path(__file__).resolve().parents[4]


def _run(path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run(
        [sys.executable, "-m", "veil.core.mls.interop", "passive-client", str(path)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )


def test_summary_line_and_exit_status(tmp_path: Path) -> None:
    cases = load_cases("mls", "passive-client-welcome.json")
    good = next(c for c in cases if c["cipher_suite"] == 1)
    bad = dict(next(c for c in cases if c["cipher_suite"] == 2))
    bad["initial_epoch_authenticator"] = "00" * 32
    unsupported = next(c for c in cases if c["cipher_suite"] == 4)
    path = tmp_path / "vectors.json"
    path.write_text(json.dumps([good, bad, unsupported]))
    proc = _run(path)
    assert proc.stdout.strip() == "1 passed, 1 failed, 1 skipped"
    assert proc.returncode == 1
    assert "case 1 (suite 2) failed" in proc.stderr

    path.write_text(json.dumps([good]))
    proc = _run(path)
    assert proc.stdout.strip() == "1 passed, 0 failed"
    assert proc.returncode == 0
