"""iis-clientcert: declarative IIS client-certificate authentication with Pulumi.

The one import root of everything a program uses::

    from iis_clientcert import ClientCertSite, ClientCertSiteArgs, ConnectionArgs
    from iis_clientcert.providers import SslSettings, CertificateMapping, ...

Layers (arrows point down only; tests/unit/test_layout.py):
    components/  ClientCertHost, ClientCertSite          (iis_clientcert.components)
    providers/   one module per resource                 (iis_clientcert.providers)
    framework/   the provider base, input declarations   (iis_clientcert.framework)
    host/        contract, agent.ps1, client, WinRM transport, connection: no pulumi
    certs, errors, tools/ (doctor, probe)

The names that need pulumi are imported on first use, so importing the host boundary (say
``iis_clientcert.host.client`` for the doctor) does not load pulumi.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from iis_clientcert.errors import IisClientCertError

if TYPE_CHECKING:
    from iis_clientcert.components import (
        ArgsError,
        ClientCertHost,
        ClientCertHostArgs,
        ClientCertHostArgsDict,
        ClientCertSite,
        ClientCertSiteArgs,
        ClientCertSiteArgsDict,
        HostExports,
        HttpsEndpoint,
        ManyToOne,
        OneToOne,
        Rule,
        ServerPfx,
        SiteExports,
        SiteUser,
        TrustedCa,
        read_host,
        read_site,
    )
    from iis_clientcert.framework.inputs import ConnectionArgs, ConnectionArgsDict

# Public name -> the module it comes from (imported on first access, PEP 562).
_LAZY = {
    "ArgsError": "iis_clientcert.components",
    "ClientCertHost": "iis_clientcert.components",
    "ClientCertHostArgs": "iis_clientcert.components",
    "ClientCertHostArgsDict": "iis_clientcert.components",
    "ClientCertSite": "iis_clientcert.components",
    "ClientCertSiteArgs": "iis_clientcert.components",
    "ClientCertSiteArgsDict": "iis_clientcert.components",
    "HostExports": "iis_clientcert.components",
    "HttpsEndpoint": "iis_clientcert.components",
    "ManyToOne": "iis_clientcert.components",
    "OneToOne": "iis_clientcert.components",
    "Rule": "iis_clientcert.components",
    "ServerPfx": "iis_clientcert.components",
    "SiteExports": "iis_clientcert.components",
    "SiteUser": "iis_clientcert.components",
    "TrustedCa": "iis_clientcert.components",
    "read_host": "iis_clientcert.components",
    "read_site": "iis_clientcert.components",
    "ConnectionArgs": "iis_clientcert.framework.inputs",
    "ConnectionArgsDict": "iis_clientcert.framework.inputs",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


__all__ = [
    "ArgsError",
    "ClientCertHost",
    "ClientCertHostArgs",
    "ClientCertHostArgsDict",
    "ClientCertSite",
    "ClientCertSiteArgs",
    "ClientCertSiteArgsDict",
    "ConnectionArgs",
    "ConnectionArgsDict",
    "HostExports",
    "HttpsEndpoint",
    "IisClientCertError",
    "ManyToOne",
    "OneToOne",
    "Rule",
    "ServerPfx",
    "SiteExports",
    "SiteUser",
    "TrustedCa",
    "read_host",
    "read_site",
]
