"""A fleet in one stack (examples/fleet): the same site on 8 simulated hosts, all reached
on 127.0.0.1 (one host name, a WinRM port each) and all binding port 443, applied in one
`pulumi up`; another stack (examples/fleet_clients) reads the fleet's typed outputs through
a StackReference; destroy gives every host back as it was."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from pulumi import automation as auto

from iis_clientcert.host import winrm_transport
from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.pki import make_ca, make_leaf, make_server
from iis_clientcert_simulator.testing import running_simulator
from tests.support.engine import PulumiProject, write_project
from tests.support.simulator import host_client, host_snapshot

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "examples" / "fleet" / "__main__.py"
CLIENTS = REPO / "examples" / "fleet_clients" / "__main__.py"
HOSTS = 8
PFX_PASSWORD = "pfx-fleet"
# Per host: the host component, its CA, account and server certificate; the site component,
# its binding, sslFlags, anonymous access and mapping.
PER_HOST = 4 + 5


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[dict[str, Endpoint]]:
    with ExitStack() as stack:
        hosts = {
            f"web{i:02d}": stack.enter_context(running_simulator(tmp_path / f"web{i:02d}"))
            for i in range(1, HOSTS + 1)
        }
        stack.callback(winrm_transport.close_pool)
        yield hosts


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    folder = tmp_path / "pki"
    folder.mkdir()
    ca = make_ca("Fleet Client Root")
    (folder / "ca.pem").write_bytes(ca.cert_pem())
    (folder / "client.pem").write_bytes(make_leaf(ca, "fleet-client").cert_pem())
    server = make_server(ca, "localhost", ip_addresses=("127.0.0.1",))
    (folder / "server.pfx").write_bytes(server.pfx(PFX_PASSWORD.encode()))
    return folder


def test_a_fleet_of_eight_hosts_in_one_up_read_by_another_stack(
    fleet: dict[str, Endpoint],
    pki: Path,
    pulumi_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = {name: host_snapshot(e) for name, e in fleet.items()}
    assert len({e.winrm_https_url.split("//")[1].split(":")[0] for e in fleet.values()}) == 1
    project = PulumiProject(
        write_project(tmp_path / "fleet", "iis-clientcert-fleet", FLEET), pulumi_env
    )
    project.init_stack("test")
    settings: dict[str, auto.ConfigValue] = {"pki_dir": auto.ConfigValue(str(pki))}
    for name, endpoint in fleet.items():
        settings[f"hosts.{name}.endpoint"] = auto.ConfigValue(endpoint.winrm_https_url)
        settings[f"hosts.{name}.username"] = auto.ConfigValue(endpoint.username)
        settings[f"hosts.{name}.ca_bundle"] = auto.ConfigValue(endpoint.ca_file)
        settings[f"passwords.{name}"] = auto.ConfigValue(endpoint.password, secret=True)
    settings["passwords.account"] = auto.ConfigValue("Fl33t-account!", secret=True)
    settings["passwords.pfx"] = auto.ConfigValue(PFX_PASSWORD, secret=True)
    project.stack.set_all_config(settings, path=True)

    total = HOSTS * PER_HOST
    started = time.monotonic()
    assert project.up() == {"create": total}
    took = time.monotonic() - started
    with capsys.disabled():
        print(f"\nfleet: {HOSTS} hosts, {total} resources, one `pulumi up`: {took:.1f} s")
    assert project.preview() == {"same": total}
    for endpoint in fleet.values():
        host = host_client(endpoint)
        assert host.call_one("user.get", name="fleet-client")["exists"]
        bindings = [
            b
            for site in host.call_one("site.list")["sites"]
            if site["name"] == "shop"
            for b in site["bindings"]
            if b["protocol"] == "https"
        ]
        assert [b["binding_information"] for b in bindings] == ["*:443:"]

    outputs = project.outputs()
    assert sorted(outputs["sites"]) == sorted(fleet)
    web01 = outputs["sites"]["web01"]
    assert web01["accounts"] == ["fleet-client"]
    assert web01["host"] == fleet["web01"].winrm_https_url.removesuffix("/wsman")

    # Another stack of the same backend reads what it needs from the fleet's outputs.
    clients = PulumiProject(
        write_project(tmp_path / "clients", "iis-fleet-clients", CLIENTS),
        pulumi_env,
    )
    clients.init_stack("test")
    clients.config_set("fleet_stack", "organization/iis-clientcert-fleet/test")
    clients.config_set("hosts", "web01,web08")
    clients.up()
    read = clients.outputs()
    assert read["clients"]["web08"] == {
        "url": outputs["sites"]["web08"]["url"],
        "pin_server_thumbprint": outputs["sites"]["web08"]["server_thumbprint"],
        "trust": outputs["sites"]["web08"]["root_thumbprints"],
        "logs_on_as": ["fleet-client"],
    }
    assert read["web01_endpoint"] == web01["host"]
    # A host the fleet does not have: one clear line, naming the output path.
    clients.config_set("hosts", "web99")
    with pytest.raises(auto.errors.CommandError) as err:
        clients.preview()
    # (Whichever of the two reads fails first is reported.)
    assert re.search(r"(sites|hosts)\.web99: is not among the stack's outputs", str(err.value))
    assert "Traceback" not in str(err.value)
    clients.destroy()

    assert project.destroy() == {"delete": total}
    for name, endpoint in fleet.items():
        assert host_snapshot(endpoint) == before[name], f"destroy must leave {name} as it was"
