"""Every resource through the real engine against the simulator: the three-run test, drift,
refresh, repair, destroy restoring the host, and the agent-call budgets.

One case per resource: preview (no host writes), up, up again (no changes), a change made
on the host behind Pulumi's back, refresh that reports it, up that repairs it, a clean
preview, destroy, and the host compared with how it was before the first up.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert.framework.resource import type_token
from iis_clientcert.host import contract
from iis_clientcert.host.client import HostClient
from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.pki import Issued, make_ca, make_leaf, make_server
from tests.support.simulator import audit_lines, host_client, host_snapshot, ops_of
from tests.support.spec import SpecProject

pytestmark = pytest.mark.engine

USER_PASSWORD = "Bl0ssom-Pa55!"
PFX_PASSWORD = "pfx-engine-test"


@dataclass
class Pki:
    root: Issued
    intermediate_pem: str
    client: Issued
    server_pfx_b64: str
    server_thumbprint: str


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = make_ca("Engine Test Root")
    inter = make_ca("Engine Test Issuing")  # self-signed too: fine for TrustedRoot's Root case
    client = make_leaf(root, "engine-client", subject_extra={"O": "Engine Corp"})
    server = make_server(root, "localhost")
    return Pki(
        root=root,
        intermediate_pem=inter.cert_pem().decode(),
        client=client,
        server_pfx_b64=base64.b64encode(server.pfx(PFX_PASSWORD.encode())).decode(),
        server_thumbprint=server.thumbprint,
    )


@dataclass
class Case:
    id: str
    resources: Callable[[Pki], dict[str, Any]]
    # The change made behind Pulumi's back (ops an administrator would run).
    drift: Callable[[HostClient, Pki], None]
    # What refresh reports for it: "update" (changed) or "delete" (gone).
    refresh_sees: str
    secrets: dict[str, str]


def _user(name: str = "engine-user") -> dict[str, Any]:
    return {
        "kind": "LocalUser",
        "inputs": {
            "name": name,
            "password": {"$secret": "user_password"},
            "full_name": "Engine Test",
            "groups": ["IIS_IUSRS"],
            "folder_access": [{"path": "C:\\inetpub\\shop", "rights": "ReadAndExecute"}],
        },
    }


def _drift_at_shop(section: str, **attributes: str) -> Callable[[HostClient, Pki], None]:
    """A drift that writes ``attributes`` of ``section`` at the shop's location."""

    def drift(host: HostClient, _pki: Pki) -> None:
        element = contract.element(attributes)
        host.call_one("config.set", section=section, location="shop", element=element)

    return drift


def _drift_root(host: HostClient, pki: Pki) -> None:
    host.call_one("cert.remove", store="Root", thumbprint=pki.root.thumbprint)


def _drift_user(host: HostClient, _pki: Pki) -> None:
    host.call_one("user.set", name="engine-user", password="Changed-Behind-1!", description="x")


def _drift_mapping(host: HostClient, pki: Pki) -> None:
    stray = make_leaf(pki.root, "stray", subject_extra={"O": "Elsewhere"})
    got = host.call_one("config.get", section=contract.SECTION_MAPPING, location="shop")
    element = got["element"]
    element["children"]["oneToOneMappings"]["items"].append(
        contract.element(
            {"certificate": stray.blob, "userName": "engine-user", "password": USER_PASSWORD}
        )
    )
    host.call_one("config.set", section=contract.SECTION_MAPPING, location="shop", element=element)


def _drift_server_cert(host: HostClient, pki: Pki) -> None:
    host.call_one("cert.remove", store="My", thumbprint=pki.server_thumbprint)


def _drift_binding(host: HostClient, _pki: Pki) -> None:
    sites = host.call_one("site.list")["sites"]
    shop = next(s for s in sites if s["name"] == "shop")
    binding = next(b for b in shop["bindings"] if b["binding_information"] == "*:8443:")
    host.call_one(
        "binding.set",
        site="shop",
        binding_information="*:8443:",
        ssl_flags=0,
        certificate_hash=binding["certificate_hash"],
        certificate_store="My",
        client_cert_negotiation=False,
    )


