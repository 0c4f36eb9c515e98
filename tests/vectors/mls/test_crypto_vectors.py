"""crypto-basics, secret-tree, key-schedule, psk_secret and transcript-hashes vectors
(RFC 9420 §5, §8, §9)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.vectors.loader import case_params, run_case
from veil.core.mls import keyschedule as ks
from veil.core.mls.codec import decode_all
from veil.core.mls.crypto import SUPPORTED_SUITES, get_suite
from veil.core.mls.messages import AuthenticatedContent, GroupContext
from veil.core.mls.proposals import PSK_EXTERNAL, PreSharedKeyID
from veil.core.mls.secret_tree import APPLICATION, HANDSHAKE, SecretTree

h = bytes.fromhex


@pytest.mark.parametrize("case", case_params("mls", "crypto-basics.json"))
def test_crypto_basics(case: dict[str, Any], case_name: str) -> None:
    def check(c: dict[str, Any]) -> None:
        s = get_suite(c["cipher_suite"])
        r = c["ref_hash"]
        assert s.ref_hash(r["label"].encode(), h(r["value"])) == h(r["out"])
        e = c["expand_with_label"]
        assert s.expand_with_label(h(e["secret"]), e["label"].encode(), h(e["context"]),
                                   e["length"]) == h(e["out"])
        d = c["derive_secret"]
        assert s.derive_secret(h(d["secret"]), d["label"].encode()) == h(d["out"])
        t = c["derive_tree_secret"]
        assert s.derive_tree_secret(h(t["secret"]), t["label"].encode(), t["generation"],
                                    t["length"]) == h(t["out"])
        g = c["sign_with_label"]
        label, content = g["label"].encode(), h(g["content"])
        assert s.verify_with_label(h(g["pub"]), label, content, h(g["signature"]))
        mine = s.sign_with_label(h(g["priv"]), label, content)
        assert s.verify_with_label(h(g["pub"]), label, content, mine)
        assert not s.verify_with_label(h(g["pub"]), label, content + b"x", mine)
        x = c["encrypt_with_label"]
        label, ctx = x["label"].encode(), h(x["context"])
        assert s.decrypt_with_label(h(x["priv"]), label, ctx, h(x["kem_output"]),
                                    h(x["ciphertext"])) == h(x["plaintext"])
        kem_output, ct = s.encrypt_with_label(h(x["pub"]), label, ctx, h(x["plaintext"]))
        assert s.decrypt_with_label(h(x["priv"]), label, ctx, kem_output, ct) == h(
            x["plaintext"])

    run_case("crypto-basics.json", case_name, case, SUPPORTED_SUITES, check)


@pytest.mark.parametrize("case", case_params("mls", "secret-tree.json"))
def test_secret_tree(case: dict[str, Any], case_name: str) -> None:
    def check(c: dict[str, Any]) -> None:
        s = get_suite(c["cipher_suite"])
        sd = c["sender_data"]
        sample = h(sd["ciphertext"])[: s.nh]
        assert s.expand_with_label(h(sd["sender_data_secret"]), b"key", sample, s.nk) == h(
            sd["key"])
        assert s.expand_with_label(h(sd["sender_data_secret"]), b"nonce", sample,
                                   s.nn) == h(sd["nonce"])
        tree = SecretTree(s, h(c["encryption_secret"]), len(c["leaves"]))
        for leaf, generations in enumerate(c["leaves"]):
            for g in generations:
                gen = g["generation"]
                hs = tree.ratchet(leaf, HANDSHAKE)
                assert hs.peek(gen) == (h(g["handshake_key"]), h(g["handshake_nonce"]))
                app = tree.ratchet(leaf, APPLICATION)
                assert app.peek(gen) == (h(g["application_key"]), h(g["application_nonce"]))

    run_case("secret-tree.json", case_name, case, SUPPORTED_SUITES, check)


@pytest.mark.parametrize("case", case_params("mls", "key-schedule.json"))
def test_key_schedule(case: dict[str, Any], case_name: str) -> None:
    fields = ["joiner_secret", "welcome_secret", "sender_data_secret", "encryption_secret",
              "exporter_secret", "external_secret", "confirmation_key", "membership_key",
              "resumption_psk", "epoch_authenticator", "init_secret"]

    def check(c: dict[str, Any]) -> None:
        s = get_suite(c["cipher_suite"])
        init = h(c["initial_init_secret"])
        for epoch, e in enumerate(c["epochs"]):
            ctx = GroupContext(c["cipher_suite"], h(c["group_id"]), epoch, h(e["tree_hash"]),
                               h(e["confirmed_transcript_hash"])).encoded()
            assert ctx == h(e["group_context"])
            secrets = ks.next_epoch(s, init, h(e["commit_secret"]), h(e["psk_secret"]), ctx)
            for name in fields:
                assert getattr(secrets, name) == h(e[name]), name
            assert ks.external_pub(s, secrets.external_secret) == h(e["external_pub"])
            x = e["exporter"]
            # The generator passes the label's hex text itself as the label bytes.
            assert ks.export_secret(s, secrets.exporter_secret, x["label"].encode(),
                                    h(x["context"]), x["length"]) == h(x["secret"])
            init = secrets.init_secret

    run_case("key-schedule.json", case_name, case, SUPPORTED_SUITES, check)


@pytest.mark.parametrize("case", case_params("mls", "psk_secret.json"))
def test_psk_secret(case: dict[str, Any], case_name: str) -> None:
    def check(c: dict[str, Any]) -> None:
        s = get_suite(c["cipher_suite"])
        psks = [
            (PreSharedKeyID(PSK_EXTERNAL, psk_id=h(p["psk_id"]), psk_nonce=h(p["psk_nonce"])),
             h(p["psk"]))
            for p in c["psks"]
        ]
        assert ks.psk_secret(s, psks) == h(c["psk_secret"])

    run_case("psk_secret.json", case_name, case, SUPPORTED_SUITES, check)


@pytest.mark.parametrize("case", case_params("mls", "transcript-hashes.json"))
def test_transcript_hashes(case: dict[str, Any], case_name: str) -> None:
    def check(c: dict[str, Any]) -> None:
        s = get_suite(c["cipher_suite"])
        ac = decode_all(h(c["authenticated_content"]), AuthenticatedContent.read)
        assert ac.auth.confirmation_tag is not None
        confirmed = ks.confirmed_transcript_hash(
            s, h(c["interim_transcript_hash_before"]), ac.wire_format, ac.content,
            ac.auth.signature)
        assert confirmed == h(c["confirmed_transcript_hash_after"])
        assert s.verify_mac(h(c["confirmation_key"]), confirmed, ac.auth.confirmation_tag)
        interim = ks.interim_transcript_hash(s, confirmed, ac.auth.confirmation_tag)
        assert interim == h(c["interim_transcript_hash_after"])

    run_case("transcript-hashes.json", case_name, case, SUPPORTED_SUITES, check)
