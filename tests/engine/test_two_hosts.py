"""The embedding acceptance through the real engine (examples/two_hosts): two simulated
hosts whose endpoints and CA certificates are Outputs (web02's secrets), three sites, the
CA and one account shared by two sites of web01 and owned by its ClientCertHost.

preview, up, up again; the sites answer client certificates as configured (200, 403.16,
403.7); removing one site deletes only that site's own resources and the other site keeps
answering 200; destroy gives both hosts back exactly as they were."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from iis_clientcert.tools.probe import probe
from iis_clientcert_simulator.endpoint import Endpoint, read_endpoint
from iis_clientcert_simulator.pki import make_ca, make_leaf, make_server
from iis_clientcert_simulator.testing import running_simulator
from tests.support.engine import PulumiProject, write_project
from tests.support.simulator import host_client, host_snapshot

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "two_hosts" / "__main__.py"
PFX_PASSWORD = "pfx-two-hosts"
# Hosts: 2 components + a CA, an account and a server certificate each. Sites: 3
# components + binding, sslFlags, anonymous access and mappings each.
RESOURCES = 2 + 2 * 3 + 3 + 3 * 4
SITE_RESOURCES = 1 + 4


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[dict[str, Endpoint]]:
    # Subprocesses, as `make demo` runs them: they serve the sites' https bindings too.
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(running_simulator(tmp_path / name, subprocess_mode=True))
            for name in ("web01", "web02")
        }


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    folder = tmp_path / "pki"
    folder.mkdir()
    corp = make_ca("Two Hosts Corp Root")
    partner = make_ca("Two Hosts Partner Root")
    (folder / "ca.pem").write_bytes(corp.cert_pem())
    (folder / "partner-ca.pem").write_bytes(partner.cert_pem())
    server = make_server(corp, "localhost", ip_addresses=("127.0.0.1",))
    (folder / "server.pfx").write_bytes(server.pfx(PFX_PASSWORD.encode()))
    for who, ca in (("alice", corp), ("bob", partner)):
        leaf = make_leaf(ca, who, subject_extra={"O": "Example"})
        (folder / f"{who}.pem").write_bytes(leaf.cert_pem())
        (folder / f"{who}.key").write_bytes(leaf.key_pem())
    return folder


def _answer(endpoint: Endpoint, pki: Path, site: str, who: str | None) -> str:
    # Read afresh: the simulator publishes a site's URL once its https binding exists.
    url = read_endpoint(endpoint.state_dir).sites[site][0]
    cert = (pki / f"{who}.pem").read_bytes() if who else None
    key = (pki / f"{who}.key").read_bytes() if who else None
    result = probe(url, client_cert_pem=cert, client_key_pem=key, ca_bundle=str(pki / "ca.pem"))
    return f"{result.code} {(result.user or '-').rsplit(chr(92), 1)[-1]}"


EXPECTED = {
    ("web01", "shop", "alice"): "200.0 alice",  # one-to-one
    ("web01", "shop", "bob"): "403.16 -",  # web01 does not trust the partner CA
    ("web01", "shop", None): "403.7 -",
    ("web01", "Default Web Site", "alice"): "200.0 alice",  # the O=Example rule, same account
    ("web01", "Default Web Site", None): "403.7 -",
    ("web02", "shop", "bob"): "200.0 partner",
    ("web02", "shop", "alice"): "403.16 -",  # web02 does not trust the corp CA
    ("web02", "shop", None): "403.7 -",
}


def _answers(
    hosts: dict[str, Endpoint], pki: Path, keys: list[tuple[str, str, str | None]]
) -> dict[tuple[str, str, str | None], str]:
    return {key: _answer(hosts[key[0]], pki, key[1], key[2]) for key in keys}


def test_two_hosts_three_sites_shared_objects_have_one_owner(
    hosts: dict[str, Endpoint], pki: Path, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    before = {name: host_snapshot(e) for name, e in hosts.items()}
    project_dir = write_project(tmp_path / "two-hosts", "two-hosts", EXAMPLE)
    project = PulumiProject(project_dir, pulumi_env)
    project.init_stack("test")
    web01, web02 = hosts["web01"], hosts["web02"]
    for key, value in {
        "web01_endpoint": web01.winrm_https_url,
        "web01_username": web01.username,
        "web01_ca_bundle": web01.ca_file,
        "web02_username": web02.username,
        "web02_ca_bundle": web02.ca_file,
        "pki_dir": str(pki),
    }.items():
        project.config_set(key, value)
    for key, value in {
        "web02_endpoint": web02.winrm_https_url,
        "web02_ca": (pki / "partner-ca.pem").read_text(),
        "partner_cert": (pki / "bob.pem").read_text(),
        "web01_password": web01.password,
        "web02_password": web02.password,
        "pfx_password": PFX_PASSWORD,
        "alice_password": "Al1ce-two-hosts!",
        "partner_password": "Partn3r-two-hosts!",
    }.items():
        project.config_set(key, value, secret=True)

    assert project.preview() == {"create": RESOURCES}
    assert project.up() == {"create": RESOURCES}
    assert project.up() == {"same": RESOURCES}, "a second up changes nothing"
    assert _answers(hosts, pki, list(EXPECTED)) == EXPECTED

    outputs = project.outputs()
    assert outputs["hosts"]["web01"]["accounts"] == ["alice"]
    assert outputs["hosts"]["web01"]["endpoint"] == web01.winrm_https_url.removesuffix("/wsman")
    corp = outputs["hosts"]["web01"]["root_thumbprints"]["corp"]
    for name in ("web01/shop", "web01/intranet"):
        assert outputs["sites"][name]["root_thumbprints"] == [corp]
        assert outputs["sites"][name]["accounts"] == ["alice"]
    assert outputs["sites"]["web02/shop"]["accounts"] == ["partner"]

    # Remove the intranet site: only its own resources go; the CA and the account it
    # shared with the shop stay, and the shop keeps answering.
    project.config_set("sites", "web01/shop,web02/shop")
    assert project.up() == {"delete": SITE_RESOURCES, "same": RESOURCES - SITE_RESOURCES}
    deleted = {
        e.resource_pre_event.metadata.urn.rsplit("::", 1)[-1]
        for e in project.last_events
        if e.resource_pre_event is not None
        and getattr(e.resource_pre_event.metadata.op, "value", "") == "delete"
    }
    assert deleted == {
        "web01-intranet",
        "web01-intranet-https",
        "web01-intranet-ssl",
        "web01-intranet-anonymous",
        "web01-intranet-mapping",
    }
    client = host_client(web01)
    roots = client.call_one("cert.list", store="Root")["certificates"]
    assert corp in {c["thumbprint"] for c in roots}
    assert client.call_one("user.get", name="alice")["exists"]
    still = [("web01", "shop", "alice"), ("web01", "shop", None), ("web02", "shop", "bob")]
    assert _answers(hosts, pki, still) == {key: EXPECTED[key] for key in still}

    assert project.destroy() == {"delete": RESOURCES - SITE_RESOURCES}
    for name, endpoint in hosts.items():
        assert host_snapshot(endpoint) == before[name], f"destroy must leave {name} as it was"
