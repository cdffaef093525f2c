"""Targets of the agent contract suite: the simulator always, a real Windows host when
IIS_TEST_ENDPOINT (+ IIS_TEST_USERNAME, IIS_TEST_PASSWORD, IIS_TEST_TRANSPORT,
IIS_TEST_CA_BUNDLE, optional IIS_TEST_SITE, and IIS_TEST_SHELL=pwsh to run the agent under
PowerShell 7) is set. docs/real-host.md says what a run there settles.

The Windows target changes the host it is given (test users, a test certificate, an https
binding on port 44300+, config at the test site): point it at a disposable host.

Every result an op returns through ``Target.call`` / ``Target.one`` is checked against the
type the contract declares for it (``OpSpec.result``), on both targets.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert.host import contract, shapes, winrm_transport
from iis_clientcert.host.client import HostClient
from iis_clientcert.host.connection import Connection
from iis_clientcert.host.contract import Op
from iis_clientcert_simulator.serve import Endpoint
from iis_clientcert_simulator.testing import running_simulator


@dataclass
class Target:
    """One host the contract suite runs against."""

    name: str
    client: HostClient
    site: str
    folder: str
    # The simulator's state folder (audit log, faults); None on a real host.
    state_dir: Path | None
    endpoint: Endpoint | None = None

    @property
    def simulated(self) -> bool:
        return self.state_dir is not None

    def unique(self, prefix: str) -> str:
        """A fresh short name (local account names are limited to 20 characters)."""
        return f"{prefix}{uuid.uuid4().hex[:8]}"

    def call(self, *ops: Op[Any]) -> list[Any]:
        results = self.client.call(list(ops))
        for op, result in zip(ops, results, strict=True):
            assert_shape(op.name, result)
        return results

    def one(self, op: str, **args: Any) -> Any:
        result = self.client.call_one(op, **args)
        assert_shape(op, result)
        return result


def assert_shape(op: str, result: Any) -> None:
    """The result of ``op`` is what the contract declares (OpSpec.result)."""
    assert shapes.problems(result, contract.OPS[op].result, op) == []


def _windows_connection() -> Connection | None:
    endpoint = os.environ.get("IIS_TEST_ENDPOINT")
    if not endpoint:
        return None
    ca_path = os.environ.get("IIS_TEST_CA_BUNDLE")
    return Connection.from_input(
        {
            "endpoint": endpoint,
            "transport": os.environ.get("IIS_TEST_TRANSPORT", "ntlm"),
            "username": os.environ.get("IIS_TEST_USERNAME"),
            "password": os.environ.get("IIS_TEST_PASSWORD"),
            "ca_bundle": Path(ca_path).read_text() if ca_path else None,
            "shell": os.environ.get("IIS_TEST_SHELL"),
        }
    )


def simulator_connection(endpoint: Endpoint, transport: str = "basic") -> Connection:
    value: dict[str, Any] = {"endpoint": endpoint.winrm_https_url, "transport": transport}
    if transport == "basic":
        value.update(username=endpoint.username, password=endpoint.password)
    elif transport == "certificate":
        value.update(
            client_cert_pem=Path(endpoint.client_cert).read_text(),
            client_key_pem=Path(endpoint.client_key).read_text(),
        )
    elif transport == "ntlm":
        value.update(
            endpoint=endpoint.winrm_http_url,
            username=endpoint.username,
            password=endpoint.password,
        )
    if value["endpoint"].startswith("https"):
        value["ca_bundle"] = Path(endpoint.ca_bundle).read_text()
    return Connection.from_input(value)


@pytest.fixture(scope="module", params=["simulator", "windows"])
def agent_host(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    if request.param == "windows":
        conn = _windows_connection()
        if conn is None:
            pytest.skip("no Windows host configured (IIS_TEST_ENDPOINT)")
        client = HostClient(conn)
        site = os.environ.get("IIS_TEST_SITE", "Default Web Site")
        sites = {s["name"]: s for s in client.call_one("site.list")["sites"]}
        if site not in sites:
            pytest.skip(f"IIS_TEST_SITE {site!r} is not a site of {conn.host}")
        yield Target("windows", client, site, sites[site]["physical_path"], None)
        winrm_transport.close_pool()
        return
    state = tmp_path_factory.mktemp("contract-sim")
    with running_simulator(state) as endpoint:
        client = HostClient(simulator_connection(endpoint))
        sites = {s["name"]: s for s in client.call_one("site.list")["sites"]}
        yield Target("simulator", client, "shop", sites["shop"]["physical_path"], state, endpoint)
    winrm_transport.close_pool()
