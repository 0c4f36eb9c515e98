"""Trust-root fingerprints, key statements and certificate times (issue 8, item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.client.helpers import DAY_MS, T0
from veil.client import trust
from veil.client.errors import ClientError
from veil.core import sealed
from veil.core.errors import CoreError
from veil.server import certificates


def test_fingerprints_and_statements_round_trip() -> None:
    root = sealed.TrustRoot.generate()
    assert trust.fingerprint(root.public) == sealed.trust_root_fingerprint(root.public)
    assert len(trust.fingerprint(root.public)) == 32
    statement = root.issue_statement(5, T0).to_bytes()
    decoded = sealed.KeyStatement.from_bytes(statement, root.public)
    assert (decoded.min_key_id, decoded.issued_at) == (5, T0)
    assert trust.verified_min_key_id(statement, root.public, 0) == 5
    spaced = " ".join(trust.fingerprint(root.public)[i:i + 4] for i in range(0, 32, 4))
    assert trust.parse_fingerprint(spaced.upper()) == trust.fingerprint(root.public)
    for bad in ("", "12", "g" * 32, "0" * 33):
        with pytest.raises(ClientError, match="32 hex digits"):
            trust.parse_fingerprint(bad)


def test_a_statement_must_come_from_the_pinned_root_and_never_lowers() -> None:
    root, other = sealed.TrustRoot.generate(), sealed.TrustRoot.generate()
    forged = other.issue_statement(1, T0).to_bytes()
    with pytest.raises(CoreError):
        sealed.KeyStatement.from_bytes(forged, root.public)
    with pytest.raises(ClientError, match="does not verify"):
        trust.verified_min_key_id(forged, root.public, 0)
    older = root.issue_statement(2, T0).to_bytes()
    assert trust.verified_min_key_id(older, root.public, 7) == 7     # replayed: ignored
    assert trust.verified_min_key_id(None, root.public, 7) == 7


def test_the_server_cannot_move_the_certificate_time_outside_the_queue_age() -> None:
    now = T0
    assert trust.certificate_time(now - DAY_MS, now) == now - DAY_MS     # late delivery
    assert trust.certificate_time(now + DAY_MS, now) == now              # not the future
    backdated = now - 365 * DAY_MS
    assert trust.certificate_time(backdated, now) == now - trust.MAX_QUEUE_AGE_MS


def test_certify_numbers_keys_and_revokes(tmp_path: Path) -> None:
    root = sealed.TrustRoot.generate()
    first = certificates.certify(tmp_path, root, T0, days=30)
    second = certificates.certify(tmp_path, root, T0, days=30)
    assert (first.certificate.key_id, second.certificate.key_id) == (1, 2)
    ca = certificates.CertificateAuthority(tmp_path, T0)
    assert (ca.key_id, ca.min_key_id, ca.generated_root) == (2, 1, False)
    certificates.certify(tmp_path, root, T0, days=30, key_id=9, revoke_older=True)
    ca = certificates.CertificateAuthority(tmp_path, T0)
    assert (ca.key_id, ca.min_key_id) == (9, 9)
    with pytest.raises(certificates.ConfigError, match="above the installed"):
        certificates.certify(tmp_path, root, T0, days=30, key_id=4)
    with pytest.raises(certificates.ConfigError, match="unusable"):
        certificates.CertificateAuthority(tmp_path, T0 + 31 * DAY_MS)     # expired
