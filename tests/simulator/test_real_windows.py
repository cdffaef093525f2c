"""What a real Windows host does and a forgiving simulator would hide (issue 10).

Each test sets the host up the way an owner or another tool leaves it, runs the agent's
ops, and checks what the owner would notice afterwards: a lost HTTP.sys setting, another
site's certificate binding gone, a half-made account, an orphan key, a read that fails
as a whole for one bad value. Sources are cited where the rule is modelled.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert.host.contract import SSLCERT_DEFAULTS, Op, element, make_op
from iis_clientcert_simulator import pki
from iis_clientcert_simulator.state import HostState, Session
from iis_clientcert_simulator.stores import HttpSys
from iis_clientcert_simulator.testing import (
    AgentRunner,
    fail_at,
    foreign_ciphertext,
    orphan_keys,
    put_sslcert,
    replace_in_apphost,
    set_host_facts,
    snapshot,
    sslcert,
)

SHOP_KEY = "ipport=0.0.0.0:443"
# What an owner sets with netsh (or IIS Manager) that no resource of ours manages.
OWNER_SETTINGS: dict[str, Any] = {
    "disabletls13": True,
    "disablequic": True,
    "disablehttp2": True,
    "disablelegacytls": True,
    "disableocspstapling": True,
    "verifyclientcertrevocation": False,
    "revocationfreshnesstime": 3600,
    "sslctlidentifier": "Partner CAs",
    "sslctlstorename": "ClientAuthIssuer",
}


@pytest.fixture
def host(tmp_path: Path) -> AgentRunner:
    return AgentRunner(tmp_path / "host")


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca("Real Windows Test CA")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _https(host: AgentRunner, site: str) -> dict[str, dict[str, Any]]:
    sites = {s["name"]: s for s in host.one("site.list")["sites"]}
    return {
        b["binding_information"]: b for b in sites[site]["bindings"] if b["protocol"] == "https"
    }


def _import(host: AgentRunner, issued: pki.Issued) -> str:
    return str(host.one("cert.import", store="My", pfx_b64=b64(issued.pfx(None)))["thumbprint"])


def _binding_set(host: AgentRunner, site: str, info: str, thumb: str, **kw: Any) -> Any:
    args = {
        "site": site,
        "binding_information": info,
        "ssl_flags": 0,
        "certificate_hash": thumb,
        "certificate_store": "My",
        "client_cert_negotiation": True,
        **kw,
    }
    return host.one("binding.set", **args)


# --- 5. HTTP.sys records kept whole ------------------------------------------------------


def test_netsh_update_replaces_the_whole_record() -> None:
    # The model's rule itself (netsh http update sslcert; win-acme #2831).
    httpsys = HttpSys({})
    httpsys.put(SHOP_KEY, "AB" * 20, "My", **OWNER_SETTINGS)
    httpsys.update(SHOP_KEY, "AB" * 20, "My", "{app}", {"clientcertnegotiation": True})
    record = httpsys.get(SHOP_KEY)
    assert record is not None
    assert HttpSys.settings(record) == {**SSLCERT_DEFAULTS, "clientcertnegotiation": True}


def test_turning_on_negotiation_keeps_the_owners_http_sys_settings(host: AgentRunner) -> None:
    thumb = _https(host, "shop")["*:443:"]["certificate_hash"]
    put_sslcert(host.state_dir, SHOP_KEY, thumb, **OWNER_SETTINGS)
    assert _binding_set(host, "shop", "*:443:", thumb) == {"changed": True, "created": False}
    record = sslcert(host.state_dir, SHOP_KEY)
    assert record is not None
    assert HttpSys.settings(record) == {
        **SSLCERT_DEFAULTS,
        **OWNER_SETTINGS,
        "clientcertnegotiation": True,
    }
    # site.list shows the whole record, so a reader (and a real-host check) can see it.
    assert _https(host, "shop")["*:443:"]["sslcert"]["disabletls13"] is True


def test_a_new_certificate_keeps_the_owners_http_sys_settings(
    host: AgentRunner, ca: pki.Issued
) -> None:
    old = _https(host, "shop")["*:443:"]["certificate_hash"]
    put_sslcert(host.state_dir, SHOP_KEY, old, **OWNER_SETTINGS, clientcertnegotiation=True)
    renewed = _import(host, pki.make_server(ca, "shop.simiis01.local"))
    assert _binding_set(host, "shop", "*:443:", renewed)["changed"] is True
    record = sslcert(host.state_dir, SHOP_KEY)
    assert record is not None and record["certificate_hash"] == renewed
    assert HttpSys.settings(record) == {
        **SSLCERT_DEFAULTS,
        **OWNER_SETTINGS,
        "clientcertnegotiation": True,
    }


def test_binding_flag_bits_reach_the_record_and_clearing_one_clears_it(
    host: AgentRunner,
) -> None:
    thumb = _https(host, "shop")["*:443:"]["certificate_hash"]
    _binding_set(host, "shop", "*:443:", thumb, ssl_flags=32)  # DisableTLS13
    record = sslcert(host.state_dir, SHOP_KEY)
    assert record is not None and record["disabletls13"] is True
    _binding_set(host, "shop", "*:443:", thumb, ssl_flags=0)
    record = sslcert(host.state_dir, SHOP_KEY)
    assert record is not None and record["disabletls13"] is False


def test_removing_one_sites_binding_keeps_the_record_another_site_shares(
    host: AgentRunner, ca: pki.Issued
) -> None:
    # Two sites on *:44310 told apart by host header: one HTTP.sys record (ipport) for both.
    thumb = _import(host, pki.make_server(ca, "a.test", extra_dns=["b.test"]))
    _binding_set(host, "shop", "*:44310:a.test", thumb)
    _binding_set(host, "Default Web Site", "*:44310:b.test", thumb)
    assert host.one("binding.remove", site="shop", binding_information="*:44310:a.test") == {
        "changed": True
    }
    assert "*:44310:a.test" not in _https(host, "shop")
    other = _https(host, "Default Web Site")["*:44310:b.test"]
    assert other["certificate_hash"] == thumb and other["client_cert_negotiation"] is True
    # The last user of the ip:port takes the record with it.
    host.one("binding.remove", site="Default Web Site", binding_information="*:44310:b.test")
    assert sslcert(host.state_dir, "ipport=0.0.0.0:44310") is None


def test_mwa_remove_without_remove_config_only_drops_the_shared_record(
    host: AgentRunner, ca: pki.Issued
) -> None:
    # The model's rule (KB 2405568) that binding.remove must steer clear of.
    from iis_clientcert_simulator.ops import _mwa_remove_binding

    thumb = _import(host, pki.make_server(ca, "a.test", extra_dns=["b.test"]))
    _binding_set(host, "shop", "*:44311:a.test", thumb)
    _binding_set(host, "Default Web Site", "*:44311:b.test", thumb)
    state = HostState(host.state_dir)
    with state.locked():
        session = Session(state)
        _mwa_remove_binding(session, "shop", "*:44311:a.test", remove_config_only=False)
        session.save()
    assert sslcert(host.state_dir, "ipport=0.0.0.0:44311") is None
    assert _https(host, "Default Web Site")["*:44311:b.test"]["certificate_hash"] is None


def test_mwa_add_with_a_certificate_rewrites_the_record_without_its_settings(
    host: AgentRunner,
) -> None:
    # The model's rule (win-acme #2831) that binding.set must steer clear of.
    from iis_clientcert_simulator.ops import _mwa_add_binding_with_certificate

    thumb = _https(host, "shop")["*:443:"]["certificate_hash"]
    put_sslcert(host.state_dir, SHOP_KEY, thumb, **OWNER_SETTINGS, clientcertnegotiation=True)
    state = HostState(host.state_dir)
    with state.locked():
        session = Session(state)
        _mwa_add_binding_with_certificate(session, "shop", "*:443:", 0, thumb, "My")
        session.save()
    record = sslcert(host.state_dir, SHOP_KEY)
    assert record is not None and HttpSys.settings(record) == SSLCERT_DEFAULTS


def test_site_list_reports_no_record_as_null(host: AgentRunner) -> None:
    host.ok(
        make_op(
            "binding.set",
            site="shop",
            binding_information="*:443:",
            ssl_flags=0,
            certificate_hash=_https(host, "shop")["*:443:"]["certificate_hash"],
            certificate_store="My",
            client_cert_negotiation=False,
        )
    )
    assert _https(host, "Default Web Site") == {}
    assert isinstance(_https(host, "shop")["*:443:"]["sslcert"], dict)


# --- 6. Decrypting per value -------------------------------------------------------------

MAPPING = "system.webServer/security/authentication/iisClientCertificateMappingAuthentication"
ALICE_PW = "Wonder-Land-2024!"
BOB_PW = "Builder-Crew-2024!"


def _two_mappings(alice_pw: str, bob_pw: str) -> dict[str, Any]:
    def one(cert: str, user: str, password: str) -> dict[str, Any]:
        return element({"certificate": cert, "userName": user, "password": password})

    return element(
        {"enabled": "true"},
        {
            "oneToOneMappings": element(
                clear=True,
                items=[one("QUxJQ0U=", "alice", alice_pw), one("Qk9C", "bob", bob_pw)],
            )
        },
    )


@pytest.fixture
def mapped(host: AgentRunner) -> AgentRunner:
    host.ok(
        make_op("user.set", name="alice", password=ALICE_PW),
        make_op("user.set", name="bob", password=BOB_PW),
        make_op(
            "config.set", section=MAPPING, location="shop", element=_two_mappings(ALICE_PW, BOB_PW)
        ),
    )
    return host


def _stored_passwords(host: AgentRunner) -> list[str]:
    got = host.one("config.get", section=MAPPING, location="shop")["element"]
    return [i["attributes"]["password"] for i in got["children"]["oneToOneMappings"]["items"]]


def _plant_foreign_ciphertext(host: AgentRunner, index: int) -> str:
    """Replace one stored password with ciphertext from another host (a copied config)."""
    mine = _stored_passwords(host)[index]
    foreign = foreign_ciphertext(BOB_PW)
    replace_in_apphost(host.state_dir, mine, foreign)
    return foreign


def test_a_foreign_ciphertext_fails_only_its_own_logon(mapped: AgentRunner) -> None:
    _plant_foreign_ciphertext(mapped, 1)
    results = mapped.one("mapping.verify_logons", site="shop")["results"]
    assert [(r["user_name"], r["valid"], r["hresult"]) for r in results] == [
        ("alice", True, None),
        # NTE_BAD_DATA: cannot decrypt, which is not "wrong password" (0x8007052E).
        ("bob", False, "0x80090005"),
    ]


def test_reading_a_section_with_a_foreign_ciphertext_shows_it_as_stored(
    mapped: AgentRunner,
) -> None:
    foreign = _plant_foreign_ciphertext(mapped, 1)
    got = mapped.one("config.get", section=MAPPING, location="shop")
    items = got["effective"]["children"]["oneToOneMappings"]["items"]
    assert items[1]["attributes"]["password"] == foreign


def test_an_undecryptable_current_value_is_different_and_gets_rewritten(
    mapped: AgentRunner,
) -> None:
    foreign = _plant_foreign_ciphertext(mapped, 1)
    result = mapped.one(
        "config.set", section=MAPPING, location="shop", element=_two_mappings(ALICE_PW, BOB_PW)
    )
    assert result == {"changed": True}
    assert foreign not in _stored_passwords(mapped)
    results = mapped.one("mapping.verify_logons", site="shop")["results"]
    assert [r["valid"] for r in results] == [True, True]


def test_an_undecryptable_desired_value_is_refused_by_name(mapped: AgentRunner) -> None:
    # Through IIS's API a ciphertext is plain text to encrypt again: the agent must decrypt
    # it first, and cannot. Say which value, and write nothing.
    before = _stored_passwords(mapped)
    error = mapped.error(
        "config.set",
        section=MAPPING,
        location="shop",
        element=_two_mappings(ALICE_PW, foreign_ciphertext(BOB_PW)),
    )
    assert (error["code"], error["hresult"]) == ("InvalidValue", "0x80090005")
    assert "oneToOneMappings/add[1]" in error["message"] and "'password'" in error["message"]
    assert _stored_passwords(mapped) == before


def test_putting_back_what_was_read_needs_no_decryption(mapped: AgentRunner) -> None:
    _plant_foreign_ciphertext(mapped, 1)
    found = mapped.one("config.get", section=MAPPING, location="shop")["element"]
    assert mapped.one("config.set", section=MAPPING, location="shop", element=found) == {
        "changed": False
    }


def test_a_decryptable_ciphertext_equal_in_plain_text_is_no_change(mapped: AgentRunner) -> None:
    # The agent compares passwords in plain text, so must the model.
    stored = _stored_passwords(mapped)
    again = HostState(mapped.state_dir)
    with again.locked():
        other = Session(again).key.encrypt(ALICE_PW)
    assert other != stored[0]
    assert mapped.one(
        "config.set", section=MAPPING, location="shop", element=_two_mappings(other, BOB_PW)
    ) == {"changed": False}


# --- 9. Atomic ops -----------------------------------------------------------------------

PFX_PW = "Atomic-Pfx-Pw-5!"


def _failed_at(host: AgentRunner, step: str, *ops: Op[Any]) -> dict[str, Any]:
    fail_at(host.state_dir, step, code="Fault", message=f"injected at {step}")
    result = host.run(*ops)
    assert not result["ok"], result
    error: dict[str, Any] = result["error"]
    assert error["message"] == f"injected at {step}", error
    return error


def test_binding_set_failing_after_the_config_commit_leaves_the_host_as_it_was(
    host: AgentRunner, ca: pki.Issued
) -> None:
    thumb = _import(host, pki.make_server(ca, "atomic.test"))
    before = snapshot(host.state_dir)
    op = make_op(
        "binding.set",
        site="shop",
        binding_information="*:44330:atomic.test",
        ssl_flags=1,
        certificate_hash=thumb,
        certificate_store="My",
        client_cert_negotiation=True,
    )
    _failed_at(host, "binding.set:after_config", op)
    assert snapshot(host.state_dir) == before
    # A rerun creates it, as new (nothing of ours was left to adopt).
    assert host.ok(op) == [{"changed": True, "created": True}]


def test_binding_set_failing_before_the_old_record_goes_leaves_the_host_as_it_was(
    host: AgentRunner, ca: pki.Issued
) -> None:
    # Turning SNI on moves the binding to a host:port record; the ip:port one goes last.
    thumb = _import(host, pki.make_server(ca, "sni.test"))
    _binding_set(host, "shop", "*:44332:sni.test", thumb)
    before = snapshot(host.state_dir)
    op = make_op(
        "binding.set",
        site="shop",
        binding_information="*:44332:sni.test",
        ssl_flags=1,
        certificate_hash=thumb,
        certificate_store="My",
        client_cert_negotiation=True,
    )
    _failed_at(host, "binding.set:after_httpsys", op)
    assert snapshot(host.state_dir) == before


def test_binding_remove_failing_after_the_config_commit_leaves_the_host_as_it_was(
    host: AgentRunner, ca: pki.Issued
) -> None:
    thumb = _import(host, pki.make_server(ca, "atomic.test"))
    _binding_set(host, "shop", "*:44331:atomic.test", thumb)
    before = snapshot(host.state_dir)
    op = make_op("binding.remove", site="shop", binding_information="*:44331:atomic.test")
    _failed_at(host, "binding.remove:after_config", op)
    assert snapshot(host.state_dir) == before
    assert host.ok(op) == [{"changed": True}]


def test_user_set_failing_after_the_account_exists_leaves_no_account(host: AgentRunner) -> None:
    before = snapshot(host.state_dir)
    op = make_op(
        "user.set",
        name="halfmade",
        password="Half-Made-Pw-7!",
        description="created, then its flags fail",
        password_never_expires=True,
    )
    _failed_at(host, "user.set:after_create", op)
    assert snapshot(host.state_dir) == before
    assert host.one("user.get", name="halfmade")["exists"] is False
    assert host.ok(op) == [{"created": True, "changed": []}]


def test_cert_import_failing_after_the_key_is_persisted_leaves_no_key(
    host: AgentRunner, ca: pki.Issued
) -> None:
    server = pki.make_server(ca, "atomic-key.test")
    before = snapshot(host.state_dir)
    op = make_op(
        "cert.import",
        store="My",
        pfx_b64=b64(server.pfx(PFX_PW.encode())),
        pfx_password=PFX_PW,
    )
    _failed_at(host, "cert.import:after_key", op)
    assert snapshot(host.state_dir) == before
    assert host.ok(op) == [{"thumbprint": server.thumbprint, "added": True}]


# --- 11. PFX import hygiene --------------------------------------------------------------


def test_importing_a_pfx_already_present_persists_no_key(host: AgentRunner, ca: pki.Issued) -> None:
    # With PersistKeySet the key is written at import time, before any "already there"
    # check (FACTS.md "Key containers"): the thumbprint must be known first.
    server = pki.make_server(ca, "twice.test")
    op = make_op(
        "cert.import", store="My", pfx_b64=b64(server.pfx(PFX_PW.encode())), pfx_password=PFX_PW
    )
    assert host.ok(op) == [{"thumbprint": server.thumbprint, "added": True}]
    before = snapshot(host.state_dir)
    assert host.ok(op) == [{"thumbprint": server.thumbprint, "added": False}]
    assert snapshot(host.state_dir) == before
    assert orphan_keys(host.state_dir) == []


def test_server_2016_refuses_an_aes_pfx_and_says_why(host: AgentRunner, ca: pki.Issued) -> None:
    set_host_facts(host.state_dir, os_build=14393)
    server = pki.make_server(ca, "old-host.test")
    error = host.error(
        "cert.import", store="My", pfx_b64=b64(server.pfx(PFX_PW.encode())), pfx_password=PFX_PW
    )
    assert (error["code"], error["hresult"]) == ("BadCertificate", "0x80070056")
    assert "AES" in error["message"] and "14393" in error["message"]
    assert orphan_keys(host.state_dir) == []
    # The same certificate as a TripleDES-SHA1 PFX imports.
    legacy = b64(server.pfx(PFX_PW.encode(), legacy=True))
    assert host.one("cert.import", store="My", pfx_b64=legacy, pfx_password=PFX_PW)["added"]


def test_server_2019_opens_an_aes_pfx(host: AgentRunner, ca: pki.Issued) -> None:
    set_host_facts(host.state_dir, os_build=17763)
    server = pki.make_server(ca, "new-host.test")
    pfx = b64(server.pfx(PFX_PW.encode()))
    assert host.one("cert.import", store="My", pfx_b64=pfx, pfx_password=PFX_PW)["added"]


# --- 10. Host facts that are true ----------------------------------------------------------

SHOP_FOLDER = "C:\\inetpub\\shop"
DOMAIN = {"name": "CONTOSO", "accounts": ["svc-web", "bob"]}


def _explicit(host: AgentRunner) -> list[tuple[str, str]]:
    aces = host.one("acl.get", path=SHOP_FOLDER)["aces"]
    return [(a["identity"], a["rights"]) for a in aces if not a["inherited"]]


def test_a_bare_name_never_reaches_a_domain_account(host: AgentRunner) -> None:
    # On a domain member, NTAccount("svc-web") finds CONTOSO\svc-web when there is no local
    # svc-web (FACTS.md "Account names"): granting it access would be a silent mistake.
    set_host_facts(host.state_dir, domain=DOMAIN)
    error = host.error("acl.grant", path=SHOP_FOLDER, identity="svc-web", rights="Read")
    assert (error["code"], error["hresult"]) == ("NotFound", "0x80070534")
    assert _explicit(host) == []
    # Said as a domain account, it is one.
    host.one("acl.grant", path=SHOP_FOLDER, identity="CONTOSO\\svc-web", rights="Read")
    assert _explicit(host) == [("CONTOSO\\svc-web", "Read")]


def test_a_bare_name_means_the_local_account_of_that_name(host: AgentRunner) -> None:
    set_host_facts(host.state_dir, domain=DOMAIN)
    host.one("user.set", name="bob", password="Local-Acc0unt-Pw!")
    host.one("acl.grant", path=SHOP_FOLDER, identity="bob", rights="ReadAndExecute")
    assert _explicit(host) == [("SIMIIS01\\bob", "ReadAndExecute")]
    # Built-in groups and well-known names stay reachable by their bare names.
    host.one("acl.grant", path=SHOP_FOLDER, identity="IIS_IUSRS", rights="Read")
    assert ("BUILTIN\\IIS_IUSRS", "Read") in _explicit(host)


def test_host_facts_report_the_hosts_password_policy(host: AgentRunner) -> None:
    set_host_facts(host.state_dir, password_policy={"min_length": 14, "complexity": False})
    assert host.one("host.facts")["password_policy"] == {"min_length": 14, "complexity": False}
    # The same policy decides user.set.
    error = host.error("user.set", name="shortpw", password="Sh0rt-Pw-9!")
    assert error["code"] == "PolicyViolation" and "14" in error["message"]
    assert host.one("user.set", name="longpw", password="only lower case letters")["created"]
