"""Inputs: the connection argument every resource takes, each resource's declared inputs,
and the helpers that read them in ``validate``.

A resource declares each of its inputs once (:class:`Input`: name, kind, default, doc,
whether it is secret and whether changing it replaces the object). From that one
declaration the resource class fills defaults and wraps secrets, the provider takes its
``replace_on`` and ``validate`` reads defaults, so a default lives in one place.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Literal, Required, TypedDict

import pulumi

from iis_clientcert.errors import InputTypeError, ValidationError

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
    # "powershell" (Windows PowerShell 5.1, the default) or "pwsh" (PowerShell 7).
    shell: pulumi.Input[str] | None = None

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ConnectionArgs:
        """ConnectionArgs from a plain ``connection`` dict (the keys above), e.g. the
        simulator's ``endpoint_connection(...)``; its secrets are marked secret."""
        unknown = sorted(set(value) - {f.name for f in fields(cls)})
        if unknown:
            raise InputTypeError(f"not connection properties: {', '.join(unknown)}")
        return cls(**{k: secret(v) if k in CONNECTION_SECRETS else v for k, v in value.items()})


class ConnectionArgsDict(TypedDict, total=False):
    """ConnectionArgs as a dict (the ``...ArgsDict`` style of Pulumi's own SDKs)."""

    endpoint: Required[pulumi.Input[str]]
    transport: pulumi.Input[str]
    username: pulumi.Input[str] | None
    password: pulumi.Input[str] | None
    client_cert_pem: pulumi.Input[str] | None
    client_key_pem: pulumi.Input[str] | None
    ca_bundle: pulumi.Input[str] | None
    verify_tls: pulumi.Input[bool]
    connect_timeout: pulumi.Input[float] | None
    operation_timeout: pulumi.Input[float] | None
    read_timeout: pulumi.Input[float] | None


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
        raise InputTypeError(
            "connection must be a ConnectionArgs or a dict (its fields may be Outputs), "
            "not an Output of a dict"
        )
    if is_dataclass(connection) and not isinstance(connection, type):
        value = {k: v for k, v in fields_of(connection).items() if v is not None}
    elif isinstance(connection, dict):
        value = {k: v for k, v in connection.items() if v is not None}
    else:
        raise InputTypeError("connection must be a ConnectionArgs or a dict")
    for key in CONNECTION_SECRETS:
        if key in value:
            value[key] = secret(value[key])
    return value


# --- declared inputs -------------------------------------------------------------------

Kind = Literal["str", "bool", "int", "list", "map"]


@dataclass(frozen=True)
class Input:
    """One input of a resource, declared once."""

    name: str
    kind: Kind  # the JSON kind of the value once known
    doc: str
    # The value when none is given (None: none, the input is required or may stay empty).
    default: Any = None
    required: bool = False
    # Wrapped secret by the resource class, whatever the caller passes.
    secret: bool = False
    # A change means another object on the host: Pulumi replaces the resource.
    replace: bool = False
    # Filled in by ``check`` from other inputs (a canonical form), not a parameter of the
    # resource class.
    derived: bool = False


