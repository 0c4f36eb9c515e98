"""The signed mixnet directory, node descriptors and node key files.

Loopix (Piotrowska et al., USENIX Security 2017, section 3) assumes a PKI that lists
the mix nodes of each layer and the providers with their public keys. Veil's directory
is a JSON document signed with the directory authority's Ed25519 key:

    {"directory": {"version": 1, "layers": L, "epoch_seconds": E, "issued_at": T,
                   "nodes": [{"id": hex16, "role": "mix"|"provider", "layer": n,
                              "address": "host:port", "keys": {"<epoch>": hex32}}]},
     "signature": hex64}

The signature covers the canonical JSON (sorted keys, no spaces) of the ``directory``
value. Sphinx keys rotate every E seconds (epoch = floor(unix time / E)); a node derives
each epoch's X25519 key from the seed in its key file, so a descriptor can list the
public keys of future epochs ahead of time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.core.sphinx import ADDRESS_SIZE, MAX_HOPS, PathHop
from veil.mixnet.errors import DirectoryError

VERSION = 1
ROLE_MIX = "mix"
ROLE_PROVIDER = "provider"
_EPOCH_INFO = b"veil mix epoch key "
MAX_DOCUMENT_SIZE = 1 << 20
MAX_LAYERS = MAX_HOPS - 2


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DirectoryError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class NodeDescriptor:
    """One node as the directory lists it."""

    node_id: bytes
    role: str
    layer: int
    address: str
    keys: dict[int, bytes] = field(default_factory=dict)

    def public_key(self, epoch: int) -> bytes:
        try:
            return self.keys[epoch]
        except KeyError:
            raise DirectoryError(f"node {self.node_id.hex()[:8]} has no key for epoch "
                                 f"{epoch}") from None

    def hop(self, epoch: int) -> PathHop:
        return PathHop(self.node_id, self.public_key(epoch))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.node_id.hex(), "role": self.role, "layer": self.layer,
                "address": self.address,
                "keys": {str(e): k.hex() for e, k in sorted(self.keys.items())}}

    @classmethod
    def from_json(cls, value: Any) -> NodeDescriptor:
        try:
            node_id = bytes.fromhex(value["id"])
            role, layer, address = value["role"], value["layer"], value["address"]
            keys = {int(e): bytes.fromhex(k) for e, k in value["keys"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DirectoryError("malformed node descriptor") from exc
        if len(node_id) != ADDRESS_SIZE or role not in (ROLE_MIX, ROLE_PROVIDER):
            raise DirectoryError("malformed node descriptor")
        if not isinstance(layer, int) or not isinstance(address, str) or any(
                len(k) != 32 for k in keys.values()):
            raise DirectoryError("malformed node descriptor")
        split_address(address)
        return cls(node_id, role, layer, address, keys)


@dataclass(frozen=True)
class Directory:
    """The verified list of nodes: mixes by layer and providers."""

    layers: int
    epoch_seconds: int
    issued_at: int
    nodes: tuple[NodeDescriptor, ...]

    def epoch_at(self, unix_time: float) -> int:
        return int(unix_time // self.epoch_seconds)

    def mixes(self, layer: int) -> list[NodeDescriptor]:
        return [n for n in self.nodes if n.role == ROLE_MIX and n.layer == layer]

    def providers(self) -> list[NodeDescriptor]:
        return [n for n in self.nodes if n.role == ROLE_PROVIDER]

    def node(self, node_id: bytes) -> NodeDescriptor:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise DirectoryError(f"node {node_id.hex()[:8]} is not in the directory")

    def body(self) -> dict[str, Any]:
        return {"version": VERSION, "layers": self.layers, "epoch_seconds": self.epoch_seconds,
                "issued_at": self.issued_at, "nodes": [n.to_json() for n in self.nodes]}

    def sign(self, authority: Ed25519PrivateKey) -> bytes:
        body = self.body()
        signature = authority.sign(_canonical(body))
        return json.dumps({"directory": body, "signature": signature.hex()}, indent=1).encode()

    @classmethod
    def verify(cls, document: bytes, authority: Ed25519PublicKey) -> Directory:
        """Parse a signed document; DirectoryError unless the authority signed it."""
        if len(document) > MAX_DOCUMENT_SIZE:
            raise DirectoryError("directory document too large")
        try:
            outer = json.loads(document)
            body = outer["directory"]
            signature = bytes.fromhex(outer["signature"])
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise DirectoryError("malformed directory document") from exc
        try:
            authority.verify(signature, _canonical(body))
        except InvalidSignature:
            raise DirectoryError("directory signature does not verify") from None
        return cls.from_body(body)

    @classmethod
    def from_body(cls, body: Any) -> Directory:
        try:
            version, layers = body["version"], body["layers"]
            epoch_seconds, issued_at = body["epoch_seconds"], body["issued_at"]
            nodes = tuple(NodeDescriptor.from_json(n) for n in body["nodes"])
        except (KeyError, TypeError) as exc:
            raise DirectoryError("malformed directory document") from exc
        if version != VERSION:
            raise DirectoryError("unsupported directory version")
        # Loops cross every layer, the provider and the home mix: at most MAX_HOPS hops.
        if not (isinstance(layers, int) and 1 <= layers <= MAX_LAYERS
                and isinstance(epoch_seconds, int) and epoch_seconds > 0
                and isinstance(issued_at, int)):
            raise DirectoryError("malformed directory document")
        directory = cls(layers, epoch_seconds, issued_at, nodes)
        if len({n.node_id for n in nodes}) != len(nodes):
            raise DirectoryError("duplicate node id in directory")
        for layer in range(1, layers + 1):
            if not directory.mixes(layer):
                raise DirectoryError(f"layer {layer} has no mix node")
        return directory


class NodeKey:
    """A node's identity (16-byte id) and the seed of its per-epoch Sphinx keys."""

    __slots__ = ("_seed", "node_id")

    def __init__(self, node_id: bytes, seed: bytes) -> None:
        if len(node_id) != ADDRESS_SIZE or len(seed) != 32:
            raise DirectoryError("malformed node key")
        self.node_id = node_id
        self._seed = seed

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(os.urandom(ADDRESS_SIZE), os.urandom(32))

    def epoch_key(self, epoch: int) -> X25519PrivateKey:
        info = _EPOCH_INFO + epoch.to_bytes(8, "big")
        return X25519PrivateKey.from_private_bytes(
            HKDF(hashes.SHA256(), 32, None, info).derive(self._seed))

    def descriptor(self, role: str, layer: int, address: str, epochs: range) -> NodeDescriptor:
        keys = {e: self.epoch_key(e).public_key().public_bytes_raw() for e in epochs}
        return NodeDescriptor(self.node_id, role, layer, address, keys)

    def save(self, path: Path) -> None:
        data = json.dumps({"id": self.node_id.hex(), "seed": self._seed.hex()}).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    @classmethod
    def load(cls, path: Path) -> NodeKey:
        try:
            value = json.loads(path.read_bytes())
            return cls(bytes.fromhex(value["id"]), bytes.fromhex(value["seed"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DirectoryError(f"cannot read node key file {path}") from exc


def save_authority_key(key: Ed25519PrivateKey, path: Path) -> None:
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(raw.hex())


def load_authority_key(path: Path) -> Ed25519PrivateKey:
    try:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(path.read_text().strip()))
    except (OSError, ValueError) as exc:
        raise DirectoryError(f"cannot read authority key file {path}") from exc


def parse_authority_public(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.strip()))
    except ValueError as exc:
        raise DirectoryError("the authority public key is 32 bytes in hex") from exc


def load_directory(path: Path, authority: Ed25519PublicKey) -> Directory:
    try:
        document = path.read_bytes()
    except OSError as exc:
        raise DirectoryError(f"cannot read directory {path}") from exc
    return Directory.verify(document, authority)

__all__ = [
    "ROLE_MIX",
    "ROLE_PROVIDER",
    "Directory",
    "NodeDescriptor",
    "NodeKey",
    "load_authority_key",
    "load_directory",
    "parse_authority_public",
    "save_authority_key",
    "split_address",
]
