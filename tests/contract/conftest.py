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
from collections.abc import Iterator

import pytest

from iis_clientcert.host import winrm_transport
from iis_clientcert.host.client import HostClient
from iis_clientcert_simulator.testing import running_simulator
from tests.support.contract import Target, windows_connection
from tests.support.simulator import host_client


@pytest.fixture(scope="module", params=["simulator", "windows"])
def agent_host(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    if request.param == "windows":
        conn = windows_connection()
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
        client = host_client(endpoint)
        sites = {s["name"]: s for s in client.call_one("site.list")["sites"]}
        yield Target("simulator", client, "shop", sites["shop"]["physical_path"], state, endpoint)
    winrm_transport.close_pool()
