"""Untrusted bytes handed to a live member's ``Group.process`` and ``Group.join``, and
serialised state handed to ``Group.restore``: only the documented MLS errors escape."""

from __future__ import annotations

from tests.unit.core.mls.helpers import NOW
from veil.core.mls.errors import MlsError
from veil.core.mls.group import Group

ALLOWED = (MlsError,)


def _setup() -> tuple[bytes, list[bytes]]:
    from tests.unit.core.mls.helpers import make_group
    from veil.core.mls.leaf import Credential

    g = make_group(3)
    state = g[1].serialize()
    seeds = [g[0].encrypt(b"hi"), g[2].propose_update(), state]
    _, external = Group.join_external(g[0].group_info(), Credential.basic(b"x"), now=NOW)
    seeds.append(external)
    out = g[0].commit(update=True, now=NOW)
    seeds.append(out.commit)
    return state, seeds


_STATE, SEEDS = _setup()


def target(data: bytes) -> None:
    member = Group.restore(_STATE)
    try:
        member.process(data, now=NOW)
    finally:
        try:
            Group.restore(data)
        except MlsError:
            pass
