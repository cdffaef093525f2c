"""The simulator's own trust decision (trust.py) where Schannel and the WebPKI differ, and
the code each rejection carries. End to end through the front: test_https_front.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from iis_clientcert_simulator import pki, trust

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def root() -> pki.Issued:
    return pki.make_ca("Trust Test Root")


def _v1_root() -> pki.Issued:
    """A root without basicConstraints (an old v1-style CA): Windows still trusts it."""
    key = pki.new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Old v1 Root")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return pki.Issued(cert, key)


def _decide(
    leaf: pki.Issued,
    roots: Sequence[pki.Issued],
    cas: Sequence[pki.Issued] = (),
    sent: Sequence[pki.Issued] = (),
) -> trust.Verdict:
    return trust.decide_trust(
        leaf.certificate,
        [c.certificate for c in sent],
        [r.certificate for r in roots],
        [c.certificate for c in cas],
    )


def test_schannel_accepts_what_the_webpki_defaults_would_refuse(root: pki.Issued) -> None:
    # No SAN, no EKU (every purpose to Windows), a self-signed leaf trusted in Root.
    assert _decide(pki.make_leaf(root, "no-eku", include_eku=False), [root]).ok
    self_signed = pki.make_leaf(None, "self", self_signed=True)
    assert _decide(self_signed, [root, self_signed]).ok
    v1 = _v1_root()
    verdict = _decide(pki.make_leaf(v1, "under-v1"), [v1])
    assert verdict.ok, verdict
    issuing = pki.make_intermediate(v1, "Issuing under v1")
    assert _decide(pki.make_leaf(issuing, "deeper"), [v1], cas=[issuing]).ok


def test_an_issuer_that_is_no_ca_is_basic_constraints(root: pki.Issued) -> None:
    not_a_ca = pki.make_leaf(root, "just-a-leaf")
    verdict = _decide(pki.make_leaf(not_a_ca, "below-a-leaf"), [root], cas=[not_a_ca])
    assert (verdict.substatus, verdict.hresult) == (16, trust.HR_BASIC_CONSTRAINTS), verdict


def test_path_length_is_enforced(root: pki.Issued) -> None:
    first = pki.make_intermediate(root, "Level 1", path_length=0)
    second = pki.make_intermediate(first, "Level 2", path_length=0)
    verdict = _decide(pki.make_leaf(second, "too-deep"), [root], cas=[first, second])
    assert (verdict.substatus, verdict.hresult) == (16, trust.HR_BASIC_CONSTRAINTS), verdict


def test_a_same_named_impostor_issuer_is_a_signature_failure(root: pki.Issued) -> None:
    real = pki.make_intermediate(root, "Issuing CA")
    impostor = pki.make_intermediate(root, "Issuing CA")  # same name, other key
    verdict = _decide(pki.make_leaf(real, "victim"), [root], cas=[impostor])
    assert (verdict.substatus, verdict.hresult) == (16, trust.HR_CERT_SIGNATURE), verdict


def test_not_yet_valid_is_403_17_and_an_expired_ca_too(root: pki.Issued) -> None:
    future = pki.make_leaf(root, "future", not_before=NOW + dt.timedelta(days=2))
    assert (_decide(future, [root]).substatus, _decide(future, [root]).hresult) == (
        17,
        trust.HR_EXPIRED,
    )
    old_ca = pki.make_intermediate(
        root,
        "Expired CA",
        not_before=NOW - dt.timedelta(days=90),
        not_after=NOW - dt.timedelta(days=1),
    )
    leaf = pki.make_leaf(old_ca, "under-expired", not_before=NOW - dt.timedelta(days=80))
    verdict = _decide(leaf, [root], cas=[old_ca])
    assert (verdict.substatus, verdict.hresult) == (17, trust.HR_EXPIRED), verdict


def test_intermediate_revoked_by_the_root_is_403_13(root: pki.Issued) -> None:
    url_root, url_ca = "http://pki.test/root.crl", "http://pki.test/issuing.crl"
    issuing = pki.make_intermediate(root, "Revocable CA", crl_urls=[url_root])
    leaf = pki.make_leaf(issuing, "client", crl_urls=[url_ca])
    verdict = _decide(leaf, [root], cas=[issuing])
    assert verdict.ok and len(verdict.path) == 3

    def der(crl: x509.CertificateRevocationList) -> bytes:
        return crl.public_bytes(serialization.Encoding.DER)

    published = {url_root: der(pki.make_crl(root)), url_ca: der(pki.make_crl(issuing))}
    fetch = trust.crl_fetcher(published, {})
    assert trust.check_revocation(verdict.path, fetch).ok
    published[url_root] = der(pki.make_crl(root, [issuing]))
    revoked = trust.check_revocation(verdict.path, trust.crl_fetcher(published, {}))
    assert (revoked.substatus, revoked.hresult) == (13, trust.HR_REVOKED)
    # The leaf's own CDP unreachable: offline, even though nothing is revoked there.
    published[url_root] = der(pki.make_crl(root))
    offline = trust.check_revocation(verdict.path, trust.crl_fetcher(published, {url_ca: False}))
    assert (offline.substatus, offline.hresult) == (13, trust.HR_REVOCATION_OFFLINE)
