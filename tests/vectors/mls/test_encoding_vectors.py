"""tree-math.json, deserialization.json and messages.json (RFC 9420 §2.1, Appendix C)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.vectors.loader import case_params, run_case
from veil.core.mls import treemath as tm
from veil.core.mls.codec import Reader, Writer, decode_all, encode_varint
from veil.core.mls.leaf import KeyPackage, LeafNode, read_extensions
from veil.core.mls.messages import GroupSecrets, MLSMessage
from veil.core.mls.proposals import (
    Commit,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKeyID,
    ReInit,
    write_proposal_body,
)
from veil.core.mls.tree import read_ratchet_tree_nodes, write_ratchet_tree_nodes


def _opt(f: Callable[[int], int], x: int) -> int | None:
    try:
        return f(x)
    except ValueError:
        return None


@pytest.mark.parametrize("case", case_params("mls", "tree-math.json"))
def test_tree_math(case: dict[str, Any], case_name: str) -> None:
    def check(c: dict[str, Any]) -> None:
        n = c["n_leaves"]
        width = tm.node_width(n)
        assert c["n_nodes"] == width
        assert c["root"] == tm.root(n)
        for x in range(width):
            assert c["left"][x] == _opt(tm.left, x)
            assert c["right"][x] == _opt(tm.right, x)
            assert c["parent"][x] == _opt(lambda y: tm.parent(y, n), x)
            assert c["sibling"][x] == _opt(lambda y: tm.sibling(y, n), x)

    run_case("tree-math.json", case_name, case, None, check)


@pytest.mark.parametrize("case", case_params("mls", "deserialization.json"))
def test_deserialization(case: dict[str, Any], case_name: str) -> None:
    def check(c: dict[str, Any]) -> None:
        header = bytes.fromhex(c["vlbytes_header"])
        assert Reader(header).varint() == c["length"]
        assert encode_varint(c["length"]) == header

    run_case("deserialization.json", case_name, case, None, check)


def _w(obj: Any) -> Callable[[Writer, Any], None]:
    return lambda w, v: v.write(w)


def _reinit(r: Reader) -> ReInit:
    gid = r.opaque()
    version = r.u16()
    suite = r.u16()
    return ReInit(gid, version, suite, read_extensions(r))


CODECS: dict[str, tuple[Callable[[Reader], Any], Callable[[Writer, Any], None]]] = {
    "mls_welcome": (MLSMessage.read, _w(MLSMessage)),
    "mls_group_info": (MLSMessage.read, _w(MLSMessage)),
    "mls_key_package": (MLSMessage.read, _w(MLSMessage)),
    "ratchet_tree": (read_ratchet_tree_nodes, write_ratchet_tree_nodes),
    "group_secrets": (GroupSecrets.read, _w(GroupSecrets)),
    "add_proposal": (KeyPackage.read, _w(KeyPackage)),
    "update_proposal": (LeafNode.read, _w(LeafNode)),
    "remove_proposal": (lambda r: r.u32(), lambda w, v: w.u32(v)),
    "pre_shared_key_proposal": (PreSharedKeyID.read, _w(PreSharedKeyID)),
    "re_init_proposal": (_reinit, write_proposal_body),
    "external_init_proposal": (lambda r: ExternalInit(r.opaque()), write_proposal_body),
    "group_context_extensions_proposal": (
        lambda r: GroupContextExtensions(read_extensions(r)), write_proposal_body),
    "commit": (Commit.read, _w(Commit)),
    "public_message_application": (MLSMessage.read, _w(MLSMessage)),
    "public_message_proposal": (MLSMessage.read, _w(MLSMessage)),
    "public_message_commit": (MLSMessage.read, _w(MLSMessage)),
    "private_message": (MLSMessage.read, _w(MLSMessage)),
}


@pytest.mark.parametrize("case", case_params("mls", "messages.json"))
def test_messages_round_trip(case: dict[str, Any], case_name: str) -> None:
    def check(c: dict[str, Any]) -> None:
        assert set(c) <= set(CODECS), f"unknown fields {set(c) - set(CODECS)}"
        for field, hexdata in c.items():
            data = bytes.fromhex(hexdata)
            read, write = CODECS[field]
            value = decode_all(data, read)
            w = Writer()
            write(w, value)
            assert w.bytes() == data, field

    run_case("messages.json", case_name, case, None, check)
