"""The signed directory, descriptors and node key files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from veil.mixnet.directory import (
    ROLE_MIX,
    ROLE_PROVIDER,
    Directory,
    NodeKey,
    load_authority_key,
    save_authority_key,
)
from veil.mixnet.errors import DirectoryError


def make(layers: int = 3) -> Directory:
    nodes = [NodeKey.generate().descriptor(ROLE_MIX, layer, f"127.0.0.1:{9000 + layer}",
                                           range(5, 8)) for layer in range(1, layers + 1)]
    nodes.append(NodeKey.generate().descriptor(ROLE_PROVIDER, 0, "[::1]:9100", range(5, 8)))
    return Directory(layers, 60, 1000, tuple(nodes))


def test_sign_and_verify_round_trip() -> None:
    authority = Ed25519PrivateKey.generate()
    directory = make()
    verified = Directory.verify(directory.sign(authority), authority.public_key())
    assert verified == directory
    assert [n.layer for n in verified.mixes(2)] == [2]
    assert verified.providers()[0].public_key(6) == directory.nodes[-1].keys[6]
    assert verified.epoch_at(6 * 60 + 59.9) == 6


def test_any_change_breaks_the_signature() -> None:
    authority = Ed25519PrivateKey.generate()
    document = json.loads(make().sign(authority))
    document["directory"]["nodes"][0]["address"] = "203.0.113.9:9001"
    with pytest.raises(DirectoryError, match="signature"):
        Directory.verify(json.dumps(document).encode(), authority.public_key())
    with pytest.raises(DirectoryError, match="signature"):
        Directory.verify(make().sign(authority), Ed25519PrivateKey.generate().public_key())


@pytest.mark.parametrize("mutate", [
    lambda b: b.update(version=2),
    lambda b: b.update(layers=4),  # layer 4 has no mix
    lambda b: b.update(epoch_seconds=0),
    lambda b: b["nodes"].append(b["nodes"][0]),
    lambda b: b["nodes"][0].update(id="00"),
    lambda b: b["nodes"][0].update(role="relay"),
    lambda b: b["nodes"][0].update(address="nowhere"),
    lambda b: b["nodes"][0]["keys"].update({"9": "00"}),
    lambda b: b.pop("nodes"),
    lambda b: b.update(layers=10**12),  # would make the layer check loop for ever
    lambda b: b.update(issued_at="yesterday"),
])
def test_malformed_bodies_are_rejected_even_when_signed(mutate) -> None:
    authority = Ed25519PrivateKey.generate()
    body = make().body()
    mutate(body)
    signature = authority.sign(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    signed = json.dumps({"directory": body, "signature": signature.hex()}).encode()
    with pytest.raises(DirectoryError):
        Directory.verify(signed, authority.public_key())


@pytest.mark.parametrize("document", [b"", b"[]", b"{}", b'{"directory": {}, "signature": "zz"}',
                                      b"x" * (2 << 20), b"[" * 200_000 + b"]" * 200_000])
def test_garbage_documents(document: bytes) -> None:
    with pytest.raises(DirectoryError):
        Directory.verify(document, Ed25519PrivateKey.generate().public_key())


def test_missing_epoch_key_and_unknown_node() -> None:
    directory = make()
    with pytest.raises(DirectoryError, match="epoch"):
        directory.nodes[0].public_key(99)
    with pytest.raises(DirectoryError):
        directory.node(b"z" * 16)


def test_node_key_files_are_private_and_epoch_keys_rotate(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = tmp_path / "node.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = NodeKey.load(path)
    assert loaded.node_id == key.node_id
    raw = [loaded.epoch_key(e).public_key().public_bytes_raw() for e in (1, 1, 2)]
    assert raw[0] == raw[1] != raw[2]
    assert key.descriptor(ROLE_MIX, 1, "h:1", range(1, 3)).keys[2] == raw[2]
    (tmp_path / "bad.key").write_text("{}")
    with pytest.raises(DirectoryError):
        NodeKey.load(tmp_path / "bad.key")


def test_authority_key_file(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    save_authority_key(key, tmp_path / "a.key")
    assert stat.S_IMODE((tmp_path / "a.key").stat().st_mode) == 0o600
    assert load_authority_key(tmp_path / "a.key").public_key() == key.public_key()
    with pytest.raises(DirectoryError):
        load_authority_key(tmp_path / "missing.key")
