"""Bad input, one case per class, at the provider level (no host needed, or only the
host's answer to a create): each error names the resource, the property and the fix,
and never a secret. The host-dependent classes (unreachable, wrong credentials, TLS,
missing feature) run through the engine in test_engine.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from iis_clientcert.errors import HostError, ValidationError
from iis_clientcert.framework.base import IisProvider
from iis_clientcert.host import winrm_transport
from iis_clientcert.providers.certificate_mapping import CertificateMappingProvider
from iis_clientcert.providers.local_user import LocalUserProvider
from iis_clientcert.providers.server_certificate import ServerCertificateProvider
from iis_clientcert.providers.ssl_settings import SslSettingsProvider
from iis_clientcert.providers.trusted_root import TrustedRootProvider
from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.pki import make_intermediate, make_leaf
from iis_clientcert_simulator.testing import running_simulator
from tests.reliability.resources import MAP_USER, prepare_host
from tests.support.reliability import PFX_PASSWORD, USER_PASSWORD, Figures, Pki
from tests.support.simulator import connection, host_client

pytestmark = pytest.mark.reliability

WRONG_PFX = "Canary-Bad-Pfx-Pw-1!"
WEAK = "weakcanary"


@dataclass(frozen=True)
class Case:
    id: str
    provider: Callable[[], IisProvider[Any, Any]]
    inputs: Callable[[Pki], dict[str, Any]]
    prop: str  # the property the message must name
    words: str  # words of the explanation / fix
    at_create: bool = False  # found by the host-aware step (preflight), not by check


def _expired(p: Pki) -> str:
    now = dt.datetime.now(dt.UTC)
    leaf = make_leaf(
        p.root,
        "expired-client",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    return leaf.cert_pem().decode()


def _mapping(cert: str, user: str = MAP_USER, twice: bool = False) -> dict[str, Any]:
    one = [{"certificate": cert, "user_name": user}] * (2 if twice else 1)
    return {"site": "shop", "one_to_one": one, "passwords": {user: USER_PASSWORD}}


CASES = [
    Case(
        "not a certificate",
        TrustedRootProvider,
        lambda _p: {"certificate": "hello, I am not a certificate"},
        "certificate",
        "PEM",
    ),
    Case(
        "truncated certificate",
        TrustedRootProvider,
        lambda p: {"certificate": p.root.cert_pem().decode()[:300]},
        "certificate",
        "whole certificate",
    ),
    Case(
        "wrong pfx password",
        ServerCertificateProvider,
        lambda p: {"pfx": p.pfx_b64(p.server), "password": WRONG_PFX},
        "password",
        "password the PFX was exported with",
    ),
    Case(
        "expired client certificate",
        TrustedRootProvider,
        lambda p: {"certificate": _expired_ca(p)},
        "certificate",
        "expired",
    ),
    Case(
        "non-self-signed root",
        TrustedRootProvider,
        lambda p: {
            "certificate": make_intermediate(p.root, "Rel Issuing").cert_pem().decode(),
            "store": "Root",
        },
        "store",
        "KB 2802568",
    ),
    Case(
        "mapping to a missing user",
        CertificateMappingProvider,
        lambda p: _mapping(p.client.cert_pem().decode(), user="no-such-user"),
        "passwords['no-such-user']",
        "Create the account first",
        at_create=True,
    ),
    Case(
        "duplicate mapping",
        CertificateMappingProvider,
        lambda p: _mapping(p.client.cert_pem().decode(), twice=True),
        "one_to_one[1].certificate",
        "Map each certificate once",
    ),
    Case(
        "unknown ssl flag",
        SslSettingsProvider,
        lambda _p: {"site": "shop", "flags": ["Ssl", "SslMapCert"]},
        "flags",
        "valid flags",
    ),
    Case(
        "invalid account name",
        LocalUserProvider,
        lambda _p: {"name": "bad/name*", "password": USER_PASSWORD},
        "name",
        "Account names cannot contain",
    ),
    Case(
        "weak password",
        LocalUserProvider,
        lambda _p: {"name": "rel-weak", "password": WEAK},
        "password",
        "password policy",
        at_create=True,
    ),
]


def _expired_ca(p: Pki) -> str:
    # An expired CA: trusting it cannot help, so check refuses it (client certificates
    # that expired are warned about in CertificateMapping and answered 403.17 by IIS).
    from iis_clientcert_simulator.pki import make_ca

    now = dt.datetime.now(dt.UTC)
    ca = make_ca(
        "Expired CA", not_before=now - dt.timedelta(days=60), not_after=now - dt.timedelta(days=1)
    )
    return ca.cert_pem().decode()


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Endpoint]:
    with running_simulator(tmp_path_factory.mktemp("bad-input") / "host") as endpoint:
        prepare_host(host_client(endpoint), pki)
        yield endpoint
    winrm_transport.close_pool()


SECRETS = (WRONG_PFX, WEAK, USER_PASSWORD, PFX_PASSWORD)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_explained(case: Case, host: Endpoint, pki: Pki, figures: Figures) -> None:
    figures.add("inputs_tried", "bad input")
    provider = case.provider()
    kind = provider.kind
    news = {**case.inputs(pki), "connection": connection(host).to_input()}
    result = provider.check({}, news)
    if case.at_create:
        assert not result.failures, [f.reason for f in result.failures]
        with pytest.raises((ValidationError, HostError)) as caught:
            provider.create(dict(result.inputs))
        prop = getattr(caught.value, "property", None)
        message = str(caught.value)
    else:
        assert result.failures, f"{case.id}: check accepted it"
        prop, message = result.failures[0].property, result.failures[0].reason
    assert prop == case.prop, (prop, message)
    assert message.startswith(f"{kind}: {case.prop}"), message
    assert case.words.lower() in message.lower(), message
    leaked = [s for s in (*SECRETS, news.get("password")) if s and s in message]
    figures.add("secrets_found", "bad input", len(leaked))
    assert not leaked, message


def test_expired_client_certificate_warns(
    host: Endpoint, pki: Pki, figures: Figures, capsys: pytest.CaptureFixture[str]
) -> None:
    """An expired client certificate in a mapping: a warning naming it and 403.17."""
    figures.add("inputs_tried", "bad input")
    provider = CertificateMappingProvider()
    result = provider.check(
        {}, {**_mapping(_expired(pki)), "connection": connection(host).to_input()}
    )
    assert not result.failures
    err = capsys.readouterr().err
    assert "one_to_one[0]" in err and "403.17" in err, err
