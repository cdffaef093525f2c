"""The HTTPS front end to end: the state configured through agent ops, answers read with probe().

One host for the module (site "shop", its https binding, a client CA in Root whose
certificates name a CRL distribution point with a published CRL, users and mappings); tests
that change the host put back what they changed.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import http.client
import json
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from lxml import etree

import iis_clientcert_simulator
from iis_clientcert.host import client as host_client
from iis_clientcert.host import winrm_transport
from iis_clientcert.host.connection import Connection
from iis_clientcert.host.contract import (
    SECTION_ANONYMOUS,
    SECTION_MAPPING,
    SECTION_SSL,
    Op,
    element,
    make_op,
)
from iis_clientcert.tools.probe import ProbeResult, probe, probe_with_log
from iis_clientcert_simulator import pki
from iis_clientcert_simulator.endpoint import read_endpoint
from iis_clientcert_simulator.https_front import HttpsFront
from iis_clientcert_simulator.state import COMPUTER_NAME, SHOP_HOST, HostState
from iis_clientcert_simulator.stores import CertStores
from iis_clientcert_simulator.testing import (
    AgentRunner,
    account_record,
    agent_script,
    deny_logon_right,
    set_lockout_policy,
    unlock_account,
)

ALICE_PW = "Wonder-Land-2024!"
BOB_PW = "Builder-Tools-77#"
REQUIRE = "Ssl, SslNegotiateCert, SslRequireCert"
# Where the client CA publishes its CRL (the simulator's host reaches it: published below).
CLIENT_CRL = "http://pki.shop.test/crl/shop-clients.crl"


@dataclass(frozen=True)
class Host:
    state: HostState
    agent: AgentRunner
    front: HttpsFront
    ca_bundle: str
    server_thumbprint: str
    certs: dict[str, pki.Issued]
    client_ca: pki.Issued

    def url(self, site: str = "shop") -> str:
        return self.front.urls()[site][0]

    def probe(
        self, name: str | None, chain: Sequence[pki.Issued] = (), **kwargs: Any
    ) -> ProbeResult:
        """Connect with certificate ``name`` (sending ``chain`` after it, as a client that
        has its intermediates does)."""
        cert = self.certs[name] if name is not None else None
        pem = b"".join([cert.cert_pem(), *(c.cert_pem() for c in chain)]) if cert else None
        return probe(
            self.url(),
            client_cert_pem=pem,
            client_key_pem=cert.key_pem() if cert is not None else None,
            ca_bundle=self.ca_bundle,
            server_name=SHOP_HOST,
            timeout=10,
            **kwargs,
        )

    def set_section(self, section: str, data: dict[str, Any], location: str = "shop") -> None:
        self.agent.one("config.set", section=section, location=location, element=data)

    def publish_crl(self, revoked: Sequence[pki.Issued] = (), **kwargs: Any) -> None:
        crl = pki.make_crl(self.client_ca, revoked, **kwargs)
        self.state.publish_crl(CLIENT_CRL, crl.public_bytes(serialization.Encoding.DER))

    def binding(self, negotiate: bool, ssl_flags: int = 0) -> None:
        self.agent.one(
            "binding.set",
            site="shop",
            binding_information="*:443:",
            ssl_flags=ssl_flags,
            certificate_hash=self.server_thumbprint,
            certificate_store="My",
            client_cert_negotiation=negotiate,
        )


def _mapping(alice_blob: str) -> dict[str, Any]:
    def rule(sub: str, criteria: str, case: bool = True) -> dict[str, Any]:
        return element(
            {
                "certificateField": "Subject",
                "certificateSubField": sub,
                "matchCriteria": criteria,
                "compareCaseSensitive": "true" if case else "false",
            }
        )

    return element(
        {"enabled": "true"},
        {
            "oneToOneMappings": element(
                items=[
                    element({"certificate": alice_blob, "userName": "alice", "password": ALICE_PW})
                ],
                clear=True,
            ),
            "manyToOneMappings": element(
                items=[
                    # Order matters: the first matching mapping decides, so Deny goes first.
                    element(
                        {
                            "name": "blocked",
                            "permissionMode": "Deny",
                            "userName": "bob",
                            "password": BOB_PW,
                        },
                        {"rules": element(items=[rule("CN", "evil-*")])},
                    ),
                    element(
                        {"name": "partners", "userName": "bob", "password": BOB_PW},
                        {
                            "rules": element(
                                items=[rule("O", "Partner*"), rule("OU", "*web*", case=False)]
                            )
                        },
                    ),
                    element(
                        {
                            "name": "off",
                            "enabled": "false",
                            "userName": "alice",
                            "password": ALICE_PW,
                        },
                        {"rules": element(items=[rule("CN", "*")])},
                    ),
                ],
                clear=True,
            ),
        },
    )


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    directory = tmp_path_factory.mktemp("front") / "state"
    state = HostState(directory)
    state.ensure()
    agent = AgentRunner(directory)
    ca_bundle = str(state.ca_cert)

    client_ca = pki.make_ca("Shop Clients Root CA")
    stranger_ca = pki.make_ca("Stranger Root CA")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    partner = {"O": "Partner Ltd", "OU": "WEB team"}
    cdp = [CLIENT_CRL]
    certs = {
        "alice": pki.make_leaf(client_ca, "alice", crl_urls=cdp),
        "partner": pki.make_leaf(client_ca, "p-0001", subject_extra=partner, crl_urls=cdp),
        "partner-wrong-case": pki.make_leaf(
            client_ca, "p-0002", subject_extra={"O": "partner ltd", "OU": "Web"}, crl_urls=cdp
        ),
        "evil": pki.make_leaf(client_ca, "evil-01", subject_extra=partner, crl_urls=cdp),
        "nobody": pki.make_leaf(
            client_ca, "nobody", subject_extra={"O": "Elsewhere"}, crl_urls=cdp
        ),
        "unknown-ca": pki.make_leaf(stranger_ca, "alice"),
        "expired": pki.make_leaf(
            client_ca,
            "old-alice",
            not_before=past,
            not_after=past + dt.timedelta(days=30),
            crl_urls=cdp,
        ),
        # A partner certificate the CA revoked (it would otherwise map to bob).
        "revoked": pki.make_leaf(client_ca, "p-0666", subject_extra=partner, crl_urls=cdp),
        # No CRL distribution point at all: nothing for a revocation check to fetch.
        "no-cdp": pki.make_leaf(client_ca, "p-0007", subject_extra=partner),
    }

    agent.ok(
        make_op("cert.import", store="Root", der_b64=client_ca.blob),
        make_op("user.set", name="alice", password=ALICE_PW),
        make_op("user.set", name="bob", password=BOB_PW),
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
            element=_mapping(certs["alice"].blob),
        ),
    )
    my = agent.one("cert.list", store="My")["certificates"]
    server_thumbprint = next(c["thumbprint"] for c in my if "shop" in c["subject"])
    front = HttpsFront(directory, poll_interval=0.05)
    front.start()
    h = Host(state, agent, front, ca_bundle, server_thumbprint, certs, client_ca)
    h.publish_crl(revoked=[certs["revoked"]])
    h.binding(negotiate=True)
    front.sync()
    try:
        yield h
    finally:
        front.stop()


def _expect(result: ProbeResult, code: str, user: str | None = None) -> None:
    assert result.code == code, result
    if user is not None:
        assert result.user == user, result


def test_urls_list_the_sites_https_binding(host: Host) -> None:
    urls = host.front.urls()
    assert list(urls) == ["shop"]
    assert len(urls["shop"]) == 1
    assert urls["shop"][0].startswith("https://127.0.0.1:")


def test_one_to_one_certificate_logs_on_as_its_user(host: Host) -> None:
    result = host.probe("alice")
    _expect(result, "200.0", f"{COMPUTER_NAME}\\alice")
    assert result.auth == "one-to-one"
    assert result.hresult is None


def test_rule_matched_certificate_logs_on_as_the_many_to_one_user(host: Host) -> None:
    result = host.probe("partner")
    _expect(result, "200.0", f"{COMPUTER_NAME}\\bob")
    assert result.auth == "many-to-one"


def test_case_sensitive_rule_refuses_other_case(host: Host) -> None:
    # O is compared case-sensitively ("Partner*"), so "partner ltd" matches no mapping.
    _expect(host.probe("partner-wrong-case"), "401.2")


def test_unknown_ca_is_403_16_chaining(host: Host) -> None:
    # The client sends only its own certificate: no issuer anywhere, CERT_E_CHAINING.
    result = host.probe("unknown-ca")
    _expect(result, "403.16")
    assert result.hresult == "0x800B010A", result


def test_untrusted_root_sent_by_the_client_is_403_16_untrusted_root(host: Host) -> None:
    stranger_root = host.certs["unknown-ca"].chain_up()
    result = host.probe("unknown-ca", chain=stranger_root)
    _expect(result, "403.16")
    assert result.hresult == "0x800B0109", result


def test_intermediate_sent_by_the_client_completes_the_chain(host: Host) -> None:
    # Schannel builds with what the client sends: an issuing CA that is in no store of
    # the host still links the client certificate to the trusted root.
    issuing = pki.make_intermediate(host.client_ca, "Shop Clients Issuing CA (sent)")
    host.certs["sent-chain"] = pki.make_leaf(
        issuing, "p-0100", subject_extra={"O": "Partner Ltd", "OU": "web"}
    )
    try:
        _expect(host.probe("sent-chain"), "403.16")  # without it: chaining fails
        result = host.probe("sent-chain", chain=[issuing])
        _expect(result, "200.0", f"{COMPUTER_NAME}\\bob")
    finally:
        del host.certs["sent-chain"]


def test_server_only_eku_is_403_16_wrong_usage(host: Host) -> None:
    host.certs["server-eku"] = pki.make_leaf(
        host.client_ca, "p-0200", client_auth=False, server_auth=True, crl_urls=[CLIENT_CRL]
    )
    try:
        result = host.probe("server-eku")
        _expect(result, "403.16")
        assert result.hresult == "0x800B0110", result
    finally:
        del host.certs["server-eku"]


def test_certificate_in_disallowed_store_is_403_16_explicit_distrust(host: Host) -> None:
    stores = CertStores(host.state.certstore)
    thumb, _ = stores.add("Disallowed", host.certs["alice"].certificate, None)
    try:
        result = host.probe("alice")
        _expect(result, "403.16")
        assert result.hresult == "0x800B0111", result
        _expect(host.probe("partner"), "200.0")  # only the distrusted one
    finally:
        stores.remove("Disallowed", thumb)
    _expect(host.probe("alice"), "200.0")


def test_distrusted_intermediate_breaks_the_chains_through_it(host: Host) -> None:
    issuing = pki.make_intermediate(host.client_ca, "Shop Clients Issuing CA (distrusted)")
    host.certs["via-distrusted"] = pki.make_leaf(issuing, "p-0300")
    stores = CertStores(host.state.certstore)
    stores.add("CA", issuing.certificate, None)
    thumb, _ = stores.add("Disallowed", issuing.certificate, None)
    try:
        result = host.probe("via-distrusted")
        _expect(result, "403.16")
        assert result.hresult == "0x800B0111", result
    finally:
        stores.remove("Disallowed", thumb)
        stores.remove("CA", thumb)
        del host.certs["via-distrusted"]


def test_expired_certificate_is_403_17(host: Host) -> None:
    result = host.probe("expired")
    _expect(result, "403.17")
    assert result.hresult == "0x800B0101", result


def test_front_decides_trust_without_the_products_certificate_code() -> None:
    # A bug in the product's chain logic must not be able to hide in the tests: no module
    # of the simulator imports iis_clientcert.certs (its trust decision is trust.py's).
    package = Path(iis_clientcert_simulator.__file__).resolve().parent
    offenders = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            offenders += [
                f"{path.name}: {m}"
                for m in modules
                if m == "iis_clientcert.certs" or m.startswith("iis_clientcert.certs.")
            ]
    assert offenders == []
    assert (package / "trust.py").exists()


# --- revocation (HTTP.sys checks it by default) ------------------------------------------


def test_revoked_certificate_is_403_13(host: Host) -> None:
    result = host.probe("revoked")
    _expect(result, "403.13")
    assert result.hresult == "0x80092010", result


def test_unreachable_crl_is_403_13_offline(host: Host) -> None:
    undo = _with_json(host.state.host, {"cdp_reachable": {CLIENT_CRL: False}})
    try:
        result = host.probe("alice")
        _expect(result, "403.13")
        assert result.hresult == "0x80092013", result
        # A certificate without a CDP has nothing to fetch: not refused (KB 294305).
        _expect(host.probe("no-cdp"), "200.0", f"{COMPUTER_NAME}\\bob")
    finally:
        undo()
    _expect(host.probe("alice"), "200.0")


def test_stale_crl_is_403_13_offline(host: Host) -> None:
    now = dt.datetime.now(dt.UTC)
    host.publish_crl(
        revoked=[host.certs["revoked"]],
        last_update=now - dt.timedelta(days=10),
        next_update=now - dt.timedelta(days=3),
    )
    try:
        result = host.probe("alice")
        _expect(result, "403.13")
        assert result.hresult == "0x80092013", result
    finally:
        host.publish_crl(revoked=[host.certs["revoked"]])


def test_crl_signed_by_another_ca_does_not_count(host: Host) -> None:
    impostor = pki.make_ca("Shop Clients Root CA")  # same name, other key
    crl = pki.make_crl(impostor)
    host.state.publish_crl(CLIENT_CRL, crl.public_bytes(serialization.Encoding.DER))
    try:
        _expect(host.probe("alice"), "403.13")
    finally:
        host.publish_crl(revoked=[host.certs["revoked"]])


def test_revocation_check_turned_off_on_the_binding(host: Host) -> None:
    path = host.state.httpsys
    data = json.loads(path.read_text("utf-8"))
    for entry in data["sslcert"].values():
        entry["verifyclientcertrevocation"] = False  # netsh ... verifyclientcertrevocation=disable
    before = path.read_text("utf-8")
    path.write_text(json.dumps(data), "utf-8")
    try:
        _expect(host.probe("revoked"), "200.0", f"{COMPUTER_NAME}\\bob")
    finally:
        path.write_text(before, "utf-8")
        host.binding(negotiate=True)  # a rewritten record: the default (on) again
    _expect(host.probe("revoked"), "403.13")


def test_no_certificate_is_403_7(host: Host) -> None:
    _expect(host.probe(None), "403.7")


def test_deny_mapping_is_403_12(host: Host) -> None:
    _expect(host.probe("evil"), "403.12")


def test_no_mapping_and_anonymous_off_is_401_2(host: Host) -> None:
    _expect(host.probe("nobody"), "401.2")


def test_wrong_stored_password_is_401_1_logon_failure(host: Host) -> None:
    host.agent.one("user.set", name="alice", password="Changed-Pass-99!")
    try:
        result = host.probe("alice")
        _expect(result, "401.1")
        assert result.hresult == "0x8007052E"
        # The many-to-one user still works: only alice's stored password is stale.
        _expect(host.probe("partner"), "200.0", f"{COMPUTER_NAME}\\bob")
    finally:
        host.agent.one("user.set", name="alice", password=ALICE_PW)
    _expect(host.probe("alice"), "200.0", f"{COMPUTER_NAME}\\alice")


def test_requests_with_a_stale_stored_password_lock_the_mapped_account(host: Host) -> None:
    # IIS logs the mapped account on for each request: every 401.1 for a wrong password is
    # a bad attempt, and at the threshold the account locks (FACTS.md "Logons lock
    # accounts"); then even the right password gets 401.1 with 0x80070775.
    set_lockout_policy(host.state.dir, threshold=5)
    host.agent.one("user.set", name="alice", password="Changed-Pass-99!")
    try:
        start = account_record(host.state.dir, "alice")["bad_password_count"]
        for _ in range(5 - start):
            result = host.probe("alice")
            _expect(result, "401.1")
            assert result.hresult == "0x8007052E"
        assert account_record(host.state.dir, "alice")["locked_at"] is not None
        host.agent.one("user.set", name="alice", password=ALICE_PW)
        locked = host.probe("alice")
        _expect(locked, "401.1")
        assert locked.hresult == "0x80070775"
    finally:
        set_lockout_policy(host.state.dir, threshold=0)
        host.agent.one("user.set", name="alice", password=ALICE_PW)
        unlock_account(host.state.dir, "alice")
    _expect(host.probe("alice"), "200.0", f"{COMPUTER_NAME}\\alice")


def test_logon_method_and_default_domain_of_the_section_decide_the_logon(host: Host) -> None:
    got = host.agent.one("config.get", section=SECTION_MAPPING, location="shop")["element"]
    deny_logon_right(host.state.dir, "alice", "SeDenyNetworkLogonRight")
    try:
        # ClearText (the default) is a network logon: refused, 401.1 with 1385.
        denied = host.probe("alice")
        _expect(denied, "401.1")
        assert denied.hresult == "0x80070569"
        # Interactive is not denied: the same password logs on.
        got["attributes"]["logonMethod"] = "Interactive"
        host.set_section(SECTION_MAPPING, got)
        _expect(host.probe("alice"), "200.0", f"{COMPUTER_NAME}\\alice")
        # A default logon domain other than this host makes "alice" a domain account.
        got["attributes"]["defaultLogonDomain"] = "CONTOSO"
        host.set_section(SECTION_MAPPING, got)
        _expect(host.probe("alice"), "401.1")
    finally:
        got["attributes"].pop("logonMethod", None)
        got["attributes"].pop("defaultLogonDomain", None)
        host.set_section(SECTION_MAPPING, got)
        deny_logon_right(host.state.dir, "alice", "SeDenyNetworkLogonRight", deny=False)
    _expect(host.probe("alice"), "200.0", f"{COMPUTER_NAME}\\alice")


def test_non_self_signed_certificate_in_root_breaks_every_client_certificate(host: Host) -> None:
    intermediate = pki.make_intermediate(host.client_ca, "Shop Clients Issuing CA")
    thumb = host.agent.one("cert.import", store="Root", der_b64=intermediate.blob)["thumbprint"]
    try:
        result = host.probe("alice")
        _expect(result, "403.16")
        assert result.hresult == "0x800B0109"
    finally:
        host.agent.one("cert.remove", store="Root", thumbprint=thumb)
    _expect(host.probe("alice"), "200.0")


def test_intermediate_in_ca_store_completes_the_chain(host: Host) -> None:
    issuing = pki.make_intermediate(host.client_ca, "Shop Clients Issuing CA 2")
    carol = pki.make_leaf(issuing, "carol", subject_extra={"O": "Partner Ltd", "OU": "web"})
    host.certs["carol"] = carol
    _expect(host.probe("carol"), "403.16")  # the issuing CA is nowhere yet
    thumb = host.agent.one("cert.import", store="CA", der_b64=issuing.blob)["thumbprint"]
    try:
        _expect(host.probe("carol"), "200.0", f"{COMPUTER_NAME}\\bob")
    finally:
        host.agent.one("cert.remove", store="CA", thumbprint=thumb)


def test_tls13_without_handshake_negotiation_resets_the_connection(host: Host) -> None:
    host.binding(negotiate=False)
    try:
        result = host.probe("alice")
        assert result.status is None and result.error == "connection reset", result
        assert result.tls_version == "TLSv1.3"
        # TLS 1.2 renegotiates for the certificate after the request: it works.
        _expect(host.probe("alice", tls_max=ssl.TLSVersion.TLSv1_2), "200.0")
    finally:
        host.binding(negotiate=True)
    _expect(host.probe("alice"), "200.0")


def test_tls13_disabled_on_the_binding_falls_back_to_renegotiation(host: Host) -> None:
    host.binding(negotiate=False, ssl_flags=32)  # DisableTLS13
    try:
        result = host.probe("alice")
        _expect(result, "200.0", f"{COMPUTER_NAME}\\alice")
        assert result.tls_version == "TLSv1.2"
    finally:
        host.binding(negotiate=True)


def test_anonymous_access_when_certificates_are_optional(host: Host) -> None:
    host.set_section(SECTION_SSL, element({"sslFlags": "Ssl,SslNegotiateCert"}))
    host.set_section(SECTION_ANONYMOUS, element({"enabled": "true"}))
    try:
        result = host.probe(None)
        _expect(result, "200.0", "NT AUTHORITY\\IUSR")
        assert result.auth == "anonymous"
        # A mapped certificate still logs on as its user.
        _expect(host.probe("alice"), "200.0", f"{COMPUTER_NAME}\\alice")
    finally:
        host.set_section(SECTION_SSL, element({"sslFlags": REQUIRE}))
        host.set_section(SECTION_ANONYMOUS, element({"enabled": "false"}))


def test_certificates_ignored_when_ssl_flags_do_not_ask(host: Host) -> None:
    host.set_section(SECTION_SSL, element({"sslFlags": "Ssl"}))
    try:
        # Without SslNegotiateCert the certificate is not used: anonymous is off, so 401.2.
        _expect(host.probe("alice"), "401.2")
    finally:
        host.set_section(SECTION_SSL, element({"sslFlags": REQUIRE}))


def test_mapping_disabled_is_401_2(host: Host) -> None:
    mapping = _mapping(host.certs["alice"].blob)
    mapping["attributes"]["enabled"] = "false"
    host.set_section(SECTION_MAPPING, mapping)
    try:
        _expect(host.probe("alice"), "401.2")
    finally:
        host.set_section(SECTION_MAPPING, _mapping(host.certs["alice"].blob))


def test_response_carries_status_line_header_and_json(host: Host) -> None:
    import http.client

    cert = host.certs["unknown-ca"]
    ctx = ssl.create_default_context(cafile=host.ca_bundle)
    ctx.check_hostname = False
    tmp = Path(host.state.dir).parent / "raw"
    tmp.mkdir(exist_ok=True)
    (tmp / "c.pem").write_bytes(cert.cert_pem())
    (tmp / "c.key").write_bytes(cert.key_pem())
    ctx.load_cert_chain(str(tmp / "c.pem"), str(tmp / "c.key"))
    port = int(host.url().rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 403
    assert response.getheader("X-IIS-Substatus") == "16"
    assert body["status"] == 403 and body["substatus"] == 16
    assert body["site"] == "shop" and body["user"] is None and body["auth"] is None


def _wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_front_follows_binding_changes_without_restart(host: Host) -> None:
    changes: list[dict[str, list[str]]] = []
    first = host.url()
    host.front.on_change = changes.append
    try:
        host.agent.one(
            "binding.set",
            site="shop",
            binding_information="*:8443:",
            ssl_flags=0,
            certificate_hash=host.server_thumbprint,
            certificate_store="My",
            client_cert_negotiation=True,
        )
        _wait_for(lambda: len(host.front.urls().get("shop", [])) == 2)
        assert changes and len(changes[-1]["shop"]) == 2
        for url in host.front.urls()["shop"]:
            result = probe(
                url,
                client_cert_pem=host.certs["partner"].cert_pem(),
                client_key_pem=host.certs["partner"].key_pem(),
                ca_bundle=host.ca_bundle,
                server_name=SHOP_HOST,
            )
            _expect(result, "200.0", f"{COMPUTER_NAME}\\bob")
        host.agent.one("binding.remove", site="shop", binding_information="*:8443:")
        _wait_for(lambda: len(host.front.urls().get("shop", [])) == 1)
        assert host.url() == first  # the remaining binding keeps its port
    finally:
        host.front.on_change = None


def test_serve_command_lists_sites_in_endpoint_json(tmp_path: Path) -> None:
    from iis_clientcert_simulator.testing import running_simulator

    directory = tmp_path / "served"
    with running_simulator(directory, subprocess_mode=True) as endpoint:
        assert list(endpoint.sites) == ["shop"]
        on_disk = json.loads((directory / "endpoint.json").read_text("utf-8"))
        assert on_disk["sites"] == endpoint.sites
        # A fresh host: no certificate wanted, anonymous on at server level.
        result = probe(endpoint.sites["shop"][0], ca_bundle=endpoint.ca_file, server_name=SHOP_HOST)
        _expect(result, "200.0", "NT AUTHORITY\\IUSR")


def _with_json(path: Path, change: dict[str, Any]) -> Callable[[], None]:
    """Merge ``change`` into a state JSON file; returns the undo."""
    before = path.read_text("utf-8")
    data = json.loads(before)
    data.update(change)
    path.write_text(json.dumps(data), "utf-8")

    def undo() -> None:
        path.write_text(before, "utf-8")

    return undo


def test_tls13_renegotiation_on_server_2025_is_500(host: Host) -> None:
    undo = _with_json(host.state.host, {"os_build": 26100})
    host.binding(negotiate=False)
    try:
        result = host.probe("alice")
        _expect(result, "500.0")
        assert result.hresult == "0x80070032"
    finally:
        host.binding(negotiate=True)
        undo()


def test_send_trusted_issuer_list_with_bad_root_is_403_7(host: Host) -> None:
    undo = _with_json(host.state.host, {"send_trusted_issuer_list": 1})
    intermediate = pki.make_intermediate(host.client_ca, "Misplaced Issuing CA")
    thumb = host.agent.one("cert.import", store="Root", der_b64=intermediate.blob)["thumbprint"]
    try:
        _expect(host.probe("alice"), "403.7")
    finally:
        host.agent.one("cert.remove", store="Root", thumbprint=thumb)
        undo()


def test_mappings_ignored_without_web_cert_auth_feature(host: Host) -> None:
    # Uninstall-WindowsFeature Web-Cert-Auth: its module leaves <globalModules>.
    host.state.set_feature("Web-Cert-Auth", False)
    try:
        assert host.agent.one("host.facts")["web_cert_auth_installed"] is False
        _expect(host.probe("alice"), "401.2")
    finally:
        host.state.set_feature("Web-Cert-Auth", True)
    _expect(host.probe("alice"), "200.0")


def test_truncated_one_to_one_blob_is_401_1_asn1_eod(host: Host) -> None:
    nobody = host.certs["nobody"].blob
    mapping = _mapping(host.certs["alice"].blob)
    one = mapping["children"]["oneToOneMappings"]
    # Cut at a line boundary of wrapped base64 (64 characters), as a bad copy-paste does:
    # the base64 stays valid, the DER inside ends early.
    cut = nobody[: len(nobody) // 2 // 64 * 64]
    one["items"].append(element({"certificate": cut, "userName": "bob", "password": BOB_PW}))
    host.set_section(SECTION_MAPPING, mapping)
    try:
        result = host.probe("nobody")
        _expect(result, "401.1")
        assert result.hresult == "0x80093102"
        _expect(host.probe("alice"), "200.0")  # other mappings are unaffected
    finally:
        host.set_section(SECTION_MAPPING, _mapping(host.certs["alice"].blob))


# --- sslFlags: a certificate only with SslNegotiateCert -----------------------------------


def test_require_cert_without_negotiate_cert_is_403_7(host: Host) -> None:
    # The handshake carries alice's certificate (clientcertnegotiation=enable), but IIS asks
    # HTTP.sys for it only when SslNegotiateCert is set: SslRequireCert alone is 403.7.
    host.set_section(SECTION_SSL, element({"sslFlags": "Ssl, SslRequireCert"}))
    try:
        result = host.probe("alice")
        _expect(result, "403.7")
    finally:
        host.set_section(SECTION_SSL, element({"sslFlags": REQUIRE}))
    _expect(host.probe("alice"), "200.0")


# --- plain http bindings ---------------------------------------------------------------


def _http_get(url: str) -> tuple[int, int, dict[str, Any]]:
    parts = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    conn = http.client.HTTPConnection(parts[0], int(parts[1]), timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": "shop"})
        response = conn.getresponse()
        body = json.loads(response.read())
        return response.status, int(response.getheader("X-IIS-Substatus") or 0), body
    finally:
        conn.close()


def test_http_bindings_are_served_too(host: Host) -> None:
    urls = host.front.urls("http")
    assert list(urls) == ["Default Web Site", "shop"]  # *:80: and the shop's *:8080:
    assert all(u.startswith("http://127.0.0.1:") for us in urls.values() for u in us)
    assert host.front.urls() == {"shop": [host.url()]}  # https stays as it was


def test_plain_http_with_ssl_required_is_403_4(host: Host) -> None:
    status, substatus, body = _http_get(host.front.urls("http")["shop"][0])
    assert (status, substatus) == (403, 4), body
    assert body["certificate"] is None and body["tls"] is None


def test_plain_http_with_ssl128_is_403_5(host: Host) -> None:
    host.set_section(SECTION_SSL, element({"sslFlags": "Ssl, Ssl128, SslNegotiateCert"}))
    try:
        status, substatus, _ = _http_get(host.front.urls("http")["shop"][0])
        assert (status, substatus) == (403, 5)
    finally:
        host.set_section(SECTION_SSL, element({"sslFlags": REQUIRE}))


def test_plain_http_without_ssl_is_anonymous_and_ignores_certificate_flags(host: Host) -> None:
    # No TLS, no client certificate: SslNegotiateCert/SslRequireCert play no part.
    host.set_section(SECTION_SSL, element({"sslFlags": "SslNegotiateCert"}))
    host.set_section(SECTION_ANONYMOUS, element({"enabled": "true"}))
    try:
        status, substatus, body = _http_get(host.front.urls("http")["shop"][0])
        assert (status, substatus, body["user"]) == (200, 0, "NT AUTHORITY\\IUSR")
    finally:
        host.set_section(SECTION_SSL, element({"sslFlags": REQUIRE}))
        host.set_section(SECTION_ANONYMOUS, element({"enabled": "false"}))


# --- damaged one-to-one blobs ----------------------------------------------------------


def _with_blob(host: Host, blob: str) -> None:
    mapping = _mapping(host.certs["alice"].blob)
    one = mapping["children"]["oneToOneMappings"]
    one["items"].append(element({"certificate": blob, "userName": "bob", "password": BOB_PW}))
    host.set_section(SECTION_MAPPING, mapping)


@pytest.mark.parametrize(
    ("damage", "hresult"),
    [
        # Left as a PEM body wraps it: IIS stops at the first line break, the DER ends early.
        (lambda b: "\r\n".join(b[i : i + 64] for i in range(0, len(b), 64)), "0x80093102"),
        (lambda b: "\n".join(b[i : i + 76] for i in range(0, len(b), 76)), "0x80093102"),
        # Lines joined with spaces, as a paste into a one-line field does.
        (lambda b: " ".join(b[i : i + 64] for i in range(0, len(b), 64)), "0x80093102"),
        # Cut short in the middle of a base64 quantum.
        (lambda b: b[: len(b) // 2 + 1], "0x80093102"),
        # PEM armour left on: not DER at all.
        (lambda b: f"-----BEGIN CERTIFICATE-----{b}-----END CERTIFICATE-----", "0x8009310B"),
    ],
    ids=["crlf-wrapped", "lf-wrapped", "space-joined", "cut-mid-quantum", "pem-armour"],
)
def test_damaged_one_to_one_blob_is_401_1_not_401_2(
    host: Host, damage: Callable[[str], str], hresult: str
) -> None:
    _with_blob(host, damage(host.certs["nobody"].blob))
    try:
        result = host.probe("nobody")
        _expect(result, "401.1")
        assert result.hresult == hresult, result
        _expect(host.probe("alice"), "200.0")  # other mappings are unaffected
    finally:
        host.set_section(SECTION_MAPPING, _mapping(host.certs["alice"].blob))


# --- issue 11, point 3: the certificate asked for after the request (renegotiation) --------


@dataclass(frozen=True)
class Raw:
    status: int
    substatus: int
    body: dict[str, Any]
    tls: str | None


def _request(
    host: Host,
    name: str | None,
    *,
    method: str = "GET",
    body: bytes | None = None,
    path: str = "/",
    tls_max: ssl.TLSVersion | None = ssl.TLSVersion.TLSv1_2,
    refuse_renegotiation: bool = False,
) -> Raw:
    """One request with certificate ``name`` through a client whose TLS is set up here
    (the probe sends no body and cannot refuse renegotiation)."""
    ctx = ssl.create_default_context(cafile=host.ca_bundle)
    if tls_max is not None:
        ctx.maximum_version = tls_max
    if refuse_renegotiation:
        # What an HTTP/2 client does (RFC 7540 9.2.1 forbids renegotiation).
        ctx.options |= ssl.OP_NO_RENEGOTIATION
    if name is not None:
        cert = host.certs[name]
        with tempfile.TemporaryDirectory() as tmp:
            pem, key = Path(tmp, "c.pem"), Path(tmp, "c.key")
            pem.write_bytes(cert.cert_pem())
            key.write_bytes(cert.key_pem())
            ctx.load_cert_chain(str(pem), str(key))
    port = int(host.url().rstrip("/").rsplit(":", 1)[1])
    tcp = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        tls = ctx.wrap_socket(tcp, server_hostname=SHOP_HOST)
        version = tls.version()
        conn.sock = tls  # an HTTPSConnection would check the name "127.0.0.1"
        conn.request(method, path, body=body, headers={"Host": SHOP_HOST, "Connection": "close"})
        response = conn.getresponse()
        data = json.loads(response.read())
        status = int(response.getheader("X-IIS-Substatus") or 0)
        return Raw(response.status, status, data, version)
    finally:
        conn.close()
        tcp.close()


@contextlib.contextmanager
def _renegotiating(host: Host) -> Iterator[None]:
    """The binding without clientcertnegotiation: IIS asks for the certificate after
    reading the request (a TLS 1.2 renegotiation)."""
    host.binding(negotiate=False)
    try:
        yield
    finally:
        host.binding(negotiate=True)


def test_renegotiation_after_the_request_maps_the_certificate(host: Host) -> None:
    with _renegotiating(host):
        got = _request(host, "alice", method="POST", body=b"x" * 1000)
        assert (got.status, got.substatus) == (200, 0), got
        assert got.body["user"] == f"{COMPUTER_NAME}\\alice" and got.tls == "TLSv1.2"
        # The probe (a plain HTTP/1.1 client) renegotiates too.
        _expect(host.probe("partner", tls_max=ssl.TLSVersion.TLSv1_2), "200.0")


def test_client_refusing_renegotiation_fails_as_http2_clients_do(host: Host) -> None:
    # The certificate is not asked for in the handshake: a client that refuses the
    # renegotiation IIS starts after the request gets no answer at all.
    refused = pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException))
    with _renegotiating(host), refused:
        _request(host, "alice", refuse_renegotiation=True)
    # Negotiated in the handshake, the same client gets in.
    got = _request(host, "alice", refuse_renegotiation=True)
    assert (got.status, got.body["user"]) == (200, f"{COMPUTER_NAME}\\alice"), got


def test_body_over_upload_read_ahead_size_is_413_when_renegotiating(host: Host) -> None:
    with _renegotiating(host):
        got = _request(host, "alice", method="POST", body=b"x" * 49153)
        assert (got.status, got.substatus) == (413, 0), got
        got = _request(host, "alice", method="POST", body=b"x" * 49152)
        assert (got.status, got.body["user"]) == (200, f"{COMPUTER_NAME}\\alice"), got
    # Negotiated in the handshake, nothing has to be held back: any size is fine.
    got = _request(host, "alice", method="POST", body=b"x" * 200_000)
    assert got.status == 200, got


def _edit_apphost(host: Host, edit: Callable[[etree._Element], None]) -> Callable[[], None]:
    """Change applicationHost.config by hand (as an administrator would); returns the undo."""
    path = host.state.apphost
    before = path.read_bytes()
    tree = etree.fromstring(before)
    edit(tree)
    path.write_bytes(etree.tostring(tree, xml_declaration=True, encoding="utf-8"))

    def undo() -> None:
        path.write_bytes(before)

    return undo


def test_upload_read_ahead_size_is_read_from_server_runtime(host: Host) -> None:
    def raise_limit(root: etree._Element) -> None:
        location = etree.SubElement(root, "location", path="shop")
        runtime = etree.SubElement(etree.SubElement(location, "system.webServer"), "serverRuntime")
        runtime.set("uploadReadAheadSize", "100000")

    undo = _edit_apphost(host, raise_limit)
    try:
        with _renegotiating(host):
            got = _request(host, "alice", method="POST", body=b"x" * 60000)
            assert got.status == 200, got
            got = _request(host, "alice", method="POST", body=b"x" * 100001)
            assert got.status == 413, got
    finally:
        undo()


def test_no_tls13_before_server_2022(host: Host) -> None:
    undo = _with_json(host.state.host, {"os_build": 17763})  # Windows Server 2019
    try:
        with _renegotiating(host):
            # No TLS 1.3 in Schannel: TLS 1.2 and a renegotiation, not a reset.
            result = host.probe("alice")
            _expect(result, "200.0", f"{COMPUTER_NAME}\\alice")
            assert result.tls_version == "TLSv1.2"
    finally:
        undo()
    assert host.probe("alice").tls_version == "TLSv1.3"


def test_binding_ssl_flag_128_negotiates_only_on_server_2025(host: Host) -> None:
    host.binding(negotiate=False, ssl_flags=128)
    try:
        # Server 2022 ignores the flag: no certificate in the TLS 1.3 handshake, reset.
        result = host.probe("alice")
        assert result.status is None and result.error == "connection reset", result
        undo = _with_json(host.state.host, {"os_build": 26100})
        try:
            host.front.sync()
            _expect(host.probe("alice"), "200.0", f"{COMPUTER_NAME}\\alice")
        finally:
            undo()
    finally:
        host.binding(negotiate=True)


# --- issue 11, point 5: the request path ------------------------------------------------


def _at(host: Host, path: str) -> str:
    return host.url().rstrip("/") + path


def test_ssl_flags_and_anonymous_access_apply_per_url_path(host: Host) -> None:
    host.set_section(SECTION_SSL, element({"sslFlags": "Ssl"}), location="shop/public")
    host.set_section(SECTION_ANONYMOUS, element({"enabled": "true"}), location="shop/public")
    try:
        for path in ("/public", "/public/", "/Public/docs/page.html"):
            result = probe(_at(host, path), ca_bundle=host.ca_bundle, server_name=SHOP_HOST)
            _expect(result, "200.0", "NT AUTHORITY\\IUSR")
        # The rest of the site keeps the site's settings, also for a look-alike prefix.
        _expect(host.probe(None), "403.7")
        result = probe(_at(host, "/publicity"), ca_bundle=host.ca_bundle, server_name=SHOP_HOST)
        _expect(result, "403.7")
    finally:
        host.agent.one("config.clear", section=SECTION_SSL, location="shop/public")
        host.agent.one("config.clear", section=SECTION_ANONYMOUS, location="shop/public")


def test_mappings_below_site_level_are_ignored(host: Host) -> None:
    nobody = host.certs["nobody"]
    mapping = element(
        {"enabled": "true"},
        {
            "oneToOneMappings": element(
                items=[element({"certificate": nobody.blob, "userName": "bob", "password": BOB_PW})]
            )
        },
    )
    host.set_section(SECTION_MAPPING, mapping, location="shop/app")
    try:
        result = probe(
            _at(host, "/app/"),
            client_cert_pem=nobody.cert_pem(),
            client_key_pem=nobody.key_pem(),
            ca_bundle=host.ca_bundle,
            server_name=SHOP_HOST,
        )
        _expect(result, "401.2")
    finally:
        host.agent.one("config.clear", section=SECTION_MAPPING, location="shop/app")


def _write_web_config(host: Host, location: str, inner: str) -> Callable[[], None]:
    """A web.config deployed with the site's content (DIR/webconfig/<path>/web.config)."""
    path = host.state.dir.joinpath("webconfig", *location.split("/"), "web.config")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<configuration>{inner}</configuration>'
    )

    def undo() -> None:
        path.unlink()

    return undo


