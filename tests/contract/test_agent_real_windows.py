"""The agent contract on what a real Windows host does differently (issue 10), against
the simulator always and a real Windows host when one is configured (see conftest.py)."""

from __future__ import annotations

import base64

import pytest

from iis_clientcert_simulator import pki
from tests.support.contract import Target

PFX_PASSWORD = "Contract-Rw-Pfx-7!"
DISABLE_TLS13 = 32


@pytest.fixture(scope="module")
def server_cert() -> pki.Issued:
    ca = pki.make_ca("Contract Real Windows CA", key_type="rsa")
    return pki.make_server(ca, "rw.contract.test", extra_dns=["rw2.contract.test"], key_type="rsa")


def _binding(target: Target, info: str) -> dict[str, object]:
    sites = {s["name"]: s for s in target.one("site.list")["sites"]}
    return next(b for b in sites[target.site]["bindings"] if b["binding_information"] == info)


def test_binding_changes_keep_disable_tls13_on_the_http_sys_record(
    agent_host: Target, server_cert: pki.Issued
) -> None:
    pfx = base64.b64encode(server_cert.pfx(PFX_PASSWORD.encode(), legacy=True)).decode()
    thumb = agent_host.one("cert.import", store="My", pfx_b64=pfx, pfx_password=PFX_PASSWORD)[
        "thumbprint"
    ]
    info = "*:44303:rw.contract.test"
    args = {
        "site": agent_host.site,
        "binding_information": info,
        "ssl_flags": 1 | DISABLE_TLS13,
        "certificate_hash": thumb,
        "certificate_store": "My",
        "client_cert_negotiation": False,
    }
    try:
        agent_host.one("binding.set", **args)
        assert _binding(agent_host, info)["sslcert"]["disabletls13"] is True  # type: ignore[index]
        # netsh update replaces the whole record: the agent must pass DisableTLS13 again.
        assert agent_host.one("binding.set", **{**args, "client_cert_negotiation": True}) == {
            "changed": True,
            "created": False,
        }
        binding = _binding(agent_host, info)
        assert binding["client_cert_negotiation"] is True
        assert binding["sslcert"]["disabletls13"] is True  # type: ignore[index]
        assert binding["ssl_flags"] == 1 | DISABLE_TLS13
    finally:
        agent_host.one("binding.remove", site=agent_host.site, binding_information=info)
        agent_host.one("cert.remove", store="My", thumbprint=thumb)
