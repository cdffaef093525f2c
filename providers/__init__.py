"""The resources: one module per IIS object, each a Pulumi dynamic resource.

Imported as ``iis_clientcert.providers``. Provider classes are pickled into Pulumi state by
module path, so these module paths are part of the state format (tests/unit/test_layout.py).
"""

from iis_clientcert.providers.anonymous_authentication import AnonymousAuthentication
from iis_clientcert.providers.certificate_mapping import CertificateMapping
from iis_clientcert.providers.https_binding import HttpsBinding
from iis_clientcert.providers.local_user import LocalUser
from iis_clientcert.providers.server_certificate import ServerCertificate
from iis_clientcert.providers.ssl_settings import SslSettings
from iis_clientcert.providers.trusted_root import TrustedRoot

__all__ = [
    "AnonymousAuthentication",
    "CertificateMapping",
    "HttpsBinding",
    "LocalUser",
    "ServerCertificate",
    "SslSettings",
    "TrustedRoot",
]
