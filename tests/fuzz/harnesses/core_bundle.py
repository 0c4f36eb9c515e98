"""Prekey bundles and their records, as a directory server or a peer hands them over."""

from __future__ import annotations

from veil.core import keys, prekeys
from veil.core.errors import InvalidSignature, MalformedMessage

ALLOWED = (MalformedMessage, InvalidSignature)
_IDENTITY = keys.IdentityKeyPair.generate()
_PRE = prekeys.PreKeys.generate(_IDENTITY, one_time=1, now_ms=0)
SEEDS = [_PRE.bundle().to_bytes(), _IDENTITY.public.to_bytes(),
         _PRE.upload().signed_prekey, _PRE.upload().one_time_prekeys[0][1]]


def target(data: bytes) -> None:
    bundle = keys.PreKeyBundle.from_bytes(data)
    assert keys.PreKeyBundle.from_bytes(bundle.to_bytes()) == bundle
    for parse in (keys.IdentityPublicKey.from_bytes, keys.OneTimePreKeyPublic.from_bytes):
        try:
            parse(data)
        except ALLOWED:
            pass
    keys.SignedPreKeyPublic.from_bytes(data, _IDENTITY.public)