def test_locked_section_in_a_web_config_is_500_19_on_every_request(host: Host) -> None:
    # access is locked in applicationHost.config (overrideModeDefault="Deny").
    locked = '<system.webServer><security><access sslFlags="Ssl" /></security></system.webServer>'
    undo = _write_web_config(host, "shop/sub", locked)
    try:
        for path in ("/sub/", "/sub/deeper/page"):
            result = (
                host.probe("alice")
                if path == "/"
                else probe(
                    _at(host, path),
                    client_cert_pem=host.certs["alice"].cert_pem(),
                    client_key_pem=host.certs["alice"].key_pem(),
                    ca_bundle=host.ca_bundle,
                    server_name=SHOP_HOST,
                )
            )
            _expect(result, "500.19")
            assert result.hresult == "0x80070021", result
        # Above the web.config the site still works.
        _expect(host.probe("alice"), "200.0", f"{COMPUTER_NAME}\\alice")
    finally:
        undo()
    undo = _write_web_config(host, "shop", locked)
    try:
        _expect(host.probe("alice"), "500.19")
        _expect(host.probe(None), "500.19")
    finally:
        undo()


def test_web_config_of_the_site_merges_in(host: Host) -> None:
    def unlock(root: etree._Element) -> None:
        for section in root.iter("section"):
            if section.get("name") in ("access", "anonymousAuthentication"):
                section.set("overrideModeDefault", "Allow")

    undo_apphost = _edit_apphost(host, unlock)
    try:
        for section, data in (
            (SECTION_SSL, element({"sslFlags": "Ssl"})),
            (SECTION_ANONYMOUS, element({"enabled": "true"})),
        ):
            host.agent.one(
                "config.set",
                section=section,
                location="shop/open",
                element=data,
                target="webconfig",
            )
        result = probe(_at(host, "/open/"), ca_bundle=host.ca_bundle, server_name=SHOP_HOST)
        _expect(result, "200.0", "NT AUTHORITY\\IUSR")
        _expect(host.probe(None), "403.7")
    finally:
        for section in (SECTION_SSL, SECTION_ANONYMOUS):
            host.agent.one(
                "config.clear", section=section, location="shop/open", target="webconfig"
            )
        undo_apphost()


