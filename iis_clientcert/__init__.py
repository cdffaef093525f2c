"""iis-clientcert: declarative IIS client-certificate authentication with Pulumi.

The one import root of everything a program uses::

    from iis_clientcert import ClientCertSite, ClientCertSiteArgs, ConnectionArgs
    from iis_clientcert.providers import SslSettings, CertificateMapping, ...

Layers (arrows point down only):
    components/  ClientCertHost, ClientCertSite          (iis_clientcert.components)
    providers/   one module per resource                 (iis_clientcert.providers)
    framework/   the provider base, input declarations   (iis_clientcert.framework)
    host/        contract, agent.ps1, client, WinRM transport, connection: no pulumi
    certs, errors, tools/ (doctor, probe)
"""

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
from iis_clientcert.errors import IisClientCertError
from iis_clientcert.framework.inputs import ConnectionArgs, ConnectionArgsDict

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
