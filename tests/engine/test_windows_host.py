"""One engine test against a real Windows host (``make test-windows``; docs/real-host.md).

Runs only when IIS_TEST_ENDPOINT and its credentials are set (tests/support/contract.py
reads them). It drives the real pulumi CLI against the host with the resources that touch
only a site's configuration and a throwaway account: preview writes nothing, up applies,
a second up changes nothing, refresh finds no drift, destroy gives back what it found. It
proves the agent, the transport and the providers together on Windows, where the contract
suite proves each op alone.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert.host import contract
from iis_clientcert.host.client import HostClient
from tests.support.contract import windows_connection
from tests.support.spec import SpecProject

pytestmark = [pytest.mark.engine, pytest.mark.windows]

WINRM_SECRET = "winrm_secret"


def _windows() -> tuple[HostClient, dict[str, Any], str]:
    conn = windows_connection()
    if conn is None:
        pytest.skip("no Windows host configured (IIS_TEST_ENDPOINT)")
    client = HostClient(conn)
    site = os.environ.get("IIS_TEST_SITE", "Default Web Site")
    sites = {s["name"] for s in client.call_one("site.list")["sites"]}
    if site not in sites:
        pytest.fail(f"IIS_TEST_SITE {site!r} is not a site of {conn.host}: {sorted(sites)}")
    return client, conn.to_input(), site


def _site_config(client: HostClient, site: str) -> list[Any]:
    return [
        client.call_one("config.get", section=section, location=site)
        for section in (contract.SECTION_SSL, contract.SECTION_ANONYMOUS)
    ]


def test_windows_host_three_runs_refresh_and_destroy(
    pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    client, connection, site = _windows()
    secret_field = "client_key_pem" if connection.get("transport") == "certificate" else "password"
    spec = SpecProject(tmp_path / "project", pulumi_env)
    spec.project.config_set(WINRM_SECRET, str(connection[secret_field]), secret=True)
    spec.use_connections({"main": {**connection, secret_field: {"$secret": WINRM_SECRET}}})
    user = f"iiscc{uuid.uuid4().hex[:8]}"
    before = _site_config(client, site)
    assert client.call_one("user.get", name=user)["exists"] is False
    spec.set_resources(
        {
            "ssl": {"kind": "SslSettings", "inputs": {"site": site}},
            "anonymous": {"kind": "AnonymousAuthentication", "inputs": {"site": site}},
            "user": {
                "kind": "LocalUser",
                "inputs": {"name": user, "password": {"$secret": "user_password"}},
            },
        },
        user_password=f"Wn-{uuid.uuid4().hex[:12]}-7!",
    )
    project = spec.project
    try:
        assert project.preview() == {"create": 3}
        assert _site_config(client, site) == before, "a preview must not write"
        assert project.up() == {"create": 3}
        assert project.up() == {"same": 3}
        assert project.refresh() == {"same": 3}
        assert client.call_one("user.get", name=user)["exists"] is True
    finally:
        project.destroy()
    assert _site_config(client, site) == before, "destroy must give back what it found"
    assert client.call_one("user.get", name=user)["exists"] is False
