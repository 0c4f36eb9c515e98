"""The secret tree and per-sender symmetric ratchets (RFC 9420 §9).

Node secrets are derived lazily and deleted once both children exist; consumed keys
are deleted. Out-of-order delivery is tolerated within bounds: a receiver keeps at
most ``MAX_SKIPPED`` unused keys per ratchet and refuses to jump more than
``MAX_FORWARD`` generations ahead (RFC 9420 §9.4).

The secret tree is the *hot* part of a member's saved state (``persist``): one message
changes it and nothing else. :meth:`SecretTree.peek` therefore changes nothing (a forged
or merely staged message leaves the saved form byte for byte as it was), and every
change goes through :meth:`SecretTree.next`, :meth:`SecretTree.consume` or
:meth:`SecretTree.ratchet`, which count it in :attr:`SecretTree.changes` so a caller
learns cheaply that the hot part needs saving.
"""

from __future__ import annotations

from veil.core.mls import treemath as tm
from veil.core.mls.codec import Reader, Writer
from veil.core.mls.crypto import CipherSuite
from veil.core.mls.errors import GenerationTooFar, KeyReused, UnknownSender

MAX_FORWARD = 1024
MAX_SKIPPED = 256

HANDSHAKE = 0
APPLICATION = 1


class Ratchet:
    """One handshake or application ratchet of one sender."""

    __slots__ = ("generation", "secret", "skipped", "suite")

    def __init__(self, suite: CipherSuite, secret: bytes, generation: int = 0) -> None:
        self.suite = suite
        self.secret = secret
        self.generation = generation
        self.skipped: dict[int, tuple[bytes, bytes]] = {}

    def _key_nonce(self, secret: bytes, generation: int) -> tuple[bytes, bytes]:
        s = self.suite
        return (
            s.derive_tree_secret(secret, b"key", generation, s.nk),
            s.derive_tree_secret(secret, b"nonce", generation, s.nn),
        )

    def _next_secret(self, secret: bytes, generation: int) -> bytes:
        return self.suite.derive_tree_secret(secret, b"secret", generation, self.suite.nh)

    def next(self) -> tuple[int, bytes, bytes]:
        """The sender's next (generation, key, nonce); the secret is advanced and deleted."""
        gen = self.generation
        key, nonce = self._key_nonce(self.secret, gen)
        self.secret = self._next_secret(self.secret, gen)
        self.generation = gen + 1
        return gen, key, nonce

    def peek(self, generation: int) -> tuple[bytes, bytes]:
        """Key and nonce for ``generation`` without consuming anything."""
        if generation < self.generation:
            got = self.skipped.get(generation)
            if got is None:
                raise KeyReused("key for this generation was used or deleted")
            return got
        if generation - self.generation > MAX_FORWARD:
            raise GenerationTooFar("generation is too far ahead")
        secret = self.secret
        for g in range(self.generation, generation):
            secret = self._next_secret(secret, g)
        return self._key_nonce(secret, generation)

    def consume(self, generation: int) -> None:
        """Delete the key for ``generation``, keeping skipped keys (bounded) for later."""
        if generation < self.generation:
            self.skipped.pop(generation, None)
            return
        secret = self.secret
        for g in range(self.generation, generation):
            self.skipped[g] = self._key_nonce(secret, g)
            secret = self._next_secret(secret, g)
        self.secret = self._next_secret(secret, generation)
        self.generation = generation + 1
        while len(self.skipped) > MAX_SKIPPED:
            del self.skipped[min(self.skipped)]

    def write(self, w: Writer) -> None:
        w.opaque(self.secret)
        w.u32(self.generation)
        items = sorted(self.skipped.items())
        w.u32(len(items))
        for g, (k, n) in items:
            w.u32(g)
            w.opaque(k)
            w.opaque(n)

    @staticmethod
    def read(r: Reader, suite: CipherSuite) -> Ratchet:
        rat = Ratchet(suite, r.opaque(), r.u32())
        for _ in range(min(r.u32(), MAX_SKIPPED)):
            g = r.u32()
            rat.skipped[g] = (r.opaque(), r.opaque())
        return rat


