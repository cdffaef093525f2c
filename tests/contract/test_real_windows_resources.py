"""Resources on a simulator that does what a real Windows host does (issue 10).

Each test leaves the host the way an owner or another tool would (an HTTP.sys setting
set with netsh, a second site on the same ip:port, a password encrypted on another host,
Windows Server 2016), drives the providers (no engine) and checks what the owner would
see afterwards through the agent's own reads.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert.errors import ValidationError
from iis_clientcert.host import contract
from iis_clientcert.host.client import HostClient
from iis_clientcert.host.connection import Connection
from iis_clientcert.providers import certificate_mapping as cm
from iis_clientcert.providers import https_binding as hb
from iis_clientcert.providers import local_user as lu
from iis_clientcert.providers import server_certificate as sc
from iis_clientcert_simulator import pki
from iis_clientcert_simulator.testing import (
    foreign_ciphertext,
    orphan_keys,
    put_sslcert,
    replace_in_apphost,
    running_simulator,
    set_host_facts,
    sslcert,
)

PFX_PASSWORD = "Real-Windows-Pfx-9!"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with running_simulator(tmp_path / "state") as endpoint:
        yield {"connection": endpoint.connection_input(), "state": Path(endpoint.state_dir)}


def _call(sim: dict[str, Any], *ops: contract.Op[Any]) -> list[Any]:
    return HostClient(Connection.from_input(sim["connection"])).call(list(ops))


def _https(sim: dict[str, Any], site: str) -> dict[str, dict[str, Any]]:
    sites = _call(sim, contract.make_op("site.list"))[0]["sites"]
    found = next(s for s in sites if s["name"] == site)
    return {b["binding_information"]: b for b in found["bindings"] if b["protocol"] == "https"}


def _checked(provider: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    result = provider.check({}, inputs)
    assert result.failures == [], [f.reason for f in result.failures]
    return dict(result.inputs)


def _server_certificate(sim: dict[str, Any], issued: pki.Issued, **pfx: Any) -> Any:
    data = base64.b64encode(issued.pfx(PFX_PASSWORD.encode(), **pfx)).decode()
    provider = sc.ServerCertificateProvider()
    inputs = _checked(
        provider, {"connection": sim["connection"], "pfx": data, "password": PFX_PASSWORD}
    )
    return provider, provider.create(inputs)


def _binding(sim: dict[str, Any], **inputs: Any) -> tuple[hb.HttpsBindingProvider, Any]:
    provider = hb.HttpsBindingProvider()
    return provider, provider.create(
        _checked(provider, {"connection": sim["connection"], **inputs})
    )


# --- 5. HTTP.sys records kept whole ------------------------------------------------------


def test_https_binding_keeps_the_owners_http_sys_settings(sim: dict[str, Any]) -> None:
    # The owner turned TLS 1.3 off and set a CTL on shop's record with netsh; the binding's
    # sslFlags say nothing of it. Adopting the binding with a new certificate, then giving
    # it back, must leave both settings where the owner put them.
    key = "ipport=0.0.0.0:443"
    before = _https(sim, "shop")["*:443:"]
    owner: dict[str, Any] = {
        "disabletls13": True,
        "sslctlidentifier": "Partners",
        "sslctlstorename": "CA",
    }
    put_sslcert(sim["state"], key, before["certificate_hash"], **owner)
    renewed = pki.make_server(pki.make_ca("Renewal CA"), "shop.simiis01.local")
    _, cert = _server_certificate(sim, renewed)

    provider, created = _binding(sim, site="shop", certificate_thumbprint=cert.outs["thumbprint"])
    record = sslcert(sim["state"], key)
    assert record is not None
    assert record["certificate_hash"] == renewed.thumbprint
    assert record["clientcertnegotiation"] is True
    assert {k: record[k] for k in owner} == owner

    provider.delete(created.id, created.outs)
    record = sslcert(sim["state"], key)
    assert record is not None
    assert record["certificate_hash"] == before["certificate_hash"]
    assert {k: record[k] for k in owner} == owner
    assert _https(sim, "shop")["*:443:"]["sslcert"]["disabletls13"] is True


def test_deleting_one_sites_binding_keeps_the_other_sites_certificate(
    sim: dict[str, Any],
) -> None:
    # Two sites on *:44320 told apart by host header share one HTTP.sys record (KB 2405568).
    issued = pki.make_server(pki.make_ca("Shared CA"), "a.test", extra_dns=["b.test"])
    _, cert = _server_certificate(sim, issued)
    thumb = cert.outs["thumbprint"]
    shop, shop_binding = _binding(
        sim, site="shop", port=44320, host_name="a.test", certificate_thumbprint=thumb
    )
    _binding(
        sim, site="Default Web Site", port=44320, host_name="b.test", certificate_thumbprint=thumb
    )

    shop.delete(shop_binding.id, shop_binding.outs)
    assert "*:44320:a.test" not in _https(sim, "shop")
    other = _https(sim, "Default Web Site")["*:44320:b.test"]
    assert other["certificate_hash"] == thumb
    assert other["client_cert_negotiation"] is True


# --- 6. Decrypting per value ---------------------------------------------------------------

MAP_USER = "rw-mapuser"
MAP_PASSWORD = "Mapped-Acc0unt-Pw!"


def test_a_mapping_password_from_another_host_is_drift_that_up_repairs(
    sim: dict[str, Any],
) -> None:
    # A copied applicationHost.config: one stored password is another host's ciphertext.
    # Refresh shows drift (not an error), and an update writes the password again.
    ca = pki.make_ca("Mapping CA")
    alice = pki.make_leaf(ca, "alice")
    _call(sim, contract.make_op("user.set", name=MAP_USER, password=MAP_PASSWORD))
    provider = cm.CertificateMappingProvider()
    inputs = _checked(
        provider,
        {
            "connection": sim["connection"],
            "site": "shop",
            "one_to_one": [{"certificate": alice.cert_pem().decode(), "user_name": MAP_USER}],
            "many_to_one": [
                {
                    "name": "partners",
                    "user_name": MAP_USER,
                    "rules": [{"field": "Subject", "sub_field": "O", "match": "Partner*"}],
                }
            ],
            "passwords": {MAP_USER: MAP_PASSWORD},
        },
    )
    created: Any = provider.create(inputs)
    got = _call(
        sim, contract.make_op("config.get", section=contract.SECTION_MAPPING, location="shop")
    )[0]["element"]
    mine = got["children"]["oneToOneMappings"]["items"][0]["attributes"]["password"]
    replace_in_apphost(sim["state"], mine, foreign_ciphertext(MAP_PASSWORD))

    read: Any = provider.read(created.id, created.outs)
    # Drift named, not an error; the stored input stays (blanking it broke the next refresh).
    assert read.outs["stale_passwords"] == [MAP_USER]
    assert read.inputs is not None and read.inputs["passwords"][MAP_USER] == MAP_PASSWORD
    # What the engine does after that refresh: an update from the refreshed outputs.
    assert provider.diff(created.id, read.outs, inputs).changes
    provider.update(created.id, read.outs, inputs)
    logons = _call(sim, contract.make_op("mapping.verify_logons", site="shop"))[0]["results"]
    assert [(r["kind"], r["valid"]) for r in logons] == [
        ("one_to_one", True),
        ("many_to_one", True),
    ]
    again: Any = provider.read(created.id, read.outs)
    assert again.outs["stale_passwords"] == []
    assert again.inputs is not None and again.inputs["passwords"][MAP_USER] == MAP_PASSWORD


# --- 11. PFX import hygiene ----------------------------------------------------------------


def test_server_certificate_on_server_2016_sends_a_pfx_it_can_open(sim: dict[str, Any]) -> None:
    # An AES-256/PBES2 PFX (OpenSSL 3's default): Server 2016 cannot open it and says
    # "wrong password" (0x80070056). The provider re-wraps it for that host.
    set_host_facts(sim["state"], os_build=14393)
    issued = pki.make_server(pki.make_ca("Old Host CA"), "old.example.test")
    provider, created = _server_certificate(sim, issued)
    assert created.outs["thumbprint"] == issued.thumbprint
    listed = _call(sim, contract.make_op("cert.list", store="My"))[0]["certificates"]
    mine = next(c for c in listed if c["thumbprint"] == issued.thumbprint)
    assert mine["has_private_key"] is True
    assert orphan_keys(sim["state"]) == []
    # A rerun finds it: nothing is imported again, no key is persisted twice.
    provider.create(_checked(provider, {**_server_inputs(sim, issued)}))
    assert orphan_keys(sim["state"]) == []


def _server_inputs(sim: dict[str, Any], issued: pki.Issued) -> dict[str, Any]:
    data = base64.b64encode(issued.pfx(PFX_PASSWORD.encode())).decode()
    return {"connection": sim["connection"], "pfx": data, "password": PFX_PASSWORD}


# --- 10. Host facts that are true ----------------------------------------------------------


def test_local_user_follows_the_hosts_password_policy(sim: dict[str, Any]) -> None:
    # A host with a 16-character minimum (a domain policy, say): the provider learns it from
    # host.facts and refuses before writing, naming the host's minimum.
    set_host_facts(sim["state"], password_policy={"min_length": 16, "complexity": True})
    provider = lu.LocalUserProvider()
    inputs = _checked(
        provider,
        {"connection": sim["connection"], "name": "rw-policy", "password": "Twelve-Ch4rs"},
    )
    with pytest.raises(ValidationError) as caught:
        provider.create(inputs)
    assert caught.value.property == "password" and "16" in str(caught.value)
    got = _call(sim, contract.make_op("user.get", name="rw-policy"))[0]
    assert got["exists"] is False
