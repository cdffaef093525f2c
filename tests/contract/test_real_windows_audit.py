"""Resources on a host that behaves like Windows: the rest of the audit list (issue 10,
point 13).

Each test leaves the host as its owner (or Windows) would: a server-level mapping, a
missing <clear/>, a lock on a section, a Central Certificate Store binding, an account
deleted behind Pulumi's back, a domain account of the same name, a host message that
quotes a short password. Then it drives the providers (no engine) and checks what the
owner would see afterwards. docs/real-host.md, "Audit list (issue 10, point 13)", lists
what only a real host can settle.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert.errors import AgentError, ValidationError
from iis_clientcert.host import contract
from iis_clientcert.host.client import HostClient
from iis_clientcert.host.connection import Connection
from iis_clientcert.providers import certificate_mapping as cm
from iis_clientcert.providers import https_binding as hb
from iis_clientcert.providers import local_user as lu
from iis_clientcert.providers import ssl_settings as ss
from iis_clientcert_simulator import pki
from iis_clientcert_simulator.state import HostState, Session
from iis_clientcert_simulator.testing import (
    replace_in_apphost,
    running_simulator,
    set_host_facts,
)
from iis_clientcert_simulator.wsman import faults_lock, write_faults
from tests.support.contract import Target

SHOP_FOLDER = "C:\\inetpub\\shop"
USER_PASSWORD = "Audit-Acc0unt-Pw!"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with running_simulator(tmp_path / "state") as endpoint:
        yield {"connection": endpoint.connection_input(), "state": Path(endpoint.state_dir)}


def _client(sim: dict[str, Any]) -> HostClient:
    return HostClient(Connection.from_input(sim["connection"]))


def _call(sim: dict[str, Any], *ops: contract.Op[Any]) -> list[Any]:
    return _client(sim).call(list(ops))


def _checked(provider: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    result = provider.check({}, inputs)
    assert result.failures == [], [f.reason for f in result.failures]
    return dict(result.inputs)


def _shop_location(sim: dict[str, Any]) -> str:
    text = Path(sim["state"], "applicationHost.config").read_text("utf-8")
    start = text.index('<location path="shop">')
    return text[start : text.index("</location>", start)]


# --- (b) <clear/>: what is in force at the site, inherited entries included -----------------

MAP_USER = "audit-map"


def _mapping(sim: dict[str, Any], cert: pki.Issued) -> tuple[cm.CertificateMappingProvider, Any]:
    _call(sim, contract.make_op("user.set", name=MAP_USER, password=USER_PASSWORD))
    provider = cm.CertificateMappingProvider()
    inputs = _checked(
        provider,
        {
            "connection": sim["connection"],
            "site": "shop",
            "one_to_one": [{"certificate": cert.cert_pem().decode(), "user_name": MAP_USER}],
            "passwords": {MAP_USER: USER_PASSWORD},
        },
    )
    return provider, inputs


def _server_level_mapping(sim: dict[str, Any], cert: pki.Issued) -> None:
    # An owner's mapping for every site, at the server level of applicationHost.config.
    blob = "".join(cert.cert_pem().decode().splitlines()[1:-1])
    item = contract.element({"certificate": blob, "userName": MAP_USER, "password": USER_PASSWORD})
    _call(
        sim,
        contract.config_set(
            contract.SECTION_MAPPING,
            "",
            contract.element({}, {"oneToOneMappings": contract.element(items=[item])}),
        ),
    )


def test_an_inherited_mapping_through_a_missing_clear_is_drift_that_up_repairs(
    sim: dict[str, Any],
) -> None:
    ca = pki.make_ca("Inherit CA")
    mine, theirs = pki.make_leaf(ca, "mine"), pki.make_leaf(ca, "theirs")
    provider, inputs = _mapping(sim, mine)
    created: Any = provider.create(inputs)
    assert "<clear />" in _shop_location(sim)
    _server_level_mapping(sim, theirs)
    # With the site's <clear/>, the server-level mapping stays out: no drift.
    before: Any = provider.read(created.id, created.outs)
    assert provider.diff(created.id, before.outs, inputs).changes is False
    # Someone drops the site's <clear/>: the server-level mapping now maps certificates
    # into shop too. Refresh must show it, and up must take it out again.
    location = _shop_location(sim)
    dropped = re.sub(r"(<oneToOneMappings>)\s*<clear />", r"\1", location)
    assert dropped != location
    replace_in_apphost(sim["state"], location, dropped)
    read: Any = provider.read(created.id, created.outs)
    assert read.inputs is not None
    subjects = [m["subject"] for m in read.inputs["one_to_one"]]
    assert any("theirs" in s for s in subjects) and any("mine" in s for s in subjects)
    assert provider.diff(created.id, read.outs, inputs).changes
    provider.update(created.id, read.outs, inputs)
    effective = _call(sim, contract.config_get(contract.SECTION_MAPPING, "shop"))[0]["effective"][
        "children"
    ]["oneToOneMappings"]["items"]
    assert len(effective) == 1 and "<clear />" in _shop_location(sim)


def test_no_clear_with_nothing_inherited_is_no_drift(sim: dict[str, Any]) -> None:
    # Whether IIS writes <clear/> where nothing is inherited is for a real host to say
    # (docs/real-host.md): either answer must read as "no change".
    provider, inputs = _mapping(sim, pki.make_leaf(pki.make_ca("No Clear CA"), "solo"))
    created: Any = provider.create(inputs)
    location = _shop_location(sim)
    replace_in_apphost(sim["state"], location, location.replace("<clear />", ""))
    assert "<clear />" not in _shop_location(sim)
    read: Any = provider.read(created.id, created.outs)
    assert provider.diff(created.id, read.outs, inputs).changes is False


# --- (e) Central Certificate Store bindings --------------------------------------------------


def test_https_binding_refuses_to_take_over_a_ccs_binding(sim: dict[str, Any]) -> None:
    state = HostState(sim["state"])
    with state.locked():
        session = Session(state)
        session.apphost.set_binding("shop", "https", "*:443:ccs.example.test", 3)
        session.save()
    before = (sim["state"] / "httpsys.json").read_text()
    provider = hb.HttpsBindingProvider()
    shop_thumb = _call(sim, contract.make_op("site.list"))[0]["sites"]
    thumb = next(
        b["certificate_hash"]
        for s in shop_thumb
        if s["name"] == "shop"
        for b in s["bindings"]
        if b["binding_information"] == "*:443:"
    )
    inputs = _checked(
        provider,
        {
            "connection": sim["connection"],
            "site": "shop",
            "host_name": "ccs.example.test",
            "sni": True,
            "certificate_thumbprint": thumb,
        },
    )
    with pytest.raises(ValidationError) as caught:
        provider.create(inputs)
    assert "Central Certificate Store" in str(caught.value)
    assert (sim["state"] / "httpsys.json").read_text() == before


# --- (g) and (h): folder rules by SID ---------------------------------------------------------


def _explicit(sim: dict[str, Any]) -> list[dict[str, Any]]:
    aces = _call(sim, contract.acl_get(SHOP_FOLDER))[0]["aces"]
    return [a for a in aces if not a["inherited"]]


def _local_user(sim: dict[str, Any], name: str) -> tuple[lu.LocalUserProvider, dict[str, Any]]:
    provider = lu.LocalUserProvider()
    return provider, _checked(
        provider,
        {
            "connection": sim["connection"],
            "name": name,
            "password": USER_PASSWORD,
            "folder_access": [{"path": SHOP_FOLDER, "rights": "Read"}],
        },
    )


def test_destroy_after_the_account_was_deleted_removes_its_rule_by_sid(
    sim: dict[str, Any],
) -> None:
    provider, inputs = _local_user(sim, "audit-gone")
    created: Any = provider.create(inputs)
    sid = created.outs["sid"]
    assert [a["sid"] for a in _explicit(sim)] == [sid]
    _call(sim, contract.user_delete("audit-gone"))  # behind Pulumi's back
    read: Any = provider.read(created.id, created.outs)
    # Refresh keeps the resource, drifted (no account logs on): forgetting it would forget
    # the one SID that names the rule left behind.
    assert read.id == created.id and read.outs["sid"] == sid
    assert read.outs["password_valid"] is False
    assert provider.diff(created.id, read.outs, inputs).changes
    provider.delete(created.id, read.outs)
    assert _explicit(sim) == []


def test_refresh_forgets_a_deleted_account_that_left_nothing(sim: dict[str, Any]) -> None:
    provider, inputs = _local_user(sim, "audit-clean")
    created: Any = provider.create(inputs)
    _call(sim, contract.acl_revoke(SHOP_FOLDER, "audit-clean"), contract.user_delete("audit-clean"))
    assert provider.read(created.id, created.outs).id is None


def test_up_after_the_account_was_deleted_replaces_the_orphan_rule(sim: dict[str, Any]) -> None:
    provider, inputs = _local_user(sim, "audit-redo")
    created: Any = provider.create(inputs)
    old = created.outs["sid"]
    _call(sim, contract.user_delete("audit-redo"))
    read: Any = provider.read(created.id, created.outs)
    updated: Any = provider.update(created.id, read.outs, inputs)
    new = updated.outs["sid"]
    assert new != old
    assert [a["sid"] for a in _explicit(sim)] == [new]


def test_a_domain_accounts_rule_of_the_same_name_is_not_the_accounts(sim: dict[str, Any]) -> None:
    set_host_facts(sim["state"], domain={"name": "CONTOSO", "accounts": ["audit-twin"]})
    _call(sim, contract.acl_grant(SHOP_FOLDER, "CONTOSO\\audit-twin", "Read"))
    provider, inputs = _local_user(sim, "audit-twin")
    created: Any = provider.create(inputs)
    sid = created.outs["sid"]
    # The local account's own rule is removed behind Pulumi's back: drift, although
    # CONTOSO\audit-twin (same name, another SID) still has Read.
    _call(sim, contract.acl_revoke(SHOP_FOLDER, sid))
    read: Any = provider.read(created.id, created.outs)
    assert read.inputs is not None and read.inputs["folder_access"] == []
    provider.update(created.id, read.outs, inputs)
    assert sorted(a["identity"] for a in _explicit(sim)) == [
        "CONTOSO\\audit-twin",
        "SIMIIS01\\audit-twin",
    ]


# --- (i) new accounts are members of Users ---------------------------------------------------


@pytest.mark.parametrize("groups", [[], ["Users"]])
def test_local_user_converges_with_windows_putting_it_in_users(
    sim: dict[str, Any], groups: list[str]
) -> None:
    provider = lu.LocalUserProvider()
    inputs = _checked(
        provider,
        {
            "connection": sim["connection"],
            "name": "audit-users",
            "password": USER_PASSWORD,
            "groups": groups,
        },
    )
    created: Any = provider.create(inputs)
    assert _call(sim, contract.user_get("audit-users"))[0]["groups"] == ["Users"]
    read: Any = provider.read(created.id, created.outs)
    assert read.inputs is not None and read.inputs["groups"] == groups
    assert provider.diff(created.id, read.outs, inputs).changes is False


# --- (m) lock attributes survive our writes --------------------------------------------------


def test_ssl_settings_keep_the_owners_lock_through_create_and_delete(
    sim: dict[str, Any],
) -> None:
    _call(
        sim,
        contract.config_set(contract.SECTION_SSL, "shop", contract.element({"sslFlags": "Ssl"})),
    )
    replace_in_apphost(
        sim["state"],
        '<access sslFlags="Ssl" />',
        '<access sslFlags="Ssl" lockAttributes="sslFlags" />',
    )
    provider = ss.SslSettingsProvider()
    inputs = _checked(provider, {"connection": sim["connection"], "site": "shop"})
    created: Any = provider.create(inputs)
    assert 'lockAttributes="sslFlags"' in _shop_location(sim)
    assert "SslRequireCert" in _shop_location(sim)
    read: Any = provider.read(created.id, created.outs)
    assert provider.diff(created.id, read.outs, inputs).changes is False
    provider.delete(created.id, read.outs)
    assert '<access sslFlags="Ssl" lockAttributes="sslFlags" />' in _shop_location(sim)


def test_certificate_mapping_keeps_a_lock_and_sees_no_drift_in_it(sim: dict[str, Any]) -> None:
    provider, inputs = _mapping(sim, pki.make_leaf(pki.make_ca("Lock CA"), "locked"))
    created: Any = provider.create(inputs)
    location = _shop_location(sim)
    replace_in_apphost(
        sim["state"],
        location,
        location.replace(
            "<iisClientCertificateMappingAuthentication ",
            '<iisClientCertificateMappingAuthentication lockAttributes="enabled" ',
        ),
    )
    read: Any = provider.read(created.id, created.outs)
    assert provider.diff(created.id, read.outs, inputs).changes is False
    provider.update(created.id, read.outs, {**inputs, "enabled": False})
    assert 'lockAttributes="enabled"' in _shop_location(sim)
    assert 'enabled="false"' in _shop_location(sim)


# --- (n) no secret of any length in a message -------------------------------------------------


@pytest.mark.parametrize("password", ["x", "x9", "x9!"])
def test_a_short_secret_never_reaches_an_error_message(sim: dict[str, Any], password: str) -> None:
    # A host whose error text quotes the password it was given (a third-party module, a
    # localised message): a secret of 1-3 characters cannot be masked inside a text, so
    # the text is withheld; code and HRESULT still say what happened.
    path = HostState(sim["state"]).faults
    with faults_lock(path):
        write_faults(
            path,
            {
                "fail_op": {
                    "nth": 1,
                    "code": "LogonFailure",
                    "hresult": "0x8007052E",
                    "message": f"logon of audit-short with {password} failed",
                }
            },
        )
    with pytest.raises(AgentError) as caught:
        _client(sim).run(contract.user_verify_password("audit-short", password))
    error = caught.value
    # The host's text is gone whole (the explanation added by the client is ours).
    assert error.agent_message == contract.WITHHELD_MESSAGE
    assert "audit-short with" not in str(error)
    assert error.code == "LogonFailure" and error.hresult == "0x8007052E"


def test_a_long_secret_is_masked_and_the_message_kept(sim: dict[str, Any]) -> None:
    path = HostState(sim["state"]).faults
    with faults_lock(path):
        write_faults(
            path,
            {"fail_op": {"nth": 1, "message": f"logon with {USER_PASSWORD} failed"}},
        )
    with pytest.raises(AgentError) as caught:
        _client(sim).run(contract.user_verify_password("audit-long", USER_PASSWORD))
    assert USER_PASSWORD not in str(caught.value)
    assert "logon with REDACTED failed" in str(caught.value)


# --- (f) user.get: no account, whatever the name ---------------------------------------------


@pytest.mark.parametrize("name", ["Users", "IIS_IUSRS", "no.such.user", "no such user", "a/b"])
def test_user_get_of_a_group_or_an_odd_name_is_no_account(agent_host: Target, name: str) -> None:
    # On Windows, WinNT's Find answers these with several codes (not only NERR_UserNotFound);
    # whatever the code, an account that is not there reads as exists=false, not an error.
    got = agent_host.one("user.get", name=name)
    assert got["exists"] is False and got["sid"] is None
