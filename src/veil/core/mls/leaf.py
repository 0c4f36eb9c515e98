"""Extensions, credentials, capabilities, leaf nodes and KeyPackages (RFC 9420 §5.3, §7.2, §10).

Each structure has ``write`` (into a :class:`Writer`) and ``read`` (from a
:class:`Reader`); signing and verifying use the ``*TBS`` encodings of the RFC.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from veil.core.mls.codec import Reader, Writer, write_u16
from veil.core.mls.crypto import CipherSuite
from veil.core.mls.errors import MlsDecodeError

MLS10 = 1

CREDENTIAL_BASIC = 1
CREDENTIAL_X509 = 2

EXT_APPLICATION_ID = 1
EXT_RATCHET_TREE = 2
EXT_REQUIRED_CAPABILITIES = 3
EXT_EXTERNAL_PUB = 4
EXT_EXTERNAL_SENDERS = 5
DEFAULT_EXTENSIONS = frozenset({1, 2, 3, 4, 5})
DEFAULT_PROPOSALS = frozenset({1, 2, 3, 4, 5, 6, 7})
DEFAULT_CREDENTIALS = frozenset({CREDENTIAL_BASIC, CREDENTIAL_X509})

SOURCE_KEY_PACKAGE = 1
SOURCE_UPDATE = 2
SOURCE_COMMIT = 3


@dataclass(frozen=True, slots=True)
class Extension:
    extension_type: int
    extension_data: bytes

    def write(self, w: Writer) -> None:
        w.u16(self.extension_type)
        w.opaque(self.extension_data)

    @staticmethod
    def read(r: Reader) -> Extension:
        return Extension(r.u16(), r.opaque())


def write_extensions(w: Writer, exts: list[Extension]) -> None:
    w.vector(exts, lambda ww, e: e.write(ww))


def read_extensions(r: Reader) -> list[Extension]:
    return r.vector(Extension.read)


def find_extension(exts: list[Extension], ext_type: int) -> bytes | None:
    for e in exts:
        if e.extension_type == ext_type:
            return e.extension_data
    return None


def has_unique_extension_types(exts: list[Extension]) -> bool:
    types = [e.extension_type for e in exts]
    return len(types) == len(set(types))


@dataclass(frozen=True, slots=True)
class Credential:
    """A basic credential (an identity) or an X.509 chain (RFC 9420 §5.3)."""

    credential_type: int
    identity: bytes = b""
    certificates: tuple[bytes, ...] = ()

    @staticmethod
    def basic(identity: bytes) -> Credential:
        return Credential(CREDENTIAL_BASIC, identity)

    def write(self, w: Writer) -> None:
        w.u16(self.credential_type)
        if self.credential_type == CREDENTIAL_BASIC:
            w.opaque(self.identity)
        elif self.credential_type == CREDENTIAL_X509:
            w.vector(list(self.certificates), lambda ww, c: ww.opaque(c))
        else:
            raise MlsDecodeError("unknown credential type")

    @staticmethod
    def read(r: Reader) -> Credential:
        ctype = r.u16()
        if ctype == CREDENTIAL_BASIC:
            return Credential(ctype, r.opaque())
        if ctype == CREDENTIAL_X509:
            return Credential(ctype, b"", tuple(r.vector(lambda rr: rr.opaque())))
        raise MlsDecodeError("unknown credential type")


@dataclass(frozen=True, slots=True)
class Capabilities:
    versions: tuple[int, ...] = (MLS10,)
    cipher_suites: tuple[int, ...] = ()
    extensions: tuple[int, ...] = ()
    proposals: tuple[int, ...] = ()
    credentials: tuple[int, ...] = (CREDENTIAL_BASIC,)

    def write(self, w: Writer) -> None:
        for seq in (self.versions, self.cipher_suites, self.extensions, self.proposals,
                    self.credentials):
            w.vector(list(seq), write_u16)

    @staticmethod
    def read(r: Reader) -> Capabilities:
        return Capabilities(*(r.u16_vector() for _ in range(5)))

    def supports_extension(self, ext_type: int) -> bool:
        return ext_type in DEFAULT_EXTENSIONS or ext_type in self.extensions

    def supports_proposal(self, p_type: int) -> bool:
        return p_type in DEFAULT_PROPOSALS or p_type in self.proposals

    def supports_credential(self, c_type: int) -> bool:
        return c_type in self.credentials


@dataclass(frozen=True, slots=True)
class Lifetime:
    not_before: int
    not_after: int

    def write(self, w: Writer) -> None:
        w.u64(self.not_before)
        w.u64(self.not_after)

    @staticmethod
    def read(r: Reader) -> Lifetime:
        return Lifetime(r.u64(), r.u64())


@dataclass(frozen=True, slots=True)
class RequiredCapabilities:
    extension_types: tuple[int, ...] = ()
    proposal_types: tuple[int, ...] = ()
    credential_types: tuple[int, ...] = ()

    def write(self, w: Writer) -> None:
        w.vector(list(self.extension_types), write_u16)
        w.vector(list(self.proposal_types), write_u16)
        w.vector(list(self.credential_types), write_u16)

    @staticmethod
    def read(r: Reader) -> RequiredCapabilities:
        return RequiredCapabilities(
            r.u16_vector(), r.u16_vector(), r.u16_vector()
        )

    def satisfied_by(self, caps: Capabilities) -> bool:
        return (
            all(caps.supports_extension(e) for e in self.extension_types)
            and all(caps.supports_proposal(p) for p in self.proposal_types)
            and all(caps.supports_credential(c) for c in self.credential_types)
        )


@dataclass(frozen=True, slots=True)
class LeafNode:
    """A member's leaf (RFC 9420 §7.2); ``lifetime`` or ``parent_hash`` by source."""

    encryption_key: bytes
    signature_key: bytes
    credential: Credential
    capabilities: Capabilities
    leaf_node_source: int
    lifetime: Lifetime | None = None
    parent_hash: bytes = b""
    extensions: list[Extension] = field(default_factory=list)
    signature: bytes = b""
    # Encoding caches: leaves are re-encoded for every tree hash, Welcome and signature.
    # A decoded leaf keeps the bytes it came from (the strict decoder accepts only the
    # canonical encoding, so they equal a re-encoding); replace() resets both.
    _enc: bytes | None = field(default=None, init=False, compare=False, repr=False)
    _body: bytes | None = field(default=None, init=False, compare=False, repr=False)

    def _body_bytes(self) -> bytes:
        if self._body is None:
            w = Writer()
            self._write_body(w)
            object.__setattr__(self, "_body", w.bytes())
        assert self._body is not None
        return self._body

    def _write_body(self, w: Writer) -> None:
        w.opaque(self.encryption_key)
        w.opaque(self.signature_key)
        self.credential.write(w)
        self.capabilities.write(w)
        w.u8(self.leaf_node_source)
        if self.leaf_node_source == SOURCE_KEY_PACKAGE:
            if self.lifetime is None:
                raise MlsDecodeError("key-package leaf without lifetime")
            self.lifetime.write(w)
        elif self.leaf_node_source == SOURCE_COMMIT:
            w.opaque(self.parent_hash)
        write_extensions(w, self.extensions)

    def write(self, w: Writer) -> None:
        w.raw(self.encoded())

    @staticmethod
    def read(r: Reader) -> LeafNode:
        start = r.pos
        enc = r.opaque()
        sig_key = r.opaque()
        cred = Credential.read(r)
        caps = Capabilities.read(r)
        source = r.u8()
        lifetime = None
        parent_hash = b""
        if source == SOURCE_KEY_PACKAGE:
            lifetime = Lifetime.read(r)
        elif source == SOURCE_COMMIT:
            parent_hash = r.opaque()
        elif source != SOURCE_UPDATE:
            raise MlsDecodeError("unknown leaf node source")
        exts = read_extensions(r)
        body_end = r.pos
        sig = r.opaque()
        leaf = LeafNode(enc, sig_key, cred, caps, source, lifetime, parent_hash, exts, sig)
        object.__setattr__(leaf, "_body", r.data[start:body_end])
        object.__setattr__(leaf, "_enc", r.data[start:r.pos])
        return leaf

    def tbs(self, group_id: bytes, leaf_index: int) -> bytes:
        body = self._body_bytes()
        if self.leaf_node_source == SOURCE_KEY_PACKAGE:
            return body
        w = Writer()
        w.raw(body)
        w.opaque(group_id)
        w.u32(leaf_index)
        return w.bytes()

    def signed(
        self, suite: CipherSuite, sig_priv: bytes, group_id: bytes = b"", leaf_index: int = 0
    ) -> LeafNode:
        unsigned = replace(self, signature=b"")
        sig = suite.sign_with_label(sig_priv, b"LeafNodeTBS", unsigned.tbs(group_id, leaf_index))
        out = replace(self, signature=sig)
        # The body does not cover the signature: reuse it for the signed leaf's encoding.
        object.__setattr__(out, "_body", unsigned._body)
        return out

    def verify_signature(self, suite: CipherSuite, group_id: bytes, leaf_index: int) -> bool:
        return suite.verify_with_label(
            self.signature_key, b"LeafNodeTBS", self.tbs(group_id, leaf_index), self.signature
        )

    def encoded(self) -> bytes:
        if self._enc is None:
            w = Writer()
            w.raw(self._body_bytes())
            w.opaque(self.signature)
            object.__setattr__(self, "_enc", w.bytes())
        assert self._enc is not None
        return self._enc


