"""The program's own errors through the real engine, and upgrading an existing stack.

* A bad value in the stack's configuration: one line naming the key and the fix, no
  traceback.
* Two sites of their own declaring one CA for one host: refused at preview, naming both.
* A check of a value given as an Output fails when it resolves: one line naming the site
  and the property, no traceback, no resource of that site created.
* A stack made when each site owned its CAs, accounts and PFX keeps every resource when the
  program gives them to a ClientCertHost (aliases): nothing is deleted or replaced.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.pki import make_ca, make_leaf, make_server
from tests.support.engine import PROGRAMS, PulumiProject, write_project
from tests.support.simulator import host_snapshot

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
PFX_PASSWORD = "pfx-upgrade"

MAIN = REPO / "__main__.py"
# The program as it was before ClientCertHost: one ClientCertSite per configured site,
# each with its own CAs, accounts and PFX.
OLD_MAIN = PROGRAMS / "site_per_config.py"
# ClientCertSites on one host, as sites.json beside it lists them.
SITES_PROGRAM = PROGRAMS / "sites.py"


def _root_program(folder: Path, main: Path = MAIN) -> Path:
    """The repository's program (its Pulumi.yaml settings, ``main``, stack_config.py) in
    ``folder``, with a stacks/ folder of its own."""
    write_project(folder, "iis-clientcert", main, stack_config_dir="stacks")
    (folder / "stacks").mkdir(exist_ok=True)
    shutil.copy(REPO / "stack_config.py", folder / "stack_config.py")
    return folder


def _stack_config(project: PulumiProject, hosts: dict[str, object], sites: list[object]) -> None:
    """Objects and lists as a stack configuration holds them (``pulumi config set --path``
    would write the same)."""
    project.stack.set_all_config(
        {
            "iis-clientcert:hosts": auto.ConfigValue(json.dumps(hosts)),
            "iis-clientcert:sites": auto.ConfigValue(json.dumps(sites)),
        }
    )


def _diagnostics(text: str) -> list[str]:
    """The lines of the CLI's Diagnostics section."""
    _, _, tail = text.partition("Diagnostics:")
    return [line.strip() for line in tail.split("Resources:")[0].splitlines() if line.strip()]


