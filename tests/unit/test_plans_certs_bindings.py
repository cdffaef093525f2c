"""Pure plans of TrustedRoot, ServerCertificate and HttpsBinding: validate, plan, delete.

Table-driven: each case names its input and the expected ops or error text. Certificates
are generated at run time (tests/unit/conftest.py, simulator/pki.py).
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pulumi
import pytest

from iis_clientcert.errors import ValidationError
from iis_clientcert.framework.base import UNKNOWN
from iis_clientcert.host.client import Reads
from iis_clientcert.providers import https_binding as hb
from iis_clientcert.providers import server_certificate as sc
from iis_clientcert.providers import trusted_root as tr
from iis_clientcert_simulator import pki

CONNECTION = {
    "endpoint": "https://web01:5986/wsman",
    "transport": "basic",
    "username": "admin",
    "password": "S3cret!pw",
}
NOW = dt.datetime.now(dt.UTC)
PFX_PASSWORD = "Pfx-Pa55word!"


def _ops(changes: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(op.name, dict(op.args)) for change in changes for op in change.ops]


def _wrap(text: str, width: int = 64) -> str:
    return "\r\n".join(text[i : i + width] for i in range(0, len(text), width))


@pytest.fixture(scope="module")
def expiring_ca() -> pki.Issued:
    return pki.make_ca("Expiring CA", not_after=NOW + dt.timedelta(days=10))


@pytest.fixture(scope="module")
def expired_ca() -> pki.Issued:
    return pki.make_ca(
        "Expired CA", not_before=NOW - dt.timedelta(days=60), not_after=NOW - dt.timedelta(days=1)
    )


# ======================================================================== TrustedRoot


def _certificate_text(issued: pki.Issued, form: str) -> str | bytes:
    if form == "pem":
        return issued.cert_pem().decode()
    if form == "pem_crlf":
        return issued.cert_pem().decode().replace("\n", "\r\n")
    if form == "der":
        return issued.cert_der()
    if form == "b64_wrapped":
        return _wrap(base64.b64encode(issued.cert_der()).decode())
    return base64.b64encode(issued.cert_der()).decode()


@pytest.mark.parametrize("form", ["pem", "pem_crlf", "der", "b64_wrapped", "b64"])
def test_trusted_root_every_form_normalises_to_one_blob(root_ca: pki.Issued, form: str) -> None:
    desired = tr.validate_inputs({"certificate": _certificate_text(root_ca, form)})
    provider = tr.TrustedRootProvider()
    assert provider.normalised_inputs(desired) == {"certificate": root_ca.blob, "store": "auto"}
    assert desired.cert.thumbprint == root_ca.thumbprint


@pytest.mark.parametrize(
    ("cert", "store", "resolved"),
    [
        ("root_ca", None, "Root"),
        ("root_ca", "auto", "Root"),
        ("root_ca", "root", "Root"),
        ("root_ca", "CA", "CA"),
        ("intermediate_ca", "auto", "CA"),
        ("intermediate_ca", "ca", "CA"),
        ("self_signed_leaf", "AUTO", "Root"),
    ],
    ids=[
        "root-default",
        "root-auto",
        "root-lowercase",
        "root-forced-ca",
        "intermediate-auto",
        "intermediate-ca",
        "self-signed-leaf-auto",
    ],
)
def test_trusted_root_store_resolution(
    request: pytest.FixtureRequest, cert: str, store: str | None, resolved: str
) -> None:
    issued: pki.Issued = request.getfixturevalue(cert)
    desired = tr.validate_inputs({"certificate": issued.cert_pem().decode(), "store": store})
    assert desired.resolved_store == resolved
    assert desired.store in tr.STORE_CHOICES


_KEY_PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"
    "-----END PRIVATE KEY-----\n"
)


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"certificate": "", "store": "auto"}, ["certificate: empty"]),
        ({"store": "auto"}, ["certificate: must be PEM"]),
        ({"certificate": 42}, ["certificate: must be PEM"]),
        ({"certificate": "hello, world!"}, ["certificate: not_a_certificate"]),
        ({"certificate": "MIIB%%%%"}, ["certificate: bad_encoding"]),
        ({"certificate": "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAK\n"}, ["truncated"]),
        ({"certificate": _KEY_PEM}, ["private_key_not_certificate", "never a key"]),
        ({"certificate": "@intermediate", "store": "Root"}, ["store = 'Root'", "KB 2802568"]),
        ({"certificate": "@root", "store": "My"}, ["store = 'My'", "ServerCertificate"]),
        ({"certificate": "@root", "store": "Trust"}, ["store = 'Trust'", "Valid stores"]),
        ({"certificate": "@root", "store": 3}, ["store = 3", "must be a string"]),
    ],
    ids=[
        "empty",
        "missing",
        "not-text",
        "garbage",
        "bad-base64",
        "truncated-pem",
        "private-key",
        "intermediate-in-root",
        "store-my",
        "store-unknown",
        "store-not-string",
    ],
)
def test_trusted_root_validate_errors(
    root_ca: pki.Issued, intermediate_ca: pki.Issued, inputs: dict[str, Any], expected: list[str]
) -> None:
    substitutes = {
        "@root": root_ca.cert_pem().decode(),
        "@intermediate": intermediate_ca.cert_pem().decode(),
    }
    inputs = {k: substitutes.get(v, v) if isinstance(v, str) else v for k, v in inputs.items()}
    with pytest.raises(ValidationError) as caught:
        tr.validate_inputs(inputs)
    text = str(caught.value)
    assert text.startswith("TrustedRoot: ")
    for part in expected:
        assert part in text
    # The message never carries the certificate blob.
    assert root_ca.blob[20:60] not in text and intermediate_ca.blob[20:60] not in text


def test_trusted_root_refusal_explains_403_16(intermediate_ca: pki.Issued) -> None:
    with pytest.raises(ValidationError) as caught:
        tr.validate_inputs({"certificate": intermediate_ca.cert_pem().decode(), "store": "Root"})
    assert caught.value.property == "store"
    assert "403.16" in str(caught.value) and "'CA'" in str(caught.value)


@pytest.mark.parametrize(
    ("cert", "store", "expected"),
    [
        ("root_ca", "auto", []),
        ("intermediate_ca", "auto", []),
        ("client_leaf", "auto", ["not a CA certificate"]),
        ("expiring_ca", "auto", ["within 30 days"]),
        ("root_ca", "CA", ["not a trust anchor"]),
        ("future_leaf", "auto", ["not a CA certificate", "not valid before"]),
    ],
    ids=["root", "intermediate", "leaf", "expiring", "self-signed-in-ca", "not-yet-valid"],
)
def test_trusted_root_warnings(
    request: pytest.FixtureRequest, cert: str, store: str, expected: list[str]
) -> None:
    issued: pki.Issued = request.getfixturevalue(cert)
    desired = tr.validate_inputs({"certificate": issued.cert_pem().decode(), "store": store})
    notes = tr.assess(desired, dt.datetime.now(dt.UTC))
    assert len(notes) == len(expected)
    for note, part in zip(notes, expected, strict=True):
        assert part in note


@pytest.mark.parametrize("cert", ["expired_ca", "expired_leaf"])
def test_trusted_root_expired_is_an_error(request: pytest.FixtureRequest, cert: str) -> None:
    issued: pki.Issued = request.getfixturevalue(cert)
    desired = tr.validate_inputs({"certificate": issued.cert_pem().decode()})
    with pytest.raises(ValidationError, match=r"certificate: .* expired on"):
        tr.assess(desired, dt.datetime.now(dt.UTC))


def test_trusted_root_check_reports_expiry_and_warns(
    expired_ca: pki.Issued, client_leaf: pki.Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = tr.TrustedRootProvider()
    failed = provider.check({}, {"connection": CONNECTION, "certificate": expired_ca.cert_pem()})
    assert [f.property for f in failed.failures] == ["certificate"]
    assert "expired" in failed.failures[0].reason
    ok = provider.check(
        {}, {"connection": CONNECTION, "certificate": client_leaf.cert_pem().decode()}
    )
    assert ok.failures == []
    assert ok.inputs["certificate"] == client_leaf.blob
    assert ok.inputs["store"] == "auto"
    assert "not a CA certificate" in capsys.readouterr().err


def test_trusted_root_check_passes_unknowns_through() -> None:
    news = {"connection": CONNECTION, "certificate": UNKNOWN, "store": "auto"}
    result = tr.TrustedRootProvider().check({}, news)
    assert result.failures == [] and result.inputs["certificate"] == UNKNOWN


@pytest.mark.parametrize(
    ("cert", "present", "expected"),
    [
        ("root_ca", False, [("cert.import", "Root")]),
        ("intermediate_ca", False, [("cert.import", "CA")]),
        ("root_ca", True, []),
    ],
    ids=["root-absent", "intermediate-absent", "present"],
)
def test_trusted_root_plan(
    request: pytest.FixtureRequest,
    cert: str,
    present: bool,
    expected: list[tuple[str, str]],
) -> None:
    issued: pki.Issued = request.getfixturevalue(cert)
    desired = tr.validate_inputs({"certificate": issued.cert_pem().decode()})
    ops = _ops(tr.plan(tr.TrustedRootCurrent(present), desired))
    assert [(name, args["store"]) for name, args in ops] == expected
    for _name, args in ops:
        assert args["der_b64"] == issued.blob


@pytest.mark.parametrize(
    ("present", "adopted", "expected"),
    [(True, False, ["cert.remove"]), (True, True, []), (False, False, []), (False, True, [])],
    ids=["created-remove", "adopted-keep", "gone", "adopted-gone"],
)
def test_trusted_root_delete(
    root_ca: pki.Issued, present: bool, adopted: bool, expected: list[str]
) -> None:
    desired = tr.validate_inputs({"certificate": root_ca.cert_pem().decode()})
    provider = tr.TrustedRootProvider()
    changes = provider.delete_changes(desired, tr.TrustedRootCurrent(present), {"adopted": adopted})
    ops = _ops(changes)
    assert [name for name, _ in ops] == expected
    for _name, args in ops:
        assert args == {"store": "Root", "thumbprint": root_ca.thumbprint}


def test_trusted_root_outputs_and_refresh(root_ca: pki.Issued) -> None:
    provider = tr.TrustedRootProvider()
    desired = provider.validate({"certificate": root_ca.cert_pem().decode()})
    created = provider.outputs(
        desired, tr.TrustedRootCurrent(True), tr.TrustedRootCurrent(True), None
    )
    assert created["adopted"] is True
    assert created["resolved_store"] == "Root"
    assert created["thumbprint"] == root_ca.thumbprint
    assert (
        dt.datetime.fromisoformat(created["not_after"]) == root_ca.certificate.not_valid_after_utc
    )
    # Later calls carry "adopted" from the stored outputs.
    later = provider.outputs(desired, None, tr.TrustedRootCurrent(True), {"adopted": True})
    assert later["adopted"] is True
    assert provider.exists(tr.TrustedRootCurrent(False)) is False
    live = provider.live_inputs(desired, tr.TrustedRootCurrent(True), {})
    assert live == {"certificate": root_ca.blob, "store": "auto"}


@pytest.mark.parametrize(
    ("new_cert", "new_store", "replaces", "delete_first"),
    [
        ("root_ca", "auto", [], False),
        ("root_ca_der", "Root", [], False),
        ("root_ca", "CA", ["store"], False),
        ("other_root_ca", "auto", ["certificate"], False),
    ],
    ids=["same", "same-object-other-text", "other-store", "other-certificate"],
)
def test_trusted_root_diff(
    request: pytest.FixtureRequest,
    root_ca: pki.Issued,
    new_cert: str,
    new_store: str,
    replaces: list[str],
    delete_first: bool,
) -> None:
    provider = tr.TrustedRootProvider()
    desired = provider.validate({"certificate": root_ca.cert_pem().decode(), "store": "auto"})
    olds = provider.check({}, {"connection": CONNECTION, "certificate": root_ca.cert_pem()}).inputs
    olds.update(
        provider.outputs(desired, tr.TrustedRootCurrent(False), tr.TrustedRootCurrent(True), None)
    )
    if new_cert == "root_ca_der":
        text: Any = base64.b64encode(root_ca.cert_der()).decode()
    else:
        text = request.getfixturevalue(new_cert).cert_pem().decode()
    news = provider.check(
        olds, {"connection": CONNECTION, "certificate": text, "store": new_store}
    ).inputs
    result = provider.diff("id", olds, news)
    assert result.replaces == replaces
    assert bool(result.delete_before_replace) is delete_first
    assert result.changes is (new_cert != "root_ca" or new_store != "auto")


def test_trusted_root_diff_other_host_deletes_first(root_ca: pki.Issued) -> None:
    provider = tr.TrustedRootProvider()
    desired = provider.validate({"certificate": root_ca.cert_pem().decode()})
    olds = provider.normalised_inputs(desired) | {"connection": CONNECTION}
    olds.update(
        provider.outputs(desired, tr.TrustedRootCurrent(False), tr.TrustedRootCurrent(True), None)
    )
    news = provider.normalised_inputs(desired) | {
        "connection": CONNECTION | {"endpoint": "https://web02:5986/wsman"}
    }
    result = provider.diff("id", olds, news)
    assert "connection" in (result.replaces or []) and result.delete_before_replace is True


def test_trusted_root_diff_unknown_certificate_is_a_change(root_ca: pki.Issued) -> None:
    provider = tr.TrustedRootProvider()
    desired = provider.validate({"certificate": root_ca.cert_pem().decode()})
    olds = provider.normalised_inputs(desired) | {"connection": CONNECTION}
    olds.update(
        provider.outputs(desired, tr.TrustedRootCurrent(False), tr.TrustedRootCurrent(True), None)
    )
    news = {"connection": CONNECTION, "certificate": UNKNOWN, "store": "auto"}
    result = provider.diff("id", olds, news)
    assert result.changes is True and result.replaces == ["certificate"]


# ================================================================== ServerCertificate


def _pfx_b64(issued: pki.Issued, **kwargs: Any) -> str:
    return base64.b64encode(issued.pfx(PFX_PASSWORD.encode(), **kwargs)).decode()


@pytest.mark.parametrize(
    ("form", "password"),
    [("modern", PFX_PASSWORD), ("legacy", PFX_PASSWORD), ("wrapped", PFX_PASSWORD), ("nopw", None)],
    ids=["aes", "3des-legacy", "base64-with-line-breaks", "unprotected"],
)
def test_server_certificate_accepts(
    server_leaf: pki.Issued, form: str, password: str | None
) -> None:
    if form == "nopw":
        pfx = base64.b64encode(server_leaf.pfx(None)).decode()
    elif form == "legacy":
        pfx = _pfx_b64(server_leaf, legacy=True)
    elif form == "wrapped":
        pfx = _wrap(_pfx_b64(server_leaf))
    else:
        pfx = _pfx_b64(server_leaf)
    desired = sc.validate_inputs({"pfx": pfx, "password": password})
    assert desired.info.thumbprint == server_leaf.thumbprint
    assert "\n" not in desired.pfx_b64
    assert base64.b64decode(desired.pfx_b64) == base64.b64decode(pfx.replace("\r\n", ""))


@pytest.mark.parametrize(
    ("case", "prop", "expected"),
    [
        ("wrong-password", "password", "wrong_password"),
        ("missing-password", "password", "pfx_needs_password"),
        ("no-key", "pfx", "pfx_without_key"),
        ("pem-instead", "pfx", "not_a_certificate"),
        ("empty", "pfx", "is required"),
        ("missing", "pfx", "is required"),
        ("truncated", "pfx", "truncated"),
        ("bad-base64", "pfx", "not_a_certificate"),
        ("password-not-text", "password", "must be a string"),
    ],
)
def test_server_certificate_validate_errors(
    server_leaf: pki.Issued, case: str, prop: str, expected: str
) -> None:
    good = _pfx_b64(server_leaf)
    cases: dict[str, dict[str, Any]] = {
        "wrong-password": {"pfx": good, "password": "not-the-password"},
        "missing-password": {"pfx": good},
        "no-key": {"pfx": _pfx_b64(server_leaf, include_key=False), "password": PFX_PASSWORD},
        "pem-instead": {"pfx": server_leaf.cert_pem().decode(), "password": PFX_PASSWORD},
        "empty": {"pfx": "  ", "password": PFX_PASSWORD},
        "missing": {"password": PFX_PASSWORD},
        "truncated": {"pfx": good[: len(good) // 2], "password": PFX_PASSWORD},
        "bad-base64": {"pfx": "%" * 2000, "password": PFX_PASSWORD},
        "password-not-text": {"pfx": good, "password": 1234},
    }
    inputs = cases[case]
    with pytest.raises(ValidationError) as caught:
        sc.validate_inputs(inputs)
    text = str(caught.value)
    assert caught.value.property == prop
    assert caught.value.value is None  # secrets are never shown as the value
    assert text.startswith(f"ServerCertificate: {prop}: ")
    assert expected in text
    assert PFX_PASSWORD not in text and "not-the-password" not in text
    assert good[100:140] not in text


def test_server_certificate_missing_file_path_is_named(tmp_path: Any) -> None:
    path = str(tmp_path / "site.pfx")
    with pytest.raises(ValidationError, match=r"pfx = .*site\.pfx.*looks like a file path"):
        sc.validate_inputs({"pfx": path, "password": PFX_PASSWORD})
    with pytest.raises(ValidationError, match="looks like a file path"):
        sc.validate_inputs({"pfx": "C:\\certs\\site.pfx", "password": PFX_PASSWORD})


def test_server_certificate_read_pfx(server_leaf: pki.Issued, tmp_path: Any) -> None:
    data = server_leaf.pfx(PFX_PASSWORD.encode())
    path = tmp_path / "site.pfx"
    path.write_bytes(data)
    expected = base64.b64encode(data).decode()
    assert sc.read_pfx(str(path)) == expected
    assert sc.read_pfx(data) == expected
    assert sc.read_pfx(expected) == expected
    assert sc.read_pfx(str(tmp_path / "missing.pfx")) == str(tmp_path / "missing.pfx")


@pytest.mark.parametrize(
    ("cert", "expected"),
    [
        ("server_leaf", []),
        ("client_leaf", ["server authentication EKU", "no DNS names"]),
        ("rsa_client_leaf", ["server authentication EKU", "no DNS names"]),
    ],
)
def test_server_certificate_warnings(
    request: pytest.FixtureRequest, cert: str, expected: list[str]
) -> None:
    issued: pki.Issued = request.getfixturevalue(cert)
    desired = sc.validate_inputs({"pfx": _pfx_b64(issued), "password": PFX_PASSWORD})
    notes = sc.assess(desired, dt.datetime.now(dt.UTC))
    assert len(notes) == len(expected)
    for note, part in zip(notes, expected, strict=True):
        assert part in note


def test_server_certificate_warns_about_expiry(root_ca: pki.Issued) -> None:
    soon = pki.make_server(root_ca, "soon.example", not_after=NOW + dt.timedelta(days=5))
    desired = sc.validate_inputs({"pfx": _pfx_b64(soon), "password": PFX_PASSWORD})
    assert any("within 30 days" in n for n in sc.assess(desired, dt.datetime.now(dt.UTC)))


def _cert_list(thumbprint: str | None, has_key: bool = True) -> dict[str, Any]:
    if thumbprint is None:
        return {"certificates": []}
    return {"certificates": [{"thumbprint": thumbprint, "has_private_key": has_key}]}


def _site_list(*bindings: tuple[str, str, str]) -> dict[str, Any]:
    """(site, binding information, certificate hash) triples."""
    sites: dict[str, dict[str, Any]] = {}
    for site, info, cert_hash in bindings:
        entry = sites.setdefault(site, {"name": site, "id": len(sites) + 1, "bindings": []})
        entry["bindings"].append(
            {
                "protocol": "https",
                "binding_information": info,
                "ssl_flags": 0,
                "certificate_hash": cert_hash,
                "certificate_store": "My",
                "client_cert_negotiation": True,
            }
        )
    return {"sites": list(sites.values())}


def _facts(os_build: int = 20348) -> dict[str, Any]:
    """host.facts as a Server 2022 answers (only os_build matters to ServerCertificate)."""
    return {"os_build": os_build}


@pytest.mark.parametrize(
    ("present", "has_key", "expected"),
    [(False, False, ["cert.import"]), (True, False, ["cert.import"]), (True, True, [])],
    ids=["absent", "present-without-key", "present"],
)
def test_server_certificate_plan(
    server_leaf: pki.Issued, present: bool, has_key: bool, expected: list[str]
) -> None:
    desired = sc.validate_inputs({"pfx": _pfx_b64(server_leaf), "password": PFX_PASSWORD})
    current = sc.parse_current(
        server_leaf.thumbprint,
        Reads(
            {
                sc.CERTS: _cert_list(server_leaf.thumbprint if present else None, has_key),
                sc.SITES: _site_list(),
                sc.FACTS: _facts(),
            }
        ),
    )
    changes = sc.plan(current, desired)
    ops = _ops(changes)
    assert [name for name, _ in ops] == expected
    for _name, args in ops:
        assert args == {
            "store": "My",
            "pfx_b64": desired.pfx_b64,
            "pfx_password": PFX_PASSWORD,
            "exportable": False,
        }
    for change in changes:
        assert PFX_PASSWORD not in change.summary and desired.pfx_b64[:40] not in change.summary


@pytest.mark.parametrize(
    ("present", "adopted", "bindings", "expected_ops", "note"),
    [
        (True, False, [], ["cert.remove"], None),
        (True, True, [], [], None),
        (False, False, [], [], None),
        (True, False, [("Default Web Site", "*:443:", "@thumb")], [], "Default Web Site (*:443:)"),
        (True, False, [("Other", "*:8443:", "@lower")], [], "Other (*:8443:)"),
        (True, False, [("Other", "*:8443:", "AB" * 20)], ["cert.remove"], None),
    ],
    ids=["created", "adopted", "gone", "in-use", "in-use-lowercase-hash", "other-cert-bound"],
)
def test_server_certificate_delete(
    server_leaf: pki.Issued,
    capsys: pytest.CaptureFixture[str],
    present: bool,
    adopted: bool,
    bindings: list[tuple[str, str, str]],
    expected_ops: list[str],
    note: str | None,
) -> None:
    thumb = server_leaf.thumbprint
    marks = {"@thumb": thumb, "@lower": thumb.lower()}
    bindings = [(s, i, marks.get(h, h)) for s, i, h in bindings]
    provider = sc.ServerCertificateProvider()
    desired = provider.validate({"pfx": _pfx_b64(server_leaf), "password": PFX_PASSWORD})
    current = provider.parse_current(
        desired,
        Reads(
            {
                sc.CERTS: _cert_list(thumb if present else None),
                sc.SITES: _site_list(*bindings),
                sc.FACTS: _facts(),
            }
        ),
    )
    changes = provider.delete_changes(desired, current, {"adopted": adopted})
    assert [name for name, _ in _ops(changes)] == expected_ops
    err = capsys.readouterr().err
    if note is None:
        assert "keeping" not in err
    else:
        assert "keeping" in err and note in err


def test_server_certificate_outputs_and_id(server_leaf: pki.Issued) -> None:
    provider = sc.ServerCertificateProvider()
    desired = provider.validate({"pfx": _pfx_b64(server_leaf), "password": PFX_PASSWORD})
    absent = sc.ServerCertificateCurrent(False, False, ())
    here = sc.ServerCertificateCurrent(True, True, ())
    outs = provider.outputs(desired, absent, here, None)
    assert outs == {
        "thumbprint": server_leaf.thumbprint,
        "subject": "CN=localhost",
        "dns_names": ["localhost"],
        "not_after": server_leaf.certificate.not_valid_after_utc.isoformat(),
        "adopted": False,
    }
    assert provider.outputs(desired, None, here, {"adopted": True})["adopted"] is True
    assert provider.exists(absent) is False
    assert provider.live_inputs(desired, here, {}) == {
        "pfx": desired.pfx_b64,
        "password": PFX_PASSWORD,
    }


@pytest.mark.parametrize(
    ("change", "replaces", "changes"),
    [
        ("none", [], False),
        ("rewrapped", [], True),
        ("password-only", [], True),
        ("renewed", ["pfx"], True),
    ],
)
def test_server_certificate_diff(
    server_leaf: pki.Issued, root_ca: pki.Issued, change: str, replaces: list[str], changes: bool
) -> None:
    provider = sc.ServerCertificateProvider()
    pfx = _pfx_b64(server_leaf)
    desired = provider.validate({"pfx": pfx, "password": PFX_PASSWORD})
    olds = provider.check(
        {}, {"connection": CONNECTION, "pfx": pfx, "password": PFX_PASSWORD}
    ).inputs
    absent = sc.ServerCertificateCurrent(False, False, ())
    olds.update(provider.outputs(desired, absent, absent, None))
    news_in: dict[str, Any] = {"connection": CONNECTION, "pfx": pfx, "password": PFX_PASSWORD}
    if change == "rewrapped":
        # The same certificate exported again (other salt): the same object on the host.
        news_in["pfx"] = _pfx_b64(server_leaf, legacy=True)
    elif change == "password-only":
        news_in["pfx"] = base64.b64encode(server_leaf.pfx(b"another")).decode()
        news_in["password"] = "another"
    elif change == "renewed":
        news_in["pfx"] = _pfx_b64(pki.make_server(root_ca, "localhost"))
    checked = provider.check(olds, news_in)
    assert checked.failures == []
    result = provider.diff("id", olds, checked.inputs)
    assert result.replaces == replaces
    assert result.changes is changes
    assert result.delete_before_replace is False  # a new certificate goes in before the old leaves


# ====================================================================== HttpsBinding

THUMB = "0123456789ABCDEF0123456789ABCDEF01234567"


def _binding_inputs(**overrides: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "connection": CONNECTION,
        "site": "Default Web Site",
        "certificate_thumbprint": THUMB,
    }
    inputs.update(overrides)
    return inputs


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, {"ip": "*", "port": 443, "host_name": "", "sni": False, "certificate_store": "My"}),
        (
            {
                "certificate_thumbprint": "\u200e01 23 45 67 89 ab cd ef 01 23"
                " 45 67 89 ab cd ef 01 23 45 67"
            },
            {"certificate_thumbprint": THUMB},
        ),
        (
            {"certificate_thumbprint": ":".join(THUMB[i : i + 2] for i in range(0, 40, 2)).lower()},
            {"certificate_thumbprint": THUMB},
        ),
        (
            {"host_name": "WWW.Example.COM", "sni": True},
            {"host_name": "www.example.com", "sni": True},
        ),
        ({"host_name": "*.example.com", "sni": True}, {"host_name": "*.example.com"}),
        ({"ip": "10.0.0.5", "port": 8443.0}, {"ip": "10.0.0.5", "port": 8443}),
        ({"ip": "::1"}, {"ip": "[::1]"}),
        ({"ip": "[2001:db8::1]"}, {"ip": "[2001:db8::1]"}),
        ({"ip": None, "port": None, "host_name": None}, {"ip": "*", "port": 443, "host_name": ""}),
        ({"certificate_store": "my"}, {"certificate_store": "My"}),
        ({"client_cert_negotiation": False}, {"client_cert_negotiation": False}),
    ],
    ids=[
        "defaults",
        "thumbprint-copy-paste",
        "thumbprint-colons",
        "host-name-case",
        "wildcard-host",
        "ip-and-float-port",
        "ipv6",
        "ipv6-bracketed",
        "nulls-are-defaults",
        "store-case",
        "no-negotiation",
    ],
)
def test_https_binding_validate_normalises(
    overrides: dict[str, Any], expected: dict[str, Any]
) -> None:
    provider = hb.HttpsBindingProvider()
    inputs = provider.normalised_inputs(provider.validate(_binding_inputs(**overrides)))
    for key, value in expected.items():
        assert inputs[key] == value, key
    assert inputs["certificate_thumbprint"] == THUMB


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"sni": True}, "sni = True: needs a host_name"),
        (
            {"certificate_thumbprint": THUMB[:-1]},
            f"certificate_thumbprint = '{THUMB[:-1]}': is not",
        ),
        ({"certificate_thumbprint": "Z" * 40}, "certificate_thumbprint = 'ZZZZ"),
        ({"certificate_thumbprint": None}, "certificate_thumbprint: must be a string"),
        ({"port": 0}, "port = 0: must be a whole number from 1 to 65535"),
        ({"port": 70000}, "port = 70000"),
        ({"port": "443"}, "port = '443'"),
        ({"ip": "web01"}, "ip = 'web01': is not an IP address"),
        ({"host_name": "https://x.example"}, "host_name = 'https://x.example': is not a DNS"),
        ({"host_name": "a b"}, "host_name = 'a b'"),
        ({"host_name": "x.example:443"}, "host_name = 'x.example:443'"),
        ({"certificate_store": "WebHosting"}, "certificate_store = 'WebHosting'"),
        ({"site": "a/b"}, "site = 'a/b': contains a character"),
        ({"site": None}, "site: is required"),
        ({"sni": "yes"}, "sni = 'yes': must be true or false"),
        ({"client_cert_negotiation": 1}, "client_cert_negotiation = 1"),
    ],
    ids=[
        "sni-without-host",
        "thumbprint-short",
        "thumbprint-not-hex",
        "thumbprint-missing",
        "port-zero",
        "port-high",
        "port-string",
        "ip-name",
        "host-url",
        "host-space",
        "host-port",
        "store-unknown",
        "site-slash",
        "site-missing",
        "sni-not-bool",
        "negotiation-not-bool",
    ],
)
def test_https_binding_validate_errors(overrides: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        hb.validate_inputs(_binding_inputs(**overrides))
    assert str(caught.value).startswith("HttpsBinding: ")
    assert expected in str(caught.value)


def test_https_binding_check(capsys: pytest.CaptureFixture[str]) -> None:
    provider = hb.HttpsBindingProvider()
    result = provider.check({}, _binding_inputs(client_cert_negotiation=False))
    assert result.failures == []
    assert "TLS 1.3" in capsys.readouterr().err
    bad = provider.check({}, _binding_inputs(sni=True))
    assert [f.property for f in bad.failures] == ["sni"]
    # The thumbprint of a ServerCertificate not created yet: passed through, not validated.
    unknown = provider.check({}, _binding_inputs(certificate_thumbprint=UNKNOWN))
    assert unknown.failures == [] and unknown.inputs["certificate_thumbprint"] == UNKNOWN
    assert capsys.readouterr().err == ""
    # ... while the rest is checked and normalised already.
    partial = provider.check(
        {}, _binding_inputs(certificate_thumbprint=UNKNOWN, host_name="WWW.X.example", sni=True)
    )
    assert partial.inputs["host_name"] == "www.x.example" and partial.inputs["ip"] == "*"
    bad = provider.check({}, _binding_inputs(certificate_thumbprint=UNKNOWN, port=0))
    assert [f.property for f in bad.failures] == ["port"]
    assert bad.inputs["certificate_thumbprint"] == UNKNOWN


def _binding(info: str, **settings: Any) -> dict[str, Any]:
    entry = {
        "protocol": "https",
        "binding_information": info,
        "ssl_flags": 0,
        "certificate_hash": THUMB,
        "certificate_store": "My",
        "client_cert_negotiation": True,
    }
    entry.update(settings)
    return entry


def _host(
    bindings: list[dict[str, Any]] | None = None,
    *,
    site: str = "Default Web Site",
    other: list[dict[str, Any]] | None = None,
    certs: list[dict[str, Any]] | None = None,
) -> Reads:
    sites = [{"name": site, "id": 1, "physical_path": "C:\\inetpub\\wwwroot", "bindings": []}]
    sites[0]["bindings"] = [{"protocol": "http", "binding_information": "*:80:"}] + (bindings or [])
    if other is not None:
        sites.append({"name": "Other", "id": 2, "physical_path": "C:\\other", "bindings": other})
    if certs is None:
        certs = [{"thumbprint": THUMB, "has_private_key": True}]
    return Reads({hb.SITES: {"sites": sites}, hb.CERTS: {"certificates": certs}})


def _set_args(info: str = "*:443:", **over: Any) -> dict[str, Any]:
    args = {
        "site": "Default Web Site",
        "binding_information": info,
        "ssl_flags": 0,
        "certificate_hash": THUMB,
        "certificate_store": "My",
        "client_cert_negotiation": True,
    }
    args.update(over)
    return args


OTHER = "FEDCBA9876543210FEDCBA9876543210FEDCBA98"


@pytest.mark.parametrize(
    ("overrides", "host", "expected"),
    [
        ({}, _host(), [("binding.set", _set_args())]),
        ({}, _host([_binding("*:443:")]), []),
        ({}, _host([_binding("*:443:", certificate_hash=THUMB.lower())]), []),
        (
            {},
            _host([_binding("*:443:", certificate_hash=OTHER)]),
            [("binding.set", _set_args())],
        ),
        (
            {},
            _host([_binding("*:443:", client_cert_negotiation=False)]),
            [("binding.set", _set_args())],
        ),
        (
            {"client_cert_negotiation": False},
            _host([_binding("*:443:")]),
            [("binding.set", _set_args(client_cert_negotiation=False))],
        ),
        (
            {"host_name": "www.example.com", "sni": True},
            _host(),
            [("binding.set", _set_args("*:443:www.example.com", ssl_flags=1))],
        ),
        (
            {"host_name": "www.example.com", "sni": True},
            _host([_binding("*:443:WWW.example.com", ssl_flags=33)]),
            [],
        ),
        (
            {"host_name": "www.example.com"},
            _host([_binding("*:443:www.example.com", ssl_flags=33)]),
            [("binding.set", _set_args("*:443:www.example.com", ssl_flags=32))],
        ),
        ({"port": 8443}, _host([_binding("*:443:")]), [("binding.set", _set_args("*:8443:"))]),
    ],
    ids=[
        "absent",
        "same",
        "same-hash-lowercase-on-host",
        "other-certificate",
        "negotiation-off-on-host",
        "negotiation-turned-off",
        "sni-absent",
        "sni-same-keeps-other-flag-bits",
        "sni-turned-off-keeps-other-flag-bits",
        "other-port-is-another-binding",
    ],
)
def test_https_binding_plan(
    overrides: dict[str, Any], host: Reads, expected: list[tuple[str, dict[str, Any]]]
) -> None:
    desired = hb.validate_inputs(_binding_inputs(**overrides))
    current = hb.parse_current(desired, host)
    hb.preflight(current, desired)
    assert _ops(hb.plan(current, desired)) == expected


def test_https_binding_plan_summary_names_the_difference() -> None:
    desired = hb.validate_inputs(_binding_inputs())
    current = hb.parse_current(desired, _host([_binding("*:443:", certificate_hash=OTHER)]))
    (change,) = hb.plan(current, desired)
    assert f"certificate {OTHER} -> {THUMB}" in change.summary


@pytest.mark.parametrize(
    ("host", "prop", "expected"),
    [
        (_host(site="Another Site"), "site", "no such site"),
        (_host(certs=[]), "certificate_thumbprint", "create a ServerCertificate first"),
        (
            _host(certs=[{"thumbprint": OTHER, "has_private_key": True}]),
            "certificate_thumbprint",
            "LocalMachine\\My",
        ),
        (
            _host(certs=[{"thumbprint": THUMB, "has_private_key": False}]),
            "certificate_thumbprint",
            "no private key",
        ),
        (_host(other=[_binding("*:443:")]), "port", "already belongs to site 'Other'"),
        # Issue 10, point 13 (e): a Central Certificate Store binding takes its certificate
        # from the CCS share; adopting it with a hash used to drop the CCS bit (and its
        # prior state, with no hash, could not be put back on delete).
        (
            _host([_binding("*:443:", ssl_flags=2, certificate_hash="")]),
            "port",
            "Central Certificate Store",
        ),
    ],
    ids=[
        "site-missing",
        "cert-missing",
        "other-cert-only",
        "cert-without-key",
        "taken-by-other-site",
        "central-certificate-store-binding",
    ],
)
def test_https_binding_preflight(host: Reads, prop: str, expected: str) -> None:
    desired = hb.validate_inputs(_binding_inputs())
    current = hb.parse_current(desired, host)
    with pytest.raises(ValidationError) as caught:
        hb.preflight(current, desired)
    assert caught.value.property == prop
    assert expected.lower() in str(caught.value).lower()


PRIOR = {
    "ssl_flags": 0,
    "certificate_hash": OTHER,
    "certificate_store": "My",
    "client_cert_negotiation": False,
}


@pytest.mark.parametrize(
    ("host", "stored", "expected"),
    [
        (_host([_binding("*:443:")]), {"adopted": False}, [("binding.remove", None)]),
        (_host(), {"adopted": False}, []),
        (_host(site="Gone"), {"adopted": False}, []),
        (
            _host([_binding("*:443:")]),
            {"adopted": True, "prior_binding": PRIOR},
            [("binding.set", _set_args(certificate_hash=OTHER, client_cert_negotiation=False))],
        ),
        (
            _host(),
            {"adopted": True, "prior_binding": PRIOR},
            [("binding.set", _set_args(certificate_hash=OTHER, client_cert_negotiation=False))],
        ),
        (
            _host([_binding("*:443:", certificate_hash=OTHER, client_cert_negotiation=False)]),
            {"adopted": True, "prior_binding": PRIOR},
            [],
        ),
    ],
    ids=[
        "created-remove",
        "created-gone",
        "site-gone",
        "adopted-put-back",
        "adopted-gone-put-back",
        "adopted-already-as-before",
    ],
)
def test_https_binding_delete(
    host: Reads, stored: dict[str, Any], expected: list[tuple[str, Any]]
) -> None:
    provider = hb.HttpsBindingProvider()
    desired = provider.validate(_binding_inputs())
    current = provider.parse_current(desired, host)
    ops = _ops(provider.delete_changes(desired, current, stored))
    want = [
        (
            name,
            args
            if args is not None
            else {"site": "Default Web Site", "binding_information": "*:443:"},
        )
        for name, args in expected
    ]
    assert ops == want


def test_https_binding_outputs_adoption_and_refresh() -> None:
    provider = hb.HttpsBindingProvider()
    desired = provider.validate(_binding_inputs(host_name="www.example.com", sni=True, port=8443))
    found = provider.parse_current(
        desired,
        _host([_binding("*:8443:www.example.com", ssl_flags=1, certificate_hash=OTHER)]),
    )
    after = provider.parse_current(
        desired, _host([_binding("*:8443:www.example.com", ssl_flags=1)])
    )
    outs = provider.outputs(desired, found, after, None)
    assert outs["url"] == "https://www.example.com:8443/"
    assert outs["binding_information"] == "*:8443:www.example.com"
    assert outs["adopted"] is True
    assert outs["prior_binding"] == {
        "ssl_flags": 1,
        "certificate_hash": OTHER,
        "certificate_store": "My",
        "client_cert_negotiation": True,
    }
    later = provider.outputs(desired, None, after, outs)
    assert later["adopted"] is True and later["prior_binding"] == outs["prior_binding"]
    assert provider.exists(after)
    assert provider.live_inputs(desired, after, outs) == {
        "site": "Default Web Site",
        "ip": "*",
        "port": 8443,
        "host_name": "www.example.com",
        "sni": True,
        "certificate_thumbprint": THUMB,
        "certificate_store": "My",
        "client_cert_negotiation": True,
    }
    gone = provider.parse_current(desired, _host())
    assert not provider.exists(gone)


@pytest.mark.parametrize(
    ("overrides", "url"),
    [
        ({}, "https://web01:443/"),
        ({"port": 8443}, "https://web01:8443/"),
        ({"host_name": "app.example"}, "https://app.example:443/"),
        ({"host_name": "*.example.com"}, "https://web01:443/"),
    ],
)
def test_https_binding_url(overrides: dict[str, Any], url: str) -> None:
    assert hb.validate_inputs(_binding_inputs(**overrides)).url == url


def test_https_binding_id() -> None:
    from iis_clientcert.host.connection import Connection

    provider = hb.HttpsBindingProvider()
    desired = provider.validate(_binding_inputs(host_name="a.example", port=444))
    assert (
        provider.resource_id(Connection.from_input(CONNECTION), desired)
        == "https://web01:5986/Default Web Site/https/*:444:a.example"
    )


@pytest.mark.parametrize(
    ("overrides", "replaces"),
    [
        ({}, []),
        ({"certificate_thumbprint": OTHER}, []),
        ({"client_cert_negotiation": False}, []),
        ({"port": 8443}, ["port"]),
        ({"host_name": "x.example"}, ["host_name"]),
        ({"site": "Other"}, ["site"]),
        ({"certificate_thumbprint": UNKNOWN}, []),
    ],
)
def test_https_binding_diff(overrides: dict[str, Any], replaces: list[str]) -> None:
    provider = hb.HttpsBindingProvider()
    olds = provider.check({}, _binding_inputs()).inputs
    news = provider.check({}, _binding_inputs(**overrides)).inputs
    result = provider.diff("id", olds, news)
    assert result.replaces == replaces
    assert result.changes is bool(overrides)


# ==================================================================== resource classes


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: dict[str, Any] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources[args.name] = args.inputs
        return f"{args.name}_id", args.inputs

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return {}, None


def _secret_value(value: Any) -> Any:
    """The value inside Pulumi's secret envelope (fails if it is not secret)."""
    assert isinstance(value, dict) and value.get(rpc_secret_sig) == rpc_secret_value, value
    return value["value"]


