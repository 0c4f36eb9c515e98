"""MLSMessage envelopes (PublicMessage, PrivateMessage, Welcome, GroupInfo, KeyPackage):
decode, re-encode, and the decode must be the identity on the re-encoding."""

from __future__ import annotations

from veil.core.mls.codec import decode_all
from veil.core.mls.errors import MlsDecodeError
from veil.core.mls.messages import MLSMessage

ALLOWED = (MlsDecodeError,)


def _seeds() -> list[bytes]:
    from tests.unit.core.mls.helpers import NOW, bundle, make_group

    g = make_group(2)
    b = bundle("seed")
    out = g[0].commit(add=[b.key_package.encoded()], now=NOW)
    seeds = [MLSMessage(b.key_package).encoded(), out.commit, g[0].group_info()]
    if out.welcome is not None:
        seeds.append(out.welcome)
    g[0].discard_pending_commit()
    seeds.append(g[0].encrypt(b"hello"))
    seeds.append(g[1].propose_update())
    return seeds


SEEDS = _seeds()


def target(data: bytes) -> None:
    msg = decode_all(data, MLSMessage.read)
    again = msg.encoded()
    assert again == data
    assert decode_all(again, MLSMessage.read) == msg
