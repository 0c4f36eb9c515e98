"""The ratchet tree out of band: Welcomes without the tree, the tree in the mailbox
(docs/groups.md, "Large groups").

A Welcome travels as 1:1 content (at most 64 KiB), and the ratchet tree of a group of a
few hundred devices does not fit in it. So a committer that adds members builds its
Welcome without the tree (``include_tree_in_welcome=False``) and posts the new epoch's
tree to the group's mailbox as messages of that epoch, right after its commit won:

- the key is the new epoch's exporter, ``export_secret(b"veil ratchet tree", b"", 32)``:
  every member of the epoch and every invitee (who derives it from the Welcome before
  it knows the tree: ``Group.preview_welcome``) holds it, the server does not;
- the tree is cut into chunks of at most :data:`CHUNK_BYTES`; each chunk is
  ``"VRT1" ‖ index (u16) ‖ count (u16) ‖ tree length (u32) ‖ piece length (u32) ‖
  bytes``, zero-padded so that its length modulo 256 is that of a member's padded
  application message, sealed with AES-256-GCM under that key (a random 96-bit
  nonce in front; associated data: the label, the group id and the epoch, so a chunk
  cannot be moved to another group or epoch);
- each sealed chunk is framed as an MLS PrivateMessage of the new epoch (content type
  application, no authenticated data, 28 random bytes where a real message carries its
  encrypted sender data): the server, which reads only that clear header, sees an
  application message of the epoch, like any other.

The invitee fetches the epoch with R_{e+1} (from the preview), opens the chunks it can,
joins with the tree assembled (``Group.join(..., ratchet_tree=...)``, which checks the
GroupInfo signature and that the tree hash is the GroupContext's: a tree the server or
anyone else altered is refused). Members skip the chunks (they fail MLS decryption and
open as chunks).

What the server learns: after a commit, a burst of large messages in the new epoch,
whose sizes reveal the size of the tree (roughly the number of member devices) and
that the commit added someone.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from veil.core.mls import Group
from veil.core.mls.codec import decode_all
from veil.core.mls.errors import MlsError
from veil.core.mls.messages import CONTENT_APPLICATION, MLSMessage, PrivateMessage
from veil.core.mls.welcome import WelcomePreview

TREE_LABEL = b"veil ratchet tree"
# A chunk's bytes of tree: with its framing well below the server's default
# max_group_message_bytes (256 KiB). A module attribute (tests make it smaller).
CHUNK_BYTES = 192 * 1024
MAX_CHUNKS = 256                   # 48 MiB of tree at most: a joiner stops there
PAD_TO = 256
_MAGIC = b"VRT1"
_HEADER = struct.Struct(">4sHHII")     # magic, index, count, tree length, piece length
_SENDER_DATA = 28                  # what a real PrivateMessage's sender data takes


def tree_key(group: Group | WelcomePreview) -> bytes:
    """The epoch's tree key from a joined group or a Welcome preview (both export)."""
    return group.export_secret(TREE_LABEL, b"", 32)


def _aad(group_id: bytes, epoch: int) -> bytes:
    return TREE_LABEL + struct.pack(">B", len(group_id)) + group_id + struct.pack(">Q", epoch)


def seal_tree(group: Group) -> list[bytes]:
    """The current epoch's ratchet tree as mailbox messages of this epoch."""
    tree = group.ratchet_tree()
    key, gid, epoch = tree_key(group), group.group_id, group.epoch
    size = max(1, CHUNK_BYTES)
    pieces = [tree[i:i + size] for i in range(0, len(tree), size)] or [b""]
    if len(pieces) > MAX_CHUNKS:
        raise ValueError("the ratchet tree is too large to post")
    aead = AESGCM(key)
    out = []
    for index, piece in enumerate(pieces):
        plain = _HEADER.pack(_MAGIC, index, len(pieces), len(tree), len(piece)) + piece
        plain += bytes((_residue(len(plain)) - 28 - len(plain)) % PAD_TO)
        nonce = os.urandom(12)
        sealed = nonce + aead.encrypt(nonce, plain, _aad(gid, epoch))
        out.append(MLSMessage(PrivateMessage(gid, epoch, CONTENT_APPLICATION, b"",
                                             os.urandom(_SENDER_DATA), sealed)).encoded())
    return out


def _residue(size: int) -> int:
    """The length modulo 256 of a member's padded application message of about
    ``size`` bytes (content padded to 256; its varint length prefix, signature and tag
    make the rest), so a chunk's length looks like one."""
    return 84 if size < 16384 else 86


def open_chunk(key: bytes, group_id: bytes, epoch: int, message: bytes
               ) -> tuple[int, int, int, bytes] | None:
    """(index, count, tree length, bytes) of a tree chunk; None for anything else."""
    try:
        msg = decode_all(message, MLSMessage.read)
    except (MlsError, ValueError):
        return None
    body = msg.body
    if not isinstance(body, PrivateMessage) or body.group_id != group_id \
            or body.epoch != epoch or body.content_type != CONTENT_APPLICATION \
            or len(body.ciphertext) < 12 + _HEADER.size + 16:
        return None
    nonce, sealed = body.ciphertext[:12], body.ciphertext[12:]
    try:
        plain = AESGCM(key).decrypt(nonce, sealed, _aad(group_id, epoch))
    except InvalidTag:             # not a chunk (or not of this epoch's tree)
        return None
    magic, index, count, length, piece = _HEADER.unpack_from(plain)
    if magic != _MAGIC or not index < count <= MAX_CHUNKS \
            or piece > len(plain) - _HEADER.size:
        return None
    return index, count, length, plain[_HEADER.size:_HEADER.size + piece]


def assemble(chunks: dict[int, tuple[int, int, bytes]]) -> bytes | None:
    """The tree, once every chunk of one consistent set is here (else None)."""
    if not chunks:
        return None
    counts = {count for count, _, _ in chunks.values()}
    lengths = {length for _, length, _ in chunks.values()}
    if len(counts) != 1 or len(lengths) != 1:
        return None
    (count,), (length,) = counts, lengths
    if set(chunks) != set(range(count)):
        return None
    data = b"".join(chunks[i][2] for i in range(count))
    return data if len(data) == length else None


__all__ = ["CHUNK_BYTES", "TREE_LABEL", "assemble", "open_chunk", "seal_tree", "tree_key"]