# Pulumi's wire envelope of a secret value (pulumi.runtime.rpc).
rpc_secret_sig = "4dabf18193072939515e22adb298388d"
rpc_secret_value = "1b47061264138c4ac30d75fd1eb44270"


def test_resource_classes_read_the_pfx_file_and_keep_secrets(
    server_leaf: pki.Issued, root_ca: pki.Issued, tmp_path: Any
) -> None:
    mocks = _Mocks()
    pulumi.runtime.set_mocks(mocks, preview=False)
    path = tmp_path / "site.pfx"
    path.write_bytes(server_leaf.pfx(PFX_PASSWORD.encode()))

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> Any:
        cert = sc.ServerCertificate(
            "cert", connection=CONNECTION, pfx=str(path), password=PFX_PASSWORD
        )
        root = tr.TrustedRoot(
            "root", connection=CONNECTION, certificate=root_ca.cert_pem().decode()
        )
        binding = hb.HttpsBinding(
            "binding", connection=CONNECTION, site="Default Web Site", certificate_thumbprint=THUMB
        )
        return pulumi.Output.all(cert.urn, root.urn, binding.urn)

    program()
    cert_inputs = mocks.resources["cert"]
    pfx = _secret_value(cert_inputs["pfx"])
    assert sc.validate_inputs({"pfx": pfx, "password": PFX_PASSWORD}).info.thumbprint == (
        server_leaf.thumbprint
    )
    assert _secret_value(cert_inputs["password"]) == PFX_PASSWORD
    for name in ("cert", "root", "binding"):
        # Provider classes live in importable modules: pickled by reference, tiny.
        assert len(_secret_value(mocks.resources[name]["__provider"])) < 2048
    binding_inputs = mocks.resources["binding"]
    assert binding_inputs["ip"] == "*" and binding_inputs["port"] == 443
    assert binding_inputs["client_cert_negotiation"] is True