def test_a_bad_configuration_value_is_one_line_naming_the_key_and_the_fix(
    pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    folder = _root_program(tmp_path / "program")
    (folder / "stacks" / "x.pfx").write_bytes(b"0")
    project = PulumiProject(folder, pulumi_env)
    project.init_stack("test")
    _stack_config(
        project,
        {"web01": {"endpoint": "https://web01:5986/wsman", "username": "WEB01\\deployer"}},
        [{"name": "shop", "host": "web01", "https": {"pfx": "x.pfx", "port": "443x"}}],
    )
    project.config_set(
        "iis-clientcert:passwords", '{"web01": "W1nrm-pw!", "shop/pfx": "x"}', secret=True
    )
    proc = project.run("preview", "--stack", "test", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in text
    named = [line for line in _diagnostics(text) if "sites[0].https.port" in line]
    assert named == [
        "error: config iis-clientcert:sites[0].https.port: must be a port number, "
        "not '443x'. Use 1 to 65535."
    ], text
    assert "W1nrm-pw!" not in text


# The CA every site of the first case declares (a plain config value).
CA = {"$config": "ca"}


@pytest.mark.parametrize(
    ("sites", "words", "refused"),
    [
        (
            [
                {"name": "shop", "site": "shop", "trusted_roots": [CA]},
                {"name": "intranet", "site": "Default Web Site", "trusted_roots": [CA]},
            ],
            "error: ClientCertSite 'intranet': trusted_roots[0] = 'CN=Errors Root (",
            "intranet",
        ),
        (
            [{"name": "shop", "site": "shop", "trusted_roots": [{"$secret": "not_a_cert"}]}],
            "error: ClientCertSite 'shop': trusted_roots[0]: cannot be read",
            "shop",
        ),
    ],
    ids=["one-ca-two-owners", "output-that-is-no-certificate"],
)
def test_component_errors_are_one_line_naming_site_and_property(
    sites: list[dict[str, Any]],
    words: str,
    refused: str,
    pulumi_env: dict[str, str],
    tmp_path: Path,
) -> None:
    folder = write_project(tmp_path / "p", "errors", SITES_PROGRAM)
    (folder / "sites.json").write_text(json.dumps(sites))
    project = PulumiProject(folder, pulumi_env)
    project.init_stack("test")
    project.config_set("endpoint", "https://web01:5986/wsman")
    project.config_set("password", "W1nrm-pw!", secret=True)
    project.config_set("ca", make_ca("Errors Root").cert_pem().decode())
    project.config_set("not_a_cert", "-----BEGIN CERTIFICATE-----\nAAAA\n", secret=True)
    proc = project.run("preview", "--stack", "test", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in text and "While processing" not in text, text
    named = [line for line in _diagnostics(text) if line.startswith("error: ClientCertSite")]
    assert len(named) == 1 and named[0].startswith(words), text
    if refused == "intranet":
        assert "is also declared by ClientCertSite 'shop': trusted_roots[0]" in named[0]
        assert "Declare it once on a ClientCertHost" in named[0]
    # Nothing of the refused site was planned: its resources wait for its checks.
    assert f"dynamic:Resource {refused}-" not in text, text


def test_an_existing_stack_keeps_its_resources_when_a_host_takes_them_over(
    simulator: Endpoint, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    before = host_snapshot(simulator)
    folder = _root_program(tmp_path / "program", OLD_MAIN)
    stacks = folder / "stacks"
    ca = make_ca("Upgrade Root")
    (stacks / "ca.pem").write_bytes(ca.cert_pem())
    (stacks / "alice.pem").write_bytes(make_leaf(ca, "alice").cert_pem())
    server = make_server(ca, "localhost", ip_addresses=("127.0.0.1",))
    (stacks / "shop.pfx").write_bytes(server.pfx(PFX_PASSWORD.encode()))
    project = PulumiProject(folder, pulumi_env)
    project.init_stack("test")
    _stack_config(
        project,
        {"sim": {"simulator": simulator.state_dir}},
        [
            {
                "name": "shop",
                "host": "sim",
                "https": {"pfx": "shop.pfx"},
                "trusted_roots": ["ca.pem"],
                "users": [{"name": "shop-alice"}],
                "one_to_one": [{"certificate": "alice.pem", "user": "shop-alice"}],
            }
        ],
    )
    project.config_set(
        "iis-clientcert:passwords",
        json.dumps({"shop-alice": "Al1ce-upgrade!", "shop/pfx": PFX_PASSWORD}),
        secret=True,
    )
    # The site component and its CA, account, server certificate, binding, sslFlags,
    # anonymous access and mappings.
    assert project.up() == {"create": 8}
    ids = {r["urn"].rsplit("::", 1)[-1]: r.get("id") for r in project.resources()}

    shutil.copy(MAIN, folder / "__main__.py")  # today's program
    # Only the ClientCertHost component is new; the CA, account and server certificate move
    # under it by their aliases: nothing is created, deleted or replaced on the host.
    assert project.preview() == {"create": 1, "same": 8}
    assert project.up() == {"create": 1, "same": 8}
    moved = {r["urn"].rsplit("::", 1)[-1]: r for r in project.resources()}
    for old, new in (
        ("sim-shop-root-0", next(n for n in moved if n.startswith("sim-root-"))),
        ("sim-shop-user-shop-alice", "sim-user-shop-alice"),
        ("sim-shop-server-cert", "sim-cert-shop"),
    ):
        assert new in moved and old not in moved
        assert "ClientCertHost" in moved[new]["urn"]
        assert moved[new]["id"] == ids[old], "the object on the host is the same one"
    assert project.up() == {"same": 9}

    assert project.destroy() == {"delete": 9}
    assert host_snapshot(simulator) == before
