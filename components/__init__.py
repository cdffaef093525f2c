"""Components composing the resources."""

from components.client_cert_site import (
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