def test_mapped_user_needs_read_access_to_the_physical_path(host: Host) -> None:
    acl = host.state.acl
    before = acl.read_text("utf-8")
    data = json.loads(before)
    key = next(k for k in data if k.lower() == "c:\\inetpub\\shop")
    data[key]["aces"] = [
        a
        for a in data[key]["aces"]
        if a["identity"] in ("NT AUTHORITY\\SYSTEM", "BUILTIN\\Administrators")
    ]
    acl.write_text(json.dumps(data), "utf-8")
    try:
        result = host.probe("alice")
        _expect(result, "401.3")
        assert result.hresult == "0x80070005", result
        _expect(host.probe("partner"), "401.3")
        host.agent.one("acl.grant", path="C:\\inetpub\\shop", identity="alice", rights="Read")
        _expect(host.probe("alice"), "200.0", f"{COMPUTER_NAME}\\alice")
        _expect(host.probe("partner"), "401.3")
    finally:
        acl.write_text(before, "utf-8")
    _expect(host.probe("partner"), "200.0", f"{COMPUTER_NAME}\\bob")


def test_new_local_accounts_are_members_of_users(host: Host) -> None:
    host.agent.one("user.set", name="dave", password="Diving-Deep-2024!")
    try:
        assert "Users" in host.agent.one("user.get", name="dave")["groups"]
    finally:
        host.agent.one("user.delete", name="dave")


