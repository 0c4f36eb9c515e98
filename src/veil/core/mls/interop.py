"""Command-line checks against the MLS interoperability test vectors.

    python -m veil.core.mls.interop passive-client FILE.json

For every case of a passive-client vector file (format: mlswg/mls-implementations
``test-vectors.md``, "Passive Client Scenarios"): join by the Welcome, compare the
epoch authenticator, then process each epoch's proposals and commit and compare again.
Prints ``N passed, M failed`` (plus ``, K skipped`` for unsupported cipher suites) and
exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import hmac
import json
import sys
from collections.abc import Sequence
from typing import Any

from veil.core.mls.codec import decode_all
from veil.core.mls.crypto import get_suite, is_supported
from veil.core.mls.errors import MlsError
from veil.core.mls.group import Group
from veil.core.mls.leaf import Credential
from veil.core.mls.messages import MLSMessage
from veil.core.mls.welcome import KeyPackageBundle


def _accept_any(credential: Credential, signature_key: bytes) -> bool:
    # Vector files use arbitrary test identities; authenticity is proven by signatures.
    return True


class CaseFailed(Exception):
    """One vector case did not reproduce."""


def run_passive_case(case: dict[str, Any]) -> None:
    """Run one passive-client case; raises CaseFailed or MlsError on mismatch."""
    h = bytes.fromhex
    suite = get_suite(int(case["cipher_suite"]))
    kp_msg = decode_all(h(case["key_package"]), MLSMessage.read)
    from veil.core.mls.leaf import KeyPackage

    kp = kp_msg.body
    if not isinstance(kp, KeyPackage):
        raise CaseFailed("key_package is not a KeyPackage")
    bundle = KeyPackageBundle(kp, h(case["init_priv"]), h(case["encryption_priv"]),
                              h(case["signature_priv"]))
    if suite.hpke_public_from_private(bundle.init_priv) != kp.init_key:
        raise CaseFailed("init_priv does not match the KeyPackage")
    if suite.hpke_public_from_private(bundle.encryption_priv) != kp.leaf_node.encryption_key:
        raise CaseFailed("encryption_priv does not match the KeyPackage")
    if suite.signature_public_from_private(bundle.signature_priv) != kp.leaf_node.signature_key:
        raise CaseFailed("signature_priv does not match the KeyPackage")
    psks = {h(p["psk_id"]): h(p["psk"]) for p in case.get("external_psks", [])}
    tree = case.get("ratchet_tree")
    group = Group.join(
        h(case["welcome"]), bundle, ratchet_tree=h(tree) if tree else None,
        external_psks=psks, credential_check=_accept_any,
    )
    if not hmac.compare_digest(group.epoch_authenticator,
                               h(case["initial_epoch_authenticator"])):
        raise CaseFailed("initial epoch authenticator differs")
    for number, epoch in enumerate(case.get("epochs", []), start=1):
        for proposal in epoch.get("proposals", []):
            group.process(h(proposal))
        group.process(h(epoch["commit"]))
        if not hmac.compare_digest(group.epoch_authenticator, h(epoch["epoch_authenticator"])):
            raise CaseFailed(f"epoch authenticator differs after epoch step {number}")


def passive_client(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        cases = json.load(f)
    passed = failed = skipped = 0
    for i, case in enumerate(cases):
        suite_id = int(case.get("cipher_suite", 0))
        if not is_supported(suite_id):
            skipped += 1
            continue
        try:
            run_passive_case(case)
        except (CaseFailed, MlsError, KeyError, ValueError) as exc:
            failed += 1
            print(f"case {i} (suite {suite_id}) failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
        else:
            passed += 1
    summary = f"{passed} passed, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped"
    print(summary)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m veil.core.mls.interop")
    sub = parser.add_subparsers(dest="command", required=True)
    pc = sub.add_parser("passive-client", help="check a passive-client vector file")
    pc.add_argument("file")
    args = parser.parse_args(argv)
    return passive_client(args.file)


if __name__ == "__main__":
    sys.exit(main())
