"""Issue 11, point 8: many-to-one rules name only the sub-fields IIS documents (CN, OU, O,
L, S, C), a mapping without rules is refused, and a certificate the product sees whose name
repeats an RDN a rule compares is warned about: in CertificateMapping's check, in
ClientCertSite's checks and in the stack configuration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pulumi
import pytest

from iis_clientcert import (
    ArgsError,
    ClientCertSite,
    ClientCertSiteArgs,
    ConnectionArgs,
    ManyToOne,
    OneToOne,
    Rule,
    SiteUser,
)
from iis_clientcert.errors import ValidationError
from iis_clientcert.providers.certificate_mapping import validate
from iis_clientcert_simulator import pki
from stack_config import ConfigError, Secrets, StackConfig

DOCUMENTED = "Use one of CN, OU, O, L, S, C."


@pytest.fixture(scope="module")
def certs() -> dict[str, pki.Issued]:
    ca = pki.make_ca("Rules Root")
    two_ou_ca = pki.make_ca("Rules Two-OU Root", subject_extra={"OU": ["PKI", "Ops"]})
    return {
        "ca": ca,
        "two-ou-ca": two_ou_ca,
        "alice": pki.make_leaf(ca, "alice"),
        "two-ou": pki.make_leaf(ca, "bob", subject_extra={"OU": ["Web", "Ops"]}),
    }


def _inputs(cert: pki.Issued, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "site": "shop",
        "one_to_one": [{"certificate": cert.cert_pem().decode(), "user_name": "alice"}],
        "many_to_one": [{"name": "staff", "user_name": "staff", "rules": rules}],
        "passwords": {"alice": "A-Pa55word!", "staff": "S-Pa55word!"},
    }


@pytest.mark.parametrize("sub_field", ["E", "ST", "emailAddress", "DC", "2.5.4.3"])
def test_undocumented_sub_fields_are_refused_with_the_list(
    certs: dict[str, pki.Issued], sub_field: str
) -> None:
    with pytest.raises(ValidationError) as err:
        validate(_inputs(certs["alice"], [{"sub_field": sub_field, "match": "x"}]))
    assert err.value.property == "many_to_one[0].rules[0].sub_field"
    assert DOCUMENTED in str(err.value)


def test_documented_sub_fields_are_accepted_in_any_case(certs: dict[str, pki.Issued]) -> None:
    rules = [{"sub_field": s.lower(), "match": "x"} for s in ("CN", "OU", "O", "L", "S", "C")]
    desired = validate(_inputs(certs["alice"], rules))
    assert [r.sub_field for r in desired.many_to_one[0].rules] == ["CN", "OU", "O", "L", "S", "C"]


def test_a_mapping_without_rules_is_refused(certs: dict[str, pki.Issued]) -> None:
    with pytest.raises(ValidationError) as err:
        validate(_inputs(certs["alice"], []))
    assert err.value.property == "many_to_one[0].rules"
    assert "undocumented" in str(err.value)


def test_a_one_to_one_certificate_with_a_repeated_rdn_a_rule_compares_is_warned(
    certs: dict[str, pki.Issued],
) -> None:
    desired = validate(_inputs(certs["two-ou"], [{"sub_field": "OU", "match": "Ops"}]))
    (note,) = [n for n in desired.notes if "repeated RDN" in n]
    assert "one_to_one[0] certificate" in note and "2 OU values (Web, Ops)" in note
    # Only a sub-field a rule compares matters.
    quiet = validate(_inputs(certs["two-ou"], [{"sub_field": "CN", "match": "bob"}]))
    assert not [n for n in quiet.notes if "repeated RDN" in n]


# --- ClientCertSite -------------------------------------------------------------------------


class _Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return f"{args.name}-id", {**args.inputs, "thumbprint": f"THUMB-{args.name}"}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], None]:
        return {}, None


@pytest.fixture
def mocks() -> Iterator[None]:
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(_Mocks(), preview=False)
    yield
    pulumi.runtime.settings.ROOT.set(None)


def _site(certs: dict[str, pki.Issued], root: str, rules: list[Rule]) -> ClientCertSiteArgs:
    return ClientCertSiteArgs(
        connection=ConnectionArgs(
            endpoint="https://web01:5986/wsman",
            transport="basic",
            username="admin",
            password="S3cret!pw",
        ),
        site="shop",
        trusted_roots=[certs[root].cert_pem().decode()],
        users=[SiteUser(name="alice", password="Al1ce-pw!")],
        one_to_one=[OneToOne(certificate=certs["alice"].cert_pem().decode(), user="alice")],
        many_to_one=[ManyToOne(name="staff", user="alice", rules=rules)],
        # alice's certificate is not issued by every root these tests use.
        allow_untrusted_client_certificates=True,
    )


@pytest.mark.parametrize(
    ("rules", "prop", "words"),
    [
        ([Rule(sub_field="E", match="a@b")], "many_to_one[0].rules[0].sub_field", DOCUMENTED),
        ([], "many_to_one[0].rules", "undocumented"),
    ],
    ids=["email-sub-field", "no-rules"],
)
def test_client_cert_site_refuses_the_rule_before_registering(
    mocks: None, certs: dict[str, pki.Issued], rules: list[Rule], prop: str, words: str
) -> None:
    with pytest.raises(ArgsError) as err:
        ClientCertSite("shop", _site(certs, "ca", rules))
    assert err.value.property == prop
    assert words in str(err.value)


def test_client_cert_site_warns_about_a_trusted_ca_with_a_repeated_rdn_issuer_rules_read(
    mocks: None, certs: dict[str, pki.Issued], monkeypatch: pytest.MonkeyPatch
) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warnings.append(str(msg)))
    issuer_ou = [Rule(sub_field="OU", match="Ops", field="Issuer")]
    ClientCertSite("shop", _site(certs, "two-ou-ca", issuer_ou))
    (warning,) = warnings
    assert "trusted_roots[0]" in warning and "2 OU values (PKI, Ops)" in warning
    warnings.clear()
    # A Subject rule on OU does not read the CA's name; a CA without repeats is quiet.
    for root, rules in (("two-ou-ca", [Rule(sub_field="OU", match="Ops")]), ("ca", issuer_ou)):
        pulumi.runtime.settings.ROOT.set(None)  # a new program: nothing claimed yet
        ClientCertSite("shop", _site(certs, root, rules))
    assert warnings == []


# --- stack configuration --------------------------------------------------------------------


def _stack(tmp_path: Path, certs: dict[str, pki.Issued]) -> StackConfig:
    (tmp_path / "root.pem").write_bytes(certs["ca"].cert_pem())
    stub = cast("Any", lambda name: f"<secret {name}>")
    return StackConfig(tmp_path, Secrets({"web01", "alice"}, stub))


@pytest.mark.parametrize(
    ("rules", "key", "words"),
    [
        ([{"sub_field": "E", "match": "a@b"}], "sites[0].many_to_one[0].rules[0].sub_field", "CN"),
        ([], "sites[0].many_to_one[0].rules", "undocumented"),
    ],
    ids=["email-sub-field", "no-rules"],
)
def test_stack_config_refuses_the_rule(
    tmp_path: Path, certs: dict[str, pki.Issued], rules: list[Any], key: str, words: str
) -> None:
    hosts = {"web01": {"endpoint": "https://web01:5986/wsman", "username": "WEB01\\deployer"}}
    site = {
        "name": "shop",
        "host": "web01",
        "trusted_roots": ["root.pem"],
        "users": [{"name": "alice"}],
        "many_to_one": [{"name": "staff", "user": "alice", "rules": rules}],
    }
    with pytest.raises(ConfigError) as err:
        _stack(tmp_path, certs).sites(hosts, [site])
    assert err.value.key == key
    assert words in str(err.value)
