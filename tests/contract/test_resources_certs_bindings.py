"""TrustedRoot, ServerCertificate and HttpsBinding against a running simulator.

Each provider is driven directly (check -> create -> read -> update -> delete, no Pulumi
engine) and the host state is asserted through the agent's own reads (cert.list,
site.list). The audit log gives the number of agent calls, so the budget is checked too.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import iis_clientcert.host.client as host_module
from iis_clientcert.errors import ValidationError
from iis_clientcert.host import contract
from iis_clientcert.host.client import HostClient
from iis_clientcert.host.connection import Connection
from iis_clientcert.host.contract import Op
from iis_clientcert.providers import https_binding as hb
from iis_clientcert.providers import server_certificate as sc
from iis_clientcert.providers import trusted_root as tr
from iis_clientcert_simulator import pki
from iis_clientcert_simulator.testing import running_simulator

PFX_PASSWORD = "Contract-Pfx-Pa55!"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("sim-certs-bindings")
    with pytest.MonkeyPatch.context() as patch:
        try:
            host_module.agent_script()
        except FileNotFoundError:
            # agent.ps1 not written yet: the simulator then accepts any agent script.
            patch.setattr(host_module, "agent_script", lambda: "# agent.ps1 placeholder\n")
        with running_simulator(state) as endpoint:
            yield {"connection": endpoint.connection_input(), "state": Path(endpoint.state_dir)}


def _authority(sim: dict[str, Any]) -> str:
    """The host part of every resource id: scheme, host and port of the WinRM endpoint."""
    return Connection.from_input(sim["connection"]).authority


def _call(sim: dict[str, Any], *ops: Op[Any]) -> list[Any]:
    return HostClient(Connection.from_input(sim["connection"])).call(list(ops))


def _thumbprints(sim: dict[str, Any], store: str) -> dict[str, dict[str, Any]]:
    listed = _call(sim, contract.make_op("cert.list", store=store))[0]["certificates"]
    return {c["thumbprint"].upper(): c for c in listed}


def _https_bindings(sim: dict[str, Any], site: str) -> dict[str, dict[str, Any]]:
    sites = _call(sim, contract.make_op("site.list"))[0]["sites"]
    found = next(s for s in sites if s["name"] == site)
    return {b["binding_information"]: b for b in found["bindings"] if b["protocol"] == "https"}


def _audit_lines(sim: dict[str, Any]) -> int:
    path = sim["state"] / "audit.log"
    return len(path.read_text("utf-8").splitlines()) if path.exists() else 0


class _Calls:
    """Counts the agent calls (audit lines) a block costs."""

    def __init__(self, sim: dict[str, Any]) -> None:
        self.sim = sim
        self.count = 0

    def __enter__(self) -> _Calls:
        self.start = _audit_lines(self.sim)
        return self

    def __exit__(self, *exc: object) -> None:
        self.count = _audit_lines(self.sim) - self.start


def _checked(provider: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    result = provider.check({}, inputs)
    assert result.failures == [], [f.reason for f in result.failures]
    return dict(result.inputs)


# ======================================================================== TrustedRoot


def test_trusted_root_lifecycle(sim: dict[str, Any]) -> None:
    root = pki.make_ca("Contract Root CA")
    issuing = pki.make_intermediate(root, "Contract Issuing CA")
    provider = tr.TrustedRootProvider()
    inputs = _checked(
        provider, {"connection": sim["connection"], "certificate": issuing.cert_pem().decode()}
    )
    assert inputs["certificate"] == issuing.blob

    with _Calls(sim) as calls:
        created: Any = provider.create(inputs)
    assert calls.count == 2  # one read, one write-and-verify
    assert created.id == f"{_authority(sim)}/CA/{issuing.thumbprint}"
    outs = created.outs
    assert outs["resolved_store"] == "CA" and outs["adopted"] is False
    assert issuing.thumbprint in _thumbprints(sim, "CA")
    assert issuing.thumbprint not in _thumbprints(sim, "Root")

    # Converged: an update with the same inputs reads once and writes nothing.
    with _Calls(sim) as calls:
        updated: Any = provider.update(created.id, outs, inputs)
    assert calls.count == 1
    assert updated.outs["adopted"] is False

    read: Any = provider.read(created.id, outs)
    assert read.id == created.id
    assert read.inputs is not None and read.inputs["certificate"] == issuing.blob

    provider.delete(created.id, outs)
    assert issuing.thumbprint not in _thumbprints(sim, "CA")
    provider.delete(created.id, outs)  # already gone: nothing to do, no error
    assert provider.read(created.id, outs).id is None


def test_trusted_root_adopts_what_was_there(sim: dict[str, Any]) -> None:
    root = pki.make_ca("Pre-installed Root CA")
    _call(sim, contract.make_op("cert.import", store="Root", der_b64=root.blob))
    provider = tr.TrustedRootProvider()
    inputs = _checked(provider, {"connection": sim["connection"], "certificate": root.cert_pem()})
    with _Calls(sim) as calls:
        created: Any = provider.create(inputs)
    assert calls.count == 1  # nothing to write
    assert created.outs["adopted"] is True and created.outs["resolved_store"] == "Root"
    provider.delete(created.id, created.outs)
    assert root.thumbprint in _thumbprints(sim, "Root")  # left in place


def test_trusted_root_refresh_sees_a_removed_certificate(sim: dict[str, Any]) -> None:
    root = pki.make_ca("Drifting Root CA")
    provider = tr.TrustedRootProvider()
    inputs = _checked(provider, {"connection": sim["connection"], "certificate": root.cert_pem()})
    created: Any = provider.create(inputs)
    _call(sim, contract.make_op("cert.remove", store="Root", thumbprint=root.thumbprint))
    assert provider.read(created.id, created.outs).id is None
    # up after the drift puts it back.
    provider.update(created.id, created.outs, inputs)
    assert root.thumbprint in _thumbprints(sim, "Root")
    provider.delete(created.id, created.outs)
    assert root.thumbprint not in _thumbprints(sim, "Root")


def test_trusted_root_refuses_an_intermediate_for_root(sim: dict[str, Any]) -> None:
    root = pki.make_ca("Some Root")
    issuing = pki.make_intermediate(root, "Some Issuing CA")
    result = tr.TrustedRootProvider().check(
        {},
        {
            "connection": sim["connection"],
            "certificate": issuing.cert_pem().decode(),
            "store": "Root",
        },
    )
    assert [f.property for f in result.failures] == ["store"]
    assert "KB 2802568" in result.failures[0].reason


# ====================================================== ServerCertificate + HttpsBinding


def _server_inputs(sim: dict[str, Any], issued: pki.Issued) -> dict[str, Any]:
    pfx = base64.b64encode(issued.pfx(PFX_PASSWORD.encode())).decode()
    return _checked(
        sc.ServerCertificateProvider(),
        {"connection": sim["connection"], "pfx": pfx, "password": PFX_PASSWORD},
    )


def test_server_certificate_and_binding_lifecycle(sim: dict[str, Any]) -> None:
    ca = pki.make_ca("Contract Server CA")
    server = pki.make_server(ca, "app.example.test")
    cert_provider = sc.ServerCertificateProvider()
    cert_inputs = _server_inputs(sim, server)

    with _Calls(sim) as calls:
        cert: Any = cert_provider.create(cert_inputs)
    assert calls.count == 2
    assert cert.id == f"{_authority(sim)}/My/{server.thumbprint}"
    assert cert.outs["dns_names"] == ["app.example.test"]
    assert cert.outs["adopted"] is False
    listed = _thumbprints(sim, "My")[server.thumbprint]
    assert listed["has_private_key"] is True

    binding_provider = hb.HttpsBindingProvider()
    binding_inputs = _checked(
        binding_provider,
        {
            "connection": sim["connection"],
            "site": "Default Web Site",
            "port": 8443,
            "certificate_thumbprint": "\u200e" + server.thumbprint.lower(),
        },
    )
    with _Calls(sim) as calls:
        binding: Any = binding_provider.create(binding_inputs)
    assert calls.count == 2
    assert binding.id == f"{_authority(sim)}/Default Web Site/https/*:8443:"
    assert binding.outs["url"] == "https://127.0.0.1:8443/"
    assert binding.outs["adopted"] is False
    live = _https_bindings(sim, "Default Web Site")["*:8443:"]
    assert live["certificate_hash"].upper() == server.thumbprint
    assert live["client_cert_negotiation"] is True
    assert live["ssl_flags"] & 1 == 0

    # Update: negotiation turned off (a warning at check), written in one more call.
    changed_inputs = _checked(
        binding_provider, {**binding_inputs, "client_cert_negotiation": False}
    )
    with _Calls(sim) as calls:
        binding_provider.update(binding.id, binding.outs, changed_inputs)
    assert calls.count == 2
    assert _https_bindings(sim, "Default Web Site")["*:8443:"]["client_cert_negotiation"] is False
    read: Any = binding_provider.read(binding.id, binding.outs)
    assert read.inputs is not None and read.inputs["client_cert_negotiation"] is False

    # The certificate is in use: delete keeps it.
    cert_provider.delete(cert.id, cert.outs)
    assert server.thumbprint in _thumbprints(sim, "My")

    binding_provider.delete(binding.id, binding.outs)
    assert "*:8443:" not in _https_bindings(sim, "Default Web Site")
    binding_provider.delete(binding.id, binding.outs)  # idempotent

    cert_provider.delete(cert.id, cert.outs)
    assert server.thumbprint not in _thumbprints(sim, "My")


def test_https_binding_adopts_and_puts_back(sim: dict[str, Any]) -> None:
    before = _https_bindings(sim, "shop")["*:443:"]
    ca = pki.make_ca("Adoption CA")
    server = pki.make_server(ca, "shop.example.test")
    cert_provider = sc.ServerCertificateProvider()
    cert: Any = cert_provider.create(_server_inputs(sim, server))

    provider = hb.HttpsBindingProvider()
    inputs = _checked(
        provider,
        {
            "connection": sim["connection"],
            "site": "shop",
            "certificate_thumbprint": server.thumbprint,
        },
    )
    created: Any = provider.create(inputs)
    assert created.outs["adopted"] is True
    assert created.outs["prior_binding"]["certificate_hash"] == before["certificate_hash"].upper()
    now = _https_bindings(sim, "shop")["*:443:"]
    assert now["certificate_hash"].upper() == server.thumbprint
    assert now["client_cert_negotiation"] is True

    provider.delete(created.id, created.outs)
    after = _https_bindings(sim, "shop")["*:443:"]
    assert after["certificate_hash"].upper() == before["certificate_hash"].upper()
    assert after["client_cert_negotiation"] == before["client_cert_negotiation"]
    assert after["ssl_flags"] == before["ssl_flags"]

    cert_provider.delete(cert.id, cert.outs)
    assert server.thumbprint not in _thumbprints(sim, "My")


@pytest.mark.parametrize(
    ("overrides", "prop", "expected"),
    [
        ({"site": "No Such Site"}, "site", "no such site"),
        ({"certificate_thumbprint": "AB" * 20}, "certificate_thumbprint", "ServerCertificate"),
        ({"site": "Default Web Site", "port": 443}, "port", "already belongs to site 'shop'"),
    ],
    ids=["site-missing", "certificate-missing", "binding-of-another-site"],
)
def test_https_binding_preflight_fails_before_writing(
    sim: dict[str, Any], overrides: dict[str, Any], prop: str, expected: str
) -> None:
    shop_cert = _https_bindings(sim, "shop")["*:443:"]["certificate_hash"]
    provider = hb.HttpsBindingProvider()
    inputs = _checked(
        provider,
        {
            "connection": sim["connection"],
            "site": "Default Web Site",
            "port": 9443,
            "certificate_thumbprint": shop_cert,
            **overrides,
        },
    )
    with _Calls(sim) as calls, pytest.raises(ValidationError) as caught:
        provider.create(inputs)
    assert calls.count == 1  # the read only
    assert caught.value.property == prop
    assert expected.lower() in str(caught.value).lower()


def test_no_secret_reaches_the_audit_log(sim: dict[str, Any]) -> None:
    text = (sim["state"] / "audit.log").read_text("utf-8")
    assert PFX_PASSWORD not in text
    for line in text.splitlines():
        assert "pfx_b64" not in json.dumps(json.loads(line).get("ops", []))