# --- the response shape of a real IIS: substatus only in the W3C log (issue 11, point 12) ---


class _AgentLogReader:
    """The probe's LogReader over the simulator's agent (as a HostClient reads a host)."""

    def __init__(self, agent: AgentRunner) -> None:
        self.agent = agent

    def call(self, ops: Sequence[Op[Any]]) -> list[Any]:
        return self.agent.ok(*ops)


def _probe_with_log(host: Host, name: str) -> ProbeResult:
    cert = host.certs[name]
    return probe_with_log(
        host.url(),
        _AgentLogReader(host.agent),
        "shop",
        client_cert_pem=cert.cert_pem(),
        client_key_pem=cert.key_pem(),
        ca_bundle=host.ca_bundle,
        server_name=SHOP_HOST,
        timeout=10,
    )


def _raw_get(host: Host) -> tuple[http.client.HTTPResponse, str]:
    """GET / without a client certificate; the response and its body."""
    port = urlsplit(host.url()).port
    assert port is not None
    ctx = ssl.create_default_context(cafile=host.ca_bundle)
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10)
    connection.sock = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=SHOP_HOST
    )
    connection.request("GET", "/", headers={"Host": SHOP_HOST, "Connection": "close"})
    response = connection.getresponse()
    body = response.read().decode("utf-8")
    connection.close()
    return response, body


