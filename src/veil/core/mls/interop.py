"""Command-line checks against the MLS interoperability test vectors.

    python -m veil.core.mls.interop passive-client FILE.json

For every case of a passive-client vector file (format: mlswg/mls-implementations
``test-vectors.md``, "Passive Client Scenarios"): join by the Welcome, compare the
epoch authenticator, then process each epoch's proposals, stage and merge its commit
(RFC 9420 §12.4.2) and compare again.
Prints ``N passed, M failed`` (plus ``, K skipped`` for unsupported cipher suites) and
exits non-zero on any failure.

The vectors carry no clock, but the library judges KeyPackage lifetimes and needs the
time (RFC 9420 §7.3). A case is run at its *vector time*: the middle of the joiner's
KeyPackage lifetime. Every KeyPackage of a case was minted in the same run of the
generator, so that instant lies inside all of their lifetimes (``--now`` overrides it).
"""

from __future__ import annotations

import argparse
import hmac
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from veil.core.mls.codec import decode_all
from veil.core.mls.crypto import get_suite, is_supported
from veil.core.mls.errors import MlsError
from veil.core.mls.group import Group, ProposalReceived, StagedCommit
from veil.core.mls.leaf import Credential, Lifetime
from veil.core.mls.messages import MLSMessage
from veil.core.mls.welcome import KeyPackageBundle


def _accept_any(credential: Credential, signature_key: bytes,
                previous: Credential | None) -> bool:
    # Vector files use arbitrary test identities; authenticity is proven by signatures.
    return True


def vector_time(lifetimes: Iterable[Lifetime]) -> int:
    """The middle of the span every given lifetime covers: a vector's notion of "now"."""
    spans = list(lifetimes)
    if not spans:
        raise CaseFailed("the vector has no lifetimes to take its time from")
    start = max(lt.not_before for lt in spans)
    end = min(lt.not_after for lt in spans)
    if start > end:
        raise CaseFailed("the vector's lifetimes have no instant in common")
    return start + (end - start) // 2


class CaseFailed(Exception):
    """One vector case did not reproduce."""


def run_passive_case(case: dict[str, Any], now: int | None = None) -> None:
    """Run one passive-client case; raises CaseFailed or MlsError on mismatch.

    ``now`` defaults to the case's vector time (see the module docstring).
    """
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
    if now is None:
        if kp.leaf_node.lifetime is None:
            raise CaseFailed("key_package has no lifetime")
        now = vector_time([kp.leaf_node.lifetime])
    group = Group.join(
        h(case["welcome"]), bundle, now=now, ratchet_tree=h(tree) if tree else None,
        external_psks=psks, credential_check=_accept_any,
    )
    if not hmac.compare_digest(group.epoch_authenticator,
                               h(case["initial_epoch_authenticator"])):
        raise CaseFailed("initial epoch authenticator differs")
    for number, epoch in enumerate(case.get("epochs", []), start=1):
        for proposal in epoch.get("proposals", []):
            if not isinstance(group.process(h(proposal), now=now), ProposalReceived):
                raise CaseFailed(f"a proposal of epoch step {number} is not a proposal")
        staged = group.process(h(epoch["commit"]), now=now)
        if not isinstance(staged, StagedCommit):
            raise CaseFailed(f"the commit of epoch step {number} is not a commit")
        group.merge_staged(staged)
        if not hmac.compare_digest(group.epoch_authenticator, h(epoch["epoch_authenticator"])):
            raise CaseFailed(f"epoch authenticator differs after epoch step {number}")


def passive_client(path: str, now: int | None = None) -> int:
    with open(path, encoding="utf-8") as f:
        cases = json.load(f)
    passed = failed = skipped = 0
    for i, case in enumerate(cases):
        suite_id = int(case.get("cipher_suite", 0))
        if not is_supported(suite_id):
            skipped += 1
            continue
        try:
            run_passive_case(case, now)
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
    pc.add_argument("--now", type=int, default=None,
                    help="seconds since the Unix epoch to judge lifetimes by "
                         "(default: each case's vector time)")
    args = parser.parse_args(argv)
    return passive_client(args.file, args.now)

__all__ = [
    "CaseFailed",
    "main",
    "passive_client",
    "run_passive_case",
    "vector_time",
]


if __name__ == "__main__":
    sys.exit(main())