class Inputs:
    """The declared inputs of one resource (``connection`` aside: every resource has it)."""

    def __init__(self, kind: str, *inputs: Input) -> None:
        self.kind = kind
        self._inputs = {i.name: i for i in inputs}

    def __getitem__(self, name: str) -> Input:
        return self._inputs[name]

    def __iter__(self) -> Iterator[Input]:
        return iter(self._inputs.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._inputs)

    @property
    def replace_on(self) -> tuple[str, ...]:
        return tuple(i.name for i in self._inputs.values() if i.replace)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(i.name for i in self._inputs.values() if i.secret)

    def default(self, name: str) -> Any:
        """A fresh copy of the input's default (lists and maps are never shared)."""
        return copy.deepcopy(self._inputs[name].default)

    # Readers for ``validate``: the type checks of get_str / get_bool / get_int with the
    # declared default.

    def get_str(self, props: Mapping[str, Any], name: str, **options: Any) -> str:
        decl = self._inputs[name]
        return get_str(
            self.kind, props, name, default=decl.default, required=decl.required, **options
        )

    def get_bool(self, props: Mapping[str, Any], name: str) -> bool:
        return get_bool(self.kind, props, name, bool(self._inputs[name].default))

    def get_int(self, props: Mapping[str, Any], name: str, lo: int, hi: int) -> int:
        return get_int(self.kind, props, name, int(self._inputs[name].default), lo, hi)

    def value(self, props: Mapping[str, Any], name: str) -> Any:
        """The raw value, or the default when none is given (for custom validation)."""
        value = props.get(name)
        return self.default(name) if value is None else value

    # For the resource class.

    def props(self, connection: Any, computed: Sequence[str], **values: Any) -> dict[str, Any]:
        """The property bag a resource class registers: the connection, every declared
        input (defaults filled in, secrets wrapped) and the computed outputs (None)."""
        unknown = set(values) - {i.name for i in self._inputs.values() if not i.derived}
        if unknown:
            raise InputTypeError(f"{self.kind} has no input {', '.join(sorted(unknown))}")
        props: dict[str, Any] = {"connection": connection_input(connection)}
        for decl in self._inputs.values():
            value = values.get(decl.name)
            if value is None and not decl.derived:
                value = self.default(decl.name)
            props[decl.name] = secret(value) if decl.secret else value
        props.update(dict.fromkeys(computed))
        return props

    def docstring(self, summary: str) -> str:
        """``summary`` followed by the inputs and their docs (the resource class's doc)."""
        lines = [summary, "", "Inputs (besides ``connection``):"]
        for decl in self._inputs.values():
            if decl.derived:
                continue
            notes = []
            if decl.required:
                notes.append("required")
            elif decl.default is not None:
                notes.append(f"default {decl.default!r}")
            if decl.secret:
                notes.append("secret")
            if decl.replace:
                notes.append("a change replaces the resource")
            extra = f" ({'; '.join(notes)})" if notes else ""
            lines.append(f"    {decl.name}: {decl.doc}{extra}")
        return "\n".join(lines) + "\n"


# --- readers of single values (``prefix`` names the object a value is inside) ----------


def get_str(
    kind: str,
    props: Mapping[str, Any],
    key: str,
    *,
    default: str | None = None,
    required: bool = True,
    allow_empty: bool = False,
    max_len: int = 4096,
    prefix: str = "",
) -> str:
    """``prefix`` is the path of the object ``props`` is inside (``many_to_one[0].``), so
    a failure names the exact property, not just ``name``."""
    value = props.get(key, default)
    prop = prefix + key
    if value is None:
        if required:
            raise ValidationError(kind, prop, None, "is required")
        return default or ""
    if not isinstance(value, str):
        raise ValidationError(kind, prop, value, "must be a string")
    if not allow_empty and required and not value.strip():
        raise ValidationError(kind, prop, value, "must not be empty")
    if "\x00" in value:
        raise ValidationError(kind, prop, value, "must not contain a NUL character")
    if len(value) > max_len:
        raise ValidationError(kind, prop, None, f"is longer than {max_len} characters")
    return value


def get_bool(
    kind: str, props: Mapping[str, Any], key: str, default: bool, prefix: str = ""
) -> bool:
    value = props.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValidationError(kind, prefix + key, value, "must be true or false")
    return value


def get_int(kind: str, props: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = props.get(key, default)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # Pulumi numbers arrive as floats
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValidationError(kind, key, value, f"must be a whole number from {lo} to {hi}")
    return value


def get_list(kind: str, props: Mapping[str, Any], key: str) -> list[Any]:
    value = props.get(key)
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ValidationError(kind, key, value, "must be a list")
    return list(value)
