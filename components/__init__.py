"""Components composing the resources (imported as ``iis_clientcert.components``)."""

from iis_clientcert.components.args import (
    HttpsEndpoint,
    HttpsEndpointDict,
    ManyToOne,
    ManyToOneDict,
    OneToOne,
    OneToOneDict,
    Rule,
    RuleDict,
    ServerPfx,
    ServerPfxDict,
    SiteUser,
    SiteUserDict,
    TrustedCa,
    TrustedCaDict,
)
from iis_clientcert.components.checks import ArgsError
from iis_clientcert.components.client_cert_host import (
    ClientCertHost,
    ClientCertHostArgs,
    ClientCertHostArgsDict,
)
from iis_clientcert.components.client_cert_site import (
    ClientCertSite,
    ClientCertSiteArgs,
    ClientCertSiteArgsDict,
    moved_from_site,
)
from iis_clientcert.components.exports import HostExports, SiteExports, read_host, read_site

__all__ = [
    "ArgsError",
    "ClientCertHost",
    "ClientCertHostArgs",
    "ClientCertHostArgsDict",
    "ClientCertSite",
    "ClientCertSiteArgs",
    "ClientCertSiteArgsDict",
    "HostExports",
    "HttpsEndpoint",
    "HttpsEndpointDict",
    "ManyToOne",
    "ManyToOneDict",
    "OneToOne",
    "OneToOneDict",
    "Rule",
    "RuleDict",
    "ServerPfx",
    "ServerPfxDict",
    "SiteExports",
    "SiteUser",
    "SiteUserDict",
    "TrustedCa",
    "TrustedCaDict",
    "moved_from_site",
    "read_host",
    "read_site",
]
