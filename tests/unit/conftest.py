"""Shared certificate fixtures, generated at run time (no key is ever committed).

Session-scoped: key generation is the slow part, and none of these objects is mutable.
"""

from __future__ import annotations

import datetime as dt

import pytest

from iis_clientcert_simulator import pki


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(scope="session")
def root_ca() -> pki.Issued:
    """A self-signed root CA ("Test Root CA", O=Example)."""
    return pki.make_ca("Test Root CA", subject_extra={"O": "Example", "C": "DE"})


@pytest.fixture(scope="session")
def intermediate_ca(root_ca: pki.Issued) -> pki.Issued:
    """An issuing CA under ``root_ca``."""
    return pki.make_intermediate(root_ca, "Test Issuing CA", subject_extra={"O": "Example"})


@pytest.fixture(scope="session")
def other_root_ca() -> pki.Issued:
    """An unrelated root: not trusted by anything unless a test says so."""
    return pki.make_ca("Other Root CA", subject_extra={"O": "Elsewhere"})


@pytest.fixture(scope="session")
def client_leaf(intermediate_ca: pki.Issued) -> pki.Issued:
    """A client certificate (clientAuth EKU) for alice, issued by ``intermediate_ca``."""
    return pki.make_leaf(
        intermediate_ca,
        "alice",
        subject_extra={
            "O": "Example",
            "OU": ["Engineering", "Web"],
            "C": "DE",
            "L": "Berlin",
            "ST": "Berlin",
            "emailAddress": "alice@example.com",
        },
        emails=["alice@example.com"],
    )


@pytest.fixture(scope="session")
def rsa_client_leaf(intermediate_ca: pki.Issued) -> pki.Issued:
    """An RSA-2048 client certificate (what real Windows tests prefer)."""
    return pki.make_leaf(intermediate_ca, "bob", key_type="rsa")


@pytest.fixture(scope="session")
def expired_leaf(intermediate_ca: pki.Issued) -> pki.Issued:
    """A client certificate that expired yesterday."""
    now = _now()
    return pki.make_leaf(
        intermediate_ca,
        "expired-carol",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )


@pytest.fixture(scope="session")
def future_leaf(intermediate_ca: pki.Issued) -> pki.Issued:
    """A client certificate that becomes valid in ten days."""
    now = _now()
    return pki.make_leaf(
        intermediate_ca,
        "future-dave",
        not_before=now + dt.timedelta(days=10),
        not_after=now + dt.timedelta(days=400),
    )


@pytest.fixture(scope="session")
def server_leaf(root_ca: pki.Issued) -> pki.Issued:
    """A TLS server certificate for localhost (serverAuth EKU only)."""
    return pki.make_server(root_ca, "localhost")


@pytest.fixture(scope="session")
def self_signed_leaf() -> pki.Issued:
    """A self-signed client certificate (no CA behind it)."""
    return pki.make_leaf(None, "self-signed-erin", self_signed=True)