@dataclass(frozen=True, slots=True)
class KeyPackage:
    version: int
    cipher_suite: int
    init_key: bytes
    leaf_node: LeafNode
    extensions: list[Extension] = field(default_factory=list)
    signature: bytes = b""
    # As for LeafNode: a decoded KeyPackage keeps its bytes for the signature and ref.
    _enc: bytes | None = field(default=None, init=False, compare=False, repr=False)
    _body: bytes | None = field(default=None, init=False, compare=False, repr=False)

    def _write_body(self, w: Writer) -> None:
        w.u16(self.version)
        w.u16(self.cipher_suite)
        w.opaque(self.init_key)
        self.leaf_node.write(w)
        write_extensions(w, self.extensions)

    def write(self, w: Writer) -> None:
        w.raw(self.encoded())

    @staticmethod
    def read(r: Reader) -> KeyPackage:
        start = r.pos
        version = r.u16()
        suite = r.u16()
        init_key = r.opaque()
        leaf = LeafNode.read(r)
        exts = read_extensions(r)
        body_end = r.pos
        kp = KeyPackage(version, suite, init_key, leaf, exts, r.opaque())
        object.__setattr__(kp, "_body", r.data[start:body_end])
        object.__setattr__(kp, "_enc", r.data[start:r.pos])
        return kp

    def tbs(self) -> bytes:
        if self._body is None:
            w = Writer()
            self._write_body(w)
            object.__setattr__(self, "_body", w.bytes())
        assert self._body is not None
        return self._body

    def encoded(self) -> bytes:
        if self._enc is None:
            w = Writer()
            w.raw(self.tbs())
            w.opaque(self.signature)
            object.__setattr__(self, "_enc", w.bytes())
        assert self._enc is not None
        return self._enc

    def ref(self, suite: CipherSuite) -> bytes:
        """KeyPackageRef (RFC 9420 §5.2)."""
        return suite.ref_hash(b"MLS 1.0 KeyPackage Reference", self.encoded())

__all__ = [
    "CREDENTIAL_BASIC",
    "EXT_EXTERNAL_PUB",
    "EXT_RATCHET_TREE",
    "EXT_REQUIRED_CAPABILITIES",
    "MLS10",
    "SOURCE_COMMIT",
    "SOURCE_KEY_PACKAGE",
    "SOURCE_UPDATE",
    "Capabilities",
    "Credential",
    "Extension",
    "KeyPackage",
    "LeafNode",
    "Lifetime",
    "RequiredCapabilities",
    "find_extension",
    "has_unique_extension_types",
    "read_extensions",
    "write_extensions",
]
