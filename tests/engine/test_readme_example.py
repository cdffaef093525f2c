"""The README's embedding example, run as it stands, in a scratch program that has its own
``components/`` and ``providers/`` folders beside ``__main__.py`` (a common layout): our
code lives under one import root, so the program's folders shadow nothing of ours."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from iis_clientcert.tools.probe import probe
from iis_clientcert_simulator.endpoint import Endpoint, read_endpoint
from iis_clientcert_simulator.pki import make_ca, make_leaf, make_server
from iis_clientcert_simulator.testing import running_simulator
from tests.support.engine import PulumiProject, write_project
from tests.support.simulator import host_snapshot

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Using ClientCertSite in your own program"


def readme_example() -> str:
    """The first python block under the README's embedding section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"README: no python block under {SECTION!r}"
    return match.group(1)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Endpoint]:
    with running_simulator(tmp_path / "host", subprocess_mode=True) as endpoint:
        yield endpoint


def test_readme_example_runs_unchanged_beside_the_programs_own_folders(
    simulator: Endpoint, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    # The README's block, as it stands, is the program file.
    program = tmp_path / "readme_example.py"
    program.write_text(readme_example())
    project_dir = write_project(tmp_path / "scratch", "scratch", program)
    # The program's own packages, named like ours: importing ours through them would fail.
    for own in ("components", "providers", "simulator"):
        (project_dir / own).mkdir()
        (project_dir / own / "__init__.py").write_text(
            f'raise ImportError("the program\'s own {own} package was imported")\n'
        )
    certs = project_dir / "certs"
    certs.mkdir()
    (certs / "web01-winrm-ca.pem").write_bytes(Path(simulator.ca_file).read_bytes())
    partner_ca = make_ca("Partner Root CA")
    (certs / "partner-root-ca.pem").write_bytes(partner_ca.cert_pem())
    server = make_server(partner_ca, "localhost", ip_addresses=("127.0.0.1",))
    (certs / "shop.pfx").write_bytes(server.pfx(b"readme-pfx"))
    partner = make_leaf(partner_ca, "partner")
    (certs / "partner.pem").write_bytes(partner.cert_pem())

    before = host_snapshot(simulator)
    project = PulumiProject(project_dir, pulumi_env)
    project.init_stack("test")
    project.config_set("endpoint", simulator.winrm_https_url)
    project.config_set("transport", "basic")
    project.config_set("username", simulator.username)
    project.config_set("web01_password", simulator.password, secret=True)
    project.config_set("pfx", "readme-pfx", secret=True)
    project.config_set("partner", "Partn3r-readme!", secret=True)

    created = project.up()
    assert created.get("create", 0) > 0 and set(created) == {"create"}, created
    assert project.outputs()["url"].startswith("https://")

    # The simulator serves the site's https binding on a loopback port of its own.
    url = read_endpoint(simulator.state_dir).sites["shop"][0]
    # The mapped partner certificate gets in as the declared account; no certificate: 403.7.
    answer = probe(
        url,
        client_cert_pem=partner.cert_pem(),
        client_key_pem=partner.key_pem(),
        ca_bundle=str(certs / "partner-root-ca.pem"),
    )
    assert answer.code == "200.0", answer
    assert (answer.user or "").lower().endswith("\\shop-partner")
    assert probe(url, ca_bundle=str(certs / "partner-root-ca.pem")).code == "403.7"

    assert project.up() == {"same": sum(created.values())}
    project.destroy()
    assert host_snapshot(simulator) == before