def test_front_writes_a_w3c_log_per_request(host: Host) -> None:
    host.probe("unknown-ca")
    sites = host.agent.one("site.list")["sites"]
    site_id = next(s["id"] for s in sites if s["name"] == "shop")
    logs = sorted((host.state.dir / "inetpub/logs/LogFiles" / f"W3SVC{site_id}").glob("*.log"))
    lines = logs[-1].read_text("utf-8").splitlines()
    assert lines[0] == "#Software: Microsoft Internet Information Services 10.0"
    assert any(line.startswith("#Fields: date time s-ip cs-method") for line in lines)
    tail = host.agent.one("site.log_tail", site="shop", count=1)
    assert (tail["site"], tail["site_id"]) == ("shop", site_id)
    assert tail["log_directory"].endswith(f"\\W3SVC{site_id}")
    (entry,) = tail["entries"]
    assert (entry["method"], entry["uri_stem"]) == ("GET", "/")
    assert (entry["status"], entry["substatus"]) == (403, 16)
    assert entry["win32_status"] == 0x800B010A  # CERT_E_CHAINING, as IIS logs it


def test_real_iis_shape_hides_the_substatus_and_the_log_tells_it(host: Host) -> None:
    host.front.iis_headers = False  # behave like a real IIS: no X-IIS-Substatus, no JSON
    try:
        plain = host.probe("unknown-ca")
        assert (plain.status, plain.substatus, plain.substatus_source) == (403, None, None)
        assert plain.user is None and plain.hresult is None
        logged = _probe_with_log(host, "unknown-ca")
        assert (logged.code, logged.substatus_source) == ("403.16", "log")
        assert logged.hresult == "0x800B010A"
        _expect(_probe_with_log(host, "expired"), "403.17")
        _expect(_probe_with_log(host, "alice"), "200.0")
        response, body = _raw_get(host)
        assert response.status == 403
        assert response.getheader("X-IIS-Substatus") is None
        assert response.getheader("Content-Type") == "text/html"
        assert "403 - Forbidden: Access is denied." in body and "403.7" not in body
    finally:
        host.front.iis_headers = True
    # With the simulator's header the log is not needed.
    assert host.probe("unknown-ca").substatus_source == "header"


def test_serve_with_real_iis_responses_probe_reads_the_log_over_winrm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path a real IIS needs: no substatus in the answer, the log read with the
    site.log_tail op through HostClient and WinRM."""
    monkeypatch.setattr(host_client, "agent_script", agent_script)
    directory = tmp_path / "served"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "iis_clientcert_simulator",
            "serve",
            "--state-dir",
            str(directory),
            "--real-iis-responses",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        json.loads(process.stdout.readline())  # ready
        endpoint = read_endpoint(directory)
        url = endpoint.sites["shop"][0]
        plain = probe(url, ca_bundle=endpoint.ca_file, server_name=SHOP_HOST)
        assert (plain.status, plain.substatus, plain.user) == (200, None, None)
        client = host_client.HostClient(Connection.from_input(endpoint.connection_input(), "probe"))
        logged = probe_with_log(
            url, client, "shop", ca_bundle=endpoint.ca_file, server_name=SHOP_HOST
        )
        assert (logged.code, logged.substatus_source) == ("200.0", "log")
    finally:
        winrm_transport.close_pool()
        process.terminate()
        process.wait(10)
