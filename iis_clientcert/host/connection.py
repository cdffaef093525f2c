"""How to reach one host over WinRM: the ``connection`` input of every resource.

A ``Connection`` is plain, immutable, picklable data. Live sessions are kept elsewhere
(``iis_clientcert.host.winrm_transport``'s pool), so providers can capture a Connection safely.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from iis_clientcert.errors import UsageError, ValidationError
from iis_clientcert.host.contract import DEFAULT_SHELL, SHELLS

TRANSPORTS: Final = ("ntlm", "kerberos", "credssp", "certificate", "basic")
SECRET_FIELDS: Final = frozenset({"password", "client_key_pem"})
FIELDS: Final = (
    "endpoint",
    "transport",
    "username",
    "password",
    "client_cert_pem",
    "client_key_pem",
    "ca_bundle",
    "verify_tls",
    "connect_timeout",
    "operation_timeout",
    "read_timeout",
    "shell",
)
REDACTED: Final = "REDACTED"


@dataclass(frozen=True)
class Connection:
    endpoint: str
    transport: str
    username: str | None = None
    # Secrets and long PEM texts stay out of repr() so a logged Connection leaks nothing.
    password: str | None = field(default=None, repr=False)
    client_cert_pem: str | None = field(default=None, repr=False)
    client_key_pem: str | None = field(default=None, repr=False)
    ca_bundle: str | None = field(default=None, repr=False)
    verify_tls: bool = True
    connect_timeout: float = 15
    operation_timeout: float = 60
    read_timeout: float = 90
    # Which PowerShell runs the agent: "powershell" (Windows PowerShell 5.1, every Windows
    # Server) or "pwsh" (PowerShell 7, where installed).
    shell: str = DEFAULT_SHELL

    @property
    def host(self) -> str:
        """The host name of the endpoint, lower-cased (part of every resource id)."""
        return (urlsplit(self.endpoint).hostname or "").lower()

    @property
    def authority(self) -> str:
        """``scheme://host:port`` of the endpoint (default port filled in): the
        connection's part of every resource id, so two hosts behind one name differ."""
        return endpoint_authority(self.endpoint)

    @property
    def is_https(self) -> bool:
        return self.endpoint.lower().startswith("https://")

    @classmethod
    def from_input(cls, value: Mapping[str, Any], resource: str = "connection") -> Connection:
        """Validate and normalise a ``connection`` input; raises ``ValidationError``."""
        return _parse(value, resource)

    def to_input(self) -> dict[str, Any]:
        """The normalised input, as stored in Pulumi state (secrets are marked there).

        ``shell`` is stored only when it is not the default, so stacks made before the
        field existed keep previewing clean.
        """
        out = {name: getattr(self, name) for name in FIELDS}
        if out["shell"] == DEFAULT_SHELL:
            del out["shell"]
        return out

    def redacted(self) -> dict[str, Any]:
        """The connection fit for a log line: secrets replaced, PEM texts summarised."""
        out = {name: getattr(self, name) for name in FIELDS}
        for name in SECRET_FIELDS:
            if out[name] is not None:
                out[name] = REDACTED
        for name in ("client_cert_pem", "ca_bundle"):
            if out[name] is not None:
                out[name] = (
                    f"<PEM, {out[name].count('-----BEGIN CERTIFICATE-----')} certificate(s)>"
                )
        return out

    def secrets_fingerprint(self) -> str:
        """A one-way digest of everything that changes a session (pool key, never shown)."""
        digest = hashlib.sha256()
        for name in FIELDS:
            digest.update(name.encode())
            digest.update(b"\0")
            digest.update(repr(getattr(self, name)).encode("utf-8"))
            digest.update(b"\0")
        return digest.hexdigest()


def endpoint_authority(endpoint: str) -> str:
    """``https://web01:5986`` for ``https://WEB01/wsman``: scheme, host and port (WinRM's
    default port for the scheme when none is given), lower-cased. The same host reached on
    another port or scheme is another authority."""
    parts = urlsplit(endpoint.strip())
    scheme = parts.scheme.lower() or "https"
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 5986 if scheme == "https" else 5985
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


# --- validation ----------------------------------------------------------------------


def _fail(resource: str, name: str, value: Any, problem: str, fix: str = "") -> ValidationError:
    shown = None if name in SECRET_FIELDS else value
    return ValidationError(resource, f"connection.{name}", shown, problem, fix)


