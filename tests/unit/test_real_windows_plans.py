"""Provider-side answers to real-host rules (issue 10): what the ServerCertificate plan
sends a Windows Server 2016 host."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from iis_clientcert.certs import legacy_pfx
from iis_clientcert.providers import server_certificate as sc
from iis_clientcert_simulator import pki

PASSWORD = "Plan-Pfx-Pw-3!"
# The PBES2 algorithm identifier as DER (1.2.840.113549.1.5.13).
PBES2 = bytes.fromhex("06092a864886f70d01050d")


@pytest.fixture(scope="module")
def issued() -> pki.Issued:
    ca = pki.make_ca("Plan CA")
    return pki.make_server(ca, "plan.example.test")


def test_legacy_pfx_carries_the_same_key_and_chain_without_aes(issued: pki.Issued) -> None:
    chain = [pki.make_ca("Chain CA")]
    aes = issued.pfx(PASSWORD.encode(), chain=chain)
    assert PBES2 in aes
    old = legacy_pfx(aes, PASSWORD)
    assert PBES2 not in old
    p12 = pkcs12.load_pkcs12(old, PASSWORD.encode())
    assert p12.cert is not None and p12.cert.certificate == issued.certificate
    assert p12.cert.friendly_name == issued.common_name.encode()
    assert p12.key is not None
    assert p12.key.public_key().public_numbers() == issued.key.public_key().public_numbers()  # type: ignore[union-attr]
    assert [c.certificate for c in p12.additional_certs] == [chain[0].certificate]


@pytest.mark.parametrize(
    ("os_build", "rewrapped"),
    [(14393, True), (17762, True), (17763, False), (20348, False), (0, False)],
    ids=["2016", "just-before-2019", "2019", "2022", "unknown"],
)
def test_the_plan_rewraps_the_pfx_only_for_hosts_before_2019(
    issued: pki.Issued, os_build: int, rewrapped: bool
) -> None:
    desired = sc.validate_inputs(
        {"pfx": base64.b64encode(issued.pfx(PASSWORD.encode())).decode(), "password": PASSWORD}
    )
    current = sc.ServerCertificateCurrent(
        present=False, has_private_key=False, used_by=(), os_build=os_build
    )
    (change,) = sc.plan(current, desired)
    sent = change.ops[0].args["pfx_b64"]
    assert (sent != desired.pfx_b64) is rewrapped
    assert (PBES2 in base64.b64decode(sent)) is not rewrapped
    assert change.ops[0].args["pfx_password"] == PASSWORD
