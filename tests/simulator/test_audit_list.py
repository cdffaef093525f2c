"""The rest of the real-host audit list (issue 10, point 13), as the simulator models it.

Each test sets the host up as Windows (or its owner) would leave it and checks what the
owner would notice after the agent's ops: a lock gone, an HTTP.sys record left behind or
misread, an access rule nobody can remove, an account outside Users. docs/real-host.md,
"Audit list (issue 10, point 13)", says which of these only a real host can settle.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from iis_clientcert.host.contract import SECTION_MAPPING, SECTION_SSL, element, make_op
from iis_clientcert_simulator import pki
from iis_clientcert_simulator.errors import OpError
from iis_clientcert_simulator.state import FEATURE_MODULES, HostState, Session
from iis_clientcert_simulator.testing import (
    AgentRunner,
    replace_in_apphost,
    set_host_facts,
    sslcert,
)

SHOP_FOLDER = "C:\\inetpub\\shop"
PASSWORD = "Audit-List-Pw-1!"


@pytest.fixture
def host(tmp_path: Path) -> AgentRunner:
    return AgentRunner(tmp_path / "host")


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca("Audit List CA")


def _import(host: AgentRunner, issued: pki.Issued) -> str:
    pfx = base64.b64encode(issued.pfx(None)).decode()
    host.one("cert.import", store="My", pfx_b64=pfx)
    return issued.thumbprint


def _binding_args(info: str, thumb: str, flags: int) -> dict[str, Any]:
    return {
        "site": "shop",
        "binding_information": info,
        "ssl_flags": flags,
        "certificate_hash": thumb,
        "certificate_store": "My",
        "client_cert_negotiation": True,
    }


def _records(host: AgentRunner) -> set[str]:
    return set(json.loads((host.state_dir / "httpsys.json").read_text())["sslcert"])


def _https(host: AgentRunner, site: str) -> dict[str, dict[str, Any]]:
    sites = host.one("site.list")["sites"]
    found = next(s for s in sites if s["name"] == site)
    return {b["binding_information"]: b for b in found["bindings"] if b["protocol"] == "https"}


def _add_config_binding(host: AgentRunner, site: str, info: str, flags: int) -> None:
    """An https binding written to config only (as IIS Manager writes a CCS binding)."""
    state = HostState(host.state_dir)
    with state.locked():
        session = Session(state)
        session.apphost.set_binding(site, "https", info, flags)
        session.save()


# --- (d) SNI toggles leave no orphan HTTP.sys record -----------------------------------------


def test_sni_toggles_leave_no_orphan_http_sys_record(host: AgentRunner, ca: pki.Issued) -> None:
    thumb = _import(host, pki.make_server(ca, "toggle.test"))
    info = "*:44340:toggle.test"
    before = _records(host)
    host.one("binding.set", **_binding_args(info, thumb, 1))
    assert _records(host) - before == {"hostnameport=toggle.test:44340"}
    # SNI off: the binding now uses the ip:port record; the host:port one is nobody's.
    host.one("binding.set", **_binding_args(info, thumb, 0))
    assert _records(host) - before == {"ipport=0.0.0.0:44340"}
    # And on again: the ip:port record goes (no other binding uses it).
    host.one("binding.set", **_binding_args(info, thumb, 1))
    assert _records(host) - before == {"hostnameport=toggle.test:44340"}
    host.one("binding.remove", site="shop", binding_information=info)
    assert _records(host) == before


def test_sni_on_keeps_the_ip_port_record_another_binding_uses(
    host: AgentRunner, ca: pki.Issued
) -> None:
    thumb = _import(host, pki.make_server(ca, "shared.test"))
    host.one(
        "binding.set",
        **{**_binding_args("*:44341:", thumb, 0), "site": "Default Web Site"},
    )
    host.one("binding.set", **_binding_args("*:44341:shared.test", thumb, 0))
    host.one("binding.set", **_binding_args("*:44341:shared.test", thumb, 1))
    assert sslcert(host.state_dir, "ipport=0.0.0.0:44341") is not None
    assert sslcert(host.state_dir, "hostnameport=shared.test:44341") is not None


# --- (e) Central Certificate Store bindings --------------------------------------------------


def test_a_ccs_binding_is_not_shown_with_another_bindings_certificate(host: AgentRunner) -> None:
    # shop's *:443: has the ipport=0.0.0.0:443 record. A CCS binding on the same port
    # (sslFlags 2) is served from the CCS share through ccs=443, never from that record.
    _add_config_binding(host, "Default Web Site", "*:443:ccs.test", 2)
    ccs = _https(host, "Default Web Site")["*:443:ccs.test"]
    assert ccs["certificate_hash"] is None and ccs["sslcert"] is None
    assert _https(host, "shop")["*:443:"]["certificate_hash"] is not None


def test_binding_set_refuses_a_central_certificate_store_binding(
    host: AgentRunner, ca: pki.Issued
) -> None:
    thumb = _import(host, pki.make_server(ca, "ccs.test"))
    before = _records(host)
    error = host.error("binding.set", **_binding_args("*:44342:ccs.test", thumb, 2))
    assert error["code"] == "InvalidValue" and "Central Certificate Store" in error["message"]
    # An existing CCS binding is not turned into a LocalMachine\My one either.
    _add_config_binding(host, "shop", "*:44343:ccs.test", 3)
    error = host.error("binding.set", **_binding_args("*:44343:ccs.test", thumb, 1))
    assert error["code"] == "InvalidValue"
    assert _records(host) == before
    assert _https(host, "shop")["*:44343:ccs.test"]["ssl_flags"] == 3


# --- (g) ACE removal for a deleted account (by SID) ------------------------------------------


def _explicit(host: AgentRunner) -> list[dict[str, Any]]:
    return [a for a in host.one("acl.get", path=SHOP_FOLDER)["aces"] if not a["inherited"]]


def test_a_deleted_accounts_rule_shows_and_goes_by_its_sid(host: AgentRunner) -> None:
    host.one("user.set", name="gone", password=PASSWORD)
    sid = host.one("user.get", name="gone")["sid"]
    host.one("acl.grant", path=SHOP_FOLDER, identity="gone", rights="Read")
    host.one("user.delete", name="gone")
    # Windows keeps the ACE: it holds the SID, which names no account any more.
    assert [(a["identity"], a["sid"]) for a in _explicit(host)] == [(sid, sid)]
    # By name it is not found (the name resolves to nothing), as on Windows.
    assert host.one("acl.revoke", path=SHOP_FOLDER, identity="gone") == {"changed": False}
    assert host.one("acl.revoke", path=SHOP_FOLDER, identity=sid) == {"changed": True}
    assert _explicit(host) == []


def test_an_account_made_again_has_a_new_sid_and_not_the_old_rules(host: AgentRunner) -> None:
    host.one("user.set", name="again", password=PASSWORD)
    old = host.one("user.get", name="again")["sid"]
    host.one("acl.grant", path=SHOP_FOLDER, identity="again", rights="Modify")
    host.one("user.delete", name="again")
    host.one("user.set", name="again", password=PASSWORD)
    new = host.one("user.get", name="again")["sid"]
    assert new != old
    assert [(a["identity"], a["rights"]) for a in _explicit(host)] == [(old, "Modify")]


# --- (h) names: .\name, HOST\name and a domain account of the same name ---------------------


def test_local_name_forms_resolve_to_one_account(host: AgentRunner) -> None:
    host.one("user.set", name="forms", password=PASSWORD)
    sid = host.one("user.get", name="forms")["sid"]
    assert host.one("user.get", name="SIMIIS01\\forms")["sid"] == sid
    assert host.one("acl.grant", path=SHOP_FOLDER, identity="forms", rights="Read")["changed"]
    for same in ("SIMIIS01\\forms", ".\\forms", sid):
        assert host.one("acl.grant", path=SHOP_FOLDER, identity=same, rights="Read") == {
            "changed": False
        }
    assert [a["sid"] for a in _explicit(host)] == [sid]


def test_lookup_account_name_knows_no_dot_domain(host: AgentRunner) -> None:
    # ".\name" is LogonUser's spelling; LookupAccountName fails on it (the agent maps it
    # to COMPUTER\name first, which the op test above relies on).
    host.one("user.set", name="dotted", password=PASSWORD)
    state = HostState(host.state_dir)
    with state.locked():
        accounts = Session(state).accounts
        assert accounts.lookup_account_name("SIMIIS01\\dotted") == "SIMIIS01\\dotted"
        with pytest.raises(OpError) as caught:
            accounts.lookup_account_name(".\\dotted")
    assert caught.value.hresult == 0x80070534


def test_a_domain_account_of_the_same_name_is_another_sid(host: AgentRunner) -> None:
    set_host_facts(host.state_dir, domain={"name": "CONTOSO", "accounts": ["twin"]})
    host.one("acl.grant", path=SHOP_FOLDER, identity="CONTOSO\\twin", rights="Read")
    host.one("user.set", name="twin", password=PASSWORD)
    local = host.one("user.get", name="twin")["sid"]
    (domain_ace,) = _explicit(host)
    assert domain_ace["identity"] == "CONTOSO\\twin" and domain_ace["sid"] != local


# --- (i) new accounts are members of Users ---------------------------------------------------


def test_a_new_account_is_a_member_of_users(host: AgentRunner) -> None:
    host.one("user.set", name="fresh", password=PASSWORD)
    assert host.one("user.get", name="fresh")["groups"] == ["Users"]
    # Leaving Users is the owner's choice; making the account again puts it back.
    assert host.one("group.remove_member", group="Users", member="fresh") == {"changed": True}
    assert host.one("user.get", name="fresh")["groups"] == []


# --- (l) the module image of Web-Cert-Auth ---------------------------------------------------


def test_the_mapping_module_is_registered_with_authmap_dll(host: AgentRunner) -> None:
    # Microsoft docs, "Introduction to IIS Architectures" (Security Modules):
    # IISCertificateMappingAuthenticationModule is Inetsrv\Authmap.dll.
    root = etree.parse(str(host.state_dir / "applicationHost.config")).getroot()
    images = {
        m.get("name"): m.get("image") for m in root.iterfind("system.webServer/globalModules/add")
    }
    assert images["IISCertificateMappingAuthenticationModule"] == (
        "%windir%\\System32\\inetsrv\\authmap.dll"
    )
    # Removed and installed again (Install-WindowsFeature), it comes back the same.
    state = HostState(host.state_dir)
    state.set_feature("Web-Cert-Auth", False)
    state.set_feature("Web-Cert-Auth", True)
    text = (host.state_dir / "applicationHost.config").read_text()
    assert 'image="%windir%\\System32\\inetsrv\\authmap.dll"' in text
    assert FEATURE_MODULES["Web-Cert-Auth"][1] == "authmap.dll"


# --- (m) lock attributes survive our writes --------------------------------------------------


def _shop_location(host: AgentRunner) -> str:
    text = (host.state_dir / "applicationHost.config").read_text()
    found = re.findall(r'<location path="shop">.*?</location>', text, re.S)
    return "".join(found)


def test_lock_attributes_on_a_section_survive_config_set(host: AgentRunner) -> None:
    host.one(
        "config.set", section=SECTION_SSL, location="shop", element=element({"sslFlags": "Ssl"})
    )
    replace_in_apphost(
        host.state_dir,
        '<access sslFlags="Ssl" />',
        '<access sslFlags="Ssl" lockAttributes="sslFlags" />',
    )
    wanted = element({"sslFlags": "Ssl, SslNegotiateCert"})
    assert host.one("config.set", section=SECTION_SSL, location="shop", element=wanted) == {
        "changed": True
    }
    assert 'lockAttributes="sslFlags"' in _shop_location(host)
    # The lock is no content: the same write again changes nothing.
    assert host.one("config.set", section=SECTION_SSL, location="shop", element=wanted) == {
        "changed": False
    }
    # A lock given in an element (a section read back, then put back) is not ours to write.
    got = host.one("config.get", section=SECTION_SSL, location="shop")["element"]
    assert got["attributes"]["lockAttributes"] == "sslFlags"
    assert host.one("config.set", section=SECTION_SSL, location="shop", element=got) == {
        "changed": False
    }


def test_lock_elements_on_a_child_element_survive_config_set(host: AgentRunner) -> None:
    host.ok(
        make_op(
            "config.set",
            section=SECTION_MAPPING,
            location="shop",
            element=element(
                {"enabled": "true"},
                {"oneToOneMappings": element(clear=True), "manyToOneMappings": element(clear=True)},
            ),
        )
    )
    replace_in_apphost(
        host.state_dir,
        "<oneToOneMappings>",
        '<oneToOneMappings lockElements="clear">',
    )
    host.one(
        "config.set",
        section=SECTION_MAPPING,
        location="shop",
        element=element(
            {"enabled": "false"},
            {"oneToOneMappings": element(clear=True), "manyToOneMappings": element(clear=True)},
        ),
    )
    assert '<oneToOneMappings lockElements="clear">' in _shop_location(host)
    assert 'enabled="false"' in _shop_location(host)
