"""ClientCertSite through the real engine, using the embedding example (two sites on one
host, applied in parallel): preview, up, up again, both sites fully present and answering
client certificates as configured, drift repaired, destroy restoring the host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from iis_clientcert.host import contract
from iis_clientcert.tools.probe import ProbeResult, probe
from iis_clientcert_simulator.endpoint import Endpoint, read_endpoint
from iis_clientcert_simulator.pki import make_ca, make_leaf, make_server
from iis_clientcert_simulator.testing import running_simulator
from tests.support.engine import PulumiProject, write_project
from tests.support.simulator import host_client, host_snapshot

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "two_sites" / "__main__.py"
PFX_PASSWORD = "pfx-two-sites"
# Per site: ServerCertificate, HttpsBinding, SslSettings, AnonymousAuthentication, one user,
# the mapping; the shop also trusts the CA. Plus the two components themselves.
RESOURCES = 6 + 6 + 1 + 2


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Endpoint]:
    # A subprocess, as `make demo` runs it: it serves the sites' https bindings too.
    with running_simulator(tmp_path / "host", subprocess_mode=True) as endpoint:
        yield endpoint


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    folder = tmp_path / "pki"
    folder.mkdir()
    ca = make_ca("Two Sites Root")
    (folder / "ca.pem").write_bytes(ca.cert_pem())
    for name in ("shop", "intranet"):
        server = make_server(ca, "localhost", ip_addresses=("127.0.0.1",))
        (folder / f"{name}.pfx").write_bytes(server.pfx(PFX_PASSWORD.encode()))
    for cn, org, stem in (("alice", "Example Corp", "alice"), ("bob", "Partner Ltd", "bob")):
        leaf = make_leaf(ca, cn, subject_extra={"O": org})
        (folder / f"{stem}.pem").write_bytes(leaf.cert_pem())
        (folder / f"{stem}.key").write_bytes(leaf.key_pem())
    return folder


def _site_urls(endpoint: Endpoint) -> dict[str, str]:
    # Read again: the simulator publishes the sites as their bindings change.
    sites = read_endpoint(endpoint.state_dir).sites
    return {site: urls[0] for site, urls in sites.items() if urls}


def _probe(endpoint: Endpoint, pki: Path, site: str, who: str | None) -> ProbeResult:
    url = _site_urls(endpoint)[site]
    cert = (pki / f"{who}.pem").read_bytes() if who else None
    key = (pki / f"{who}.key").read_bytes() if who else None
    return probe(url, client_cert_pem=cert, client_key_pem=key, ca_bundle=str(pki / "ca.pem"))


def _answers(endpoint: Endpoint, pki: Path) -> dict[tuple[str, str | None], str]:
    out = {}
    for site in ("shop", "Default Web Site"):
        for who in ("alice", "bob", None):
            result = _probe(endpoint, pki, site, who)
            user = (result.user or "-").rsplit("\\", 1)[-1]
            out[(site, who)] = f"{result.code} {user}"
    return out


EXPECTED = {
    ("shop", "alice"): "200.0 shop-alice",  # one-to-one
    ("shop", "bob"): "401.2 -",  # trusted, but mapped to nobody, anonymous off
    ("shop", None): "403.7 -",
    ("Default Web Site", "alice"): "200.0 intranet-staff",  # the O=Example Corp rule
    ("Default Web Site", "bob"): "401.2 -",
    ("Default Web Site", None): "403.7 -",
}


def test_two_sites_in_parallel(
    simulator: Endpoint, pki: Path, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    before = host_snapshot(simulator)
    project_dir = write_project(tmp_path / "two-sites", "two-sites", EXAMPLE)
    project = PulumiProject(project_dir, pulumi_env)
    project.init_stack("test")
    connection = simulator.connection_input()
    for key, value in {
        "host_endpoint": connection["endpoint"],
        "host_username": connection["username"],
        "host_ca_bundle": simulator.ca_file,  # the example reads a file
        "pki_dir": str(pki),
    }.items():
        project.config_set(key, value)
    for key, value in {
        "host_password": connection["password"],
        "pfx_password": PFX_PASSWORD,
        "alice_password": "Al1ce-two-sites!",
        "staff_password": "St4ff-two-sites!",
    }.items():
        project.config_set(key, value, secret=True)

    assert project.preview() == {"create": RESOURCES}
    assert project.up() == {"create": RESOURCES}
    assert project.up() == {"same": RESOURCES}, "a second up changes nothing"

    # Both sites fully present: their settings at their own apphost locations...
    host = host_client(simulator)
    for site in ("shop", "Default Web Site"):
        ssl = host.call_one("config.get", section=contract.SECTION_SSL, location=site)
        assert ssl["element"]["attributes"]["sslFlags"].replace(" ", "") == (
            "Ssl,SslNegotiateCert,SslRequireCert"
        )
        anon = host.call_one("config.get", section=contract.SECTION_ANONYMOUS, location=site)
        assert anon["effective"]["attributes"]["enabled"] == "false"
        assert host.call_one("config.get", section=contract.SECTION_MAPPING, location=site)[
            "present"
        ]
    # ...and each answers client certificates as configured.
    assert _answers(simulator, pki) == EXPECTED

    outputs = project.outputs()
    assert outputs["shop_users"] and set(outputs["shop_users"].values()) == {"shop-alice"}
    assert outputs["intranet_users"] == {"rule:staff": "intranet-staff"}

    # Drift behind Pulumi's back: certificates optional, anonymous access back on, the
    # shop's mappings removed.
    host.call_one(
        "config.set",
        section=contract.SECTION_SSL,
        location="shop",
        element=contract.element({"sslFlags": "Ssl"}),
    )
    host.call_one(
        "config.set",
        section=contract.SECTION_ANONYMOUS,
        location="shop",
        element=contract.element({"enabled": "true"}),
    )
    host.call_one("config.clear", section=contract.SECTION_MAPPING, location="shop")
    assert _probe(simulator, pki, "shop", None).code == "200.0"  # anonymous is served now
    refreshed = project.refresh()
    assert refreshed.get("update") == 3, refreshed
    repaired = project.up()
    assert repaired.get("update") == 3, repaired
    assert project.preview() == {"same": RESOURCES}
    assert _answers(simulator, pki) == EXPECTED

    assert project.destroy() == {"delete": RESOURCES}
    assert host_snapshot(simulator) == before, "destroy must leave the host as it was"
