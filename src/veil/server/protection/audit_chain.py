"""The audit log's hash chain, its signed checkpoints, and their verification
(issue 13 §5; docs/protection.md, "Audit log").

A record is (seq, at_ms, kind, fields). Its hash is
``SHA-256(prev_hash || canonical)``, where ``canonical`` is the canonical JSON (sorted
keys, no spaces, UTF-8) of ``{"at_ms", "fields", "kind", "seq"}``; the first record's
``prev_hash`` is 32 zero bytes. The fields are stored as exactly the canonical text that
was hashed, so verification hashes the stored bytes and nothing a parser could smooth
over. A checkpoint signs (Ed25519, the server key of ``veil.server.certificates``) the
hash at a seq; a small head file under ``DATA/audit/`` keeps the latest (seq, hash) and
the latest checkpoint outside the database, so deleting the newest records (tail
truncation) is found too.

:func:`verify_chain` reads the whole log in pages and reports the first broken record
and why: ``edited`` (a record's hash no longer matches it), ``deleted`` (a gap, or a
record whose predecessor is gone), ``reordered`` (a record follows one it was not
chained to), ``truncated`` (records the head file or a checkpoint vouches for are
missing), ``rewritten`` (a consistent chain that disagrees with a signed checkpoint or
the head: re-hashed after a change), ``bad_signature`` (a checkpoint that does not
verify, or by an unknown key).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from veil.core.encoding import Reader
from veil.core.errors import CoreError
from veil.core.sealed import ServerCertificate, ServerKey
from veil.server.certificates import ROOT_PUBLIC_FILE, SERVER_FILE
from veil.server.storage.base import AuditCheckpoint, AuditRow

GENESIS = bytes(32)
AUDIT_DIR = "audit"
HEAD_FILE = "head.json"
KEY_RECORD = "audit.key"  # a server key's certificate, so old checkpoints stay checkable
# Recorded at a start when the head file disagreed with the database (AuditLog.open).
HEAD_RECORDS = ("audit.head_missing", "audit.head_ahead", "audit.head_mismatch")
_CHECKPOINT_DOMAIN = b"veil audit checkpoint v1\x00"
PAGE = 1000


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def record_hash(prev_hash: bytes, seq: int, at_ms: int, kind: str, fields_text: str) -> bytes:
    """The chain hash of one record. ``fields_text`` is embedded verbatim: for canonical
    text the result is the canonical JSON of the whole record."""
    body = (f'{{"at_ms":{int(at_ms)},"fields":{fields_text},"kind":{canonical(kind)},'
            f'"seq":{int(seq)}}}')
    return hashlib.sha256(prev_hash + body.encode()).digest()


def make_row(prev_hash: bytes, seq: int, at_ms: int, kind: str,
             fields: dict[str, Any]) -> AuditRow:
    text = canonical(fields)
    return AuditRow(seq, at_ms, kind, text, prev_hash,
                    record_hash(prev_hash, seq, at_ms, kind, text))


def row_is_sound(row: AuditRow, prev_hash: bytes | None = None) -> bool:
    """Whether the row hashes to its stored hash (from ``prev_hash`` if given, else its
    own) and its fields are canonical text."""
    prev = row.prev_hash if prev_hash is None else prev_hash
    if record_hash(prev, row.seq, row.at_ms, row.kind, row.fields) != row.hash:
        return False
    try:
        return canonical(json.loads(row.fields)) == row.fields
    except ValueError:
        return False


def checkpoint_message(seq: int, digest: bytes, at_ms: int, key_id: str) -> bytes:
    return _CHECKPOINT_DOMAIN + canonical(
        {"at_ms": at_ms, "hash": digest.hex(), "key_id": key_id, "seq": seq}).encode()


# --- the signer ----------------------------------------------------------------------

class Signer(Protocol):
    """Signs checkpoints. ``certificate`` (root-signed, or None) lets a verifier trust
    the key later, after the server key was replaced."""

    @property
    def key_id(self) -> str: ...

    def public_key(self) -> bytes: ...

    def certificate(self) -> bytes | None: ...

    def sign(self, message: bytes) -> bytes: ...


class ServerKeySigner:
    """The server key (``DATA/server_signing.key``), read when first needed: on a first
    start the certificate authority writes it after the protection layers open."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / SERVER_FILE
        self._key: ed25519.Ed25519PrivateKey | None = None
        self._cert: ServerCertificate | None = None

    def _load(self) -> tuple[ed25519.Ed25519PrivateKey, ServerCertificate]:
        if self._key is None or self._cert is None:
            raw = self._path.read_bytes()
            server = ServerKey.from_bytes(raw)  # checks that the key and certificate match
            self._key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
            self._cert = server.certificate
        return self._key, self._cert

    @property
    def key_id(self) -> str:
        return str(self._load()[1].key_id)

    def public_key(self) -> bytes:
        return self._load()[1].server_public

    def certificate(self) -> bytes | None:
        return self._load()[1].to_bytes()

    def sign(self, message: bytes) -> bytes:
        return self._load()[0].sign(message)


