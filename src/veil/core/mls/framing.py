"""PublicMessage and PrivateMessage protection (RFC 9420 §6.1–§6.3).

Signing and membership tags for PublicMessage; sender-data and content encryption with
the secret tree for PrivateMessage. Unprotecting a PrivateMessage peeks at the ratchet
key without changing the secret tree and consumes it only once the AEAD has
authenticated (and the caller verified the signature), so a forged ciphertext cannot
burn a key or change the saved hot state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from veil.core.mls.codec import Reader, Writer, decode_all
from veil.core.mls.crypto import CipherSuite
from veil.core.mls.errors import MlsDecodeError, MlsSignatureError, UnknownSender
from veil.core.mls.messages import (
    CONTENT_APPLICATION,
    SENDER_MEMBER,
    WF_PRIVATE,
    AuthenticatedContent,
    FramedContent,
    FramedContentAuthData,
    GroupContext,
    PrivateMessage,
    PublicMessage,
    Sender,
    framed_content_tbs,
    read_content,
    write_content,
)
from veil.core.mls.secret_tree import APPLICATION, HANDSHAKE, SecretTree


def sign_content(
    suite: CipherSuite,
    sig_priv: bytes,
    wire_format: int,
    content: FramedContent,
    context: GroupContext | None,
) -> bytes:
    tbs = framed_content_tbs(wire_format, content, context)
    return suite.sign_with_label(sig_priv, b"FramedContentTBS", tbs)


def verify_content_signature(
    suite: CipherSuite, sig_pub: bytes, ac: AuthenticatedContent, context: GroupContext | None
) -> None:
    tbs = framed_content_tbs(ac.wire_format, ac.content, context)
    if not suite.verify_with_label(sig_pub, b"FramedContentTBS", tbs, ac.auth.signature):
        raise MlsSignatureError("FramedContent signature does not verify")


def _tbm(content: FramedContent, auth: FramedContentAuthData, context: GroupContext) -> bytes:
    from veil.core.mls.messages import WF_PUBLIC

    w = Writer()
    w.raw(framed_content_tbs(WF_PUBLIC, content, context))
    auth.write(w)
    return w.bytes()


def protect_public(
    suite: CipherSuite,
    content: FramedContent,
    auth: FramedContentAuthData,
    membership_key: bytes,
    context: GroupContext,
) -> PublicMessage:
    tag = None
    if content.sender.sender_type == SENDER_MEMBER:
        tag = suite.mac(membership_key, _tbm(content, auth, context))
    return PublicMessage(content, auth, tag)


def verify_membership_tag(
    suite: CipherSuite, msg: PublicMessage, membership_key: bytes, context: GroupContext
) -> None:
    if msg.content.sender.sender_type != SENDER_MEMBER:
        return
    tag = msg.membership_tag or b""
    if not suite.verify_mac(membership_key, _tbm(msg.content, msg.auth, context), tag):
        raise MlsSignatureError("membership tag does not verify")


def _content_aad(msg_group: bytes, epoch: int, ctype: int, authenticated_data: bytes) -> bytes:
    w = Writer()
    w.opaque(msg_group)
    w.u64(epoch)
    w.u8(ctype)
    w.opaque(authenticated_data)
    return w.bytes()


def _sender_data_aad(group_id: bytes, epoch: int, ctype: int) -> bytes:
    w = Writer()
    w.opaque(group_id)
    w.u64(epoch)
    w.u8(ctype)
    return w.bytes()


def _sender_data_key_nonce(
    suite: CipherSuite, sender_data_secret: bytes, ciphertext: bytes
) -> tuple[bytes, bytes]:
    sample = ciphertext[: suite.nh]
    return (
        suite.expand_with_label(sender_data_secret, b"key", sample, suite.nk),
        suite.expand_with_label(sender_data_secret, b"nonce", sample, suite.nn),
    )


def _xor_guard(nonce: bytes, guard: bytes) -> bytes:
    head = bytes(a ^ b for a, b in zip(nonce[:4], guard, strict=True))
    return head + nonce[4:]


def protect_private(
    suite: CipherSuite,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    content: FramedContent,
    auth: FramedContentAuthData,
    padding: int = 0,
) -> PrivateMessage:
    if content.sender.sender_type != SENDER_MEMBER:
        raise UnknownSender("only members can send PrivateMessage")
    ctype = content.content_type
    kind = APPLICATION if ctype == CONTENT_APPLICATION else HANDSHAKE
    leaf = content.sender.index
    generation, key, nonce = secret_tree.next(leaf, kind)
    guard = os.urandom(4)
    body = Writer()
    write_content(body, content.content)
    auth.write(body)
    body.raw(bytes(padding))
    aad = _content_aad(content.group_id, content.epoch, ctype, content.authenticated_data)
    ciphertext = suite.seal(key, _xor_guard(nonce, guard), aad, body.bytes())
    sd = Writer()
    sd.u32(leaf)
    sd.u32(generation)
    sd.raw(guard)
    sd_key, sd_nonce = _sender_data_key_nonce(suite, sender_data_secret, ciphertext)
    enc_sd = suite.seal(
        sd_key, sd_nonce, _sender_data_aad(content.group_id, content.epoch, ctype), sd.bytes()
    )
    return PrivateMessage(
        content.group_id, content.epoch, ctype, content.authenticated_data, enc_sd, ciphertext
    )


@dataclass(frozen=True, slots=True)
class DecryptedPrivate:
    """A decrypted PrivateMessage whose ratchet key is not yet consumed.

    Call :meth:`consume` once the signature has verified too (and, for a staged Commit,
    not at all: the epoch it ends is left behind when the commit is merged).
    """

    content: AuthenticatedContent
    leaf_index: int
    generation: int
    secret_tree: SecretTree
    kind: int

    def consume(self) -> None:
        self.secret_tree.consume(self.leaf_index, self.kind, self.generation)


def _read_private_content(data: bytes, ctype: int) -> tuple[object, FramedContentAuthData]:
    def read(r: Reader) -> tuple[object, FramedContentAuthData]:
        body = read_content(r, ctype)
        auth = FramedContentAuthData.read(r, ctype)
        if any(r.data[r.pos:r.end]):
            raise MlsDecodeError("non-zero padding in PrivateMessageContent")
        r.pos = r.end
        return body, auth

    return decode_all(data, read)


def unprotect_private(
    suite: CipherSuite,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    msg: PrivateMessage,
) -> DecryptedPrivate:
    """Decrypt sender data and content; the caller verifies the signature, then consumes."""
    sd_key, sd_nonce = _sender_data_key_nonce(suite, sender_data_secret, msg.ciphertext)
    sd_plain = suite.open(
        sd_key, sd_nonce, _sender_data_aad(msg.group_id, msg.epoch, msg.content_type),
        msg.encrypted_sender_data,
    )

    def read_sd(r: Reader) -> tuple[int, int, bytes]:
        return r.u32(), r.u32(), r.raw(4)

    leaf, generation, guard = decode_all(sd_plain, read_sd)
    kind = APPLICATION if msg.content_type == CONTENT_APPLICATION else HANDSHAKE
    key, nonce = secret_tree.peek(leaf, kind, generation)
    aad = _content_aad(msg.group_id, msg.epoch, msg.content_type, msg.authenticated_data)
    plain = suite.open(key, _xor_guard(nonce, guard), aad, msg.ciphertext)
    body, auth = _read_private_content(plain, msg.content_type)
    content = FramedContent(
        msg.group_id, msg.epoch, Sender(SENDER_MEMBER, leaf), msg.authenticated_data,
        body,  # type: ignore[arg-type]
    )
    return DecryptedPrivate(
        AuthenticatedContent(WF_PRIVATE, content, auth), leaf, generation, secret_tree, kind
    )

__all__ = [
    "protect_private",
    "protect_public",
    "sign_content",
    "unprotect_private",
    "verify_content_signature",
    "verify_membership_tag",
]
