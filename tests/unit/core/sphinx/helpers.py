"""Shared builders for the Sphinx tests: a set of nodes and a path through them."""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from veil.core.sphinx import PathHop, ReplayTagStore, SphinxNode


@dataclass
class Net:
    nodes: list[SphinxNode]
    addresses: list[bytes]

    @property
    def path(self) -> list[PathHop]:
        return [PathHop(a, n.public_key) for a, n in zip(self.addresses, self.nodes, strict=True)]

    def node(self, address: bytes) -> SphinxNode:
        return self.nodes[self.addresses.index(address)]


def make_net(hops: int, capacity: int = 1 << 16) -> Net:
    return Net([SphinxNode(X25519PrivateKey.generate(), ReplayTagStore(capacity))
                for _ in range(hops)],
               [os.urandom(16) for _ in range(hops)])
