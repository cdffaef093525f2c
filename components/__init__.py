"""Components composing the resources (imported as ``iis_clientcert.components``)."""

from iis_clientcert.components.client_cert_site import (
    ClientCertSite,
    ClientCertSiteArgs,
    HttpsEndpoint,
    ManyToOne,
    OneToOne,
    Rule,
    SiteUser,
)

__all__ = [
    "ClientCertSite",
    "ClientCertSiteArgs",
    "HttpsEndpoint",
    "ManyToOne",
    "OneToOne",
    "Rule",
    "SiteUser",
]
