"""Build a loopback mixnet on disk: keys, descriptors and a signed directory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.unit.mixnet import nethelpers
from veil.mixnet.directory import ROLE_MIX, ROLE_PROVIDER, Directory, NodeKey

EPOCH_SECONDS = 3600


# Kept bound until long after the node processes bind them: see nethelpers.free_port.
free_port = nethelpers.free_port


@dataclass
class NodeFiles:
    key: NodeKey
    key_file: Path
    role: str
    layer: int
    address: str


@dataclass
class LoopbackNet:
    directory: Directory
    directory_file: Path
    authority_public: str
    nodes: list[NodeFiles]


def build(tmp: Path, layers: int = 3, width: int = 2) -> LoopbackNet:
    authority = Ed25519PrivateKey.generate()
    now = int(time.time() // EPOCH_SECONDS)
    epochs = range(now - 1, now + 2)
    nodes: list[NodeFiles] = []
    specs = [(ROLE_MIX, layer) for layer in range(1, layers + 1) for _ in range(width)]
    specs.append((ROLE_PROVIDER, 0))
    for i, (role, layer) in enumerate(specs):
        key = NodeKey.generate()
        key_file = tmp / f"node{i}.key"
        key.save(key_file)
        nodes.append(NodeFiles(key, key_file, role, layer, f"127.0.0.1:{free_port()}"))
    descriptors = tuple(n.key.descriptor(n.role, n.layer, n.address, epochs) for n in nodes)
    directory = Directory(layers, EPOCH_SECONDS, int(time.time()), descriptors)
    directory_file = tmp / "directory.json"
    directory_file.write_bytes(directory.sign(authority))
    public = authority.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    return LoopbackNet(directory, directory_file, public, nodes)
