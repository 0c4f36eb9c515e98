"""What the client keeps of its MLS groups, and the KeyPackages it publishes.

Records (all inside the encrypted store, :mod:`veil.client.store`):

- ``group`` / group id (64 hex): :class:`GroupRecord` — the group's name, description
  and admins as this device accepted them, the epoch, the mailbox cursor (the last
  ``seq`` processed) and whether this device is still a member;
- ``group.slow`` and ``group.hot`` / group id: the MLS state (``Group.save``): the
  slow part (tree, context) is rewritten by commits and proposals, the hot part
  (secret tree) by every message;
- ``group.pending`` / group id: :class:`PendingCommit` — a commit sent (or about to be)
  but not yet known to have won its epoch: the state before and after it, the
  capabilities of the next epoch and the Welcome to send. It is resolved against the
  server's mailbox (docs/groups.md, "Crash safety");
- ``group.adding`` / group id: :class:`Adding` — an invitation committed in batches
  (more than ``ADD_BATCH`` devices): the KeyPackages not yet in the group, so a client
  stopped between two batches commits the rest on its next sync;
- ``mlskp`` / KeyPackageRef (hex): the private half of a published KeyPackage
  (:class:`veil.core.mls.KeyPackageBundle`), deleted once a Welcome used it (a
  last-resort one is kept);
- ``self`` / ``mls_signer``: this device's MLS signature key (Ed25519).

Credentials. A member's MLS credential is a BasicCredential whose identity is
``01 ‖ account (16) ‖ device (u32) ‖ identity public key (129) ‖ signature (64)``,
the signature made by the account's identity key over ``"veil mls credential v1" ‖
account ‖ device ‖ MLS signature key``. :func:`check_credential` (the group's
``credential_check``) refuses a leaf whose credential is not signed so, so a leaf
cannot claim an account without its identity key; who holds which identity is then
judged as in 1:1 (a known contact presenting another identity is ``IdentityChanged``).

Group metadata (name, description, admins) is a GroupContext extension of type
:data:`META_EXTENSION` (JSON), so every member and every joiner (through the Welcome's
GroupInfo) agrees on it by MLS itself, and changing it is a commit.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass

import msgspec
from msgspec import UNSET

from veil.client.device import Context
from veil.client.errors import ClientError, CorruptStore
from veil.client.pending import PendingMessage
from veil.client.store import Store
from veil.core import keys
from veil.core.errors import CoreError
from veil.core.mls import Credential, Group, KeyPackageBundle
from veil.core.mls.crypto import get_suite
from veil.core.mls.leaf import CREDENTIAL_BASIC, Capabilities, Extension, find_extension
from veil.core.mls.welcome import default_capabilities
from veil.protocol import requests as rq
from veil.protocol import responses as rs

log = logging.getLogger("veil.client")

SUITE = 1
META_EXTENSION = 0xF0A1                    # private use (RFC 9420 §17.3)
CAPABILITIES = Capabilities(
    versions=default_capabilities(SUITE).versions, cipher_suites=(SUITE,),
    extensions=(META_EXTENSION,), credentials=(CREDENTIAL_BASIC,))
KEY_PACKAGE_BATCH = 20
KEY_PACKAGE_LOW = 10                       # the server's default key_package_low_threshold
KEY_PACKAGE_LIFETIME_S = 90 * 24 * 3600
MAX_NAME = 128
MAX_DESCRIPTION = 1024

KIND_GROUP = "group"
KIND_SLOW = "group.slow"
KIND_HOT = "group.hot"
KIND_PENDING = "group.pending"
KIND_TREE = "group.tree"
KIND_JOINING = "group.joining"
KIND_ADDING = "group.adding"
KIND_KP = "mlskp"
_SIGNER = ("self", "mls_signer")
_CREDENTIAL_LABEL = b"veil mls credential v1"
_CRED_VERSION = 1
_CRED_SIZE = 1 + 16 + 4 + keys.IdentityPublicKey.SIZE + 64


# --- records ------------------------------------------------------------------------------

class GroupRecord(msgspec.Struct, kw_only=True):
    id: str                          # the MLS group id, 64 hex
    name: str
    description: str | None = None
    admins: list[str] = msgspec.field(default_factory=list)   # account ids
    epoch: int = 0
    cursor: int = 0                  # the last seq processed
    status: str = "active"           # "active", "left", "removed"
    registered: bool = True          # False until POST /v1/groups succeeded (creator)
    created: int = 0                 # ms
    # Leaves whose account proposed its own removal (leaving) in the current epoch.
    leave_requests: list[int] = msgspec.field(default_factory=list)
    # Sequence numbers (docs/groups.md, "Missing messages"): the last one this device
    # gave a message it sent, and the highest received from each member device
    # ("account/device"), across epochs.
    sent: int = 0
    senders: dict[str, int] = msgspec.field(default_factory=dict)
    # The epoch a GroupStalled was told for (-1: none), so it is told once; cleared by
    # a sync that reads its epoch to the end without a stall.
    stalled: int = -1


class PendingCommit(msgspec.Struct, kw_only=True):
    epoch: int                       # the epoch the commit ends
    commit: bytes
    welcome: bytes | None
    welcome_to: list[str]            # invited accounts (the Welcome goes to each)
    before_slow: bytes
    before_hot: bytes
    after_slow: bytes
    after_hot: bytes
    next_read: bytes
    next_write: bytes
    # The new epoch's ratchet tree as mailbox messages (veil.client.group_tree), posted
    # once the commit won, before the Welcome (which does not carry the tree) leaves.
    tree: list[bytes] = msgspec.field(default_factory=list)


class TreePost(msgspec.Struct, kw_only=True):
    """``group.tree`` / group id: our commit won; its tree goes to the mailbox (epoch
    ``epoch``), then the Welcomes go to the outbox."""

    epoch: int
    chunks: list[bytes]
    posted: int = 0                  # chunks the server acknowledged
    welcomes: list[PendingMessage]


class Joining(msgspec.Struct, kw_only=True):
    """``group.joining`` / group id: a Welcome without the tree, waiting for the tree
    from the mailbox of epoch ``epoch`` (read with ``read``, opened with ``key``)."""

    welcome: bytes
    sender: str
    ref: str                         # the KeyPackage it is for (its private half kept)
    epoch: int
    read: bytes
    key: bytes
    created: int
    group_id: str = ""


class Adding(msgspec.Struct, kw_only=True):
    """``group.adding`` / group id: the rest of an invitation committed in batches. The
    KeyPackages of the whole intent, (account, KeyPackage); those whose device is in
    the group are dropped by the transaction that adopts each batch's commit."""

    op: str                          # "add" or "own" (veil.client.group_core._Intent)
    key_packages: list[tuple[str, bytes]]


