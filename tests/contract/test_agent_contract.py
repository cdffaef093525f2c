"""The agent contract, op by op, through HostClient: round trips, idempotency (a second
identical write reports no change) and each error code as a typed ``AgentError``.

Runs against the simulator always and against a real Windows host when configured (see
conftest.py); the same assertions hold for both.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from iis_clientcert.errors import AgentError
from iis_clientcert.host import agent_session, contract, shapes
from iis_clientcert.host.client import agent_script
from iis_clientcert.host.contract import (
    SECTION_ANONYMOUS,
    SECTION_MAPPING,
    SECTION_SSL,
    element,
    make_op,
)
from iis_clientcert_simulator import pki
from iis_clientcert_simulator.state import HostState
from tests.support.contract import Target

STRONG = "Str0ng-Passw0rd!"
OTHER = "0ther-Passw0rd!"


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca("Contract Test Root CA", key_type="rsa")


@pytest.fixture(scope="module")
def server_cert(ca: pki.Issued) -> pki.Issued:
    return pki.make_server(ca, "contract.test", key_type="rsa")


@pytest.fixture(scope="module")
def client_cert(ca: pki.Issued) -> pki.Issued:
    return pki.make_leaf(ca, "contract-client", client_auth=True)


def blob(issued: pki.Issued) -> str:
    return base64.b64encode(issued.cert_der()).decode()


def expect_error(on: Target, op: str, code: str, /, **args: Any) -> AgentError:
    with pytest.raises(AgentError) as caught:
        on.one(op, **args)
    error = caught.value
    assert error.code == code, (error.code, str(error))
    assert error.op == op and error.index == 0
    assert error.host == on.client.host
    return error


def flags(value: str) -> set[str]:
    return {part.strip() for part in value.split(",") if part.strip()}


# --- host.facts, site.list ------------------------------------------------------------------


def test_host_facts(agent_host: Target) -> None:
    facts = agent_host.one("host.facts")
    assert isinstance(facts["computer_name"], str) and facts["computer_name"]
    assert isinstance(facts["os_build"], int) and not isinstance(facts["os_build"], bool)
    assert facts["iis_version"].startswith("10.")
    for name in ("web_cert_auth_installed", "tls13_enabled"):
        assert isinstance(facts[name], bool)
    assert facts["client_auth_trust_mode"] in (0, 1, 2)
    assert facts["send_trusted_issuer_list"] in (0, 1)
    assert isinstance(facts["password_policy"]["min_length"], int)
    assert isinstance(facts["password_policy"]["complexity"], bool)


def test_site_list(agent_host: Target) -> None:
    sites = {s["name"]: s for s in agent_host.one("site.list")["sites"]}
    site = sites[agent_host.site]
    assert isinstance(site["id"], int) and site["physical_path"]
    assert isinstance(site["bindings"], list) and site["bindings"]
    for b in site["bindings"]:
        assert set(b) == {
            "protocol",
            "binding_information",
            "ssl_flags",
            "certificate_hash",
            "certificate_store",
            "client_cert_negotiation",
            "sslcert",
        }
        assert isinstance(b["ssl_flags"], int)
        assert isinstance(b["client_cert_negotiation"], bool)
        if b["sslcert"] is not None:  # the whole HTTP.sys record, by netsh's names
            assert set(b["sslcert"]) == set(contract.SSLCERT_DEFAULTS)


# --- config.get / config.set / config.clear -------------------------------------------------


def test_config_round_trip_and_idempotency(agent_host: Target) -> None:
    site = agent_host.site
    agent_host.one("config.clear", section=SECTION_SSL, location=site)
    got = agent_host.one("config.get", section=SECTION_SSL, location=site)
    assert got["present"] is False and got["element"] is None
    assert "sslFlags" in got["effective"]["attributes"]

    wanted = element({"sslFlags": "Ssl, SslNegotiateCert, SslRequireCert"})
    first = agent_host.one("config.set", section=SECTION_SSL, location=site, element=wanted)
    assert first == {"changed": True}
    again = agent_host.one("config.set", section=SECTION_SSL, location=site, element=wanted)
    assert again == {"changed": False}
    # The same meaning spelt differently is no change either.
    respelt = element({"sslFlags": "SslRequireCert,Ssl,SslNegotiateCert"})
    assert agent_host.one("config.set", section=SECTION_SSL, location=site, element=respelt) == {
        "changed": False
    }

    got = agent_host.one("config.get", section=SECTION_SSL, location=site)
    assert got["present"] is True
    assert flags(got["element"]["attributes"]["sslFlags"]) == {
        "Ssl",
        "SslNegotiateCert",
        "SslRequireCert",
    }
    assert flags(got["effective"]["attributes"]["sslFlags"]) == flags(
        got["element"]["attributes"]["sslFlags"]
    )
    assert set(got["element"]) == {"attributes", "children", "items", "clear"}

    assert agent_host.one("config.clear", section=SECTION_SSL, location=site) == {"changed": True}
    assert agent_host.one("config.clear", section=SECTION_SSL, location=site) == {"changed": False}
    assert agent_host.one("config.get", section=SECTION_SSL, location=site)["present"] is False


def test_locked_section_at_web_config_is_refused(agent_host: Target) -> None:
    error = expect_error(
        agent_host,
        "config.set",
        "Locked",
        section=SECTION_ANONYMOUS,
        location=agent_host.site,
        element=element({"enabled": "false"}),
        target="webconfig",
    )
    assert error.hresult == "0x80070021"
    assert "ERROR_LOCK_VIOLATION" in str(error) and "applicationHost.config" in str(error)
    # The same write at the apphost location works.
    assert agent_host.one(
        "config.set",
        section=SECTION_ANONYMOUS,
        location=agent_host.site,
        element=element({"enabled": "false"}),
    ) == {"changed": True}
    agent_host.one("config.clear", section=SECTION_ANONYMOUS, location=agent_host.site)


@pytest.mark.parametrize(
    ("case", "section", "attrs", "code"),
    [
        (
            "SslMapCert is not in the IIS 7+ schema",
            SECTION_SSL,
            {"sslFlags": "Ssl, SslMapCert"},
            "InvalidValue",
        ),
        ("not a bool", SECTION_ANONYMOUS, {"enabled": "maybe"}, "InvalidValue"),
        ("unknown attribute", SECTION_SSL, {"noSuchAttribute": "1"}, "InvalidValue"),
        ("unknown section", "system.webServer/security/noSuchSection", {}, "NotFound"),
    ],
)
def test_config_set_invalid(
    agent_host: Target, case: str, section: str, attrs: dict[str, str], code: str
) -> None:
    expect_error(
        agent_host,
        "config.set",
        code,
        section=section,
        location=agent_host.site,
        element=element(attrs),
    )
    if section == SECTION_SSL:
        got = agent_host.one("config.get", section=SECTION_SSL, location=agent_host.site)
        assert got["present"] is False  # nothing half-written


def test_config_at_an_unknown_site_is_not_found(agent_host: Target) -> None:
    # Reading shows what would be inherited; writing is refused.
    got = agent_host.client.call_one(
        "config.get", section=SECTION_SSL, location="No Such Site 4711"
    )
    assert got["present"] is False
    expect_error(
        agent_host,
        "config.set",
        "NotFound",
        section=SECTION_SSL,
        location="No Such Site 4711",
        element=element({"sslFlags": "Ssl"}),
    )


def _mapping(cert: str, user: str, password: str, *, name: str = "Contract rule") -> dict[str, Any]:
    return element(
        {
            "enabled": "true",
            "oneToOneCertificateMappingsEnabled": "true",
            "manyToOneCertificateMappingsEnabled": "true",
        },
        children={
            "oneToOneMappings": element(
                items=[element({"userName": user, "password": password, "certificate": cert})],
                clear=True,
            ),
            "manyToOneMappings": element(
                items=[
                    element(
                        {
                            "name": name,
                            "userName": user,
                            "password": password,
                            "permissionMode": "Allow",
                        },
                        children={
                            "rules": element(
                                items=[
                                    element(
                                        {
                                            "certificateField": "Subject",
                                            "certificateSubField": "CN",
                                            "matchCriteria": "contract-*",
                                            "compareCaseSensitive": "true",
                                        }
                                    )
                                ]
                            )
                        },
                    )
                ],
                clear=True,
            ),
        },
    )


@pytest.fixture
def mapped_user(agent_host: Target) -> Iterator[str]:
    name = agent_host.unique("ctmap")
    agent_host.one("user.set", name=name, password=STRONG)
    yield name
    agent_host.one("config.clear", section=SECTION_MAPPING, location=agent_host.site)
    agent_host.one("user.delete", name=name)


def test_mapping_passwords_are_encrypted_and_compared_by_value(
    agent_host: Target, client_cert: pki.Issued, mapped_user: str
) -> None:
    if not agent_host.one("host.facts")["web_cert_auth_installed"]:
        pytest.skip("Web-Cert-Auth is not installed on this host")
    site = agent_host.site
    wanted = _mapping(blob(client_cert), mapped_user, STRONG)
    assert agent_host.one("config.set", section=SECTION_MAPPING, location=site, element=wanted) == {
        "changed": True
    }
    # Same plain password again: no change, although the stored ciphertext differs.
    assert agent_host.one("config.set", section=SECTION_MAPPING, location=site, element=wanted) == {
        "changed": False
    }

    got = agent_host.one("config.get", section=SECTION_MAPPING, location=site)
    text = json.dumps(got)
    assert STRONG not in text
    one = got["element"]["children"]["oneToOneMappings"]
    assert one["clear"] is True and len(one["items"]) == 1
    stored = one["items"][0]["attributes"]["password"]
    assert contract.is_encrypted_value(stored)
    assert one["items"][0]["attributes"]["certificate"] == blob(client_cert)
    effective = got["effective"]["children"]["oneToOneMappings"]["items"]
    assert [i["attributes"]["password"] for i in effective] == [stored]

    # Putting back what was read (encrypted) is no change; a new password is one.
    restored = got["element"]
    assert agent_host.one(
        "config.set", section=SECTION_MAPPING, location=site, element=restored
    ) == {"changed": False}
    changed = _mapping(blob(client_cert), mapped_user, OTHER)
    assert agent_host.one(
        "config.set", section=SECTION_MAPPING, location=site, element=changed
    ) == {"changed": True}
    assert agent_host.one(
        "config.set", section=SECTION_MAPPING, location=site, element=restored
    ) == {"changed": True}

    logons = agent_host.one("mapping.verify_logons", site=site)["results"]
    assert {(r["kind"], r["valid"]) for r in logons} == {
        ("one_to_one", True),
        ("many_to_one", True),
    }
    assert {r["key"] for r in logons} == {blob(client_cert), "Contract rule"}
    assert STRONG not in json.dumps(logons)

    agent_host.one("config.set", section=SECTION_MAPPING, location=site, element=changed)
    logons = agent_host.one("mapping.verify_logons", site=site)["results"]
    assert all(r["valid"] is False and r["hresult"] == "0x8007052E" for r in logons)


def test_mapping_duplicate_key(
    agent_host: Target, client_cert: pki.Issued, mapped_user: str
) -> None:
    if not agent_host.one("host.facts")["web_cert_auth_installed"]:
        pytest.skip("Web-Cert-Auth is not installed on this host")
    item = element({"userName": mapped_user, "password": STRONG, "certificate": blob(client_cert)})
    twice = element(children={"oneToOneMappings": element(items=[item, item], clear=True)})
    error = expect_error(
        agent_host,
        "config.set",
        "DuplicateKey",
        section=SECTION_MAPPING,
        location=agent_host.site,
        element=twice,
    )
    assert STRONG not in str(error)
    missing = element(
        children={
            "oneToOneMappings": element(
                items=[element({"userName": mapped_user, "password": STRONG})], clear=True
            )
        }
    )
    expect_error(
        agent_host,
        "config.set",
        "InvalidValue",
        section=SECTION_MAPPING,
        location=agent_host.site,
        element=missing,
    )


# --- certificates and bindings --------------------------------------------------------------


def _thumbprints(target: Target, store: str) -> dict[str, dict[str, Any]]:
    return {c["thumbprint"]: c for c in target.one("cert.list", store=store)["certificates"]}


def test_cert_der_import_list_remove(agent_host: Target, ca: pki.Issued) -> None:
    der = blob(ca)
    first = agent_host.one("cert.import", store="Root", der_b64=der)
    assert first["added"] is True and len(first["thumbprint"]) == 40
    assert agent_host.one("cert.import", store="Root", der_b64=der) == {
        "thumbprint": first["thumbprint"],
        "added": False,
    }
    listed = _thumbprints(agent_host, "Root")[first["thumbprint"]]
    assert listed["der_b64"] == der and listed["has_private_key"] is False
    assert "Contract Test Root CA" in listed["subject"]
    assert agent_host.one("cert.remove", store="Root", thumbprint=first["thumbprint"]) == {
        "removed": True
    }
    assert agent_host.one("cert.remove", store="Root", thumbprint=first["thumbprint"]) == {
        "removed": False
    }
    assert first["thumbprint"] not in _thumbprints(agent_host, "Root")


def test_cert_revocation_fetches_the_crl_from_the_host(agent_host: Target, ca: pki.Issued) -> None:
    # .invalid never resolves (RFC 2606): no host, real or simulated, can fetch that CRL.
    unreachable = "http://crl.iis-clientcert.invalid/contract.crl"
    no_cdp = pki.make_leaf(ca, "contract-no-cdp")
    offline = pki.make_leaf(ca, "contract-offline", crl_urls=[unreachable])
    got = agent_host.one("cert.revocation", certificates=[blob(no_cdp), blob(offline)])
    assert got["results"] == [
        {"thumbprint": no_cdp.thumbprint, "status": "no_cdp", "hresult": None, "urls": []},
        {
            "thumbprint": offline.thumbprint,
            "status": "offline",
            "hresult": "0x80092013",
            "urls": [unreachable],
        },
    ]


@pytest.mark.parametrize(
    ("case", "args"),
    [
        ("not base64", {"der_b64": "not base64 at all!"}),
        ("truncated DER", {"der_b64": "MIIB"}),
        ("not a certificate", {"der_b64": base64.b64encode(b"hello world").decode()}),
    ],
)
def test_cert_import_bad_certificate(agent_host: Target, case: str, args: dict[str, str]) -> None:
    expect_error(agent_host, "cert.import", "BadCertificate", store="CA", **args)


def test_pfx_import_binding_set_and_remove(agent_host: Target, server_cert: pki.Issued) -> None:
    pfx = base64.b64encode(server_cert.pfx(OTHER.encode(), legacy=True)).decode()
    error = expect_error(
        agent_host,
        "cert.import",
        "BadCertificate",
        store="My",
        pfx_b64=pfx,
        pfx_password="wrong-password",
    )
    assert "wrong-password" not in str(error)

    imported = agent_host.one("cert.import", store="My", pfx_b64=pfx, pfx_password=OTHER)
    thumb = imported["thumbprint"]
    assert imported["added"] is True
    assert _thumbprints(agent_host, "My")[thumb]["has_private_key"] is True
    info = "*:44301:contract.test"
    try:
        args = {
            "site": agent_host.site,
            "binding_information": info,
            "ssl_flags": 1,
            "certificate_hash": thumb,
            "certificate_store": "My",
            "client_cert_negotiation": True,
        }
        assert agent_host.one("binding.set", **args) == {"changed": True, "created": True}
        assert agent_host.one("binding.set", **args) == {"changed": False, "created": False}
        assert agent_host.one("binding.set", **{**args, "client_cert_negotiation": False}) == {
            "changed": True,
            "created": False,
        }
        sites = {s["name"]: s for s in agent_host.one("site.list")["sites"]}
        binding = next(
            b for b in sites[agent_host.site]["bindings"] if b["binding_information"] == info
        )
        assert binding["protocol"] == "https" and binding["ssl_flags"] == 1
        assert binding["certificate_hash"] == thumb
        assert binding["certificate_store"].lower() == "my"
        assert binding["client_cert_negotiation"] is False

        expect_error(
            agent_host, "binding.set", "NotFound", **{**args, "certificate_hash": "00" * 20}
        )
        expect_error(agent_host, "binding.set", "NotFound", **{**args, "site": "No Such Site"})
        expect_error(
            agent_host,
            "binding.set",
            "InvalidValue",
            **{**args, "binding_information": "not-a-binding"},
        )
    finally:
        assert agent_host.one("binding.remove", site=agent_host.site, binding_information=info) == {
            "changed": True
        }
        assert agent_host.one("binding.remove", site=agent_host.site, binding_information=info) == {
            "changed": False
        }
        assert agent_host.one("cert.remove", store="My", thumbprint=thumb)["removed"] is True


# --- users and groups -------------------------------------------------------------------------


def test_user_lifecycle(agent_host: Target) -> None:
    name = agent_host.unique("ctuser")
    missing = agent_host.one("user.get", name=name)
    assert missing["exists"] is False and missing["groups"] == []
    try:
        created = agent_host.one(
            "user.set",
            name=name,
            password=STRONG,
            full_name="Contract User",
            description="contract test",
            password_never_expires=True,
        )
        assert created == {"created": True, "changed": []}
        assert agent_host.one(
            "user.set",
            name=name,
            password=STRONG,
            full_name="Contract User",
            description="contract test",
            password_never_expires=True,
        ) == {"created": False, "changed": []}
        got = agent_host.one("user.get", name=name)
        assert got["exists"] is True and got["name"].lower() == name
        assert got["full_name"] == "Contract User" and got["description"] == "contract test"
        assert got["password_never_expires"] is True and got["disabled"] is False

        update = agent_host.one("user.set", name=name, description="changed", password=OTHER)
        assert update["created"] is False
        assert set(update["changed"]) == {"description", "password"}

        assert agent_host.one("user.verify_password", name=name, password=OTHER) == {
            "valid": True,
            "hresult": None,
            "checked": True,
        }
        wrong = agent_host.one("user.verify_password", name=name, password=STRONG)
        assert wrong == {"valid": False, "hresult": "0x8007052E", "checked": True}
        # The bad logon counts (BadPasswordAttempts); one request tries it once only.
        counted = agent_host.one("user.get", name=name)
        assert counted["bad_password_count"] >= 1 and counted["locked_out"] is False
        again = agent_host.call(
            contract.user_verify_password(name, STRONG),
            contract.user_verify_password(name, STRONG),
        )
        assert [r["checked"] for r in again] == [True, False]

        # Windows makes every new local account a member of Users (issue 10, point 13 i).
        assert agent_host.one("user.get", name=name)["groups"] == ["Users"]
        assert agent_host.one("group.add_member", group="Users", member=name) == {"changed": False}
        assert agent_host.one("group.add_member", group="IIS_IUSRS", member=name) == {
            "changed": True
        }
        assert agent_host.one("group.add_member", group="IIS_IUSRS", member=name) == {
            "changed": False
        }
        assert "IIS_IUSRS" in agent_host.one("user.get", name=name)["groups"]
        assert agent_host.one("group.remove_member", group="IIS_IUSRS", member=name) == {
            "changed": True
        }
        assert agent_host.one("group.remove_member", group="IIS_IUSRS", member=name) == {
            "changed": False
        }
        expect_error(
            agent_host, "group.add_member", "NotFound", group="No Such Group 9", member=name
        )
    finally:
        assert agent_host.one("user.delete", name=name) == {"removed": True}
    assert agent_host.one("user.delete", name=name) == {"removed": False}
    unknown = agent_host.one("user.verify_password", name=name, password=OTHER)
    assert unknown == {"valid": False, "hresult": "0x8007052E", "checked": True}


def test_host_facts_tell_the_lockout_policy(agent_host: Target) -> None:
    policy = agent_host.one("host.facts")["lockout_policy"]
    # 0 (none, a fresh Server), 10 (Windows 11 22H2+), a domain's 3-5; -1 if unreadable.
    assert policy["threshold"] >= -1
    assert policy["observation_window_s"] >= 0 and policy["duration_s"] >= 0
    if agent_host.simulated:
        assert policy == {"threshold": 0, "observation_window_s": 1800, "duration_s": 1800}


@pytest.mark.parametrize(
    ("case", "name", "password"),
    [
        ("password too weak", "ctweak", "abc"),
        ("name too long", "a-name-longer-than-twenty", STRONG),
        ("name with a slash", "bad/name", STRONG),
        ("name only dots", "...", STRONG),
    ],
)
def test_user_policy_violations(agent_host: Target, case: str, name: str, password: str) -> None:
    error = expect_error(agent_host, "user.set", "PolicyViolation", name=name, password=password)
    # No secret of any length in a message (issue 10, point 13 n): a short one withholds it.
    assert password not in str(error)
    assert agent_host.one("user.get", name=name)["exists"] is False


# --- folder ACLs ------------------------------------------------------------------------------


def test_acl_grant_and_revoke(agent_host: Target) -> None:
    name = agent_host.unique("ctacl")
    agent_host.one("user.set", name=name, password=STRONG)
    folder = agent_host.folder
    try:
        assert agent_host.one("acl.grant", path=folder, identity=name, rights="Read") == {
            "changed": True
        }
        assert agent_host.one("acl.grant", path=folder, identity=name, rights="Read") == {
            "changed": False
        }
        got = agent_host.one("acl.get", path=folder)
        assert got["exists"] is True
        mine = [a for a in got["aces"] if a["identity"].lower().endswith("\\" + name)]
        assert mine == [
            {
                "identity": mine[0]["identity"],
                "sid": agent_host.one("user.get", name=name)["sid"],
                "rights": "Read",
                "type": "Allow",
                "inherited": False,
            }
        ]
        assert agent_host.one("acl.grant", path=folder, identity=name, rights="Modify") == {
            "changed": True
        }
        rights = [
            a["rights"]
            for a in agent_host.one("acl.get", path=folder)["aces"]
            if a["identity"].lower().endswith("\\" + name)
        ]
        assert rights == ["Modify"]
        assert agent_host.one("acl.revoke", path=folder, identity=name) == {"changed": True}
        assert agent_host.one("acl.revoke", path=folder, identity=name) == {"changed": False}
        expect_error(
            agent_host,
            "acl.grant",
            "NotFound",
            path=folder,
            identity="no-such-user-9",
            rights="Read",
        )
        expect_error(
            agent_host,
            "acl.grant",
            "NotFound",
            path=folder + "\\no-such-folder-9",
            identity=name,
            rights="Read",
        )
    finally:
        agent_host.one("user.delete", name=name)


# --- batches and requests ---------------------------------------------------------------------


def test_batch_stops_at_the_first_error(agent_host: Target) -> None:
    with pytest.raises(AgentError) as caught:
        agent_host.call(
            make_op("host.facts"),
            make_op("cert.import", store="CA", der_b64="MIIB"),
            make_op("site.list"),
        )
    error = caught.value
    assert error.code == "BadCertificate" and error.index == 1 and error.op == "cert.import"
    assert len(error.results) == 1 and error.results[0]["computer_name"]


@pytest.mark.parametrize(
    ("case", "request_"),
    [
        ("unknown op", {"version": 1, "ops": [{"op": "no.such", "args": {}}]}),
        ("wrong version", {"version": 99, "ops": [{"op": "host.facts", "args": {}}]}),
        ("no ops", {"version": 1, "ops": []}),
    ],
)
def test_bad_requests(agent_host: Target, case: str, request_: dict[str, Any]) -> None:
    # Requests HostClient would refuse to build, sent raw.
    result = agent_session.run_agent_request(agent_host.client.connection, agent_script(), request_)
    assert result["ok"] is False and result["error"]["code"] == "BadRequest"


# --- every error code as a typed exception (simulator: injected) ------------------------------


@pytest.mark.parametrize("code", sorted(contract.ERROR_CODES))
def test_each_error_code_is_a_typed_agent_error(agent_host: Target, code: str) -> None:
    if not agent_host.simulated:
        pytest.skip("fault injection is a simulator feature")
    assert agent_host.state_dir is not None
    (agent_host.state_dir / "faults.json").write_text(
        json.dumps(
            {
                "fail_op": {
                    "nth": 2,
                    "code": code,
                    "hresult": "0x80070005",
                    "message": f"injected {code}",
                }
            }
        )
    )
    with pytest.raises(AgentError) as caught:
        agent_host.call(make_op("host.facts"), make_op("site.list"))
    error = caught.value
    assert (error.code, error.hresult, error.index, error.op) == (
        code,
        "0x80070005",
        1,
        "site.list",
    )
    assert f"injected {code}" in str(error) and "E_ACCESSDENIED" in str(error)
    assert isinstance(error, PermissionError | RuntimeError)
    assert len(error.results) == 1


def test_feature_missing(agent_host: Target, client_cert: pki.Issued) -> None:
    if not agent_host.simulated:
        pytest.skip("the simulator can switch Web-Cert-Auth off; a real host is what it is")
    assert agent_host.state_dir is not None
    host = HostState(agent_host.state_dir)
    host.set_feature("Web-Cert-Auth", False)  # its module leaves <globalModules>
    try:
        assert agent_host.one("host.facts")["web_cert_auth_installed"] is False
        expect_error(
            agent_host,
            "config.set",
            "FeatureMissing",
            section=SECTION_MAPPING,
            location=agent_host.site,
            element=element({"enabled": "true"}),
        )
    finally:
        host.set_feature("Web-Cert-Auth", True)


# --- every op's result has the declared shape -------------------------------------------------


def test_every_op_returns_its_declared_result_type(
    agent_host: Target, server_cert: pki.Issued
) -> None:
    """One batch with every op of the contract, sent raw (not through HostClient, which
    checks results itself): each real result is checked against OpSpec.result."""
    site, folder = agent_host.site, agent_host.folder
    name = agent_host.unique("ctshape")
    facts = agent_host.one("host.facts")
    pfx = base64.b64encode(server_cert.pfx(OTHER.encode(), legacy=True)).decode()
    thumb = server_cert.thumbprint
    info = "*:44302:shape.contract.test"
    ops: list[contract.Op[Any]] = [
        contract.host_facts(),
        contract.site_list(),
        contract.site_log_tail(site, 5),
        contract.user_set(name, password=STRONG, description="contract shape"),
        contract.user_get(name),
        contract.user_verify_password(name, STRONG),
        contract.group_add_member("Users", name),
        contract.group_remove_member("Users", name),
        contract.acl_grant(folder, name, "Read"),
        contract.acl_get(folder),
        contract.acl_revoke(folder, name),
        contract.cert_import("My", pfx_b64=pfx, pfx_password=OTHER),
        contract.cert_list("My"),
        contract.cert_revocation([blob(server_cert)]),
        contract.binding_set(site, info, 1, thumb, "My", True),
        contract.binding_remove(site, info),
        contract.cert_remove("My", thumb),
        contract.config_set(SECTION_SSL, site, element({"sslFlags": "Ssl"})),
        contract.config_get(SECTION_SSL, site),
        contract.config_clear(SECTION_SSL, site),
        contract.user_delete(name),
    ]
    if facts["web_cert_auth_installed"]:
        ops.insert(-1, contract.mapping_verify_logons(site))
    request = contract.make_request(ops)
    try:
        result = agent_session.run_agent_request(
            agent_host.client.connection, agent_script(), request
        )
    finally:
        # Whatever the batch got to, leave the host as it was.
        for cleanup in (
            contract.binding_remove(site, info),
            contract.cert_remove("My", thumb),
            contract.config_clear(SECTION_SSL, site),
            contract.user_delete(name),
        ):
            agent_host.client.call([cleanup])
    assert result["ok"] is True, result.get("error")
    assert len(result["results"]) == len(ops)
    for op, value in zip(ops, result["results"], strict=True):
        assert shapes.problems(value, op.spec.result, op.name) == []
    checked = {op.name for op in ops}
    missing = set(contract.OPS) - checked
    # mapping.verify_logons needs Web-Cert-Auth (always there on the simulator).
    assert missing == (set() if facts["web_cert_auth_installed"] else {"mapping.verify_logons"})


# --- concurrent writers (FACTS.md, "Real-host pitfalls": optimistic commits) ------------------


def test_concurrent_write_batches_both_commit(agent_host: Target) -> None:
    # Pulumi applies resources in parallel: two batches that read applicationHost.config and
    # then commit must not fail with "the file has changed on disk", nor lose a change. On
    # the simulator each op pauses so that the batches interleave.
    locations = [f"{agent_host.site}/{agent_host.unique('conc')}" for _ in range(2)]
    if agent_host.state_dir is not None:
        (agent_host.state_dir / "faults.json").write_text(json.dumps({"op_pause_ms": 400}))
    errors: list[BaseException] = []

    def write(location: str) -> None:
        try:
            agent_host.call(
                make_op("config.get", section=SECTION_SSL, location=agent_host.site),
                make_op(
                    "config.set",
                    section=SECTION_SSL,
                    location=location,
                    element=element({"sslFlags": "Ssl"}),
                ),
            )
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(loc,)) for loc in locations]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        if agent_host.state_dir is not None:
            (agent_host.state_dir / "faults.json").write_text("{}")
    try:
        assert errors == []
        for location in locations:
            found = agent_host.one("config.get", section=SECTION_SSL, location=location)
            assert found["present"] and flags(found["element"]["attributes"]["sslFlags"]) == {"Ssl"}
    finally:
        for location in locations:
            agent_host.one("config.clear", section=SECTION_SSL, location=location)