def known_keys(data_dir: Path | None, signer: Signer | None) -> dict[str, bytes]:
    """Public keys checkpoints may be signed with before the chain is read: the
    signer's and the data directory's server key."""
    keys: dict[str, bytes] = {}
    if data_dir is not None:
        with contextlib.suppress(OSError, CoreError):
            cert = ServerKey.from_bytes((data_dir / SERVER_FILE).read_bytes()).certificate
            keys[str(cert.key_id)] = cert.server_public
    if signer is not None:
        with contextlib.suppress(OSError, CoreError):
            keys[signer.key_id] = signer.public_key()
    return keys


def trust_root(data_dir: Path | None) -> bytes | None:
    if data_dir is None:
        return None
    try:
        return (data_dir / ROOT_PUBLIC_FILE).read_bytes()
    except OSError:
        return None


def certified_key(root: bytes | None, row: AuditRow) -> tuple[str, bytes] | None:
    """The (key id, public key) an ``audit.key`` record holds, if the trust root signed
    its certificate (expired or not: old checkpoints stay valid)."""
    if root is None or row.kind != KEY_RECORD:
        return None
    try:
        fields = json.loads(row.fields)
        cert = ServerCertificate.read(Reader(bytes.fromhex(fields["certificate"]),
                                             "certificate"))
        cert.validate(root, 0)  # authenticity only: expiry does not matter here
    except (ValueError, KeyError, TypeError, CoreError):
        return None
    return str(cert.key_id), cert.server_public


# --- the head file -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Head:
    seq: int = 0
    hash: bytes = GENESIS
    checkpoint_seq: int = 0
    key_ids: tuple[str, ...] = ()  # server keys whose certificate the chain holds


def head_path(data_dir: Path) -> Path:
    return data_dir / AUDIT_DIR / HEAD_FILE


