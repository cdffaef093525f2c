"""Named resource types through the real engine: a stack made when every resource was
``pulumi-python:dynamic:Resource`` upgrades to the named types without a replacement, a
create or a delete, and without touching the host.

The stack is the embedding example (two ClientCertSites, all seven resources, children of
their component), first registered the old way, then by today's code.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert.framework.resource import LEGACY_TYPE, type_token
from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.pki import make_ca, make_leaf, make_server
from tests.support.engine import PROGRAMS, PulumiProject, write_project
from tests.support.simulator import audit_lines, host_snapshot

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "two_sites" / "__main__.py"
# The example as the code before named types registered it (it runs two_sites.py beside it).
OLD_PROGRAM = PROGRAMS / "legacy_types.py"
PFX_PASSWORD = "pfx-resource-types"
COMPONENT_TYPE = "iis-clientcert:index:ClientCertSite"
# What the example registers: per site a server certificate, binding, sslFlags, anonymous
# access, one user and the mapping; the shop also trusts the CA.
KINDS = {
    "ServerCertificate": 2,
    "HttpsBinding": 2,
    "SslSettings": 2,
    "AnonymousAuthentication": 2,
    "LocalUser": 2,
    "CertificateMapping": 2,
    "TrustedRoot": 1,
}
RESOURCES = sum(KINDS.values()) + 2  # and the two components


def _pki(folder: Path) -> Path:
    folder.mkdir()
    ca = make_ca("Resource Types Root")
    (folder / "ca.pem").write_bytes(ca.cert_pem())
    for name in ("shop", "intranet"):
        server = make_server(ca, "localhost", ip_addresses=("127.0.0.1",))
        (folder / f"{name}.pfx").write_bytes(server.pfx(PFX_PASSWORD.encode()))
    alice = make_leaf(ca, "alice", subject_extra={"O": "Example Corp"})
    (folder / "alice.pem").write_bytes(alice.cert_pem())
    return folder


def _project(directory: Path, env: dict[str, str], endpoint: Endpoint, pki: Path) -> PulumiProject:
    write_project(directory, "resource-types", OLD_PROGRAM)
    (directory / "two_sites.py").write_text(EXAMPLE.read_text())  # the example, unchanged
    project = PulumiProject(directory, env)
    project.init_stack("test")
    for key, value in {
        "host_endpoint": endpoint.winrm_https_url,
        "host_username": endpoint.username,
        "host_ca_bundle": endpoint.ca_file,
        "pki_dir": str(pki),
    }.items():
        project.config_set(key, value)
    for key, value in {
        "host_password": endpoint.password,
        "pfx_password": PFX_PASSWORD,
        "alice_password": "Al1ce-resource-types!",
        "staff_password": "St4ff-resource-types!",
    }.items():
        project.config_set(key, value, secret=True)
    return project


def _ours(project: PulumiProject) -> list[dict[str, Any]]:
    """The dynamic resources in the state (not the stack, components or providers)."""
    return [r for r in project.resources() if r["type"].startswith("pulumi-python:dynamic")]


def _by_name(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["urn"].rsplit("::", 1)[1]: r for r in resources}


def test_a_stack_of_the_old_type_upgrades_in_place(
    simulator: Endpoint, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    before = host_snapshot(simulator)
    project = _project(tmp_path / "project", pulumi_env, simulator, _pki(tmp_path / "pki"))

    assert project.up() == {"create": RESOURCES}
    old = _by_name(_ours(project))
    assert {r["type"] for r in old.values()} == {LEGACY_TYPE}, "the old program's types"
    assert len(old) == sum(KINDS.values())
    created = host_snapshot(simulator)

    # Today's code: the example as it is.
    write_project(project.dir, "resource-types", EXAMPLE)
    calls = len(audit_lines(simulator))
    assert project.preview() == {"same": RESOURCES}, "no create, delete or replace"
    assert project.up() == {"same": RESOURCES}
    assert len(audit_lines(simulator)) == calls, "the upgrade calls no host"
    assert host_snapshot(simulator) == created

    new = _by_name(_ours(project))
    assert set(new) == set(old), "the same resources, under the same names"
    kinds = collections.Counter(r["type"] for r in new.values())
    assert kinds == {type_token(kind): n for kind, n in KINDS.items()}
    for name, resource in new.items():
        was = old[name]
        # Same parent chain, new type: ClientCertSite$pulumi-python:dynamic/...:Kind::name.
        assert resource["urn"] == was["urn"].replace(LEGACY_TYPE, resource["type"])
        assert f"{COMPONENT_TYPE}${resource['type']}::" in resource["urn"]
        assert resource["id"] == was["id"], f"{name} kept its id"
        assert resource["outputs"] == was["outputs"], f"{name} kept its state"

    assert project.preview() == {"same": RESOURCES}, "and stays clean afterwards"
    assert project.destroy() == {"delete": RESOURCES}
    assert host_snapshot(simulator) == before, "destroy gives back the host as it was"