CASES = [
    Case(
        "SslSettings",
        lambda _p: {"ssl": {"kind": "SslSettings", "inputs": {"site": "shop"}}},
        _drift_at_shop(contract.SECTION_SSL, sslFlags="Ssl"),
        "update",
        {},
    ),
    Case(
        "AnonymousAuthentication",
        lambda _p: {"anon": {"kind": "AnonymousAuthentication", "inputs": {"site": "shop"}}},
        _drift_at_shop(contract.SECTION_ANONYMOUS, enabled="true"),
        "update",
        {},
    ),
    Case(
        "TrustedRoot",
        lambda p: {
            "root": {"kind": "TrustedRoot", "inputs": {"certificate": p.root.cert_pem().decode()}}
        },
        _drift_root,
        "delete",
        {},
    ),
    Case(
        "LocalUser",
        lambda _p: {"user": _user()},
        _drift_user,
        "update",
        {"user_password": USER_PASSWORD},
    ),
    Case(
        "CertificateMapping",
        lambda p: {
            "user": _user(),
            "mapping": {
                "kind": "CertificateMapping",
                "depends_on": ["user"],
                "inputs": {
                    "site": "shop",
                    "one_to_one": [
                        {"certificate": p.client.cert_pem().decode(), "user_name": "engine-user"}
                    ],
                    "many_to_one": [
                        {
                            "name": "engine-corp",
                            "user_name": "engine-user",
                            "rules": [{"field": "Subject", "sub_field": "O", "match": "Engine*"}],
                        }
                    ],
                    "passwords": {"engine-user": {"$secret": "user_password"}},
                },
            },
        },
        _drift_mapping,
        "update",
        {"user_password": USER_PASSWORD},
    ),
    Case(
        "ServerCertificate",
        lambda p: {
            "cert": {
                "kind": "ServerCertificate",
                "inputs": {"pfx": p.server_pfx_b64, "password": {"$secret": "pfx_password"}},
            }
        },
        _drift_server_cert,
        "delete",
        {"pfx_password": PFX_PASSWORD},
    ),
    Case(
        "HttpsBinding",
        lambda p: {
            "cert": {
                "kind": "ServerCertificate",
                "inputs": {"pfx": p.server_pfx_b64, "password": {"$secret": "pfx_password"}},
            },
            "binding": {
                "kind": "HttpsBinding",
                "inputs": {
                    "site": "shop",
                    "port": 8443,
                    "certificate_thumbprint": {"$ref": "cert.thumbprint"},
                },
            },
        },
        _drift_binding,
        "update",
        {"pfx_password": PFX_PASSWORD},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resource_lifecycle(
    case: Case, pki: Pki, simulator: Endpoint, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    resources = case.resources(pki)
    count = len(resources)
    before = host_snapshot(simulator)
    spec = SpecProject(tmp_path / "project", pulumi_env, simulator)
    spec.set_resources(resources, **case.secrets)
    project = spec.project

    seen = len(audit_lines(simulator))
    assert project.preview() == {"create": count}
    preview_lines = audit_lines(simulator)[seen:]
    assert not [op for op in ops_of(preview_lines) if op["writes"]], "preview wrote to the host"
    assert len(preview_lines) <= count, "preview costs at most one agent call per resource"

    seen = len(audit_lines(simulator))
    assert project.up() == {"create": count}
    assert len(audit_lines(simulator)[seen:]) <= 2 * count, "create: at most two calls each"
    assert host_snapshot(simulator) != before

    assert project.up() == {"same": count}, "a second up changes nothing"

    case.drift(host_client(simulator), pki)
    refreshed = project.refresh()
    assert refreshed.get(case.refresh_sees) == 1, f"refresh must report the drift: {refreshed}"

    seen = len(audit_lines(simulator))
    repaired = project.up()
    assert repaired.get("update", 0) + repaired.get("create", 0) == 1, repaired
    assert len(audit_lines(simulator)[seen:]) <= 2 * count + (count - 1)
    assert project.preview() == {"same": count}, "after the repair the stack previews clean"

    ours = [r for r in project.resources() if r["type"].startswith("pulumi-python:dynamic")]
    # Each resource under its own type (pulumi-python:dynamic/iis-clientcert:<kind>).
    assert {r["urn"].rsplit("::", 1)[1]: r["type"] for r in ours} == {
        name: type_token(entry["kind"]) for name, entry in resources.items()
    }
    for resource in ours:
        provider = resource["outputs"]["__provider"]
        size = len(provider["plaintext"]) if isinstance(provider, dict) else len(provider)
        assert size < 2048, f"__provider of {resource['urn']} is {size} bytes"

    assert project.destroy() == {"delete": count}
    assert host_snapshot(simulator) == before, "destroy must leave the host as it was"
