"""``veil mix``: keys, descriptors and the signed directory from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from veil.cli.mix import COMMANDS, mix
from veil.mixnet.errors import DirectoryError


def _run(args: list[str]) -> dict:
    result = CliRunner().invoke(mix, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_build_and_verify_a_directory(tmp_path: Path) -> None:
    assert COMMANDS == [mix]
    public = _run(["directory", "keygen", "--out", str(tmp_path / "auth.key")])["public_key"]
    descriptors = []
    specs = [("mix", layer) for layer in (1, 2, 3)] + [("provider", 0)]
    for i, (role, layer) in enumerate(specs):
        key = tmp_path / f"n{i}.key"
        _run(["keygen", "--out", str(key)])
        out = tmp_path / f"n{i}.json"
        _run(["descriptor", "--key", str(key), "--role", role, "--layer", str(layer),
              "--address", f"127.0.0.1:{7000 + i}", "--epochs", "2", "--out", str(out)])
        descriptors.append(str(out))
    signed = _run(["directory", "sign", "--authority-key", str(tmp_path / "auth.key"),
                   "--out", str(tmp_path / "dir.json"), *descriptors])
    assert signed == {"event": "directory_signed", "layers": 3, "nodes": 4}
    checked = _run(["directory", "verify", "--authority", public, str(tmp_path / "dir.json")])
    assert sorted(checked["layers"]) == ["1", "2", "3"]
    assert len(checked["providers"]) == 1
    other = _run(["directory", "keygen", "--out", str(tmp_path / "other.key")])["public_key"]
    with pytest.raises(DirectoryError):
        CliRunner().invoke(mix, ["directory", "verify", "--authority", other,
                                 str(tmp_path / "dir.json")], catch_exceptions=False)


def test_errors_are_one_line_on_stderr(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("{}")
    proc = subprocess.run(
        [sys.executable, "-m", "veil.cli.mix", "descriptor", "--key", str(tmp_path / "k"),
         "--address", "127.0.0.1:1", "--layer", "1", "--out", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("veil: cannot read node key file")


def test_a_node_refuses_a_layer_the_directory_does_not_give_it(tmp_path: Path) -> None:
    public = _run(["directory", "keygen", "--out", str(tmp_path / "auth.key")])["public_key"]
    _run(["keygen", "--out", str(tmp_path / "n.key")])
    _run(["descriptor", "--key", str(tmp_path / "n.key"), "--layer", "1",
          "--address", "127.0.0.1:7001", "--out", str(tmp_path / "n.json")])
    _run(["directory", "sign", "--authority-key", str(tmp_path / "auth.key"), "--layers", "1",
          "--out", str(tmp_path / "dir.json"), str(tmp_path / "n.json")])
    with pytest.raises(DirectoryError, match="layer 1"):
        CliRunner().invoke(mix, ["node", "--layer", "2", "--key", str(tmp_path / "n.key"),
                                 "--directory", str(tmp_path / "dir.json"),
                                 "--authority", public], catch_exceptions=False)


def test_the_idle_timeout_must_be_positive() -> None:
    for command in (["node", "--layer", "1"], ["provider", "--sink-url", "http://x/"]):
        result = CliRunner().invoke(mix, [*command, "--idle-timeout", "0", "--key", "k",
                                          "--directory", "d", "--authority", "a"])
        assert result.exit_code == 2 and "--idle-timeout" in result.output
