"""Group credentials and metadata (veil.client.group_store), without a server."""

from __future__ import annotations

import os

from veil.client import group_store as gs
from veil.core import keys
from veil.core.mls import Credential
from veil.core.mls.crypto import get_suite


def test_a_credential_binds_account_device_and_signature_key() -> None:
    identity = keys.IdentityKeyPair.generate()
    account = os.urandom(16).hex()
    _, signature_key = get_suite(1).generate_signature_key_pair()
    credential = gs.make_credential(identity, account, 3, signature_key)
    member = gs.parse_credential(credential, signature_key)
    assert member is not None and (member.account, member.device) == (account, 3)
    assert member.identity.to_bytes() == identity.public.to_bytes()
    assert gs.check_credential(credential, signature_key, None)
    # Another signature key, another account, another identity: refused.
    _, other_key = get_suite(1).generate_signature_key_pair()
    assert not gs.check_credential(credential, other_key, None)
    raw = bytearray(credential.identity)
    raw[1] ^= 1                                      # claim another account
    assert not gs.check_credential(Credential.basic(bytes(raw)), signature_key, None)
    forged = gs.make_credential(keys.IdentityKeyPair.generate(), account, 3, signature_key)
    assert gs.check_credential(forged, signature_key, None)        # valid, but ...
    assert gs.parse_credential(forged, signature_key).identity != member.identity  # type: ignore[union-attr]
    assert not gs.check_credential(Credential.basic(b"alice"), signature_key, None)
    # A leaf may not change who it is.
    assert not gs.check_credential(credential, signature_key, forged)


def test_metadata_round_trip_and_malformed() -> None:
    meta = gs.Metadata("team", None, (os.urandom(16).hex(),))
    assert gs.Metadata.of([meta.extension()]) == meta
    assert gs.Metadata.of([]) is None
    bad = gs.Extension(gs.META_EXTENSION, b'{"name": 1, "admins": []}')
    assert gs.Metadata.of([bad]) is None
    assert gs.Metadata.of([gs.Extension(gs.META_EXTENSION, b"[" * 10000)]) is None