class SecretTree:
    """Per-epoch secret tree over ``n_leaves`` leaves rooted at the encryption secret."""

    def __init__(self, suite: CipherSuite, encryption_secret: bytes, n_leaves: int) -> None:
        self.suite = suite
        self.n_leaves = n_leaves
        self._nodes: dict[int, bytes] = {tm.root(n_leaves): encryption_secret}
        self._ratchets: dict[tuple[int, int], Ratchet] = {}
        # Bumped on every change to what write() encodes; never serialised.
        self.changes = 0

    def _path(self, leaf: int) -> tuple[list[int], int]:
        """The leaf's node and direct path, and the index in it of the nearest secret held."""
        if leaf < 0 or leaf >= self.n_leaves:
            raise UnknownSender("sender leaf index outside the tree")
        x = 2 * leaf
        path = [x, *tm.direct_path(x, self.n_leaves)]
        start = next((i for i, p in enumerate(path) if p in self._nodes), None)
        if start is None:
            raise KeyReused("secret tree leaf already consumed")
        return path, start

    def _leaf_secret(self, leaf: int) -> bytes:
        path, start = self._path(leaf)
        x = path[0]
        for i in range(start, 0, -1):
            p = path[i]
            secret = self._nodes.pop(p)
            s = self.suite
            self._nodes[tm.left(p)] = s.expand_with_label(secret, b"tree", b"left", s.nh)
            self._nodes[tm.right(p)] = s.expand_with_label(secret, b"tree", b"right", s.nh)
        return self._nodes.pop(x)

    def _detached(self, leaf: int, kind: int) -> Ratchet:
        """The ratchet ``ratchet()`` would create, derived without deleting anything."""
        path, start = self._path(leaf)
        s = self.suite
        secret = self._nodes[path[start]]
        for i in range(start, 0, -1):
            side = b"left" if path[i - 1] == tm.left(path[i]) else b"right"
            secret = s.expand_with_label(secret, b"tree", side, s.nh)
        label = b"handshake" if kind == HANDSHAKE else b"application"
        return Ratchet(s, s.expand_with_label(secret, label, b"", s.nh))

    def ratchet(self, leaf: int, kind: int) -> Ratchet:
        """The sender's ratchet, created (and its leaf secret deleted) on first use."""
        if leaf < 0 or leaf >= self.n_leaves:
            raise UnknownSender("sender leaf index outside the tree")
        got = self._ratchets.get((leaf, kind))
        if got is not None:
            return got
        secret = self._leaf_secret(leaf)
        s = self.suite
        hs = Ratchet(s, s.expand_with_label(secret, b"handshake", b"", s.nh))
        app = Ratchet(s, s.expand_with_label(secret, b"application", b"", s.nh))
        self._ratchets[(leaf, HANDSHAKE)] = hs
        self._ratchets[(leaf, APPLICATION)] = app
        self.changes += 1
        return hs if kind == HANDSHAKE else app

    def next(self, leaf: int, kind: int) -> tuple[int, bytes, bytes]:
        """Our own next (generation, key, nonce) as sender ``leaf``."""
        got = self.ratchet(leaf, kind).next()
        self.changes += 1
        return got

    def peek(self, leaf: int, kind: int, generation: int) -> tuple[bytes, bytes]:
        """Key and nonce of a received message; nothing changes until :meth:`consume`."""
        got = self._ratchets.get((leaf, kind))
        if got is None:
            got = self._detached(leaf, kind)
        return got.peek(generation)

    def consume(self, leaf: int, kind: int, generation: int) -> None:
        """Delete the key of a message that authenticated (RFC 9420 §9.2 deletion)."""
        self.ratchet(leaf, kind).consume(generation)
        self.changes += 1

    def fits(self, n_leaves: int) -> bool:
        """Whether a decoded secret tree has the shape of a ratchet tree of ``n_leaves``."""
        return (self.n_leaves == n_leaves and all(x < 2 * n_leaves - 1 for x in self._nodes)
                and all(leaf < n_leaves and kind in (HANDSHAKE, APPLICATION)
                        for leaf, kind in self._ratchets))

    def write(self, w: Writer) -> None:
        w.u32(self.n_leaves)
        w.u32(len(self._nodes))
        for x, secret in sorted(self._nodes.items()):
            w.u32(x)
            w.opaque(secret)
        w.u32(len(self._ratchets))
        for (leaf, kind), rat in sorted(self._ratchets.items()):
            w.u32(leaf)
            w.u8(kind)
            rat.write(w)

    @staticmethod
    def read(r: Reader, suite: CipherSuite) -> SecretTree:
        n = r.u32()
        st = SecretTree(suite, b"", max(n, 1))
        st._nodes.clear()
        for _ in range(r.u32()):
            x = r.u32()
            st._nodes[x] = r.opaque()
        for _ in range(r.u32()):
            leaf = r.u32()
            kind = r.u8()
            st._ratchets[(leaf, kind)] = Ratchet.read(r, suite)
        return st

__all__ = [
    "APPLICATION",
    "HANDSHAKE",
    "MAX_FORWARD",
    "MAX_SKIPPED",
    "SecretTree",
]