def _optional_text(value: Mapping[str, Any], name: str, resource: str) -> str | None:
    raw = value.get(name)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise _fail(resource, name, None, f"must be a string, not {type(raw).__name__}")
    return raw


def _timeout(value: Mapping[str, Any], name: str, default: float, resource: str) -> float:
    raw = value.get(name)
    if raw is None:
        return default
    number: float
    if isinstance(raw, bool):
        raise _fail(resource, name, raw, "must be a number of seconds")
    if isinstance(raw, int | float):
        number = float(raw)
    elif isinstance(raw, str):
        try:
            number = float(raw)
        except ValueError:
            raise _fail(resource, name, raw, "must be a number of seconds") from None
    else:
        raise _fail(resource, name, raw, "must be a number of seconds")
    if not math.isfinite(number) or number <= 0:
        raise _fail(resource, name, raw, "must be a positive number of seconds")
    return number


def _bool(value: Mapping[str, Any], name: str, default: bool, resource: str) -> bool:
    raw = value.get(name)
    if raw is None:
        return default
    if isinstance(raw, bool):
        return raw
    # Pulumi config values often arrive as strings.
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise _fail(resource, name, raw, "must be true or false")


def _endpoint(raw: Any, resource: str) -> str:
    fix = "use the form https://HOST:5986/wsman (or http://HOST:5985/wsman for NTLM/Kerberos)"
    if not isinstance(raw, str) or not raw.strip():
        raise _fail(resource, "endpoint", None if raw is None else raw, "is required", fix)
    text = raw.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        # An invalid port may hide user:password@ text: do not echo the value.
        raise _fail(resource, "endpoint", None, "is not a valid URL", fix) from None
    if parts.username is not None or parts.password is not None:
        raise _fail(
            resource,
            "endpoint",
            None,
            "must not carry credentials",
            "give username and password as their own properties; " + fix,
        )
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _fail(resource, "endpoint", text, "must start with http:// or https://", fix)
    host = (parts.hostname or "").lower()
    if not host:
        raise _fail(resource, "endpoint", text, "has no host name", fix)
    if parts.path.rstrip("/").lower() != "/wsman" or parts.query or parts.fragment:
        raise _fail(resource, "endpoint", text, "must end in /wsman", fix)
    shown_host = f"[{host}]" if ":" in host else host
    netloc = shown_host if port is None else f"{shown_host}:{port}"
    return f"{scheme}://{netloc}/wsman"


