"""The seven resources as provider-level subjects: inputs for create (A) and for an update
(B), and the host preparation they need (a server certificate for the binding, an
account for the mappings)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iis_clientcert.framework.base import IisProvider
from iis_clientcert.host.client import HostClient
from iis_clientcert.providers.anonymous_authentication import AnonymousAuthenticationProvider
from iis_clientcert.providers.certificate_mapping import CertificateMappingProvider
from iis_clientcert.providers.https_binding import HttpsBindingProvider
from iis_clientcert.providers.local_user import LocalUserProvider
from iis_clientcert.providers.server_certificate import ServerCertificateProvider
from iis_clientcert.providers.ssl_settings import SslSettingsProvider
from iis_clientcert.providers.trusted_root import TrustedRootProvider
from tests.support.reliability import PFX_PASSWORD, USER_PASSWORD, Pki

MAP_USER = "rel-mapuser"
SHOP = "C:\\inetpub\\shop"

Inputs = Callable[[Pki], dict[str, Any]]


@dataclass(frozen=True)
class Subject:
    kind: str
    provider: Callable[[], IisProvider[Any, Any]]
    a: Inputs  # create
    b: Inputs  # an update of the same object


def prepare_host(host: HostClient, pki: Pki) -> None:
    """What the resources rely on being there already (part of every baseline)."""
    host.call_one(
        "cert.import",
        store="My",
        pfx_b64=pki.pfx_b64(pki.binding_server),
        pfx_password=PFX_PASSWORD,
    )
    host.call_one("user.set", name=MAP_USER, password=USER_PASSWORD)


def _mapping(pki: Pki, second: bool) -> dict[str, Any]:
    one = [{"certificate": pki.client.cert_pem().decode(), "user_name": MAP_USER}]
    if second:
        one.append({"certificate": pki.client2.cert_pem().decode(), "user_name": MAP_USER})
    return {
        "site": "shop",
        "one_to_one": one,
        "many_to_one": [
            {
                "name": "rel-corp",
                "user_name": MAP_USER,
                "rules": [
                    {"field": "Subject", "sub_field": "O", "match": "Rel*" if second else "Rel"}
                ],
            }
        ],
        "passwords": {MAP_USER: USER_PASSWORD},
    }


SUBJECTS = [
    Subject(
        "SslSettings",
        SslSettingsProvider,
        lambda _p: {"site": "shop"},
        lambda _p: {"site": "shop", "flags": ["Ssl"]},
    ),
    Subject(
        "AnonymousAuthentication",
        AnonymousAuthenticationProvider,
        lambda _p: {"site": "shop"},
        lambda _p: {"site": "shop", "enabled": True},
    ),
    Subject(
        "TrustedRoot",
        TrustedRootProvider,
        lambda p: {"certificate": p.root.cert_pem().decode()},
        # The same certificate as DER base64: the same object, an update.
        lambda p: {"certificate": p.root.blob, "store": "Root"},
    ),
    Subject(
        "LocalUser",
        LocalUserProvider,
        lambda _p: {
            "name": "rel-user",
            "password": USER_PASSWORD,
            "groups": ["IIS_IUSRS"],
            "folder_access": [{"path": SHOP, "rights": "ReadAndExecute"}],
        },
        lambda _p: {
            "name": "rel-user",
            "password": "Tul1p-Pw-2nd!",
            "description": "changed",
            "groups": ["IIS_IUSRS", "Users"],
            "folder_access": [{"path": SHOP, "rights": "Read"}],
        },
    ),
    Subject(
        "CertificateMapping",
        CertificateMappingProvider,
        lambda p: _mapping(p, second=False),
        lambda p: _mapping(p, second=True),
    ),
    Subject(
        "ServerCertificate",
        ServerCertificateProvider,
        lambda p: {"pfx": p.pfx_b64(p.server), "password": PFX_PASSWORD},
        lambda p: {"pfx": p.pfx_b64(p.server, "rel-pfx-pw-2"), "password": "rel-pfx-pw-2"},
    ),
    Subject(
        "HttpsBinding",
        HttpsBindingProvider,
        lambda p: {
            "site": "shop",
            "port": 8443,
            "certificate_thumbprint": p.binding_server.thumbprint,
        },
        lambda p: {
            "site": "shop",
            "port": 8443,
            "certificate_thumbprint": p.binding_server.thumbprint,
            "client_cert_negotiation": False,
        },
    ),
]
