"""Doctor checks over fake op results: one case per failure, and a clean host."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert.errors import AgentError
from iis_clientcert.host import contract
from iis_clientcert.host.contract import Op, element
from iis_clientcert.tools import doctor
from iis_clientcert_simulator import pki
from tests.support.pki import CRL_URL, ClientPki, make_client_pki
from tests.support.simulator import fake_endpoint

NOW = dt.datetime(2030, 6, 1, tzinfo=dt.UTC)
ENC = "[enc:AesProvider:c2VjcmV0LWNpcGhlcnRleHQ=:enc]"
SITE = "shop"


@pytest.fixture(scope="module")
def certs() -> ClientPki:
    return make_client_pki(NOW)


def store_entry(issued: pki.Issued) -> dict[str, Any]:
    cert = issued.certificate
    return {
        "thumbprint": issued.thumbprint,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "has_private_key": False,
        "der_b64": issued.blob,
    }


def got(effective: dict[str, Any]) -> dict[str, Any]:
    return {"present": True, "element": effective, "effective": effective}


def mapping_item(blob: str, user: str = "alice") -> dict[str, Any]:
    return element({"enabled": "true", "userName": user, "password": ENC, "certificate": blob})


def clean_results(certs: ClientPki) -> dict[str, Any]:
    """Raw op results of a host set up right (keys as doctor.gather uses them)."""
    return {
        "facts": {
            "computer_name": "WEB01",
            "os_caption": "Microsoft Windows Server 2022 Datacenter",
            "os_build": 20348,
            "iis_version": "10.0",
            "web_cert_auth_installed": True,
            "client_auth_trust_mode": 0,
            "send_trusted_issuer_list": 0,
            "tls13_enabled": True,
            "password_policy": {"min_length": 8, "complexity": True},
        },
        "site": {
            "name": SITE,
            "id": 2,
            "physical_path": "C:\\inetpub\\shop",
            "bindings": [
                {"protocol": "http", "binding_information": "*:8080:", "ssl_flags": 0},
                {
                    "protocol": "https",
                    "binding_information": "*:443:",
                    "ssl_flags": 0,
                    "certificate_hash": "AB" * 20,
                    "certificate_store": "My",
                    "client_cert_negotiation": True,
                },
            ],
        },
        "root": {"certificates": [store_entry(certs.ca)]},
        "ca": {"certificates": [store_entry(certs.intermediate)]},
        "ssl": got(element({"sslFlags": "Ssl, SslNegotiateCert, SslRequireCert"})),
        "anonymous": got(element({"enabled": "false", "userName": "IUSR"})),
        "mapping": got(
            element(
                {
                    "enabled": "true",
                    "oneToOneCertificateMappingsEnabled": "true",
                    "manyToOneCertificateMappingsEnabled": "true",
                },
                children={
                    "oneToOneMappings": element(items=[mapping_item(certs.alice.blob)]),
                    "manyToOneMappings": element(),
                },
            )
        ),
        "ad_mapping": got(element({"enabled": "false"})),
        "logons": {
            "results": [
                {
                    "kind": "one_to_one",
                    "key": certs.alice.blob,
                    "user_name": "alice",
                    "valid": True,
                    "hresult": None,
                    "checked": True,
                }
            ]
        },
    }


def to_reads(raw: dict[str, Any], site_names: tuple[str, ...] | None = None) -> doctor.HostReads:
    site = doctor.SiteReads(
        SITE,
        raw["site"],
        ssl=raw["ssl"],
        anonymous=raw["anonymous"],
        mapping=raw["mapping"],
        ad_mapping=raw["ad_mapping"],
        logons=raw["logons"],
        webconfig=tuple(raw.get("webconfig", ())),
    )
    return doctor.HostReads(
        facts=raw["facts"],
        root=raw["root"],
        ca=raw["ca"],
        sites=(site,),
        now=NOW,
        revocation=raw.get("revocation"),
    )


# --- mutations: each breaks the host one way ---------------------------------------------

Mutation = Callable[[dict[str, Any], ClientPki], None]


def mapping_items(raw: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = raw["mapping"]["effective"]["children"]["oneToOneMappings"][
        "items"
    ]
    return items


def set_blob(raw: dict[str, Any], blob: str) -> None:
    mapping_items(raw)[0]["attributes"]["certificate"] = blob
    raw["logons"]["results"][0]["key"] = blob


def wrapped(blob: str) -> str:
    return "\r\n".join(blob[i : i + 64] for i in range(0, len(blob), 64))


def m_root_intermediate(raw: dict[str, Any], c: ClientPki) -> None:
    raw["root"]["certificates"].append(store_entry(c.intermediate))


def m_untrusted(raw: dict[str, Any], c: ClientPki) -> None:
    set_blob(raw, c.stranger.blob)


def m_missing_intermediate(raw: dict[str, Any], c: ClientPki) -> None:
    set_blob(raw, c.bob.blob)
    raw["ca"]["certificates"] = []


def m_expired(raw: dict[str, Any], c: ClientPki) -> None:
    set_blob(raw, c.expired.blob)


def _revocation(raw: dict[str, Any], c: ClientPki, status: str, hresult: str | None) -> None:
    set_blob(raw, c.carol.blob)
    entry = {"thumbprint": c.carol.thumbprint, "status": status, "hresult": hresult}
    raw["revocation"] = {"results": [{**entry, "urls": [CRL_URL]}]}


def m_crl_unreachable(raw: dict[str, Any], c: ClientPki) -> None:
    _revocation(raw, c, "offline", "0x80092013")


def m_revoked(raw: dict[str, Any], c: ClientPki) -> None:
    _revocation(raw, c, "revoked", "0x80092010")


def m_crl_reachable(raw: dict[str, Any], c: ClientPki) -> None:
    _revocation(raw, c, "good", None)


def m_anonymous(raw: dict[str, Any], c: ClientPki) -> None:
    raw["anonymous"]["effective"]["attributes"]["enabled"] = "true"


def m_cert_optional(raw: dict[str, Any], c: ClientPki) -> None:
    raw["ssl"]["effective"]["attributes"]["sslFlags"] = "Ssl, SslNegotiateCert"


def m_no_client_certs(raw: dict[str, Any], c: ClientPki) -> None:
    raw["ssl"]["effective"]["attributes"]["sslFlags"] = "Ssl"


def m_no_negotiate(raw: dict[str, Any], c: ClientPki) -> None:
    raw["ssl"]["effective"]["attributes"]["sslFlags"] = "Ssl, SslRequireCert"


def m_mapping_disabled(raw: dict[str, Any], c: ClientPki) -> None:
    raw["mapping"]["effective"]["attributes"]["enabled"] = "false"


def m_one_to_one_disabled(raw: dict[str, Any], c: ClientPki) -> None:
    raw["mapping"]["effective"]["attributes"]["oneToOneCertificateMappingsEnabled"] = "false"


def m_locked(raw: dict[str, Any], c: ClientPki) -> None:
    raw["mapping"] = doctor.OpFailure(
        "config.get", "Locked", "0x80070021", "This configuration section cannot be used..."
    )


def m_webconfig_absent(raw: dict[str, Any], c: ClientPki) -> None:
    nothing = {"present": False, "element": None, "effective": element()}
    raw["webconfig"] = [(section, nothing) for section in doctor.LOCKED_SECTIONS]


def m_webconfig_present(raw: dict[str, Any], c: ClientPki) -> None:
    m_webconfig_absent(raw, c)
    raw["webconfig"][2] = (contract.SECTION_MAPPING, got(element({"enabled": "true"})))


def m_webconfig_locked(raw: dict[str, Any], c: ClientPki) -> None:
    m_webconfig_absent(raw, c)
    raw["webconfig"][0] = (
        contract.SECTION_SSL,
        doctor.OpFailure("config.get", "Locked", "0x80070021", "cannot be used at this path"),
    )


def m_blob_multiline(raw: dict[str, Any], c: ClientPki) -> None:
    set_blob(raw, wrapped(c.alice.blob))


def m_blob_pem(raw: dict[str, Any], c: ClientPki) -> None:
    set_blob(raw, c.alice.cert_pem().decode())


def m_blob_truncated(raw: dict[str, Any], c: ClientPki) -> None:
    set_blob(raw, c.alice.blob[:200])


def m_blob_garbage(raw: dict[str, Any], c: ClientPki) -> None:
    set_blob(raw, "bm90IGEgY2VydGlmaWNhdGU=")


def m_logon(raw: dict[str, Any], c: ClientPki) -> None:
    raw["logons"]["results"][0].update(valid=False, hresult="0x8007052E")


def m_many_to_one_logon(raw: dict[str, Any], c: ClientPki) -> None:
    raw["logons"]["results"].append(
        {
            "kind": "many_to_one",
            "key": "partners",
            "user_name": "partner",
            "valid": False,
            "hresult": "0x8007052E",
            "checked": True,
        }
    )


def m_logon_type_denied(raw: dict[str, Any], c: ClientPki) -> None:
    # The password is right (contract.LOGON_VALID_CODES), but IIS's logon still fails.
    raw["logons"]["results"][0].update(valid=True, hresult="0x80070569")


def m_logon_locked_out(raw: dict[str, Any], c: ClientPki) -> None:
    raw["logons"]["results"][0].update(valid=False, hresult="0x80070775", checked=False)


def m_logon_not_tried(raw: dict[str, Any], c: ClientPki) -> None:
    raw["logons"]["results"][0].update(valid=False, hresult=None, checked=False)


def m_feature(raw: dict[str, Any], c: ClientPki) -> None:
    raw["facts"]["web_cert_auth_installed"] = False


def m_tls13(raw: dict[str, Any], c: ClientPki) -> None:
    raw["site"]["bindings"][1]["client_cert_negotiation"] = False


def m_trust_mode(raw: dict[str, Any], c: ClientPki) -> None:
    raw["facts"]["client_auth_trust_mode"] = 2


def m_ad_mapping(raw: dict[str, Any], c: ClientPki) -> None:
    raw["ad_mapping"]["effective"]["attributes"]["enabled"] = "true"


def m_read_failure(raw: dict[str, Any], c: ClientPki) -> None:
    raw["anonymous"] = doctor.OpFailure("config.get", "AccessDenied", "0x80070005", "denied")


# Variants that must stay clean.
def m_via_intermediate(raw: dict[str, Any], c: ClientPki) -> None:
    set_blob(raw, c.bob.blob)


def m_tls13_off(raw: dict[str, Any], c: ClientPki) -> None:
    raw["site"]["bindings"][1]["client_cert_negotiation"] = False
    raw["facts"]["tls13_enabled"] = False


def m_binding_disables_tls13(raw: dict[str, Any], c: ClientPki) -> None:
    raw["site"]["bindings"][1].update(client_cert_negotiation=False, ssl_flags=32)


def m_numeric_flags(raw: dict[str, Any], c: ClientPki) -> None:
    raw["ssl"]["effective"]["attributes"]["sslFlags"] = "104"


def m_disabled_bad_mapping(raw: dict[str, Any], c: ClientPki) -> None:
    # A disabled entry is never used by IIS: its blob does not matter.
    mapping_items(raw).append(
        element({"enabled": "false", "userName": "x", "password": ENC, "certificate": "junk"})
    )


CASES: list[tuple[str, Mutation | None, set[tuple[str, str]]]] = [
    ("clean", None, set()),
    ("clean_via_intermediate", m_via_intermediate, set()),
    ("clean_tls13_disabled", m_tls13_off, set()),
    ("clean_binding_disables_tls13", m_binding_disables_tls13, set()),
    ("clean_numeric_ssl_flags", m_numeric_flags, set()),
    ("clean_disabled_mapping_entry_ignored", m_disabled_bad_mapping, set()),
    ("root_holds_intermediate", m_root_intermediate, {("root-store", "error")}),
    ("mapped_cert_untrusted", m_untrusted, {("mapping-trust", "error")}),
    ("intermediate_missing", m_missing_intermediate, {("mapping-trust", "error")}),
    ("mapped_cert_expired", m_expired, {("mapping-expiry", "error")}),
    ("anonymous_on", m_anonymous, {("anonymous", "error")}),
    ("certificates_optional", m_cert_optional, {("ssl-flags", "error")}),
    # Without SslNegotiateCert the mapping can never apply either.
    (
        "certificates_not_asked",
        m_no_client_certs,
        {("ssl-flags", "error"), ("negotiate-cert", "error")},
    ),
    ("mapping_without_negotiate", m_no_negotiate, {("negotiate-cert", "error")}),
    ("mapping_disabled", m_mapping_disabled, {("mapping-enabled", "error")}),
    ("one_to_one_switched_off", m_one_to_one_disabled, {("mapping-enabled", "error")}),
    ("section_locked_500_19", m_locked, {("locked-section", "error")}),
    ("clean_no_section_in_web_config", m_webconfig_absent, set()),
    ("section_in_web_config", m_webconfig_present, {("locked-section", "error")}),
    ("web_config_read_locked", m_webconfig_locked, {("locked-section", "error")}),
    ("blob_multiline", m_blob_multiline, {("mapping-blob", "error")}),
    ("blob_pem", m_blob_pem, {("mapping-blob", "error")}),
    ("blob_truncated", m_blob_truncated, {("mapping-blob", "error")}),
    ("blob_not_der", m_blob_garbage, {("mapping-blob", "error")}),
    ("logon_fails", m_logon, {("mapping-logon", "error")}),
    ("many_to_one_logon_fails", m_many_to_one_logon, {("mapping-logon", "error")}),
    ("logon_type_denied", m_logon_type_denied, {("mapping-logon", "error")}),
    ("logon_locked_out", m_logon_locked_out, {("mapping-logon", "error")}),
    ("logon_not_tried", m_logon_not_tried, {("mapping-logon", "warning")}),
    ("web_cert_auth_missing", m_feature, {("web-cert-auth", "error")}),
    ("tls13_post_handshake", m_tls13, {("tls13", "error")}),
    ("exclusive_ca_trust", m_trust_mode, {("schannel-trust", "warning")}),
    ("ad_mapping_combined", m_ad_mapping, {("ad-mapping", "error")}),
    ("read_refused", m_read_failure, {("read", "error")}),
    ("crl_unreachable", m_crl_unreachable, {("revocation", "error")}),
    ("certificate_revoked", m_revoked, {("revocation", "error")}),
    ("clean_crl_reachable", m_crl_reachable, set()),
]


@pytest.mark.parametrize(("name", "mutate", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_failure_is_found_alone(
    certs: ClientPki, name: str, mutate: Mutation | None, expected: set[tuple[str, str]]
) -> None:
    raw = copy.deepcopy(clean_results(certs))
    if mutate is not None:
        mutate(raw, certs)
    findings = doctor.run_checks(to_reads(raw))
    assert {(f.check, f.level) for f in doctor.problems(findings)} == expected
    assert doctor.exit_code(findings) == (1 if any(lv == "error" for _, lv in expected) else 0)
    for finding in doctor.problems(findings):
        assert finding.fix, f"{finding.check} has no fix"
        assert finding.site in (None, SITE)
        # Never a secret, not even the encrypted form.
        assert ENC not in finding.problem + finding.fix


def test_clean_host_reports_what_it_checked(certs: ClientPki) -> None:
    findings = doctor.run_checks(to_reads(clean_results(certs)))
    checks = {f.check for f in findings if f.level == "ok"}
    assert {
        "root-store",
        "web-cert-auth",
        "schannel-trust",
        "ssl-flags",
        "mapping-enabled",
        "anonymous",
        "mapping-trust",
        "mapping-logon",
    } <= checks


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (m_root_intermediate, ["KB 2802568", "403.16", "LocalMachine\\CA", "Doctor Issuing CA"]),
        (m_untrusted, ["403.16", "mallory"]),
        (m_expired, ["403.17", "old"]),
        (m_blob_multiline, ["line breaks", "0x80093102"]),
        (m_blob_pem, ["PEM", "0x8009310B"]),
        (m_blob_truncated, ["truncated", "0x80093102"]),
        (m_blob_garbage, ["0x8009310B"]),
        (m_logon, ["401.1", "0x8007052E", "alice"]),
        (
            m_logon_type_denied,
            ["401.1", "0x80070569", "ERROR_LOGON_TYPE_NOT_GRANTED", "logon right"],
        ),
        (m_logon_locked_out, ["401.1", "0x80070775", "unlock"]),
        (m_locked, ["500.19", "0x80070021", "applicationHost.config", '<location path="shop">']),
        (m_webconfig_present, ["500.19", "web.config", "iisClientCertificateMapping"]),
        (
            m_tls13,
            ["TLS 1.3", "0x80070032", "client_cert_negotiation=true", "clientcertnegotiation"],
        ),
        (m_trust_mode, ["ClientAuthTrustMode=2"]),
        (m_feature, ["Install-WindowsFeature Web-Cert-Auth"]),
        (
            m_crl_unreachable,
            ["403.13", "0x80092013", CRL_URL, "carol", "verifyclientcertrevocation"],
        ),
        (m_revoked, ["403.13", "0x80092010", "carol", "revoked"]),
    ],
)
def test_findings_explain_status_and_fix(
    certs: ClientPki, mutate: Mutation, words: list[str]
) -> None:
    raw = copy.deepcopy(clean_results(certs))
    mutate(raw, certs)
    text = " ".join(
        f.problem + " " + f.fix for f in doctor.problems(doctor.run_checks(to_reads(raw)))
    )
    for word in words:
        assert word in text


def test_root_store_uses_403_7_when_trusted_issuer_list_is_sent(certs: ClientPki) -> None:
    raw = copy.deepcopy(clean_results(certs))
    m_root_intermediate(raw, certs)
    raw["facts"]["send_trusted_issuer_list"] = 1
    (finding,) = doctor.problems(doctor.check_root_store(to_reads(raw)))
    assert "403.7" in finding.problem


def test_tls13_on_server_2025_says_500(certs: ClientPki) -> None:
    raw = copy.deepcopy(clean_results(certs))
    m_tls13(raw, certs)
    raw["facts"]["os_build"] = 26100
    reads = to_reads(raw)
    (finding,) = doctor.check_tls13(reads, reads.sites[0])
    assert "HTTP 500 and 0x80070032" in finding.problem


def test_feature_missing_folds_the_refused_mapping_read(certs: ClientPki) -> None:
    raw = copy.deepcopy(clean_results(certs))
    m_feature(raw, certs)
    raw["mapping"] = doctor.OpFailure("config.get", "FeatureMissing", None, "not registered")
    problems = doctor.problems(doctor.run_checks(to_reads(raw)))
    assert [(f.check, f.level) for f in problems] == [("web-cert-auth", "error")]


def test_sites_missing_or_without_https(certs: ClientPki) -> None:
    raw = clean_results(certs)
    missing = doctor.HostReads(
        raw["facts"], raw["root"], raw["ca"], (doctor.SiteReads("nope", None),), False, NOW
    )
    (finding,) = doctor.problems(doctor.run_checks(missing))
    assert (finding.check, finding.level, finding.site) == ("sites", "error", "nope")
    none = doctor.HostReads(raw["facts"], raw["root"], raw["ca"], (), True, NOW)
    (finding,) = doctor.problems(doctor.run_checks(none))
    assert (finding.check, finding.level) == ("sites", "warning")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Ssl, SslNegotiateCert, SslRequireCert", {"Ssl", "SslNegotiateCert", "SslRequireCert"}),
        ("None", set()),
        ("", set()),
        ("96", {"SslNegotiateCert", "SslRequireCert"}),
        ("Ssl,Ssl128", {"Ssl", "Ssl128"}),
    ],
)
def test_ssl_flag_names(text: str, names: set[str]) -> None:
    assert doctor.ssl_flag_names(text) == names


def test_inspect_blob_accepts_only_single_line_der(certs: ClientPki) -> None:
    cert, problem, hresult = doctor.inspect_blob(certs.alice.blob)
    assert cert is not None and problem is None and hresult is None
    cert, problem, _ = doctor.inspect_blob(wrapped(certs.alice.blob))
    # Still names the certificate it meant, so the message can say which mapping.
    assert cert is not None and cert.thumbprint == certs.alice.thumbprint and problem


# --- reading: the tolerant batch and the CLI ---------------------------------------------


class FakeClient:
    """Answers ops from a table; an op whose answer is an OpFailure fails the batch there."""

    host = "web01"

    def __init__(self, answers: Callable[[dict[str, Any]], Any]) -> None:
        self.answers = answers
        self.batches: list[list[str]] = []

    def call(self, ops: Sequence[Op[Any]]) -> list[Any]:
        contract.make_request(ops)  # the doctor sends only valid, read-only ops
        assert all(not op.spec.writes for op in ops)
        self.batches.append([op.name for op in ops])
        results: list[Any] = []
        for index, op in enumerate(ops):
            answer = self.answers(op.to_json())
            if isinstance(answer, doctor.OpFailure):
                raise AgentError(
                    self.host, op.name, answer.code, answer.message, answer.hresult, index, results
                )
            results.append(answer)
        return results


def answers_from(raw: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    sections = {
        contract.SECTION_SSL: "ssl",
        contract.SECTION_ANONYMOUS: "anonymous",
        contract.SECTION_MAPPING: "mapping",
        contract.SECTION_AD_MAPPING: "ad_mapping",
    }

    def answer(op: dict[str, Any]) -> Any:
        name, args = op["op"], op["args"]
        if name == "host.facts":
            return raw["facts"]
        if name == "site.list":
            default = {
                "name": "Default Web Site",
                "id": 1,
                "physical_path": "C:\\inetpub\\wwwroot",
                "bindings": [{"protocol": "http", "binding_information": "*:80:", "ssl_flags": 0}],
            }
            return {"sites": [default, raw["site"]]}
        if name == "cert.list":
            return raw["root"] if args["store"] == "Root" else raw["ca"]
        if name == "config.get":
            assert args["location"] == SITE
            if args.get("target") == "webconfig":
                present = args["section"] in raw.get("in_webconfig", ())
                return {"present": present, "element": None, "effective": element()}
            return raw[sections[args["section"]]]
        if name == "mapping.verify_logons":
            return raw["logons"]
        if name == "cert.revocation":
            return raw["revocation"]
        if name == "site.log_tail":
            empty = {"site": SITE, "site_id": 2, "log_directory": "C:\\logs", "entries": []}
            return raw.get("log", empty)
        raise AssertionError(name)

    return answer


def test_gather_reads_https_sites_in_two_batches(certs: ClientPki) -> None:
    client = FakeClient(answers_from(clean_results(certs)))
    reads = doctor.gather(client)
    assert [s.name for s in reads.sites] == [SITE]
    assert len(client.batches) == 2
    assert client.batches[0] == ["host.facts", "site.list", "cert.list", "cert.list"]
    assert doctor.problems(doctor.run_checks(replace(reads, now=NOW))) == []


def test_gather_asks_for_revocation_only_when_a_certificate_names_a_cdp(certs: ClientPki) -> None:
    raw = clean_results(certs)
    m_crl_unreachable(raw, certs)
    client = FakeClient(answers_from(raw))
    reads = doctor.gather(client, [SITE])
    assert client.batches[1:] == [["cert.revocation"]]
    problems = doctor.problems(doctor.run_checks(replace(reads, now=NOW)))
    assert [(f.check, f.level) for f in problems] == [("revocation", "error")]
    assert reads.revocation == raw["revocation"]


def test_gather_named_site_is_one_batch(certs: ClientPki) -> None:
    client = FakeClient(answers_from(clean_results(certs)))
    reads = doctor.gather(client, [SITE])
    assert len(client.batches) == 1 and len(client.batches[0]) == 10
    assert reads.sites[0].site is not None and not reads.sites_defaulted


def test_gather_keeps_going_past_a_refused_op(certs: ClientPki) -> None:
    raw = clean_results(certs)
    m_locked(raw, certs)
    client = FakeClient(answers_from(raw))
    reads = doctor.gather(client, [SITE])
    # The failing op is not sent again; the ops after it are.
    assert len(client.batches) == 2 and client.batches[1][0] == "config.get"
    assert isinstance(reads.sites[0].mapping, doctor.OpFailure)
    assert reads.sites[0].logons == raw["logons"]
    problems = doctor.problems(doctor.run_checks(replace(reads, now=NOW)))
    assert [(f.check, f.site) for f in problems] == [("locked-section", SITE)]


def test_gather_reads_web_config_when_the_contract_can(
    certs: ClientPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = contract.OPS["config.get"]
    target = contract.Arg("str", required=False, choices=contract.CONFIG_TARGETS)
    monkeypatch.setitem(
        contract.OPS, "config.get", replace(spec, args={**spec.args, "target": target})
    )
    assert doctor.reads_webconfig()
    raw = clean_results(certs)
    raw["in_webconfig"] = [contract.SECTION_MAPPING]
    client = FakeClient(answers_from(raw))
    reads = doctor.gather(client, [SITE])
    assert len(client.batches) == 1 and len(client.batches[0]) == 4 + 6 + 4
    problems = doctor.problems(doctor.run_checks(replace(reads, now=NOW)))
    assert [(f.check, f.site) for f in problems] == [("locked-section", SITE)]


def test_password_is_never_a_flag() -> None:
    with pytest.raises(SystemExit):
        doctor.build_parser().parse_args(["--endpoint", "https://h:5986/wsman", "--password", "x"])


def test_connection_from_flags_takes_password_from_env(tmp_path: Any, certs: ClientPki) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(certs.ca.cert_pem())
    args = doctor.build_parser().parse_args(
        [
            "--endpoint",
            "https://web01:5986/wsman",
            "--transport",
            "basic",
            "--username",
            "admin",
            "--ca-bundle",
            str(ca),
        ]
    )
    conn = doctor.connection_input(args, {"IIS_PASSWORD": "S3cret-pass"})
    assert conn["password"] == "S3cret-pass"
    assert conn["ca_bundle"].startswith("-----BEGIN CERTIFICATE-----")


def test_simulator_endpoint_json(tmp_path: Path, certs: ClientPki) -> None:
    fake_endpoint(tmp_path, certs.ca.cert_pem().decode(), password="pw-sim")
    args = doctor.build_parser().parse_args(["--simulator", str(tmp_path)])
    conn = doctor.connection_input(args, {})
    assert conn["endpoint"] == "https://127.0.0.1:5986/wsman"
    assert conn["transport"] == "basic" and conn["password"] == "pw-sim"
    assert conn["ca_bundle"].startswith("-----BEGIN")


def test_simulator_that_has_stopped(
    tmp_path: Path, certs: ClientPki, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_endpoint(tmp_path, certs.ca.cert_pem().decode(), password="pw-sim", pid=None)
    assert doctor.main(["--simulator", str(tmp_path)], {}) == 2
    err = capsys.readouterr().err
    assert "has stopped" in err and "python -m iis_clientcert_simulator serve" in err
    assert "pw-sim" not in err


def run_main(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raw: dict[str, Any],
    *extra: str,
) -> tuple[int, str, str]:
    monkeypatch.setattr(doctor, "HostClient", lambda conn: FakeClient(answers_from(raw)))
    code = doctor.main(
        [
            "--endpoint",
            "https://web01:5986/wsman",
            "--transport",
            "ntlm",
            "--username",
            "admin",
            *extra,
        ],
        {"IIS_PASSWORD": "Hunter2-secret"},
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_main_clean_and_broken(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Real time: the fixture certificates are valid around NOW only, so use fresh ones.
    live = make_client_pki(dt.datetime.now(dt.UTC))
    raw = clean_results(live)
    code, out, _ = run_main(monkeypatch, capsys, raw)
    assert code == 0, out
    assert "0 error(s)" in out and "Hunter2-secret" not in out
    m_anonymous(raw, live)
    code, out, _ = run_main(monkeypatch, capsys, raw, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["clean"] is False
    assert [f["check"] for f in report["findings"] if f["level"] == "error"] == ["anonymous"]
    assert "Hunter2-secret" not in out and ENC not in out


def test_main_connection_failure_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from iis_clientcert.host import client as host
    from iis_clientcert.host import winrm_transport

    monkeypatch.setattr(winrm_transport, "RETRY_DELAYS", (0.0,))
    # Nothing listens on port 9: the agent script never leaves this process.
    monkeypatch.setattr(host, "agent_script", lambda: "# agent")
    code = doctor.main(
        ["--endpoint", "https://127.0.0.1:9/wsman", "--transport", "basic", "--username", "u"],
        {"IIS_PASSWORD": "Hunter2-secret"},
    )
    out, err = capsys.readouterr()
    assert code == 2
    assert "cannot check the host" in err and "Hunter2-secret" not in out + err


def test_main_bad_settings_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    assert doctor.main(["--simulator", str(tmp_path / "none")], {}) == 2
    assert "endpoint.json" in capsys.readouterr().err
    # No password in the environment: the connection is refused before any host is touched.
    assert doctor.main(["--endpoint", "https://h:5986/wsman", "--username", "u"], {}) == 2
    assert "password" in capsys.readouterr().err
