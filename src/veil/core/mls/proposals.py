"""Proposals, Commit and UpdatePath structures (RFC 9420 §7.6, §12.1, §12.4).

Proposal variants are separate dataclasses; :func:`read_proposal` dispatches on
``proposal_type``. Unknown proposal types cannot be delimited and are decode errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from veil.core.mls.codec import Reader, Writer, encode_varint
from veil.core.mls.errors import MlsDecodeError
from veil.core.mls.leaf import Extension, KeyPackage, LeafNode, read_extensions, write_extensions

P_ADD = 1
P_UPDATE = 2
P_REMOVE = 3
P_PSK = 4
P_REINIT = 5
P_EXTERNAL_INIT = 6
P_GROUP_CONTEXT_EXTENSIONS = 7

PSK_EXTERNAL = 1
PSK_RESUMPTION = 2
RESUMPTION_APPLICATION = 1


@dataclass(frozen=True, slots=True)
class PreSharedKeyID:
    psktype: int
    psk_id: bytes = b""
    usage: int = 0
    psk_group_id: bytes = b""
    psk_epoch: int = 0
    psk_nonce: bytes = b""

    def write(self, w: Writer) -> None:
        w.u8(self.psktype)
        if self.psktype == PSK_EXTERNAL:
            w.opaque(self.psk_id)
        elif self.psktype == PSK_RESUMPTION:
            w.u8(self.usage)
            w.opaque(self.psk_group_id)
            w.u64(self.psk_epoch)
        else:
            raise MlsDecodeError("unknown PSK type")
        w.opaque(self.psk_nonce)

    @staticmethod
    def read(r: Reader) -> PreSharedKeyID:
        t = r.u8()
        if t == PSK_EXTERNAL:
            return PreSharedKeyID(t, psk_id=r.opaque(), psk_nonce=r.opaque())
        if t == PSK_RESUMPTION:
            usage = r.u8()
            if usage not in (1, 2, 3):
                raise MlsDecodeError("unknown resumption PSK usage")
            gid = r.opaque()
            epoch = r.u64()
            return PreSharedKeyID(t, b"", usage, gid, epoch, r.opaque())
        raise MlsDecodeError("unknown PSK type")


@dataclass(frozen=True, slots=True)
class Add:
    key_package: KeyPackage
    proposal_type = P_ADD


@dataclass(frozen=True, slots=True)
class Update:
    leaf_node: LeafNode
    proposal_type = P_UPDATE


@dataclass(frozen=True, slots=True)
class Remove:
    removed: int
    proposal_type = P_REMOVE


@dataclass(frozen=True, slots=True)
class PreSharedKey:
    psk: PreSharedKeyID
    proposal_type = P_PSK


@dataclass(frozen=True, slots=True)
class ReInit:
    group_id: bytes
    version: int
    cipher_suite: int
    extensions: list[Extension] = field(default_factory=list)
    proposal_type = P_REINIT


@dataclass(frozen=True, slots=True)
class ExternalInit:
    kem_output: bytes
    proposal_type = P_EXTERNAL_INIT


@dataclass(frozen=True, slots=True)
class GroupContextExtensions:
    extensions: list[Extension]
    proposal_type = P_GROUP_CONTEXT_EXTENSIONS


Proposal = Add | Update | Remove | PreSharedKey | ReInit | ExternalInit | GroupContextExtensions


def write_proposal_body(w: Writer, p: Proposal) -> None:
    if isinstance(p, Add):
        p.key_package.write(w)
    elif isinstance(p, Update):
        p.leaf_node.write(w)
    elif isinstance(p, Remove):
        w.u32(p.removed)
    elif isinstance(p, PreSharedKey):
        p.psk.write(w)
    elif isinstance(p, ReInit):
        w.opaque(p.group_id)
        w.u16(p.version)
        w.u16(p.cipher_suite)
        write_extensions(w, p.extensions)
    elif isinstance(p, ExternalInit):
        w.opaque(p.kem_output)
    else:
        write_extensions(w, p.extensions)


def write_proposal(w: Writer, p: Proposal) -> None:
    w.u16(p.proposal_type)
    write_proposal_body(w, p)


def read_proposal(r: Reader) -> Proposal:
    t = r.u16()
    if t == P_ADD:
        return Add(KeyPackage.read(r))
    if t == P_UPDATE:
        return Update(LeafNode.read(r))
    if t == P_REMOVE:
        return Remove(r.u32())
    if t == P_PSK:
        return PreSharedKey(PreSharedKeyID.read(r))
    if t == P_REINIT:
        gid = r.opaque()
        version = r.u16()
        suite = r.u16()
        return ReInit(gid, version, suite, read_extensions(r))
    if t == P_EXTERNAL_INIT:
        return ExternalInit(r.opaque())
    if t == P_GROUP_CONTEXT_EXTENSIONS:
        return GroupContextExtensions(read_extensions(r))
    raise MlsDecodeError("unknown proposal type")


@dataclass(frozen=True, slots=True)
class ProposalOrRef:
    """An inline proposal or a ProposalRef (RFC 9420 §12.4)."""

    proposal: Proposal | None = None
    reference: bytes = b""

    def write(self, w: Writer) -> None:
        if self.proposal is not None:
            w.u8(1)
            write_proposal(w, self.proposal)
        else:
            w.u8(2)
            w.opaque(self.reference)

    @staticmethod
    def read(r: Reader) -> ProposalOrRef:
        t = r.u8()
        if t == 1:
            return ProposalOrRef(proposal=read_proposal(r))
        if t == 2:
            return ProposalOrRef(reference=r.opaque())
        raise MlsDecodeError("unknown ProposalOrRef type")


@dataclass(frozen=True, slots=True)
class HPKECiphertext:
    kem_output: bytes
    ciphertext: bytes

    def write(self, w: Writer) -> None:
        w.opaque(self.kem_output)
        w.opaque(self.ciphertext)

    @staticmethod
    def read(r: Reader) -> HPKECiphertext:
        return HPKECiphertext(r.opaque(), r.opaque())


@dataclass(frozen=True, slots=True)
class UpdatePathNode:
    encryption_key: bytes
    encrypted_path_secret: list[HPKECiphertext]

    def write(self, w: Writer) -> None:
        w.opaque(self.encryption_key)
        # A path node of a cold tree carries up to n/2 ciphertexts: join their encodings
        # in one pass instead of two Writer calls per ciphertext.
        w.opaque(b"".join(
            encode_varint(len(c.kem_output)) + c.kem_output
            + encode_varint(len(c.ciphertext)) + c.ciphertext
            for c in self.encrypted_path_secret
        ))

    @staticmethod
    def read(r: Reader) -> UpdatePathNode:
        return UpdatePathNode(r.opaque(), r.vector(HPKECiphertext.read))


@dataclass(frozen=True, slots=True)
class UpdatePath:
    leaf_node: LeafNode
    nodes: list[UpdatePathNode]

    def write(self, w: Writer) -> None:
        self.leaf_node.write(w)
        w.vector(self.nodes, lambda ww, n: n.write(ww))

    @staticmethod
    def read(r: Reader) -> UpdatePath:
        return UpdatePath(LeafNode.read(r), r.vector(UpdatePathNode.read))


@dataclass(frozen=True, slots=True)
class Commit:
    proposals: list[ProposalOrRef]
    path: UpdatePath | None = None

    def write(self, w: Writer) -> None:
        w.vector(self.proposals, lambda ww, p: p.write(ww))
        w.optional(self.path, lambda ww, p: p.write(ww))

    @staticmethod
    def read(r: Reader) -> Commit:
        props = r.vector(ProposalOrRef.read)
        return Commit(props, r.optional(UpdatePath.read))

__all__ = [
    "PSK_EXTERNAL",
    "PSK_RESUMPTION",
    "RESUMPTION_APPLICATION",
    "Add",
    "Commit",
    "ExternalInit",
    "GroupContextExtensions",
    "HPKECiphertext",
    "PreSharedKey",
    "PreSharedKeyID",
    "Proposal",
    "ProposalOrRef",
    "ReInit",
    "Remove",
    "Update",
    "UpdatePath",
    "UpdatePathNode",
    "read_proposal",
    "write_proposal",
    "write_proposal_body",
]