_ENC = msgspec.json.Encoder()
_GROUP = msgspec.json.Decoder(GroupRecord)
_PENDING = msgspec.json.Decoder(PendingCommit)
_TREE = msgspec.json.Decoder(TreePost)
_JOINING = msgspec.json.Decoder(Joining)
_ADDING = msgspec.json.Decoder(Adding)


def get_record(store: Store, group_id: str) -> GroupRecord | None:
    raw = store.get(KIND_GROUP, group_id)
    if raw is None:
        return None
    try:
        return _GROUP.decode(raw)
    except msgspec.MsgspecError:
        raise CorruptStore("a stored group record is damaged") from None


def all_records(store: Store) -> list[GroupRecord]:
    out = []
    for raw in store.values(KIND_GROUP):
        try:
            out.append(_GROUP.decode(raw))
        except msgspec.MsgspecError:
            raise CorruptStore("a stored group record is damaged") from None
    return out


def put_record(store: Store, record: GroupRecord) -> None:
    store.put(KIND_GROUP, record.id, _ENC.encode(record))


def get_pending(store: Store, group_id: str) -> PendingCommit | None:
    raw = store.get(KIND_PENDING, group_id)
    if raw is None:
        return None
    try:
        return _PENDING.decode(raw)
    except msgspec.MsgspecError:
        raise CorruptStore("a stored pending commit is damaged") from None


def put_pending(store: Store, group_id: str, pending: PendingCommit) -> None:
    store.put(KIND_PENDING, group_id, _ENC.encode(pending))


def drop_pending(store: Store, group_id: str) -> None:
    store.delete(KIND_PENDING, group_id)


def get_tree_post(store: Store, group_id: str) -> TreePost | None:
    raw = store.get(KIND_TREE, group_id)
    try:
        return None if raw is None else _TREE.decode(raw)
    except msgspec.MsgspecError:
        raise CorruptStore("a stored tree post is damaged") from None


def put_tree_post(store: Store, group_id: str, post: TreePost) -> None:
    store.put(KIND_TREE, group_id, _ENC.encode(post))


