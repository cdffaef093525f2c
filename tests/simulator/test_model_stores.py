"""Certificate stores and https bindings (site binding + HTTP.sys) of the simulated host."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert.host.contract import SSLCERT_DEFAULTS, make_op
from iis_clientcert_simulator import pki
from iis_clientcert_simulator.testing import AgentRunner

PFX_PASSWORD = "Pfx-Canary-9!"


@pytest.fixture
def host(tmp_path: Path) -> AgentRunner:
    return AgentRunner(tmp_path / "host")


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca("Test Client CA")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_initial_stores(host: AgentRunner) -> None:
    roots = host.one("cert.list", store="Root")["certificates"]
    assert [c["subject"] for c in roots] == ["CN=SIMIIS01 Simulator Root CA"]
    mine = host.one("cert.list", store="My")["certificates"]
    assert len(mine) == 1 and mine[0]["has_private_key"] is True
    assert mine[0]["issuer"] == "CN=SIMIIS01 Simulator Root CA"
    key = host.state_dir / "certstore/LocalMachine/My" / f"{mine[0]['thumbprint']}.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert host.one("cert.list", store="CA")["certificates"] == []


def test_import_der_and_remove(host: AgentRunner, ca: pki.Issued) -> None:
    added = host.one("cert.import", store="Root", der_b64=b64(ca.cert_der()))
    assert added == {"thumbprint": ca.thumbprint, "added": True}
    assert host.one("cert.import", store="Root", der_b64=b64(ca.cert_der()))["added"] is False
    assert (
        host.state_dir / "certstore/LocalMachine/Root" / f"{ca.thumbprint}.cer"
    ).read_bytes() == ca.cert_der()
    listed = {c["thumbprint"]: c for c in host.one("cert.list", store="Root")["certificates"]}
    assert listed[ca.thumbprint]["der_b64"] == b64(ca.cert_der())
    assert listed[ca.thumbprint]["has_private_key"] is False
    assert host.one("cert.remove", store="Root", thumbprint=ca.thumbprint.lower()) == {
        "removed": True
    }
    assert host.one("cert.remove", store="Root", thumbprint=ca.thumbprint) == {"removed": False}


def test_windows_style_names(host: AgentRunner, ca: pki.Issued) -> None:
    leaf = pki.make_leaf(ca, "client one", subject_extra={"O": "Contoso", "C": "US", "S": "WA"})
    host.one("cert.import", store="CA", der_b64=b64(leaf.cert_der()))
    cert = host.one("cert.list", store="CA")["certificates"][0]
    assert cert["subject"] == "CN=client one, O=Contoso, S=WA, C=US"


def test_import_pfx_with_key(host: AgentRunner, ca: pki.Issued) -> None:
    server = pki.make_server(ca, "www.example.test")
    pfx = server.pfx(PFX_PASSWORD.encode())
    result = host.one("cert.import", store="My", pfx_b64=b64(pfx), pfx_password=PFX_PASSWORD)
    assert result == {"thumbprint": server.thumbprint, "added": True}
    key = host.state_dir / "certstore/LocalMachine/My" / f"{server.thumbprint}.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    listed = {c["thumbprint"]: c for c in host.one("cert.list", store="My")["certificates"]}
    assert listed[server.thumbprint]["has_private_key"] is True
    # The PFX password never lands in the state folder.
    for file in host.state_dir.rglob("*"):
        if file.is_file():
            assert PFX_PASSWORD.encode() not in file.read_bytes()


def test_bad_certificates(host: AgentRunner, ca: pki.Issued) -> None:
    pfx = ca.pfx(PFX_PASSWORD.encode())
    error = host.error("cert.import", store="My", pfx_b64=b64(pfx), pfx_password="Not-The-Pw-1")
    assert error["code"] == "BadCertificate"
    assert "Not-The-Pw-1" not in error["message"] and PFX_PASSWORD not in error["message"]
    truncated = host.error("cert.import", store="Root", der_b64=b64(ca.cert_der()[:100]))
    assert (truncated["code"], truncated["hresult"]) == ("BadCertificate", "0x80093102")
    garbage = host.error("cert.import", store="Root", der_b64=b64(b"not a certificate"))
    assert (garbage["code"], garbage["hresult"]) == ("BadCertificate", "0x8009310B")
    both = host.run(make_op("cert.import", store="Root"))
    assert both["error"]["code"] == "BadRequest"


def _https(host: AgentRunner, site: str) -> list[dict[str, Any]]:
    sites = {s["name"]: s for s in host.one("site.list")["sites"]}
    return [b for b in sites[site]["bindings"] if b["protocol"] == "https"]


def test_binding_set_update_remove(host: AgentRunner, ca: pki.Issued) -> None:
    server = pki.make_server(ca, "www.example.test")
    host.one("cert.import", store="My", pfx_b64=b64(server.pfx(None)))
    args = {
        "site": "Default Web Site",
        "binding_information": "*:8443:www.example.test",
        "ssl_flags": 1,
        "certificate_hash": server.thumbprint.lower(),
        "certificate_store": "My",
        "client_cert_negotiation": True,
    }
    assert host.one("binding.set", **args) == {"changed": True, "created": True}
    assert host.one("binding.set", **args) == {"changed": False, "created": False}
    assert _https(host, "Default Web Site") == [
        {
            "protocol": "https",
            "binding_information": "*:8443:www.example.test",
            "ssl_flags": 1,
            "certificate_hash": server.thumbprint,
            "certificate_store": "My",
            "client_cert_negotiation": True,
            "sslcert": {**SSLCERT_DEFAULTS, "clientcertnegotiation": True},
        }
    ]
    sslcert = json.loads((host.state_dir / "httpsys.json").read_text())["sslcert"]
    assert sslcert["hostnameport=www.example.test:8443"]["client_cert_negotiation"] is True
    assert host.one("binding.set", **{**args, "client_cert_negotiation": False}) == {
        "changed": True,
        "created": False,
    }
    assert host.one(
        "binding.remove", site="Default Web Site", binding_information="*:8443:www.example.test"
    ) == {"changed": True}
    assert host.one(
        "binding.remove", site="Default Web Site", binding_information="*:8443:www.example.test"
    ) == {"changed": False}
    assert _https(host, "Default Web Site") == []
    sslcert = json.loads((host.state_dir / "httpsys.json").read_text())["sslcert"]
    assert "hostnameport=www.example.test:8443" not in sslcert


def test_shop_binding_negotiation_switch(host: AgentRunner) -> None:
    current = _https(host, "shop")[0]
    assert current["client_cert_negotiation"] is False
    result = host.one(
        "binding.set",
        site="shop",
        binding_information="*:443:",
        ssl_flags=0,
        certificate_hash=current["certificate_hash"],
        certificate_store="My",
        client_cert_negotiation=True,
    )
    assert result == {"changed": True, "created": False}
    assert _https(host, "shop")[0]["client_cert_negotiation"] is True


def test_binding_errors(host: AgentRunner, ca: pki.Issued) -> None:
    thumb = _https(host, "shop")[0]["certificate_hash"]
    base = {
        "site": "shop",
        "binding_information": "*:9443:",
        "ssl_flags": 0,
        "certificate_hash": thumb,
        "certificate_store": "My",
        "client_cert_negotiation": False,
    }
    assert host.error("binding.set", **{**base, "site": "nope"})["code"] == "NotFound"
    assert host.error("binding.set", **{**base, "certificate_hash": "AB" * 20})["code"] == (
        "NotFound"
    )
    assert host.error("binding.set", **{**base, "certificate_store": "Root"})["code"] == "NotFound"
    sni = host.error("binding.set", **{**base, "ssl_flags": 1})
    assert sni["code"] == "InvalidValue" and "host name" in sni["message"]
    assert host.error("binding.set", **{**base, "binding_information": "*:http:"})["code"] == (
        "InvalidValue"
    )
    # A certificate without its private key cannot be bound (netsh error 1312).
    leaf = pki.make_leaf(ca, "nokey", server_auth=True)
    host.one("cert.import", store="My", der_b64=b64(leaf.cert_der()))
    nokey = host.error("binding.set", **{**base, "certificate_hash": leaf.thumbprint})
    assert nokey["code"] == "BadCertificate"
