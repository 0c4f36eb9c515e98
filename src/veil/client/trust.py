"""What the client trusts about the server's sealed-sender keys (outside review, issue 8
item 6): the pinned trust root, the root-signed statement of the lowest server key id
still valid, and the time at which a sender certificate is checked.

- **Pinning.** The trust root is learned from the server at registration; over plain
  HTTP anyone on the path could substitute its own. ``veil init --trust-root
  FINGERPRINT`` (``Client.register(trust_root=...)``) refuses a root whose fingerprint
  is not the one the operator handed out (``veil server`` prints it at start, ``veil
  id`` shows the pinned one). The fingerprint is the first 16 bytes of
  SHA-256("veil trust root v1" || root public key), as 32 hex digits; finding another
  key with the same fingerprint is a 2**128 second-preimage search.
- **Revocation.** The root signs a *key statement*: "server keys below id N are no
  longer valid". The server serves it next to the root and with every sender
  certificate; the client keeps the highest N it verified (so an older statement
  cannot lower it) and refuses envelopes and certificates from server keys below N.
  It helps once the operator has re-keyed a compromised server: the stolen key's
  certificates stop being accepted. A server that withholds a newer statement keeps
  clients at the older N.
- **Certificate time.** A sender certificate is checked at the time the server says it
  accepted the envelope (so a recipient offline for a day still reads its messages),
  but never earlier than ``MAX_QUEUE_AGE_MS`` before the client's own clock: a server
  cannot backdate an envelope to make a long-expired certificate look valid.

The statement and the fingerprint are ``veil.core.sealed``'s (``KeyStatement``,
``trust_root_fingerprint``), shared with the server that signs and prints them.
"""

from __future__ import annotations

import re

from veil.client.errors import ClientError
from veil.client.records import SelfRecord
from veil.client.store import Store
from veil.core import sealed
from veil.core.errors import CoreError

DAY_MS = 24 * 3600 * 1000
# How long an envelope may have waited in the server's queue and still be checked at
# the server's receipt time. The server has no envelope TTL yet (docs/server.md): this
# is the client's own bound, generous next to the one-day sender certificates.
MAX_QUEUE_AGE_MS = 30 * DAY_MS
_HEX32 = re.compile(r"[0-9a-f]{32}")


def fingerprint(root_public: bytes) -> str:
    """The trust root's fingerprint, as operators hand it out (32 hex digits)."""
    return sealed.trust_root_fingerprint(root_public)


def parse_fingerprint(text: str) -> str:
    """Accept a fingerprint with spaces, colons or dashes between groups."""
    cleaned = re.sub(r"[\s:-]", "", text).lower()
    if not _HEX32.fullmatch(cleaned):
        raise ClientError("a trust-root fingerprint is 32 hex digits "
                          "(as 'veil server' prints it)")
    return cleaned


def verified_min_key_id(data: bytes | None, root_public: bytes, known: int) -> int:
    """The lowest valid server key id after seeing ``data``: never lower than ``known``."""
    if data is None:
        return known
    try:
        return max(known, sealed.KeyStatement.from_bytes(data, root_public).min_key_id)
    except CoreError as exc:
        raise ClientError(f"the server's key statement does not verify under the pinned "
                          f"trust root ({exc.code})") from None


def certificate_time(server_ts: int, now_ms: int) -> int:
    """When to check an envelope's sender certificate: the server's receipt time, but
    not in the future and not more than ``MAX_QUEUE_AGE_MS`` before our clock."""
    return max(min(server_ts, now_ms), now_ms - MAX_QUEUE_AGE_MS)


def min_server_key_id(store: Store, me: SelfRecord) -> int:
    """Read fresh: another process on this home may have learned a newer statement."""
    raw = store.get("self", "me")
    return me.min_server_key_id if raw is None else SelfRecord.decode(raw).min_server_key_id


def learn_statement(store: Store, me: SelfRecord, data: bytes) -> SelfRecord:
    """Keep the highest lowest-valid server key id a root-signed statement names; returns
    the updated self record."""
    with store.transaction():
        raw = store.get("self", "me")
        current = SelfRecord.decode(raw) if raw is not None else me
        lowest = verified_min_key_id(data, current.trust_root, current.min_server_key_id)
        if lowest > current.min_server_key_id:
            current.min_server_key_id = lowest
            store.put("self", "me", current.encode())
    return current

__all__ = [
    "MAX_QUEUE_AGE_MS",
    "certificate_time",
    "fingerprint",
    "learn_statement",
    "min_server_key_id",
    "parse_fingerprint",
    "verified_min_key_id",
]
