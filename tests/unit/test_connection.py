"""Connection.from_input: table-driven validation, normalisation, secrets never shown."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from iis_clientcert.errors import ValidationError
from iis_clientcert.framework.inputs import ConnectionArgs
from iis_clientcert.host.connection import Connection
from iis_clientcert_simulator import pki

PASSWORD = "Canary-Pw-7788!"


@pytest.fixture(scope="module")
def material() -> dict[str, str]:
    ca = pki.make_ca("Conn Test CA")
    client = pki.make_leaf(ca, "winrm-admin", client_auth=True)
    other = pki.make_leaf(ca, "someone-else", client_auth=True)
    encrypted = client.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    ).decode()
    return {
        "ca": _text(ca.cert_pem()),
        "cert": _text(client.cert_pem()),
        "key": _text(client.key_pem()),
        "other_key": _text(other.key_pem()),
        "encrypted_key": encrypted,
    }


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def basic(**extra: Any) -> dict[str, Any]:
    return {
        "endpoint": "https://Web01.example.com:5986/wsman",
        "transport": "basic",
        "username": "admin",
        "password": PASSWORD,
        **extra,
    }


VALID: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "basic over https, host lower-cased, defaults",
        basic(),
        {
            "endpoint": "https://web01.example.com:5986/wsman",
            "host": "web01.example.com",
            "verify_tls": True,
            "connect_timeout": 15.0,
            "operation_timeout": 60.0,
            "read_timeout": 90.0,
        },
    ),
    (
        "ntlm over http (message encryption)",
        {
            "endpoint": "http://web01:5985/wsman",
            "transport": "ntlm",
            "username": "a",
            "password": "b",
        },
        {"endpoint": "http://web01:5985/wsman", "host": "web01"},
    ),
    (
        "trailing slash, no port, upper-case scheme",
        {"endpoint": "HTTPS://WEB01/wsman/", "transport": "NTLM", "username": "a", "password": "b"},
        {"endpoint": "https://web01/wsman", "transport": "ntlm"},
    ),
    (
        "kerberos without password (ticket cache)",
        {"endpoint": "https://web01:5986/wsman", "transport": "kerberos", "username": "a@EX.COM"},
        {"password": None},
    ),
    (
        "verify_tls explicitly off, string from config",
        basic(verify_tls="false"),
        {"verify_tls": False},
    ),
    (
        "timeouts as numbers and strings",
        basic(connect_timeout=3, operation_timeout="20", read_timeout=30.5),
        {"connect_timeout": 3.0, "operation_timeout": 20.0, "read_timeout": 30.5},
    ),
    ("empty optional strings are absent", basic(ca_bundle=""), {"ca_bundle": None}),
    ("shell defaults to Windows PowerShell", basic(), {"shell": "powershell"}),
    ("shell pwsh (PowerShell 7), any case", basic(shell=" PWSH "), {"shell": "pwsh"}),
    ("IPv6 literal", basic(endpoint="https://[::1]:5986/wsman"), {"host": "::1"}),
]


@pytest.mark.parametrize(("case", "value", "expected"), VALID, ids=[c[0] for c in VALID])
def test_valid(case: str, value: dict[str, Any], expected: dict[str, Any]) -> None:
    conn = Connection.from_input(value)
    for name, want in expected.items():
        assert getattr(conn, name) == want, name


# (case, input, property, words in the problem, secret?)
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("not an object", "https://x/wsman", "connection", "object"),  # type: ignore[list-item]
    ("unknown key (value may be a secret)", basic(pasword="x"), "connection.pasword", "not a"),
    ("endpoint missing", {"transport": "basic"}, "connection.endpoint", "required"),
    ("shell not a PowerShell", basic(shell="cmd"), "connection.shell", "powershell, pwsh"),
    ("shell not a string", basic(shell=7), "connection.shell", "powershell, pwsh"),
    ("endpoint ftp", basic(endpoint="ftp://web01/wsman"), "connection.endpoint", "http"),
    (
        "endpoint without /wsman",
        basic(endpoint="https://web01:5986/"),
        "connection.endpoint",
        "/wsman",
    ),
    (
        "endpoint with query",
        basic(endpoint="https://web01/wsman?x=1"),
        "connection.endpoint",
        "/wsman",
    ),
    (
        "endpoint bad port",
        basic(endpoint="https://web01:99999/wsman"),
        "connection.endpoint",
        "URL",
    ),
    (
        "endpoint with credentials",
        basic(endpoint=f"https://admin:{PASSWORD}@web01/wsman"),
        "connection.endpoint",
        "credentials",
    ),
    ("unknown transport", basic(transport="digest"), "connection.transport", "supported"),
    ("transport missing", {"endpoint": "https://w/wsman"}, "connection.transport", "supported"),
    (
        "basic over plain http",
        basic(endpoint="http://web01:5985/wsman"),
        "connection.transport",
        "in clear",
    ),
    (
        "certificate over http",
        {"endpoint": "http://w/wsman", "transport": "certificate"},
        "connection.transport",
        "https",
    ),
    (
        "certificate without cert",
        {"endpoint": "https://w/wsman", "transport": "certificate"},
        "connection.client_cert_pem",
        "required",
    ),
    (
        "ntlm without username",
        {"endpoint": "http://w/wsman", "transport": "ntlm", "password": "x"},
        "connection.username",
        "required",
    ),
    (
        "credssp without password",
        {"endpoint": "https://w/wsman", "transport": "credssp", "username": "a"},
        "connection.password",
        "required",
    ),
    ("basic without password", basic(password=None), "connection.password", "required"),
    ("password not a string", basic(password=123), "connection.password", "string"),
    ("ca_bundle not PEM", basic(ca_bundle="/etc/ssl/ca.pem"), "connection.ca_bundle", "PEM"),
    ("timeout zero", basic(connect_timeout=0), "connection.connect_timeout", "positive"),
    ("timeout negative", basic(read_timeout=-5), "connection.read_timeout", "positive"),
    (
        "timeout not a number",
        basic(operation_timeout="soon"),
        "connection.operation_timeout",
        "number",
    ),
    ("timeout bool", basic(read_timeout=True), "connection.read_timeout", "number"),
    ("timeout infinite", basic(read_timeout=float("inf")), "connection.read_timeout", "positive"),
    (
        "read not above operation",
        basic(operation_timeout=60, read_timeout=60),
        "connection.read_timeout",
        "longer",
    ),
    ("verify_tls not bool", basic(verify_tls="maybe"), "connection.verify_tls", "true or false"),
]


@pytest.mark.parametrize(("case", "value", "prop", "words"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid(case: str, value: Any, prop: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Connection.from_input(value, resource="web01-ssl")
    error = caught.value
    assert error.resource == "web01-ssl"
    assert error.property == prop
    assert words in str(error)
    assert PASSWORD not in str(error) and PASSWORD not in repr(error.value)


def cert_input(material: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "endpoint": "https://web01:5986/wsman",
        "transport": "certificate",
        "client_cert_pem": material["cert"],
        "client_key_pem": material["key"],
        "ca_bundle": material["ca"],
        **extra,
    }


def test_certificate_transport(material: dict[str, str]) -> None:
    conn = Connection.from_input(cert_input(material))
    assert conn.client_key_pem == material["key"]
    assert conn.username is None


@pytest.mark.parametrize(
    ("case", "change", "prop", "words"),
    [
        ("key missing", {"client_key_pem": None}, "connection.client_key_pem", "required"),
        ("cert not PEM", {"client_cert_pem": "MIIB..."}, "connection.client_cert_pem", "PEM"),
        ("key not PEM", {"client_key_pem": "garbage"}, "connection.client_key_pem", "PEM"),
        (
            "key encrypted",
            {"client_key_pem": "encrypted_key"},
            "connection.client_key_pem",
            "encrypted",
        ),
        (
            "key of another cert",
            {"client_key_pem": "other_key"},
            "connection.client_key_pem",
            "does not belong",
        ),
    ],
)
def test_certificate_transport_invalid(
    material: dict[str, str], case: str, change: dict[str, Any], prop: str, words: str
) -> None:
    value = cert_input(material)
    for name, replacement in change.items():
        value[name] = material.get(replacement, replacement) if replacement else None
    with pytest.raises(ValidationError) as caught:
        Connection.from_input(value)
    assert caught.value.property == prop
    assert words in str(caught.value)
    text = str(caught.value)
    for secret in (material["key"], material["other_key"], material["encrypted_key"]):
        assert secret not in text
    if prop == "connection.client_key_pem":
        assert caught.value.value is None  # secrets are never echoed, not even truncated


def test_round_trip_pickle_and_redaction(material: dict[str, str]) -> None:
    # A shell other than the default, so that every field is stored.
    conn = Connection.from_input(basic(ca_bundle=material["ca"], shell="pwsh"))
    again = Connection.from_input(conn.to_input())
    assert again == conn
    # What a program declares (ConnectionArgs) is what the host side reads and stores.
    assert list(conn.to_input()) == [f.name for f in dataclasses.fields(ConnectionArgs)]
    assert pickle.loads(pickle.dumps(conn)) == conn  # noqa: S301 - our own bytes
    shown = conn.redacted()
    assert shown["password"] == "REDACTED"
    assert shown["ca_bundle"] == "<PEM, 1 certificate(s)>"
    assert PASSWORD not in repr(conn) and PASSWORD not in str(shown)
    cert_conn = Connection.from_input(cert_input(material))
    assert material["key"] not in repr(cert_conn) + str(cert_conn.redacted())


def test_shell_is_stored_only_when_it_is_not_the_default() -> None:
    # Stacks created before the field existed keep previewing clean.
    assert "shell" not in Connection.from_input(basic()).to_input()
    pwsh = Connection.from_input(basic(shell="pwsh"))
    assert pwsh.to_input()["shell"] == "pwsh"
    assert Connection.from_input(pwsh.to_input()) == pwsh
    assert pwsh.secrets_fingerprint() != Connection.from_input(basic()).secrets_fingerprint()


def test_fingerprint_changes_with_every_secret() -> None:
    a = Connection.from_input(basic())
    assert a.secrets_fingerprint() == Connection.from_input(basic()).secrets_fingerprint()
    assert (
        a.secrets_fingerprint() != Connection.from_input(basic(password="x")).secrets_fingerprint()
    )
    assert PASSWORD not in a.secrets_fingerprint()