def drop_tree_post(store: Store, group_id: str) -> None:
    store.delete(KIND_TREE, group_id)


def get_joining(store: Store, group_id: str) -> Joining | None:
    raw = store.get(KIND_JOINING, group_id)
    try:
        return None if raw is None else _JOINING.decode(raw)
    except msgspec.MsgspecError:
        raise CorruptStore("a stored group join is damaged") from None


def all_joining(store: Store) -> list[str]:
    """The group ids of Welcomes still waiting for their tree."""
    out = []
    for raw in store.values(KIND_JOINING):
        try:
            out.append(_JOINING.decode(raw).group_id)
        except msgspec.MsgspecError:
            raise CorruptStore("a stored group join is damaged") from None
    return out


def get_adding(store: Store, group_id: str) -> Adding | None:
    raw = store.get(KIND_ADDING, group_id)
    try:
        return None if raw is None else _ADDING.decode(raw)
    except msgspec.MsgspecError:
        raise CorruptStore("a stored invitation is damaged") from None


def put_adding(store: Store, group_id: str, adding: Adding) -> None:
    store.put(KIND_ADDING, group_id, _ENC.encode(adding))


def drop_adding(store: Store, group_id: str) -> None:
    store.delete(KIND_ADDING, group_id)


# --- metadata -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Metadata:
    name: str
    description: str | None
    admins: tuple[str, ...]

    def extension(self) -> Extension:
        body = {"v": 1, "name": self.name, "description": self.description,
                "admins": sorted(self.admins)}
        return Extension(META_EXTENSION, json.dumps(body, separators=(",", ":")).encode())

    @staticmethod
    def of(extensions: list[Extension]) -> Metadata | None:
        """The metadata in a GroupContext; None when absent or malformed."""
        data = find_extension(extensions, META_EXTENSION)
        if data is None:
            return None
        try:
            body = json.loads(data)
            name, description, admins = body["name"], body.get("description"), body["admins"]
            if not (isinstance(name, str) and len(name) <= MAX_NAME
                    and (description is None or (isinstance(description, str)
                                                 and len(description) <= MAX_DESCRIPTION))
                    and isinstance(admins, list)
                    and all(isinstance(a, str) and _is_account(a) for a in admins)):
                return None
            return Metadata(name, description, tuple(sorted(set(admins))))
        except (ValueError, KeyError, TypeError, RecursionError):
            return None


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 for c in name):
        raise ClientError(f"a group name is 1 to {MAX_NAME} printable characters")
    return name


def check_description(description: str | None) -> str | None:
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise ClientError(f"a group description is at most {MAX_DESCRIPTION} characters")
    return description


