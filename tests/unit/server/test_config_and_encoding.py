from __future__ import annotations

import base64
from pathlib import Path

import pytest

from veil.server.config import ServerConfig, load_config
from veil.server.encoding import log_id, normalise_username, parse_account_id, parse_device_id
from veil.server.errors import BadRequest, ConfigError, Unauthorized, ValidationFailed
from veil.server.http.context import parse_basic


def test_defaults_file_and_overrides(tmp_path: Path):
    cfg = tmp_path / "veil.toml"
    cfg.write_text('registration = "invite"\nmax_envelope_bytes = 1000\nport = 9000\n'
                   "group_commit_window_ms = 1\n")
    config = load_config(cfg, port=9001, data_dir=str(tmp_path))
    assert config.registration == "invite" and config.max_envelope_bytes == 1000
    assert config.port == 9001 and config.data_dir == tmp_path
    assert config.group_commit_window_ms == 1.0
    assert load_config().port == ServerConfig().port == 8470


@pytest.mark.parametrize("text", [
    'nonsense = 1', 'port = "8470"', 'registration = "closed"', "max_body_bytes = 0",
    "use_uvloop = 1", "max_ws_frame_bytes = 10", "port = [", 'data_dir = 5',
    "sealed_idle_timeout_s = 0", "sealed_idle_timeout_s = 7200", "max_sealed_connections = 0",
    "fetch_max_bytes = -1", "max_connections = 100",
])
def test_bad_config_is_an_error(tmp_path: Path, text: str):
    cfg = tmp_path / "veil.toml"
    cfg.write_text(text + "\n")
    with pytest.raises(ConfigError):
        load_config(cfg)


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(ConfigError):
        load_config(tmp_path / "nope.toml")


def test_identifiers():
    assert parse_account_id("ab" * 16) == b"\xab" * 16
    for bad in ("AB" * 16, "ab" * 15, "zz" * 16, "ab" * 16 + "\n"):
        with pytest.raises(BadRequest):
            parse_account_id(bad)
    assert parse_device_id("7") == 7
    for bad in ("0", "-1", "x", "99999999999", "١"):
        with pytest.raises(BadRequest):
            parse_device_id(bad)
    assert normalise_username("Alice_1") == "alice_1"
    for bad in ("al", "a" * 33, "al ice", "ålice", "alice\n", "\u212aarl"):
        with pytest.raises(ValidationFailed):
            normalise_username(bad)
    assert len(log_id(b"\x00" * 16)) == 8 and log_id(b"a") != log_id(b"b")


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_parse_basic():
    token = base64.b64encode(b"t" * 32).decode()
    assert parse_basic(_basic(f"{'ab' * 16}.2:{token}")) == (b"\xab" * 16, 2, b"t" * 32)
    for header in ("Bearer x", "Basic", "Basic ***", _basic("nodot:x"),
                   _basic(f"{'ab' * 16}.2"), _basic(f"{'ab' * 16}.x:{token}"),
                   _basic(f"{'ab' * 16}.2:not-base64")):
        with pytest.raises(Unauthorized):
            parse_basic(header)