def read_head(data_dir: Path) -> Head | None:
    """The head file, or None when there is none (or it is unreadable)."""
    try:
        raw = json.loads(head_path(data_dir).read_text())
        return Head(int(raw["seq"]), bytes.fromhex(raw["hash"]), int(raw["checkpoint_seq"]),
                    tuple(str(k) for k in raw.get("key_ids", ())))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_head(data_dir: Path, head: Head) -> None:
    """Atomically (a new file renamed over the old one), fsynced: it must not claim
    less than the database holds after a crash."""
    path = head_path(data_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    data = canonical({"seq": head.seq, "hash": head.hash.hex(),
                      "checkpoint_seq": head.checkpoint_seq,
                      "key_ids": list(head.key_ids)}).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# --- verification --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AuditReport:
    ok: bool
    records: int  # records read
    checkpoints: int  # checkpoints whose signature verified
    first_broken: int | None = None  # the seq of the first broken record
    reason: str | None = None  # edited, deleted, reordered, truncated, rewritten, bad_signature
    detail: str = ""
    last_seq: int = 0
    last_checkpoint_seq: int = 0
    head_checked: bool = False  # whether a head file was there to find tail truncation
    notes: tuple[str, ...] = field(default_factory=tuple)


class AuditSource(Protocol):
    async def audit_rows(self, after_seq: int, limit: int) -> list[AuditRow]: ...

    async def audit_checkpoints(self) -> list[AuditCheckpoint]: ...


@dataclass(slots=True)
class _Finding:
    seq: int
    reason: str
    detail: str


async def _find_hash(source: AuditSource, wanted: bytes, skip: int) -> int | None:
    """The seq of a record (other than ``skip``) whose hash is ``wanted``, if any."""
    after = 0
    while rows := await source.audit_rows(after, PAGE):
        for row in rows:
            if row.hash == wanted and row.seq != skip:
                return row.seq
        after = rows[-1].seq
    return None


async def _link_finding(source: AuditSource, a: AuditRow | None, b: AuditRow) -> _Finding:
    """Why ``b`` does not follow ``a`` (``None``: the chain's start)."""
    a_hash = GENESIS if a is None else a.hash
    a_seq = 0 if a is None else a.seq
    if row_is_sound(b, a_hash):
        return _Finding(b.seq, "edited", f"record {b.seq}'s link to its predecessor was changed")
    other = await _find_hash(source, b.prev_hash, b.seq - 1)
    if other is not None:
        return _Finding(b.seq, "reordered",
                        f"record {b.seq} was chained after record {other}, not {a_seq}")
    if row_is_sound(b):
        return _Finding(a_seq, "edited", f"record {a_seq} was changed (and re-hashed), or "
                        f"records after it were removed: record {b.seq} does not follow it")
    return _Finding(b.seq, "deleted", f"the record that record {b.seq} followed is missing "
                    "(the later ones were renumbered)")


def _signature_finding(cp: AuditCheckpoint, keys: dict[str, bytes]) -> _Finding | None:
    public = keys.get(cp.key_id)
    try:
        if public is None:
            raise InvalidSignature
        ed25519.Ed25519PublicKey.from_public_bytes(public).verify(
            cp.signature, checkpoint_message(cp.seq, cp.hash, cp.at_ms, cp.key_id))
    except (InvalidSignature, ValueError):
        why = "an unknown key" if public is None else f"key {cp.key_id}"
        return _Finding(cp.seq, "bad_signature",
                        f"the checkpoint at record {cp.seq} is not signed by {why}")
    return None


async def verify_chain(source: AuditSource, keys: dict[str, bytes], root: bytes | None,
                       head: Head | None) -> AuditReport:
    """Read the whole log and its checkpoints; ``keys`` are the trusted public keys by
    key id (more come from ``audit.key`` records the trust root ``root`` signed)."""
    keys = dict(keys)
    checkpoints = {c.seq: c for c in await source.audit_checkpoints()}
    found: _Finding | None = None
    notes: list[str] = []
    prev: AuditRow | None = None
    good_cp = signed = records = after = 0  # good_cp: the last checkpoint that agreed
    while found is None and (rows := await source.audit_rows(after, PAGE)):
        for row in rows:
            records += 1
            expected = 1 if prev is None else prev.seq + 1
            if row.seq != expected:
                found = _Finding(expected, "deleted", f"records {expected} to {row.seq - 1} "
                                 "are missing")
            elif row.prev_hash != (GENESIS if prev is None else prev.hash):
                found = await _link_finding(source, prev, row)
            elif not row_is_sound(row):
                found = _Finding(row.seq, "edited", f"record {row.seq} was changed")
            elif (certified := certified_key(root, row)) is not None:
                keys.setdefault(*certified)  # sound and chained: a key from here on
            if found is None and (cp := checkpoints.get(row.seq)) is not None:
                found = _signature_finding(cp, keys)
                if found is None and cp.hash != row.hash:
                    found = _Finding(good_cp + 1, "rewritten",
                                     f"the records after {good_cp} do not match the signed "
                                     f"checkpoint at {row.seq}: changed and re-hashed")
                if found is None:
                    good_cp, signed = row.seq, signed + 1
            if found is None and row.kind in HEAD_RECORDS:
                found, note = _head_record(row)
                if note:
                    notes.append(note)
            if found is not None:
                break
            prev = row
        after = rows[-1].seq
    last_seq = 0 if prev is None else prev.seq
    if found is None and checkpoints and max(checkpoints) > last_seq:
        missing = min(s for s in checkpoints if s > last_seq)
        found = _Finding(last_seq + 1, "truncated", f"the checkpoint at {missing} vouches "
                         f"for records after {last_seq}, which are missing")
    if found is None and head is not None:
        found = _check_head(head, prev, checkpoints, good_cp)
    if head is None:
        notes.append("no head file under DATA/audit: truncation of the newest records "
                     "cannot be found")
    common: dict[str, Any] = {"last_seq": last_seq, "last_checkpoint_seq": good_cp,
                              "head_checked": head is not None, "notes": tuple(notes)}
    if found is None:
        return AuditReport(True, records, signed, **common)
    return AuditReport(False, records, signed, found.seq, found.reason, found.detail,
                       **common)


def _head_record(row: AuditRow) -> tuple[_Finding | None, str | None]:
    """What a start found about the head file (``AuditLog.open``) stays a finding: the
    records it names were lost before that start, whatever came after."""
    try:
        fields = json.loads(row.fields)
        seq, head_seq = int(fields.get("seq", 0)), int(fields.get("head_seq", 0))
    except (ValueError, TypeError, AttributeError):
        return None, None
    if row.kind == "audit.head_ahead":
        return _Finding(seq + 1, "truncated", f"records {seq + 1} to {head_seq} were removed "
                        f"while the server was stopped (found at the start, record "
                        f"{row.seq})"), None
    if row.kind == "audit.head_mismatch":
        return _Finding(seq, "rewritten", f"record {seq} differed from the head file at the "
                        f"start recorded as record {row.seq}"), None
    return None, (f"the head file was missing at the start recorded as record {row.seq}: "
                  f"truncation before record {seq} cannot be ruled out")


def _check_head(head: Head, last: AuditRow | None, checkpoints: dict[int, AuditCheckpoint],
                good_cp: int) -> _Finding | None:
    last_seq = 0 if last is None else last.seq
    if head.seq > last_seq:
        return _Finding(last_seq + 1, "truncated", f"the head file says the log reaches "
                        f"record {head.seq}; it ends at {last_seq}")
    if head.checkpoint_seq and head.checkpoint_seq not in checkpoints:
        return _Finding(head.checkpoint_seq, "deleted",
                        f"the checkpoint at {head.checkpoint_seq} is missing")
    # The head may lag the database by the batch a crash interrupted; it must still
    # name a record with its hash. The last record is the only one compared: earlier
    # ones are vouched for by the chain itself.
    if last is not None and head.seq == last_seq and head.hash != last.hash:
        return _Finding(good_cp + 1, "rewritten", f"the head file's hash of record "
                        f"{head.seq} differs: records after {good_cp} were re-hashed")
    return None


__all__ = [
    "AUDIT_DIR",
    "GENESIS",
    "HEAD_FILE",
    "HEAD_RECORDS",
    "KEY_RECORD",
    "AuditReport",
    "AuditSource",
    "Head",
    "ServerKeySigner",
    "Signer",
    "canonical",
    "certified_key",
    "checkpoint_message",
    "head_path",
    "known_keys",
    "make_row",
    "read_head",
    "record_hash",
    "row_is_sound",
    "trust_root",
    "verify_chain",
    "write_head",
]
