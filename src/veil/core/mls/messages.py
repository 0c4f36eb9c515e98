"""Framing and group-joining wire structures (RFC 9420 §6, §8.1, §12.4.3).

GroupContext, Sender, FramedContent, PublicMessage, PrivateMessage, GroupInfo,
GroupSecrets, Welcome and the MLSMessage envelope.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from veil.core.mls.codec import Reader, Writer
from veil.core.mls.errors import MlsDecodeError
from veil.core.mls.leaf import MLS10, Extension, KeyPackage, read_extensions, write_extensions
from veil.core.mls.proposals import (
    Commit,
    HPKECiphertext,
    PreSharedKeyID,
    Proposal,
    read_proposal,
    write_proposal,
)

CONTENT_APPLICATION = 1
CONTENT_PROPOSAL = 2
CONTENT_COMMIT = 3

SENDER_MEMBER = 1
SENDER_EXTERNAL = 2
SENDER_NEW_MEMBER_PROPOSAL = 3
SENDER_NEW_MEMBER_COMMIT = 4

WF_PUBLIC = 1
WF_PRIVATE = 2
WF_WELCOME = 3
WF_GROUP_INFO = 4
WF_KEY_PACKAGE = 5


@dataclass(frozen=True, slots=True)
class GroupContext:
    cipher_suite: int
    group_id: bytes
    epoch: int
    tree_hash: bytes
    confirmed_transcript_hash: bytes
    extensions: list[Extension] = field(default_factory=list)
    version: int = MLS10

    def write(self, w: Writer) -> None:
        w.u16(self.version)
        w.u16(self.cipher_suite)
        w.opaque(self.group_id)
        w.u64(self.epoch)
        w.opaque(self.tree_hash)
        w.opaque(self.confirmed_transcript_hash)
        write_extensions(w, self.extensions)

    @staticmethod
    def read(r: Reader) -> GroupContext:
        version = r.u16()
        suite = r.u16()
        gid = r.opaque()
        epoch = r.u64()
        th = r.opaque()
        cth = r.opaque()
        return GroupContext(suite, gid, epoch, th, cth, read_extensions(r), version)

    def encoded(self) -> bytes:
        w = Writer()
        self.write(w)
        return w.bytes()


@dataclass(frozen=True, slots=True)
class Sender:
    sender_type: int
    index: int = 0

    def write(self, w: Writer) -> None:
        w.u8(self.sender_type)
        if self.sender_type in (SENDER_MEMBER, SENDER_EXTERNAL):
            w.u32(self.index)

    @staticmethod
    def read(r: Reader) -> Sender:
        t = r.u8()
        if t in (SENDER_MEMBER, SENDER_EXTERNAL):
            return Sender(t, r.u32())
        if t in (SENDER_NEW_MEMBER_PROPOSAL, SENDER_NEW_MEMBER_COMMIT):
            return Sender(t)
        raise MlsDecodeError("unknown sender type")


Content = bytes | Proposal | Commit


def content_type_of(content: Content) -> int:
    if isinstance(content, bytes):
        return CONTENT_APPLICATION
    if isinstance(content, Commit):
        return CONTENT_COMMIT
    return CONTENT_PROPOSAL


def write_content(w: Writer, content: Content) -> None:
    if isinstance(content, bytes):
        w.opaque(content)
    elif isinstance(content, Commit):
        content.write(w)
    else:
        write_proposal(w, content)


def read_content(r: Reader, content_type: int) -> Content:
    if content_type == CONTENT_APPLICATION:
        return r.opaque()
    if content_type == CONTENT_PROPOSAL:
        return read_proposal(r)
    if content_type == CONTENT_COMMIT:
        return Commit.read(r)
    raise MlsDecodeError("unknown content type")


@dataclass(frozen=True, slots=True)
class FramedContent:
    group_id: bytes
    epoch: int
    sender: Sender
    authenticated_data: bytes
    content: Content
    # A Commit's content is encoded for the signature, transcript hash, membership tag
    # and the message itself; encode it once.
    _enc: bytes | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def content_type(self) -> int:
        return content_type_of(self.content)

    def write(self, w: Writer) -> None:
        if self._enc is None:
            inner = Writer()
            inner.opaque(self.group_id)
            inner.u64(self.epoch)
            self.sender.write(inner)
            inner.opaque(self.authenticated_data)
            inner.u8(self.content_type)
            write_content(inner, self.content)
            object.__setattr__(self, "_enc", inner.bytes())
        assert self._enc is not None
        w.raw(self._enc)

    @staticmethod
    def read(r: Reader) -> FramedContent:
        gid = r.opaque()
        epoch = r.u64()
        sender = Sender.read(r)
        aad = r.opaque()
        ctype = r.u8()
        return FramedContent(gid, epoch, sender, aad, read_content(r, ctype))


@dataclass(frozen=True, slots=True)
class FramedContentAuthData:
    signature: bytes
    confirmation_tag: bytes | None = None

    def write(self, w: Writer) -> None:
        w.opaque(self.signature)
        if self.confirmation_tag is not None:
            w.opaque(self.confirmation_tag)

    @staticmethod
    def read(r: Reader, content_type: int) -> FramedContentAuthData:
        sig = r.opaque()
        tag = r.opaque() if content_type == CONTENT_COMMIT else None
        return FramedContentAuthData(sig, tag)


def framed_content_tbs(
    wire_format: int, content: FramedContent, context: GroupContext | None
) -> bytes:
    """FramedContentTBS (RFC 9420 §6.1)."""
    w = Writer()
    w.u16(MLS10)
    w.u16(wire_format)
    content.write(w)
    if content.sender.sender_type in (SENDER_MEMBER, SENDER_NEW_MEMBER_COMMIT):
        if context is None:
            raise MlsDecodeError("member content needs a group context")
        context.write(w)
    return w.bytes()


@dataclass(frozen=True, slots=True)
class AuthenticatedContent:
    wire_format: int
    content: FramedContent
    auth: FramedContentAuthData

    def write(self, w: Writer) -> None:
        w.u16(self.wire_format)
        self.content.write(w)
        self.auth.write(w)

    def encoded(self) -> bytes:
        w = Writer()
        self.write(w)
        return w.bytes()

    @staticmethod
    def read(r: Reader) -> AuthenticatedContent:
        wf = r.u16()
        content = FramedContent.read(r)
        auth = FramedContentAuthData.read(r, content.content_type)
        return AuthenticatedContent(wf, content, auth)


@dataclass(frozen=True, slots=True)
class PublicMessage:
    content: FramedContent
    auth: FramedContentAuthData
    membership_tag: bytes | None = None

    def write(self, w: Writer) -> None:
        self.content.write(w)
        self.auth.write(w)
        if self.content.sender.sender_type == SENDER_MEMBER:
            if self.membership_tag is None:
                raise MlsDecodeError("member PublicMessage without membership tag")
            w.opaque(self.membership_tag)

    @staticmethod
    def read(r: Reader) -> PublicMessage:
        content = FramedContent.read(r)
        auth = FramedContentAuthData.read(r, content.content_type)
        tag = r.opaque() if content.sender.sender_type == SENDER_MEMBER else None
        return PublicMessage(content, auth, tag)


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    group_id: bytes
    epoch: int
    content_type: int
    authenticated_data: bytes
    encrypted_sender_data: bytes
    ciphertext: bytes

    def write(self, w: Writer) -> None:
        w.opaque(self.group_id)
        w.u64(self.epoch)
        w.u8(self.content_type)
        w.opaque(self.authenticated_data)
        w.opaque(self.encrypted_sender_data)
        w.opaque(self.ciphertext)

    @staticmethod
    def read(r: Reader) -> PrivateMessage:
        gid = r.opaque()
        epoch = r.u64()
        ctype = r.u8()
        if ctype not in (CONTENT_APPLICATION, CONTENT_PROPOSAL, CONTENT_COMMIT):
            raise MlsDecodeError("unknown content type")
        return PrivateMessage(gid, epoch, ctype, r.opaque(), r.opaque(), r.opaque())


@dataclass(frozen=True, slots=True)
class GroupInfo:
    group_context: GroupContext
    extensions: list[Extension]
    confirmation_tag: bytes
    signer: int
    signature: bytes = b""

    def _write_body(self, w: Writer) -> None:
        self.group_context.write(w)
        write_extensions(w, self.extensions)
        w.opaque(self.confirmation_tag)
        w.u32(self.signer)

    def tbs(self) -> bytes:
        w = Writer()
        self._write_body(w)
        return w.bytes()

    def write(self, w: Writer) -> None:
        self._write_body(w)
        w.opaque(self.signature)

    @staticmethod
    def read(r: Reader) -> GroupInfo:
        gc = GroupContext.read(r)
        exts = read_extensions(r)
        tag = r.opaque()
        signer = r.u32()
        return GroupInfo(gc, exts, tag, signer, r.opaque())


@dataclass(frozen=True, slots=True)
class GroupSecrets:
    joiner_secret: bytes
    path_secret: bytes | None
    psks: list[PreSharedKeyID]

    def write(self, w: Writer) -> None:
        w.opaque(self.joiner_secret)
        w.optional(self.path_secret, lambda ww, s: ww.opaque(s))
        w.vector(self.psks, lambda ww, p: p.write(ww))

    @staticmethod
    def read(r: Reader) -> GroupSecrets:
        js = r.opaque()
        ps = r.optional(lambda rr: rr.opaque())
        return GroupSecrets(js, ps, r.vector(PreSharedKeyID.read))


@dataclass(frozen=True, slots=True)
class EncryptedGroupSecrets:
    new_member: bytes
    encrypted_group_secrets: HPKECiphertext

    def write(self, w: Writer) -> None:
        w.opaque(self.new_member)
        self.encrypted_group_secrets.write(w)

    @staticmethod
    def read(r: Reader) -> EncryptedGroupSecrets:
        return EncryptedGroupSecrets(r.opaque(), HPKECiphertext.read(r))


@dataclass(frozen=True, slots=True)
class Welcome:
    cipher_suite: int
    secrets: list[EncryptedGroupSecrets]
    encrypted_group_info: bytes

    def write(self, w: Writer) -> None:
        w.u16(self.cipher_suite)
        w.vector(self.secrets, lambda ww, s: s.write(ww))
        w.opaque(self.encrypted_group_info)

    @staticmethod
    def read(r: Reader) -> Welcome:
        suite = r.u16()
        return Welcome(suite, r.vector(EncryptedGroupSecrets.read), r.opaque())


MessageBody = PublicMessage | PrivateMessage | Welcome | GroupInfo | KeyPackage


@dataclass(frozen=True, slots=True)
class MLSMessage:
    body: MessageBody

    @property
    def wire_format(self) -> int:
        b = self.body
        if isinstance(b, PublicMessage):
            return WF_PUBLIC
        if isinstance(b, PrivateMessage):
            return WF_PRIVATE
        if isinstance(b, Welcome):
            return WF_WELCOME
        if isinstance(b, GroupInfo):
            return WF_GROUP_INFO
        return WF_KEY_PACKAGE

    def write(self, w: Writer) -> None:
        w.u16(MLS10)
        w.u16(self.wire_format)
        self.body.write(w)

    def encoded(self) -> bytes:
        w = Writer()
        self.write(w)
        return w.bytes()

    @staticmethod
    def read(r: Reader) -> MLSMessage:
        version = r.u16()
        if version != MLS10:
            raise MlsDecodeError("unsupported MLS protocol version")
        wf = r.u16()
        body: MessageBody
        if wf == WF_PUBLIC:
            body = PublicMessage.read(r)
        elif wf == WF_PRIVATE:
            body = PrivateMessage.read(r)
        elif wf == WF_WELCOME:
            body = Welcome.read(r)
        elif wf == WF_GROUP_INFO:
            body = GroupInfo.read(r)
        elif wf == WF_KEY_PACKAGE:
            body = KeyPackage.read(r)
        else:
            raise MlsDecodeError("unknown wire format")
        return MLSMessage(body)


__all__ = [
    "CONTENT_APPLICATION",
    "SENDER_MEMBER",
    "SENDER_NEW_MEMBER_COMMIT",
    "WF_PRIVATE",
    "WF_PUBLIC",
    "AuthenticatedContent",
    "Content",
    "EncryptedGroupSecrets",
    "FramedContent",
    "FramedContentAuthData",
    "GroupContext",
    "GroupInfo",
    "GroupSecrets",
    "MLSMessage",
    "PrivateMessage",
    "PublicMessage",
    "Sender",
    "Welcome",
    "framed_content_tbs",
    "read_content",
    "write_content",
]
