"""Issue 11, points 4, 8 and 13 through the HTTPS front: logon rights and account states as
IIS's LogonUser meets them, many-to-one sub-fields, the anonymous pool identity, and the
SAM rules the simulator applies to names, passwords and password policy defaults.

One host for the module (site "shop", client CA in Root, "carol" mapped one-to-one and
"dave" many-to-one by OU); each test puts back what it changed.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from iis_clientcert.host.contract import (
    LOGON_VALID_CODES,
    SECTION_ANONYMOUS,
    SECTION_MAPPING,
    SECTION_SSL,
    WINDOWS_CODES,
    element,
    logon_verdict,
    make_op,
)
from iis_clientcert.tools.probe import ProbeResult, probe
from iis_clientcert_simulator import pki
from iis_clientcert_simulator.https_front import HttpsFront
from iis_clientcert_simulator.state import COMPUTER_NAME, SHOP_HOST, HostState
from iis_clientcert_simulator.testing import (
    AgentRunner,
    grant_logon_right,
    set_account_state,
    set_host_facts,
)

CAROL_PW = "Keys-Wall-2024!"
DAVE_PW = "Gates-Open-55#x"
REQUIRE = "Ssl, SslNegotiateCert, SslRequireCert"
DAY = 86400.0


@dataclass(frozen=True)
class Host:
    state: HostState
    agent: AgentRunner
    front: HttpsFront
    ca_bundle: str
    certs: dict[str, pki.Issued]

    def probe(self, name: str) -> ProbeResult:
        cert = self.certs[name]
        return probe(
            self.front.urls()["shop"][0],
            client_cert_pem=cert.cert_pem(),
            client_key_pem=cert.key_pem(),
            ca_bundle=self.ca_bundle,
            server_name=SHOP_HOST,
            timeout=10,
        )

    def mapping(self) -> dict[str, Any]:
        got: dict[str, Any] = self.agent.one(
            "config.get", section=SECTION_MAPPING, location="shop"
        )["element"]
        return got

    def set_mapping(self, data: dict[str, Any]) -> None:
        self.agent.one("config.set", section=SECTION_MAPPING, location="shop", element=data)


def _rule(sub: str, criteria: str) -> dict[str, Any]:
    return element(
        {"certificateField": "Subject", "certificateSubField": sub, "matchCriteria": criteria}
    )


def _mapping(carol_blob: str, dave_rules: list[dict[str, Any]]) -> dict[str, Any]:
    return element(
        {"enabled": "true"},
        {
            "oneToOneMappings": element(
                items=[
                    element({"certificate": carol_blob, "userName": "carol", "password": CAROL_PW})
                ],
                clear=True,
            ),
            "manyToOneMappings": element(
                items=[
                    element(
                        {"name": "ops", "userName": "dave", "password": DAVE_PW},
                        {"rules": element(items=dave_rules)},
                    )
                ],
                clear=True,
            ),
        },
    )


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    directory = tmp_path_factory.mktemp("front-accounts") / "state"
    state = HostState(directory)
    state.ensure()
    agent = AgentRunner(directory)
    ca = pki.make_ca("Accounts Clients Root CA")
    certs = {
        "carol": pki.make_leaf(ca, "carol"),
        "ops": pki.make_leaf(ca, "o-01", subject_extra={"OU": "ops"}),
        # Only the e-mail RDN names it: a rule on "E" is the only one that could match.
        "mailed": pki.make_leaf(ca, "m-01", subject_extra={"E": "m01@shop.test"}),
    }
    agent.ok(
        make_op("cert.import", store="Root", der_b64=ca.blob),
        make_op("user.set", name="carol", password=CAROL_PW),
        make_op("user.set", name="dave", password=DAVE_PW),
        make_op(
            "config.set",
            section=SECTION_SSL,
            location="shop",
            element=element({"sslFlags": REQUIRE}),
        ),
        make_op(
            "config.set",
            section=SECTION_ANONYMOUS,
            location="shop",
            element=element({"enabled": "false"}),
        ),
        make_op(
            "config.set",
            section=SECTION_MAPPING,
            location="shop",
            element=_mapping(certs["carol"].blob, [_rule("OU", "ops")]),
        ),
    )
    my = agent.one("cert.list", store="My")["certificates"]
    thumbprint = next(c["thumbprint"] for c in my if "shop" in c["subject"])
    agent.one(
        "binding.set",
        site="shop",
        binding_information="*:443:",
        ssl_flags=0,
        certificate_hash=thumbprint,
        certificate_store="My",
        client_cert_negotiation=True,
    )
    front = HttpsFront(directory, poll_interval=0.05)
    front.start()
    front.sync()
    try:
        yield Host(state, agent, front, str(state.ca_cert), certs)
    finally:
        front.stop()


def _refused(result: ProbeResult, hresult: str) -> None:
    assert (result.code, result.hresult) == ("401.1", hresult), result


def _carol_ok(host: Host) -> None:
    result = host.probe("carol")
    assert (result.code, result.user) == ("200.0", f"{COMPUTER_NAME}\\carol"), result


def _with_logon_method(host: Host, method: str | None) -> None:
    got = host.mapping()
    if method is None:
        got["attributes"].pop("logonMethod", None)
    else:
        got["attributes"]["logonMethod"] = method
    host.set_mapping(got)


# --- point 4: logon rights ---------------------------------------------------------------


def test_batch_logon_needs_log_on_as_a_batch_job(host: Host) -> None:
    # "Log on as a batch job" is Administrators, Backup Operators and Performance Log Users
    # on a server: an ordinary mapped account cannot log on with logonMethod="Batch".
    _with_logon_method(host, "Batch")
    try:
        _refused(host.probe("carol"), "0x80070569")
        grant_logon_right(host.state.dir, "carol", "SeBatchLogonRight")
        _carol_ok(host)
    finally:
        grant_logon_right(host.state.dir, "carol", "SeBatchLogonRight", grant=False)
        _with_logon_method(host, None)
    _carol_ok(host)


def test_network_logon_needs_access_this_computer_from_the_network(host: Host) -> None:
    # ClearText (IIS's default) is a network logon: granted through Everyone and Users by
    # default; taken from both, the mapped account gets 1385 while Interactive still works.
    for holder in ("Everyone", "Users"):
        grant_logon_right(host.state.dir, holder, "SeNetworkLogonRight", grant=False)
    try:
        _refused(host.probe("carol"), "0x80070569")
        _with_logon_method(host, "Interactive")
        _carol_ok(host)
    finally:
        _with_logon_method(host, None)
        for holder in ("Everyone", "Users"):
            grant_logon_right(host.state.dir, holder, "SeNetworkLogonRight")
    _carol_ok(host)


# --- point 4: account states ------------------------------------------------------------


def test_expired_password_follows_the_hosts_maximum_age(host: Host) -> None:
    set_account_state(host.state.dir, "carol", password_last_set=time.time() - 43 * DAY)
    try:
        _refused(host.probe("carol"), "0x80070532")  # older than the default 42 days
        set_host_facts(
            host.state.dir,
            password_policy={"min_length": 8, "complexity": True, "max_age_days": 90},
        )
        _carol_ok(host)
        set_host_facts(host.state.dir, password_policy={"min_length": 8, "complexity": True})
        set_account_state(host.state.dir, "carol", password_never_expires=True)
        _carol_ok(host)
    finally:
        set_host_facts(host.state.dir, password_policy={"min_length": 8, "complexity": True})
        set_account_state(
            host.state.dir, "carol", password_last_set=time.time(), password_never_expires=False
        )
    _carol_ok(host)


def test_must_change_password_at_next_logon(host: Host) -> None:
    set_account_state(host.state.dir, "carol", password_must_change=True)
    try:
        _refused(host.probe("carol"), "0x80070773")
    finally:
        set_account_state(host.state.dir, "carol", password_must_change=False)
    _carol_ok(host)


def test_expired_account(host: Host) -> None:
    set_account_state(host.state.dir, "carol", account_expires=time.time() - DAY)
    try:
        _refused(host.probe("carol"), "0x80070701")
    finally:
        set_account_state(host.state.dir, "carol", account_expires=None)
    _carol_ok(host)


def test_disabled_account(host: Host) -> None:
    host.agent.one("user.set", name="carol", disabled=True)
    try:
        _refused(host.probe("carol"), "0x80070533")
    finally:
        host.agent.one("user.set", name="carol", disabled=False)
    _carol_ok(host)


def test_blank_password_is_refused_over_the_network_only(host: Host) -> None:
    # "Accounts: Limit local account use of blank passwords to console logon only" (on by
    # default): a mapping that stores no password for a blank-password account gets 1327
    # for ClearText and Network logons.
    got = host.mapping()
    entry = got["children"]["oneToOneMappings"]["items"][0]["attributes"]
    entry["password"] = ""
    host.set_mapping(got)
    set_account_state(host.state.dir, "carol", blank_password=True)
    try:
        _refused(host.probe("carol"), "0x8007052F")
        _with_logon_method(host, "Network")
        _refused(host.probe("carol"), "0x8007052F")
        _with_logon_method(host, "Interactive")
        _carol_ok(host)
    finally:
        host.agent.one("user.set", name="carol", password=CAROL_PW)
        host.set_mapping(_mapping(host.certs["carol"].blob, [_rule("OU", "ops")]))
    _carol_ok(host)


def test_each_account_state_means_the_password_was_right() -> None:
    # The product classifies these codes as "password right, logon refused", so a LocalUser
    # or CertificateMapping never rewrites a password because an account is disabled or
    # expired (contract.LOGON_VALID_CODES; docs/real-host.md asks a host to confirm).
    for code in (1327, 1330, 1331, 1385, 1793, 1907):
        assert code in LOGON_VALID_CODES
        assert logon_verdict(code) == {
            "valid": True,
            "hresult": f"0x{0x80070000 | code:08X}",
            "checked": True,
        }
        # And every one is explained with what to do when a request or a check meets it.
        assert WINDOWS_CODES[0x80070000 | code].action, code


def test_password_change_takes_effect_at_once_here_unlike_iis_token_cache(host: Host) -> None:
    # IIS caches a successful logon's token for UserTokenTTL (15 minutes): on a real host a
    # mapping keeps answering 200 for up to 15 minutes after the account's password
    # changed. The simulator logs on for every request (https_front.py, step 5), so the
    # change shows at once; docs/real-host.md lists the cache as a host check.
    _carol_ok(host)
    host.agent.one("user.set", name="carol", password="Other-Keys-77!")
    try:
        _refused(host.probe("carol"), "0x8007052E")
    finally:
        host.agent.one("user.set", name="carol", password=CAROL_PW)
    _carol_ok(host)


# --- point 8: many-to-one sub-fields -----------------------------------------------------


def test_only_documented_sub_fields_are_matched(host: Host) -> None:
    # "E" is not a certificateSubField IIS documents (CN, OU, O, L, S, C): a rule naming it
    # never matches, so the certificate falls through to 401.2 (anonymous is off).
    for sub in ("E", "ou"):
        criteria = "m01@shop.test" if sub == "E" else "ops"
        cert = "mailed" if sub == "E" else "ops"
        host.set_mapping(_mapping(host.certs["carol"].blob, [_rule(sub, criteria)]))
        try:
            result = host.probe(cert)
            assert result.code == "401.2", (sub, result)
        finally:
            host.set_mapping(_mapping(host.certs["carol"].blob, [_rule("OU", "ops")]))
    result = host.probe("ops")
    assert (result.code, result.user) == ("200.0", f"{COMPUTER_NAME}\\dave"), result


# --- point 13: the anonymous identity, names, complexity, policy defaults -----------------


def _plain_get(url: str) -> dict[str, Any]:
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    conn = http.client.HTTPConnection(host_port, timeout=10)
    try:
        conn.request("GET", "/")
        body: dict[str, Any] = json.loads(conn.getresponse().read())
        return body
    finally:
        conn.close()


def test_empty_anonymous_user_name_is_the_application_pools_identity(host: Host) -> None:
    # Default Web Site runs in DefaultAppPool (applicationDefaults), not in a pool named
    # after the site: anonymous requests run as IIS APPPOOL\DefaultAppPool.
    site = "Default Web Site"
    host.agent.one(
        "config.set",
        section=SECTION_ANONYMOUS,
        location=site,
        element=element({"enabled": "true", "userName": ""}),
    )
    try:
        host.front.sync()
        body = _plain_get(host.front.urls("http")[site][0])
        assert (body["status"], body["user"]) == (200, "IIS APPPOOL\\DefaultAppPool"), body
    finally:
        host.agent.one("config.clear", section=SECTION_ANONYMOUS, location=site)


def test_local_account_names_ending_in_a_period_or_with_at_are_refused(host: Host) -> None:
    for name in ("svc.", "a@b"):
        error = host.agent.error("user.set", name=name, password=CAROL_PW)
        assert error["hresult"] == "0x80070523", error  # ERROR_INVALID_ACCOUNT_NAME
        assert name in error["message"]


@pytest.mark.parametrize(
    ("password", "accepted"),
    [
        # Letters without case (CJK) are a category of their own: three categories.
        ("abcdefg1中", True),
        # Currency symbols are not special characters: two categories only.
        ("abcdefg€£1", False),
        ("Abcdefgh€", False),
    ],
)
def test_complexity_counts_caseless_letters_and_not_currency(
    host: Host, password: str, accepted: bool
) -> None:
    result = host.agent.run(make_op("user.set", name="complex1", password=password))
    try:
        assert result["ok"] is accepted, result
        if not accepted:
            assert "three of" in result["error"]["message"]
    finally:
        host.agent.run(make_op("user.delete", name="complex1"))


def test_password_policy_defaults_as_stand_alone_and_domain_member(host: Host) -> None:
    facts = host.state.host_facts()
    set_host_facts(host.state.dir, password_policy={})
    try:
        assert host.agent.one("host.facts")["password_policy"] == {
            "min_length": 0,
            "complexity": True,
        }
        set_host_facts(host.state.dir, domain={"name": "CONTOSO", "accounts": []})
        assert host.agent.one("host.facts")["password_policy"] == {
            "min_length": 7,
            "complexity": True,
        }
    finally:
        set_host_facts(
            host.state.dir, password_policy=facts["password_policy"], domain=facts.get("domain")
        )