def _is_account(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


# --- credentials --------------------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    """Who a leaf's credential says it is (its signature checked)."""

    account: str
    device: int
    identity: keys.IdentityPublicKey


def _binding(account: bytes, device: int, signature_key: bytes) -> bytes:
    return _CREDENTIAL_LABEL + account + struct.pack(">I", device) + signature_key


def make_credential(identity: keys.IdentityKeyPair, account: str, device: int,
                    signature_key: bytes) -> Credential:
    raw = bytes.fromhex(account)
    sig = identity.sign(_binding(raw, device, signature_key))
    return Credential.basic(bytes((_CRED_VERSION,)) + raw + struct.pack(">I", device)
                            + identity.public.to_bytes() + sig)


def parse_credential(credential: Credential, signature_key: bytes) -> Member | None:
    """The member a credential names, if its identity signed this signature key."""
    data = credential.identity
    if credential.credential_type != CREDENTIAL_BASIC or len(data) != _CRED_SIZE \
            or data[0] != _CRED_VERSION:
        return None
    account, (device,) = data[1:17], struct.unpack(">I", data[17:21])
    try:
        identity = keys.IdentityPublicKey.from_bytes(data[21:21 + keys.IdentityPublicKey.SIZE])
        identity.verify(data[21 + keys.IdentityPublicKey.SIZE:],
                        _binding(account, device, signature_key), "MLS credential")
    except CoreError:
        return None
    return Member(account.hex(), device, identity)


def check_credential(credential: Credential, signature_key: bytes,
                     previous: Credential | None) -> bool:
    """The groups' ``credential_check``: a Veil credential, and no change of who."""
    if parse_credential(credential, signature_key) is None:
        return False
    return previous is None or previous == credential


def member_of(group: Group, leaf: int) -> Member | None:
    for index, credential, signature_key in leaves(group):
        if index == leaf:
            return parse_credential(credential, signature_key)
    return None


def leaves(group: Group) -> list[tuple[int, Credential, bytes]]:
    """(leaf index, credential, signature key) of every member."""
    state = group._live()
    return [(i, leaf.credential, leaf.signature_key) for i, leaf in state.tree.members()]


def members(group: Group) -> list[tuple[int, Member]]:
    out = []
    for index, credential, signature_key in leaves(group):
        member = parse_credential(credential, signature_key)
        if member is not None:
            out.append((index, member))
    return out


# --- this device's MLS keys ---------------------------------------------------------------

def signer(ctx: Context) -> tuple[bytes, Credential]:
    """This device's MLS signature key and credential (made on first use)."""
    store = ctx.store
    raw = store.get(*_SIGNER)
    suite = get_suite(SUITE)
    if raw is None:
        with store.transaction():
            raw = store.get(*_SIGNER)
            if raw is None:
                raw, _ = suite.generate_signature_key_pair()
                store.put(*_SIGNER, raw)
    me = ctx.device.record
    public = suite.signature_public_from_private(raw)
    return raw, make_credential(ctx.identity, me.account, me.device_id, public)


def new_key_package(ctx: Context, now_s: int) -> KeyPackageBundle:
    priv, credential = signer(ctx)
    return Group.key_package(SUITE, credential, now=now_s, signature_priv=priv,
                             lifetime_seconds=KEY_PACKAGE_LIFETIME_S,
                             capabilities=CAPABILITIES)


def keep_bundle(store: Store, bundle: KeyPackageBundle, last_resort: bool) -> None:
    ref = bundle.key_package.ref(get_suite(SUITE)).hex()
    store.put(KIND_KP, ref, bytes((int(last_resort),)) + bundle.encode())


def find_bundle(store: Store, refs: list[bytes]) -> tuple[str, KeyPackageBundle, bool] | None:
    """The private half of one of these KeyPackages, if this device published it."""
    for ref in refs:
        raw = store.get(KIND_KP, ref.hex())
        if raw is not None:
            try:
                return ref.hex(), KeyPackageBundle.decode(raw[1:]), raw[0] == 1
            except CoreError:
                raise CorruptStore("a stored KeyPackage is damaged") from None
    return None


class KeyPackageMaintenance:
    """Publishes this device's MLS KeyPackages (``PUT /v1/keys/mls``): a stock of
    one-time ones and a last-resort one, topped up on connect and on ``mls_keys_low``
    (as :class:`veil.client.prekey_store.PrekeyMaintenance` does for prekeys). The
    private halves are committed to the store before the upload."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._running = False

    async def run_quietly(self) -> None:
        try:
            await self.run()
        except (ClientError, CoreError) as exc:
            log.warning("could not publish MLS KeyPackages: %s", exc.code)

    async def run(self) -> None:
        if self._running:
            return
        self._running = True
        try:
            await self._run()
        finally:
            self._running = False

    async def _run(self) -> None:
        ctx = self._ctx
        status = await ctx.api.call("GET", "/v1/keys/mls", rs.KeyPackageStatus)
        now_s = ctx.clock() // 1000
        one_time: list[KeyPackageBundle] = []
        last: KeyPackageBundle | None = None
        if status.one_time < KEY_PACKAGE_LOW:
            one_time = [new_key_package(ctx, now_s) for _ in range(KEY_PACKAGE_BATCH)]
        if status.last_resort == 0:
            last = new_key_package(ctx, now_s)
        if not one_time and last is None:
            return
        with ctx.store.transaction():
            for bundle in one_time:
                keep_bundle(ctx.store, bundle, False)
            if last is not None:
                keep_bundle(ctx.store, last, True)
        await ctx.api.call("PUT", "/v1/keys/mls", rs.KeyPackageStatus, rq.KeyPackageUpload(
            key_packages=[b.key_package.encoded() for b in one_time] or UNSET,
            last_resort=last.key_package.encoded() if last is not None else UNSET))
        log.info("published %d MLS KeyPackages", len(one_time) + (last is not None))


__all__ = [
    "CAPABILITIES",
    "META_EXTENSION",
    "SUITE",
    "Adding",
    "GroupRecord",
    "KeyPackageMaintenance",
    "Member",
    "Metadata",
    "PendingCommit",
    "check_credential",
    "make_credential",
    "parse_credential",
]
