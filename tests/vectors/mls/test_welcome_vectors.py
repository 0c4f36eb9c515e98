"""welcome.json and passive-client-welcome.json (RFC 9420 §12.4.3.1)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.vectors.loader import case_params, run_case, vector_path
from veil.core.mls import keyschedule as ks
from veil.core.mls.codec import decode_all
from veil.core.mls.crypto import SUPPORTED_SUITES, get_suite
from veil.core.mls.interop import passive_client, run_passive_case
from veil.core.mls.leaf import KeyPackage
from veil.core.mls.messages import GroupInfo, GroupSecrets, MLSMessage, Welcome

h = bytes.fromhex


@pytest.mark.parametrize("case", case_params("mls", "welcome.json"))
def test_welcome(case: dict[str, Any], case_name: str) -> None:
    def check(c: dict[str, Any]) -> None:
        s = get_suite(c["cipher_suite"])
        kp = decode_all(h(c["key_package"]), MLSMessage.read).body
        welcome = decode_all(h(c["welcome"]), MLSMessage.read).body
        assert isinstance(kp, KeyPackage)
        assert isinstance(welcome, Welcome)
        entry = next(e for e in welcome.secrets if e.new_member == kp.ref(s))
        ct = entry.encrypted_group_secrets
        plain = s.decrypt_with_label(h(c["init_priv"]), b"Welcome",
                                     welcome.encrypted_group_info, ct.kem_output,
                                     ct.ciphertext)
        secrets = decode_all(plain, GroupSecrets.read)
        key, nonce = ks.welcome_key_nonce(s, ks.welcome_secret(s, secrets.joiner_secret, None))
        gi = decode_all(s.open(key, nonce, b"", welcome.encrypted_group_info), GroupInfo.read)
        assert s.verify_with_label(h(c["signer_pub"]), b"GroupInfoTBS", gi.tbs(), gi.signature)
        epoch = ks.epoch_from_joiner(s, secrets.joiner_secret, None,
                                     gi.group_context.encoded())
        assert s.verify_mac(epoch.confirmation_key,
                            gi.group_context.confirmed_transcript_hash, gi.confirmation_tag)

    run_case("welcome.json", case_name, case, SUPPORTED_SUITES, check)


@pytest.mark.parametrize("case", case_params("mls", "passive-client-welcome.json"))
def test_passive_client_welcome(case: dict[str, Any], case_name: str) -> None:
    run_case("passive-client-welcome.json", case_name, case, SUPPORTED_SUITES,
             run_passive_case)


def test_interop_entry_point_summary(capsys: pytest.CaptureFixture[str]) -> None:
    path = vector_path("mls", "passive-client-welcome.json")
    assert passive_client(str(path)) == 0
    out = capsys.readouterr().out.strip()
    assert out == "40 passed, 0 failed, 16 skipped"
