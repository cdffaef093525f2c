"""The Automation API example (examples/automation/deploy.py) run as a user runs it: a
Python program that embeds the stack (inline program, local file backend) and drives the
real engine against two simulated hosts: preview, up (preview and up in one process: the
program runs twice there), up again with no change, destroy restoring the hosts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert.host import contract, winrm_transport
from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.pki import make_ca, make_leaf, make_server
from iis_clientcert_simulator.testing import running_simulator
from tests.support.simulator import host_client, host_snapshot

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "examples" / "automation" / "deploy.py"
PFX_PASSWORD = "pfx-automation"
# Per host: host component, CA, account, server certificate; site component, binding,
# sslFlags, anonymous access, mapping.
PER_HOST = 9


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[dict[str, Endpoint]]:
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(running_simulator(tmp_path / name))
            for name in ("web01", "web02")
        }
        stack.callback(winrm_transport.close_pool)


def _inventory(folder: Path, hosts: dict[str, Endpoint]) -> Path:
    pki = folder / "pki"
    pki.mkdir(parents=True)
    ca = make_ca("Automation Client Root")
    (pki / "ca.pem").write_bytes(ca.cert_pem())
    (pki / "client.pem").write_bytes(make_leaf(ca, "app").cert_pem())
    server = make_server(ca, "localhost", ip_addresses=("127.0.0.1",))
    (pki / "server.pfx").write_bytes(server.pfx(PFX_PASSWORD.encode()))
    inventory = {
        "site": "shop",
        "pki_dir": "pki",
        "hosts": {
            name: {
                "endpoint": e.winrm_https_url,
                "username": e.username,
                "ca_bundle": e.ca_file,
                "transport": "basic",
            }
            for name, e in hosts.items()
        },
    }
    path = folder / "inventory.json"
    path.write_text(json.dumps(inventory))
    return path


def _deploy(
    inventory: Path, action: str, env: dict[str, str], state: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEPLOY), str(inventory), action, "--state", str(state)],
        cwd=inventory.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _json_lines(stdout: str) -> list[dict[str, Any]]:
    """The JSON objects the tool printed (one per line, or indented at the end)."""
    found = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"changes"')]
    start = stdout.rfind('\n{\n  "sites"')
    if start >= 0:
        found.append(json.loads(stdout[start:]))
    return found


def test_the_automation_example_deploys_and_destroys(
    hosts: dict[str, Endpoint], pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    before = {name: host_snapshot(e) for name, e in hosts.items()}
    inventory = _inventory(tmp_path / "tool", hosts)
    state = tmp_path / "tool-state"
    env = {
        **pulumi_env,
        "IIS_ACCOUNT_PASSWORD": "App-cl1ent-pw!",
        "IIS_PFX_PASSWORD": PFX_PASSWORD,
        **{f"IIS_PASSWORD_{n.upper()}": e.password for n, e in hosts.items()},
    }
    env.pop("PULUMI_BACKEND_URL")  # the tool names its own backend (--state)
    total = len(hosts) * PER_HOST + 1  # and the stack

    preview = _deploy(inventory, "preview", env, state)
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert _json_lines(preview.stdout) == [{"changes": {"create": total}}]

    up = _deploy(inventory, "up", env, state)
    assert up.returncode == 0, up.stdout + up.stderr
    changes, outputs = _json_lines(up.stdout)
    assert changes == {"changes": {"create": total}}
    assert sorted(outputs["sites"]) == ["web01", "web02"]
    for name, endpoint in hosts.items():
        site = outputs["sites"][name]
        assert site["host"] == endpoint.winrm_https_url.removesuffix("/wsman")
        assert site["accounts"] == ["app-client"]
        host = host_client(endpoint)
        mapping = host.call_one("config.get", section=contract.SECTION_MAPPING, location="shop")
        assert mapping["present"]
        assert host.call_one("user.get", name="app-client")["exists"]
    assert "App-cl1ent-pw!" not in up.stdout + up.stderr

    again = _deploy(inventory, "up", env, state)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _json_lines(again.stdout)[0] == {"changes": {"same": total}}

    down = _deploy(inventory, "destroy", env, state)
    assert down.returncode == 0, down.stdout + down.stderr
    for name, endpoint in hosts.items():
        assert host_snapshot(endpoint) == before[name], f"destroy must leave {name} as it was"
