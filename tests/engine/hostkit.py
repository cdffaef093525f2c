"""Shared pieces of the engine tests: a project whose resources a JSON spec describes,
the simulator's audit log, and a semantic snapshot of the simulated host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lxml import etree

from iis_clientcert.host.client import HostClient
from iis_clientcert.host.connection import Connection
from iis_clientcert_simulator.serve import Endpoint
from tests.engine.conftest import PulumiProject, write_project

# The program reads spec.json beside it: {"resources": {name: {"kind", "inputs"}}}.
# Inputs may say {"$secret": key} (a secret config value) or {"$ref": "name.output"};
# an entry may list "depends_on": [names of earlier entries].
PROGRAM = """\
import json
from pathlib import Path

import pulumi

from iis_clientcert.providers.anonymous_authentication import AnonymousAuthentication
from iis_clientcert.providers.certificate_mapping import CertificateMapping
from iis_clientcert.providers.https_binding import HttpsBinding
from iis_clientcert.providers.local_user import LocalUser
from iis_clientcert.providers.server_certificate import ServerCertificate
from iis_clientcert.providers.ssl_settings import SslSettings
from iis_clientcert.providers.trusted_root import TrustedRoot

KINDS = {
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
made = {}


def resolve(value):
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


connection = resolve(spec["connection"])
for name, entry in spec["resources"].items():
    opts = pulumi.ResourceOptions(depends_on=[made[n] for n in entry.get("depends_on", [])])
    made[name] = KINDS[entry["kind"]](
        name, connection=connection, opts=opts, **resolve(entry["inputs"])
    )
"""


def connection_spec(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "endpoint": endpoint.winrm_https_url,
        "transport": "basic",
        "username": endpoint.username,
        "password": {"$secret": "winrm_password"},
        "ca_bundle": Path(endpoint.ca_bundle).read_text(),
    }


def host_client(endpoint: Endpoint) -> HostClient:
    return HostClient(
        Connection.from_input(
            {
                "endpoint": endpoint.winrm_https_url,
                "transport": "basic",
                "username": endpoint.username,
                "password": endpoint.password,
                "ca_bundle": Path(endpoint.ca_bundle).read_text(),
            }
        )
    )


class SpecProject:
    """A throwaway project on the simulator whose resources ``spec.json`` describes."""

    def __init__(self, directory: Path, env: dict[str, str], endpoint: Endpoint) -> None:
        write_project(directory, "iis-engine-test", PROGRAM)
        self.dir = directory
        self.endpoint = endpoint
        self.project = PulumiProject(directory, env)
        self.project.init_stack("test")
        self.project.config_set("winrm_password", endpoint.password, secret=True)

    def set_resources(self, resources: dict[str, Any], **secrets: str) -> None:
        for key, value in secrets.items():
            self.project.config_set(key, value, secret=True)
        spec = {"connection": connection_spec(self.endpoint), "resources": resources}
        (self.dir / "spec.json").write_text(json.dumps(spec, indent=2))


def audit_lines(endpoint: Endpoint) -> list[dict[str, Any]]:
    path = Path(endpoint.state_dir) / "audit.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ops_of(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [op for line in lines for op in line.get("ops", [])]


def _canonical_xml(path: Path) -> bytes:
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=False)
    return etree.tostring(etree.parse(str(path), parser), method="c14n")


def host_snapshot(endpoint: Endpoint) -> dict[str, Any]:
    """What "the host as it was" means: config (semantically), stores, users, ACLs,
    HTTP.sys bindings. The audit log and the endpoint's own files are left out."""
    state = Path(endpoint.state_dir)
    stores = sorted(
        str(p.relative_to(state)) for p in (state / "certstore").rglob("*") if p.is_file()
    )
    users = json.loads((state / "users.json").read_text())
    return {
        "apphost": _canonical_xml(state / "applicationHost.config"),
        "stores": stores,
        "users": users,
        "acl": json.loads((state / "acl.json").read_text()),
        "httpsys": json.loads((state / "httpsys.json").read_text()),
    }
