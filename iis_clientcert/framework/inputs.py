"""Typed arguments shared by the resource classes, and the secret wrapping they all need."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import pulumi

# Inputs that are secrets wherever they appear; wrapped so Pulumi encrypts them in state
# even when a caller passes a plain string.
CONNECTION_SECRETS = ("password", "client_key_pem")


@dataclass
class ConnectionArgs:
    """How to reach a host's WinRM endpoint (see README, "Connection")."""

    endpoint: pulumi.Input[str]
    transport: pulumi.Input[str] = "ntlm"
    username: pulumi.Input[str] | None = None
    password: pulumi.Input[str] | None = None
    client_cert_pem: pulumi.Input[str] | None = None
    client_key_pem: pulumi.Input[str] | None = None
    ca_bundle: pulumi.Input[str] | None = None
    verify_tls: pulumi.Input[bool] = True
    connect_timeout: pulumi.Input[float] | None = None
    operation_timeout: pulumi.Input[float] | None = None
    read_timeout: pulumi.Input[float] | None = None

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ConnectionArgs:
        """ConnectionArgs from a plain ``connection`` dict (the keys above), e.g. the
        simulator's ``endpoint_connection(...)``; its secrets are marked secret."""
        unknown = sorted(set(value) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"not connection properties: {', '.join(unknown)}")
        return cls(**{k: secret(v) if k in CONNECTION_SECRETS else v for k, v in value.items()})


def secret(value: Any) -> Any:
    """Mark a value secret (None stays None)."""
    return None if value is None else pulumi.Output.secret(value)


def fields_of(value: Any) -> dict[str, Any]:
    """A dataclass instance's fields by name. Not asdict(): it deep-copies, and Outputs
    refuse to be copied."""
    return {f.name: getattr(value, f.name) for f in fields(value)}


def connection_input(connection: Any) -> dict[str, Any]:
    """The connection as a resource input, its secrets marked secret."""
    if isinstance(connection, pulumi.Output):
        raise TypeError(
            "connection must be a ConnectionArgs or a dict (its fields may be Outputs), "
            "not an Output of a dict"
        )
    if is_dataclass(connection) and not isinstance(connection, type):
        value = {k: v for k, v in fields_of(connection).items() if v is not None}
    elif isinstance(connection, dict):
        value = {k: v for k, v in connection.items() if v is not None}
    else:
        raise TypeError("connection must be a ConnectionArgs or a dict")
    for key in CONNECTION_SECRETS:
        if key in value:
            value[key] = secret(value[key])
    return value
