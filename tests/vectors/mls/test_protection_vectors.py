"""message-protection.json (RFC 9420 §6): unprotect the published messages, then
protect our own and unprotect them again."""

from __future__ import annotations

from typing import Any

import pytest

from tests.vectors.loader import case_params, run_case
from veil.core.mls import framing
from veil.core.mls.codec import Writer, decode_all
from veil.core.mls.crypto import SUPPORTED_SUITES, get_suite
from veil.core.mls.messages import (
    SENDER_MEMBER,
    WF_PRIVATE,
    WF_PUBLIC,
    AuthenticatedContent,
    Content,
    FramedContent,
    FramedContentAuthData,
    GroupContext,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    read_content,
    write_content,
)
from veil.core.mls.secret_tree import SecretTree

h = bytes.fromhex
# The generator's secret tree has two leaves and the sender is leaf 1.
N_LEAVES = 2
SENDER = 1
TYPES = {"application": 1, "proposal": 2, "commit": 3}


def _encode(content: Content) -> bytes:
    if isinstance(content, bytes):
        return content  # the vector holds application data bare
    w = Writer()
    write_content(w, content)
    return w.bytes()


@pytest.mark.parametrize("case", case_params("mls", "message-protection.json"))
def test_message_protection(case: dict[str, Any], case_name: str) -> None:
    def check(c: dict[str, Any]) -> None:
        s = get_suite(c["cipher_suite"])
        ctx = GroupContext(c["cipher_suite"], h(c["group_id"]), c["epoch"], h(c["tree_hash"]),
                           h(c["confirmed_transcript_hash"]))
        sig_pub, sig_priv = h(c["signature_pub"]), h(c["signature_priv"])
        membership_key = h(c["membership_key"])

        def tree() -> SecretTree:
            return SecretTree(s, h(c["encryption_secret"]), N_LEAVES)

        for kind, ctype in TYPES.items():
            expected = h(c[kind])
            if kind != "application":
                pub = decode_all(h(c[f"{kind}_pub"]), MLSMessage.read).body
                assert isinstance(pub, PublicMessage)
                framing.verify_membership_tag(s, pub, membership_key, ctx)
                framing.verify_content_signature(
                    s, sig_pub, AuthenticatedContent(WF_PUBLIC, pub.content, pub.auth), ctx)
                assert _encode(pub.content.content) == expected
            priv = decode_all(h(c[f"{kind}_priv"]), MLSMessage.read).body
            assert isinstance(priv, PrivateMessage)
            got = framing.unprotect_private(s, tree(), h(c["sender_data_secret"]), priv)
            framing.verify_content_signature(s, sig_pub, got.content, ctx)
            assert got.leaf_index == SENDER
            assert _encode(got.content.content.content) == expected

            # Our own protection must round-trip under the same keys.
            body: Content = expected if kind == "application" else decode_all(
                expected, lambda r, t=ctype: read_content(r, t))
            content = FramedContent(ctx.group_id, ctx.epoch, Sender(SENDER_MEMBER, SENDER),
                                    b"", body)
            tag = s.mac(b"k" * s.nh, b"confirm") if kind == "commit" else None
            if kind != "application":
                sig = framing.sign_content(s, sig_priv, WF_PUBLIC, content, ctx)
                auth = FramedContentAuthData(sig, tag)
                mine = framing.protect_public(s, content, auth, membership_key, ctx)
                again = decode_all(MLSMessage(mine).encoded(), MLSMessage.read).body
                assert isinstance(again, PublicMessage)
                framing.verify_membership_tag(s, again, membership_key, ctx)
            sig = framing.sign_content(s, sig_priv, WF_PRIVATE, content, ctx)
            sealed = framing.protect_private(s, tree(), h(c["sender_data_secret"]), content,
                                             FramedContentAuthData(sig, tag), padding=7)
            back = framing.unprotect_private(s, tree(), h(c["sender_data_secret"]), sealed)
            framing.verify_content_signature(s, sig_pub, back.content, ctx)
            assert _encode(back.content.content.content) == expected

    run_case("message-protection.json", case_name, case, SUPPORTED_SUITES, check)
