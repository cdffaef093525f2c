"""The resource tests' program: it declares the resources ``spec.json`` beside it describes.

spec.json::

    {"connections": {"main": {connection input}, ...},
     "resources": {name: {"kind": "SslSettings", "inputs": {...},
                          "connection": "main", "depends_on": [earlier names]}}}

A resource uses the connection named by its ``connection`` (default ``main``). Anywhere in a
connection or in inputs, ``{"$secret": key}`` is the secret config value ``key`` and
``{"$ref": "name.output"}`` an output of an earlier resource.
"""

import json
from pathlib import Path
from typing import Any

import pulumi

from iis_clientcert.providers.anonymous_authentication import AnonymousAuthentication
from iis_clientcert.providers.certificate_mapping import CertificateMapping
from iis_clientcert.providers.https_binding import HttpsBinding
from iis_clientcert.providers.local_user import LocalUser
from iis_clientcert.providers.server_certificate import ServerCertificate
from iis_clientcert.providers.ssl_settings import SslSettings
from iis_clientcert.providers.trusted_root import TrustedRoot

KINDS: dict[str, Any] = {
    "AnonymousAuthentication": AnonymousAuthentication,
    "CertificateMapping": CertificateMapping,
    "HttpsBinding": HttpsBinding,
    "LocalUser": LocalUser,
    "ServerCertificate": ServerCertificate,
    "SslSettings": SslSettings,
    "TrustedRoot": TrustedRoot,
}
spec = json.loads((Path(__file__).parent / "spec.json").read_text())
config = pulumi.Config()
made: dict[str, pulumi.CustomResource] = {}


def resolve(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$secret"}:
        return config.require_secret(value["$secret"])
    if isinstance(value, dict) and set(value) == {"$ref"}:
        name, attr = value["$ref"].split(".")
        return getattr(made[name], attr)
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value


connections = {name: resolve(value) for name, value in spec["connections"].items()}
for name, entry in spec["resources"].items():
    opts = pulumi.ResourceOptions(depends_on=[made[n] for n in entry.get("depends_on", [])])
    made[name] = KINDS[entry["kind"]](
        name,
        connection=connections[entry.get("connection", "main")],
        opts=opts,
        **resolve(entry["inputs"]),
    )
