"""Hostile input: quotes of every kind, PowerShell subexpressions, backticks, semicolons,
newlines, NUL, XML metacharacters, Unicode and very long strings in every free-text
property. Each value either fails validation with a message that names the property, or
is stored exactly as given: created through the providers, read back, and found verbatim
in a strictly parsed applicationHost.config. Nothing is ever run as code: the host only
ever receives agent requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from iis_clientcert.errors import HostError, ValidationError
from iis_clientcert.framework.base import validate_site
from iis_clientcert.host import contract, winrm_transport
from iis_clientcert.providers.certificate_mapping import CertificateMappingProvider
from iis_clientcert.providers.local_user import LocalUserProvider
from iis_clientcert.providers.ssl_settings import SslSettingsProvider
from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.pki import make_leaf
from iis_clientcert_simulator.testing import running_simulator
from tests.reliability.resources import MAP_USER, prepare_host
from tests.support.reliability import USER_PASSWORD, Figures, Pki
from tests.support.simulator import (
    add_sites,
    apphost_tree,
    audit_lines,
    connection,
    host_client,
)

pytestmark = pytest.mark.reliability

CORPUS: list[str] = [
    "it's",
    'say "hi"',
    "\u2018curly\u2019 \u201cdouble\u201d \u201elow\u201c",
    "`backtick` and `$x",
    "$(Remove-Item C:\\ -Recurse -Force)",
    "${env:ComputerName}",
    "@(1;2)",
    "a; Stop-Computer -Force",
    "a & calc.exe | more",
    "x' + (iex 'whoami') + '",
    "line1\nline2",
    "cr\rreturn",
    "tab\there",
    "nul\x00byte",
    "<script>alert(1)</script>",
    "a &amp; b & c",
    "]]><!-- -->",
    "<?xml version='1.0'?>",
    "%SystemRoot%\\x",
    "\u00dcn\u00efc\u00f6d\u00e9 \u65e5\u672c\u8a9e \U0001f680",
    "\u202eevil\u202c",
    "caf\u00e9",
    "a" * 5000,
    "b" * 300,
    " padded ",
    "-EncodedCommand AAAA",
]


@dataclass
class Outcome:
    rejected: bool
    message: str = ""


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Endpoint]:
    state = tmp_path_factory.mktemp("hostile") / "host"
    names = []
    for value in CORPUS:
        try:
            validate_site("SslSettings", value)
        except ValidationError:
            continue
        if "\x00" not in value and len(value) <= 4096:
            names.append(value)
    add_sites(state, names)
    with running_simulator(state) as endpoint:
        prepare_host(host_client(endpoint), pki)
        yield endpoint
    winrm_transport.close_pool()


def _check(provider: Any, inputs: dict[str, Any], conn: dict[str, Any]) -> Any:
    return provider.check({}, {**inputs, "connection": conn})


def _rejected(result: Any, prop: str) -> Outcome | None:
    """A check failure that names ``prop`` (the property and its message)."""
    if not result.failures:
        return None
    failure = result.failures[0]
    assert failure.property == prop, (failure.property, prop)
    assert prop in failure.reason, failure.reason
    return Outcome(True, failure.reason)


def _location(endpoint: Endpoint, path: str) -> Any:
    for loc in apphost_tree(endpoint).getroot().findall("location"):
        if loc.get("path") == path:
            return loc
    return None


def _site(endpoint: Endpoint, value: str, conn: dict[str, Any], i: int) -> Outcome:
    provider = SslSettingsProvider()
    result = _check(provider, {"site": value}, conn)
    rejected = _rejected(result, "site")
    if rejected:
        return rejected
    created = provider.create(dict(result.inputs))
    read = provider.read(created.id, dict(created.outs or {}))
    assert read.inputs is not None and read.inputs["site"] == value
    loc = _location(endpoint, value)
    assert loc is not None, f"no <location path={value!r}>"
    assert loc.find("system.webServer/security/access") is not None
    return Outcome(False)


def _user(field: str) -> Callable[[Endpoint, str, dict[str, Any], int], Outcome]:
    def run(endpoint: Endpoint, value: str, conn: dict[str, Any], i: int) -> Outcome:
        provider = LocalUserProvider()
        inputs: dict[str, Any] = {"name": f"relh{i}", "password": USER_PASSWORD}
        if field == "folder":
            inputs["folder_access"] = [{"path": f"C:\\inetpub\\{value}"}]
            prop = "folder_access[0].path"
        else:
            inputs[field] = value
            prop = field
        result = _check(provider, inputs, conn)
        rejected = _rejected(result, prop)
        if rejected:
            return rejected
        try:
            created = provider.create(dict(result.inputs))
        except ValidationError as exc:  # host-dependent validation (a missing folder)
            assert exc.property == prop, exc.property
            assert prop in str(exc)
            return Outcome(True, str(exc))
        read = provider.read(created.id, dict(created.outs or {}))
        assert read.inputs is not None
        if field == "folder":
            assert read.inputs["folder_access"][0]["path"] == f"C:\\inetpub\\{value}"
        else:
            assert read.inputs[field] == value, (read.inputs[field], value)
        return Outcome(False)

    return run


def _mapping(field: str, pki: Pki) -> Callable[[Endpoint, str, dict[str, Any], int], Outcome]:
    def run(endpoint: Endpoint, value: str, conn: dict[str, Any], i: int) -> Outcome:
        provider = CertificateMappingProvider()
        rule = {"field": "Subject", "sub_field": "O", "match": "Rel*"}
        many: dict[str, Any] = {"name": "hostile", "user_name": MAP_USER, "rules": [rule]}
        one: list[dict[str, Any]] = []
        if field == "description":
            many["description"] = value
            prop = "many_to_one[0].description"
        elif field == "match":
            rule["match"] = value
            prop = "many_to_one[0].rules[0].match"
        elif field == "name":
            many["name"] = value
            prop = "many_to_one[0].name"
        else:  # a certificate whose subject is the hostile value
            try:
                cert = make_leaf(pki.root, value[:64] or "x", subject_extra={"O": value[:64]})
            except ValueError as exc:
                # Not even a certificate can carry it (e.g. NUL): nothing to map.
                return Outcome(True, str(exc))
            one = [{"certificate": cert.cert_pem().decode(), "user_name": MAP_USER}]
            prop = "one_to_one[0].certificate"
        inputs = {
            "site": "shop",
            "many_to_one": [many],
            "one_to_one": one,
            "passwords": {MAP_USER: USER_PASSWORD},
        }
        result = _check(provider, inputs, conn)
        rejected = _rejected(result, prop)
        if rejected:
            return rejected
        created = provider.create(dict(result.inputs))
        outs = dict(created.outs or {})
        read = provider.read(created.id, outs)
        assert read.inputs is not None
        section = _location(endpoint, "shop")
        assert section is not None
        mapping = section.find(
            "system.webServer/security/authentication/iisClientCertificateMappingAuthentication"
        )
        assert mapping is not None
        if one:
            stored = mapping.find("oneToOneMappings/add")
            assert stored is not None and stored.get("certificate") == cert.blob
            assert read.inputs["one_to_one"][0]["subject"] == outs["one_to_one"][0]["subject"]
        else:
            entry = mapping.find("manyToOneMappings/add")
            assert entry is not None
            got = read.inputs["many_to_one"][0]
            if field == "match":
                xml_rule = entry.find("rules/add")
                assert xml_rule is not None and xml_rule.get("matchCriteria") == value
                assert got["rules"][0]["match"] == value
            else:
                assert entry.get(field) == value
                assert got[field] == value
        return Outcome(False)

    return run


def test_hostile_corpus(host: Endpoint, pki: Pki, figures: Figures) -> None:
    conn = connection(host).to_input()
    fields: dict[str, Callable[[Endpoint, str, dict[str, Any], int], Outcome]] = {
        "site name": _site,
        "user name": _user("name"),
        "user description": _user("description"),
        "user full name": _user("full_name"),
        "folder path": _user("folder"),
        "mapping name": _mapping("name", pki),
        "mapping description": _mapping("description", pki),
        "rule match": _mapping("match", pki),
        "certificate subject": _mapping("subject", pki),
    }
    seen = len(audit_lines(host))
    stored = rejected = 0
    failures: list[str] = []
    for field, run in fields.items():
        for i, value in enumerate(CORPUS):
            figures.add("inputs_tried", "hostile")
            try:
                outcome = run(host, value, conn, i)
            except (AssertionError, HostError, ValidationError) as exc:
                failures.append(f"{field} {value[:40]!r}: {type(exc).__name__}: {exc}")
                continue
            if outcome.rejected:
                rejected += 1
                assert "\x00" not in outcome.message  # the message shows the value escaped
            else:
                stored += 1
                # (A certificate may carry a NUL in its subject: IIS stores only its DER.)
                if field != "certificate subject":
                    assert "\x00" not in value, f"{field}: a NUL was accepted"
            # After every value the configuration is still well-formed XML.
            apphost_tree(host)
    assert not failures, "\n".join(failures)
    assert stored and rejected
    # Nothing but agent requests reached the host, each a known contract op.
    for line in audit_lines(host)[seen:]:
        assert line["kind"] == "agent", line
        assert all(op["op"] in contract.OPS for op in line["ops"]), line