def _check_pem_certificates(text: str, resource: str, name: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(text.encode("utf-8"))
    except ValueError:
        certs = []
    if not certs:
        raise _fail(
            resource,
            name,
            text,
            "is not PEM certificate text",
            "give the PEM text (-----BEGIN CERTIFICATE----- ...), not a file path or DER",
        )
    return certs


def _parse(value: Mapping[str, Any], resource: str) -> Connection:
    if not isinstance(value, Mapping):
        raise ValidationError(resource, "connection", None, "must be an object")
    for key in value:
        if key not in FIELDS:
            # The value of a misspelt key may be a password: never shown.
            raise ValidationError(
                resource,
                f"connection.{key}",
                None,
                "is not a connection property",
                f"use one of: {', '.join(FIELDS)}",
            )

    endpoint = _endpoint(value.get("endpoint"), resource)
    https = endpoint.startswith("https://")

    transport_raw = value.get("transport")
    transport = transport_raw.strip().lower() if isinstance(transport_raw, str) else transport_raw
    if transport not in TRANSPORTS:
        raise _fail(
            resource,
            "transport",
            transport_raw,
            "is not a supported transport",
            f"use one of: {', '.join(TRANSPORTS)}",
        )
    assert isinstance(transport, str)

    username = _optional_text(value, "username", resource)
    password = _optional_text(value, "password", resource)
    client_cert_pem = _optional_text(value, "client_cert_pem", resource)
    client_key_pem = _optional_text(value, "client_key_pem", resource)
    ca_bundle = _optional_text(value, "ca_bundle", resource)
    verify_tls = _bool(value, "verify_tls", True, resource)
    connect_timeout = _timeout(value, "connect_timeout", 15.0, resource)
    operation_timeout = _timeout(value, "operation_timeout", 60.0, resource)
    read_timeout = _timeout(value, "read_timeout", 90.0, resource)
    shell_raw = value.get("shell")
    shell = shell_raw.strip().lower() if isinstance(shell_raw, str) else shell_raw
    if shell is None or shell == "":
        shell = DEFAULT_SHELL
    if shell not in SHELLS:
        raise _fail(
            resource,
            "shell",
            shell_raw,
            "is not a PowerShell the agent runs under",
            "use one of: powershell, pwsh (PowerShell 7, where installed)",
        )
    assert isinstance(shell, str)

    if transport == "basic" and not https:
        raise _fail(
            resource,
            "transport",
            transport,
            "Basic authentication over plain HTTP sends the password in clear",
            "use an https:// endpoint, or the ntlm transport (encrypts messages over HTTP)",
        )
    if transport == "certificate":
        if not https:
            raise _fail(
                resource,
                "transport",
                transport,
                "certificate authentication needs an https:// endpoint",
                "use https://HOST:5986/wsman",
            )
        if client_cert_pem is None:
            raise _fail(
                resource,
                "client_cert_pem",
                None,
                "is required for the certificate transport",
                "give the client certificate as PEM text",
            )
        if client_key_pem is None:
            raise _fail(
                resource,
                "client_key_pem",
                None,
                "is required for the certificate transport",
                "give the client certificate's private key as unencrypted PEM text",
            )
        cert = _check_pem_certificates(client_cert_pem, resource, "client_cert_pem")[0]
        try:
            private_key = serialization.load_pem_private_key(
                client_key_pem.encode("utf-8"), password=None
            )
        except TypeError:
            raise _fail(
                resource,
                "client_key_pem",
                None,
                "is an encrypted private key",
                "give the key unencrypted (it is stored as a Pulumi secret)",
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise _fail(
                resource,
                "client_key_pem",
                None,
                "is not a PEM private key",
                "give the unencrypted PEM text of the key (PKCS#8 or PKCS#1)",
            ) from None
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if private_key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
            raise _fail(
                resource,
                "client_key_pem",
                None,
                "does not belong to client_cert_pem",
                "give the private key of that certificate",
            )
    else:
        if username is None:
            raise _fail(resource, "username", None, f"is required for the {transport} transport")
        # pywinrm's Kerberos auth uses the ticket cache (kinit), never a password.
        if password is None and transport != "kerberos":
            raise _fail(resource, "password", None, f"is required for the {transport} transport")
    if ca_bundle is not None:
        _check_pem_certificates(ca_bundle, resource, "ca_bundle")
    if client_cert_pem is not None and transport != "certificate":
        _check_pem_certificates(client_cert_pem, resource, "client_cert_pem")
    if operation_timeout < 1:
        raise _fail(resource, "operation_timeout", operation_timeout, "must be at least 1 second")
    if read_timeout <= operation_timeout:
        raise _fail(
            resource,
            "read_timeout",
            read_timeout,
            f"must be longer than operation_timeout ({operation_timeout:g} s)",
            "the host may hold a request for the whole operation timeout",
        )

    return Connection(
        endpoint=endpoint,
        transport=transport,
        username=username,
        password=password,
        client_cert_pem=client_cert_pem,
        client_key_pem=client_key_pem,
        ca_bundle=ca_bundle,
        verify_tls=verify_tls,
        connect_timeout=connect_timeout,
        operation_timeout=operation_timeout,
        read_timeout=read_timeout,
        shell=shell,
    )


# --- the embedded simulator's connection -----------------------------------------------

# A running simulator keeps a ready ``connection`` input in DIR/endpoint.json (written by
# iis_clientcert_simulator.endpoint, which also derives its other transports). The product
# reads the file as data and never imports the simulator: a test double a real deployment
# does not need.
SIMULATOR_ENDPOINT_FILE: Final = "endpoint.json"


def simulator_connection_input(state_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``connection`` input (basic over HTTPS) of the simulator serving ``state_dir``;
    a UsageError naming the fix when none does. It holds the password: never print it."""
    path = Path(state_dir) / SIMULATOR_ENDPOINT_FILE
    start = f"start it (python -m iis_clientcert_simulator serve --state-dir {state_dir})"
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"no simulator serves {state_dir} ({path} does not exist): {start}"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {path} ({exc.strerror}): {start}") from None
    except ValueError:
        raise UsageError(f"{path} is not JSON: {start}") from None
    if not isinstance(data, dict) or not data.get("pid"):
        # A stopped simulator keeps its endpoint.json (the password for the next start).
        raise UsageError(f"no simulator serves {state_dir} (it has stopped): {start}")
    connection = data.get("connection")
    if not isinstance(connection, dict):
        raise UsageError(f"{path} holds no connection (written by an older simulator?): {start}")
    return dict(connection)
