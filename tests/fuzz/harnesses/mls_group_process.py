"""Untrusted bytes handed to a live member's ``Group.process`` and ``Group.join``, and
saved state handed to ``Group.restore`` (one blob, either part of a SavedGroup) and
``Group.restore_legacy``: only the documented MLS errors escape."""

from __future__ import annotations

from tests.unit.core.mls.helpers import NOW
from veil.core.mls.errors import MlsError
from veil.core.mls.group import Group, SavedGroup

ALLOWED = (MlsError,)


def _setup() -> tuple[bytes, SavedGroup, list[bytes]]:
    from tests.unit.core.mls.helpers import make_group
    from veil.core.mls.leaf import Credential

    g = make_group(3)
    g[1].process(g[0].encrypt(b"one sender with state"), now=NOW)
    state = g[1].serialize()
    saved = g[1].save()
    seeds = [g[0].encrypt(b"hi"), g[2].propose_update(), state, saved.slow, saved.hot]
    _, external = Group.join_external(g[0].group_info(), Credential.basic(b"x"), now=NOW)
    seeds.append(external)
    out = g[0].commit(update=True, now=NOW)
    seeds.append(out.commit)
    return state, saved, seeds


_STATE, _SAVED, SEEDS = _setup()


def target(data: bytes) -> None:
    member = Group.restore(_STATE)
    try:
        member.process_and_merge(data, now=NOW)
    finally:
        for restore in (lambda: Group.restore(data),
                        lambda: Group.restore(SavedGroup(data, _SAVED.hot)),
                        lambda: Group.restore(SavedGroup(_SAVED.slow, data)),
                        lambda: Group.restore_legacy(data, private_handshakes=False,
                                                     unique_credentials=True)):
            try:
                restore()
            except MlsError:
                pass
