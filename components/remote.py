"""ClientCertSite as every other Pulumi language sees it: the shape its schema is inferred
from (``pulumi.provider.experimental``'s analyzer), served by ``iis_clientcert.package``.

One definition, checked: each TypedDict here mirrors a ``...Dict`` of the Python component
(components/args.py, framework/inputs.py, client_cert_site.py) with the same keys, value
types, required keys and defaults (in its description), less what only a Python program
can give (``host``, ``aliases``, ``https.certificate``: objects of a ClientCertHost, Pulumi
aliases). ``drift()`` lists every other difference; tests/unit/test_component_package.py fails
on any, so the two cannot drift apart silently.

Written for the analyzer, which reads annotations as objects and documentation from the
string after each field: no ``from __future__ import annotations`` here, TypedDicts (a
dataclass's defaults would be ignored, making every field required), no unions but
``X | None``, and lists of objects as named types. Field names are Python's; the schema
spells them in camelCase (``one_to_one`` -> ``oneToOne``).
"""

# ruff: noqa: UP045  (the analyzer reads Optional[X]; keep the annotations it documents)

import ast
import dataclasses
import inspect
import itertools
import json
import types
import typing
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, NotRequired, Optional, Required, TypedDict

import pulumi

from iis_clientcert.errors import InputTypeError

# ============================================================== the inputs, as the schema has them


class Connection(TypedDict, total=False):
    """How to reach the host's WinRM (WS-Management) endpoint. Basic authentication over
    plain http is refused (it would send the password in clear)."""

    endpoint: Required[pulumi.Input[str]]
    """The host's WS-Management endpoint, e.g. `https://web01.example.com:5986/wsman` (or
    `http://web01:5985/wsman` for NTLM with message encryption). Its scheme, host name and
    port are part of every resource's id: another host is another object."""
    transport: pulumi.Input[str]
    """How to authenticate: `ntlm`, `kerberos`, `credssp`, `certificate` or `basic`.
    Default: "ntlm"."""
    username: pulumi.Input[str]
    """The account that deploys (a local administrator of the host), e.g. `WEB01\\deployer`."""
    password: pulumi.Input[str]
    """Secret. The account's password: stored encrypted in the state (it is marked secret
    whatever the program passes) and never shown in previews, logs or messages."""
    client_cert_pem: pulumi.Input[str]
    """PEM of the client certificate, for the `certificate` transport."""
    client_key_pem: pulumi.Input[str]
    """Secret. PEM of the client certificate's private key, for the `certificate`
    transport."""
    ca_bundle: pulumi.Input[str]
    """PEM of the CA that signed the host's WinRM https certificate. Without it the
    system's trusted CAs verify the host."""
    verify_tls: pulumi.Input[bool]
    """Verify the host's https certificate; turn it off only knowingly. Default: true."""
    connect_timeout: pulumi.Input[float]
    """Seconds to wait for a connection to the endpoint (15 when not given)."""
    operation_timeout: pulumi.Input[float]
    """Seconds the host may take for one WinRM operation (60 when not given)."""
    read_timeout: pulumi.Input[float]
    """Seconds to wait for an answer, more than operationTimeout (90 when not given)."""


class HttpsEndpoint(TypedDict, total=False):
    """The site's https binding, and the server certificate it presents (imported into
    LocalMachine\\My from the PFX)."""

    pfx: Required[pulumi.Input[str]]
    """Secret. The server certificate with its private key, as a PFX: its base64 text, or
    the absolute path of the file on the machine that runs Pulumi (read when the program
    runs). Stored encrypted in the state."""
    password: pulumi.Input[str]
    """Secret. The PFX's password."""
    port: pulumi.Input[int]
    """The TCP port of the binding; another port replaces the binding. Default: 443."""
    ip: pulumi.Input[str]
    """The IP address of the binding, `*` for all. Default: "*"."""
    host_name: pulumi.Input[str]
    """The host name of the binding (with `sni`, the name clients ask for)."""
    sni: pulumi.Input[bool]
    """Select the certificate by the host name the client asks for (Server Name
    Indication). Default: false."""
    client_cert_negotiation: pulumi.Input[bool]
    """Ask for the client certificate in the TLS handshake (HTTP.sys
    `clientcertnegotiation`), which TLS 1.3 hosts (Windows Server 2022 and later) need.
    Default: true."""


class FolderAccess(TypedDict, total=False):
    """A folder the account may read, as the classic step "give the mapped user read access
    to the content" (IIS answers 401.3 without it)."""

    path: Required[pulumi.Input[str]]
    """An absolute local folder of the host, e.g. `C:\\inetpub\\shop`."""
    rights: pulumi.Input[str]
    """`Read`, `ReadAndExecute` or `Modify`. Default: "ReadAndExecute"."""


class SiteUser(TypedDict, total=False):
    """A local account of the host that client certificates log on as."""

    name: Required[pulumi.Input[str]]
    """The account's name (at most 20 characters); mappings refer to it by this name.
    Another name replaces the account."""
    password: Required[pulumi.Input[str]]
    """Secret. The account's password. Mappings take it from here (it is written once), and
    `up` tries the logon before it writes a mapping."""
    full_name: pulumi.Input[str]
    """The account's full name."""
    description: pulumi.Input[str]
    """The account's description (at most 48 characters)."""
    groups: pulumi.Input[Sequence[pulumi.Input[str]]]
    """Local groups the account is a member of; only these are managed (new accounts are
    members of Users)."""
    folder_access: pulumi.Input[Sequence[pulumi.Input[FolderAccess]]]
    """Folders the account may read, typically the site's content folder."""
    password_never_expires: pulumi.Input[bool]
    """The password never expires (an expired password fails every mapped logon).
    Default: true."""
    user_cannot_change_password: pulumi.Input[bool]
    """The account cannot change its own password. Default: true."""
    disabled: pulumi.Input[bool]
    """The account is disabled. Default: false."""


class OneToOne(TypedDict, total=False):
    """One client certificate that logs on as one account (IIS one-to-one mapping)."""

    certificate: Required[pulumi.Input[str]]
    """The client certificate: PEM, DER as base64, base64 with line breaks, or a PFX; it
    is written as the single-line base64 IIS compares."""
    user: Required[pulumi.Input[str]]
    """The name of one of `users`: the account the certificate logs on as."""
    enabled: pulumi.Input[bool]
    """The mapping is in effect. Default: true."""


class Rule(TypedDict, total=False):
    """One condition of a many-to-one mapping on a field of the client certificate."""

    sub_field: Required[pulumi.Input[str]]
    """The part of the subject or issuer compared: `CN`, `O`, `OU`, `C`, `L`, `S` or `E`."""
    match: Required[pulumi.Input[str]]
    """The value it must have; `*` is a wildcard."""
    field: pulumi.Input[str]
    """`Subject` or `Issuer`. Default: "Subject"."""
    case_sensitive: pulumi.Input[bool]
    """Compare with case. Default: true."""


class ManyToOne(TypedDict, total=False):
    """Every trusted client certificate that matches all its rules logs on as one account
    (Allow), or is refused (Deny) (IIS many-to-one mapping)."""

    name: Required[pulumi.Input[str]]
    """The mapping's name, unique in the site."""
    rules: Required[Sequence[Rule]]
    """The conditions a certificate must all meet."""
    user: pulumi.Input[str]
    """The name of one of `users`: the account matching certificates log on as (needed
    for an Allow mapping)."""
    permission: pulumi.Input[str]
    """`Allow` or `Deny`. Default: "Allow"."""
    description: pulumi.Input[str]
    """What the mapping is for."""
    enabled: pulumi.Input[bool]
    """The mapping is in effect. Default: true."""


class ClientCertSiteArgs(TypedDict, total=False):
    """The inputs of a ClientCertSite."""

    connection: Required[pulumi.Input[Connection]]
    """How to reach the host."""
    site: Required[pulumi.Input[str]]
    """The IIS site's name, e.g. `Default Web Site`."""
    https: HttpsEndpoint
    """The site's https binding and server certificate; none: the site's bindings are left
    as they are."""
    trusted_roots: Sequence[pulumi.Input[str]]
    """CA certificates (PEM, DER as base64, ...) the site's client certificates chain to:
    self-signed roots go to LocalMachine\\Root, intermediates to LocalMachine\\CA. A CA
    already on the host is adopted and left there on destroy."""
    users: Sequence[SiteUser]
    """Local accounts the site's mappings log on as."""
    one_to_one: Sequence[OneToOne]
    """One-to-one mappings: this certificate logs on as that account."""
    many_to_one: Sequence[ManyToOne]
    """Many-to-one mappings: certificates matching rules log on as an account, or are
    refused."""
    ssl_flags: pulumi.Input[Sequence[pulumi.Input[str]]]
    """The site's sslFlags: `Ssl`, `SslNegotiateCert`, `SslRequireCert`, `Ssl128`.
    Default: `Ssl, SslNegotiateCert, SslRequireCert`."""
    anonymous_enabled: pulumi.Input[bool]
    """Anonymous access to the site (with it, a request without a certificate is served).
    Default: false."""
    allow_untrusted_client_certificates: pulumi.Input[bool]
    """Allow mapped certificates that chain to none of `trustedRoots` (IIS answers 403.16
    to them unless the host trusts their CA some other way). Default: false."""


# ===================================================================== the component


# The shape of the schema only: the provider (iis_clientcert.package) builds the Python
# component, iis_clientcert.components.ClientCertSite, from these inputs. Its docstring and
# the strings after its outputs are the schema's documentation.
class ClientCertSite(pulumi.ComponentResource):
    """One IIS site configured for client-certificate authentication: its sslFlags require
    a client certificate, anonymous access is off, its certificate mappings are the ones
    given (entries found on the host that are not given are removed), and the CA
    certificates, local accounts, server certificate and https binding it needs are in
    place. `destroy` gives the host back as it was found."""

    host_endpoint: pulumi.Output[str]
    """The host's WinRM endpoint as `scheme://host:port`."""
    site_name: pulumi.Output[str]
    """The IIS site's name."""
    https_url: pulumi.Output[Optional[str]]
    """`https://host:port/` of the site's binding (none without `https`)."""
    server_thumbprint: pulumi.Output[Optional[str]]
    """SHA-1 thumbprint of the server certificate the binding presents (none without
    `https`)."""
    root_thumbprints: pulumi.Output[list[str]]
    """SHA-1 thumbprints of the site's trusted CA certificates."""
    mapped_users: pulumi.Output[dict[str, str]]
    """Who logs on as whom: a one-to-one certificate's thumbprint, or `rule:<name>` of a
    many-to-one mapping, to the account's name."""
    accounts: pulumi.Output[list[str]]
    """The accounts the site's mappings log on as."""

    def __init__(
        self,
        name: str,
        args: ClientCertSiteArgs,
        opts: Optional[pulumi.ResourceOptions] = None,
    ) -> None:
        raise InputTypeError(
            "components.remote.ClientCertSite declares the schema only: in Python, use "
            "iis_clientcert.ClientCertSite"
        )


# ==================================================================== one definition: drift


@dataclasses.dataclass(frozen=True)
class Mirror:
    """A schema type and the Python definitions it mirrors."""

    schema: type  # the TypedDict above
    python: type  # the component's TypedDict (its keys, types, required keys)
    defaults: type | None  # the dataclass whose field defaults the descriptions state
    # Keys only a Python program can give, with why.
    python_only: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Keys required here though optional in Python, with why.
    required_here: Mapping[str, str] = dataclasses.field(default_factory=dict)


def mirrors() -> list[Mirror]:
    """Each schema type with its Python counterpart (imported here: the analyzer imports
    this module for its annotations alone)."""
    from iis_clientcert.components import args as a  # noqa: PLC0415
    from iis_clientcert.components import client_cert_site as s  # noqa: PLC0415
    from iis_clientcert.framework import inputs  # noqa: PLC0415

    no_host = "a ClientCertHost is a Python object; other languages give a site of its own"
    aliases = "Pulumi aliases of a Python program's earlier resources"
    return [
        Mirror(
            ClientCertSiteArgs,
            s.ClientCertSiteArgsDict,
            s.ClientCertSiteArgs,
            python_only={"host": no_host},
            required_here={"connection": no_host + ", which needs its connection"},
        ),
        Mirror(Connection, inputs.ConnectionArgsDict, inputs.ConnectionArgs),
        Mirror(
            HttpsEndpoint,
            a.HttpsEndpointDict,
            a.HttpsEndpoint,
            python_only={"certificate": "names a ClientCertHost's server certificate"},
            required_here={"pfx": "a site of its own presents the certificate of its PFX"},
        ),
        Mirror(SiteUser, a.SiteUserDict, a.SiteUser, python_only={"aliases": aliases}),
        Mirror(OneToOne, a.OneToOneDict, a.OneToOne),
        Mirror(ManyToOne, a.ManyToOneDict, a.ManyToOne),
        Mirror(Rule, a.RuleDict, a.Rule),
    ]


# Schema objects whose Python form is a plain mapping of strings (LocalUser's
# ``folder_access`` entries, ``{path, rights}``): named here so the schema can document them.
MAPPING_OBJECTS: dict[type, str] = {FolderAccess: "map[input[str]]"}

# Where a value is a secret (marked ``secret`` in the schema, "Secret." in its description),
# as the resources that take it declare it (tests/unit/test_component_package.py checks them).
SECRETS: Mapping[type, tuple[str, ...]] = {
    Connection: ("password", "client_key_pem"),
    HttpsEndpoint: ("pfx", "password"),
    SiteUser: ("password",),
}


def _required(typed_dict: type) -> set[str]:
    """Required keys, from the annotations (``__required_keys__`` misses ``Required[...]``
    written as a string, as under ``from __future__ import annotations``)."""
    total = bool(getattr(typed_dict, "__total__", True))
    found = set()
    for key, hint in _hints(typed_dict).items():
        origin = typing.get_origin(hint)
        if origin is Required or (total and origin is not NotRequired):
            found.add(key)
    return found


# ``pulumi.Input[T]`` holds the forward reference "Output[T]", evaluated in these names.
_INPUT_NAMES = {"Output": pulumi.Output, "T": typing.TypeVar("T")}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, localns=_INPUT_NAMES, include_extras=True)


def _own_hints(cls: type) -> dict[str, Any]:
    """A class's own annotations, evaluated (not its bases': pulumi.Resource's refer to
    names its module imports for type checkers only)."""
    hints = inspect.get_annotations(cls, eval_str=True, locals=_INPUT_NAMES)
    return {k: v for k, v in hints.items() if not k.startswith("_")}


def shape(tp: Any, names: Mapping[type, str]) -> str:
    """A type as the schema sees it: ``input[list[object:Rule]]``. Optional, Required and
    NotRequired are left out (required keys are compared on their own); a Python union of a
    dataclass and its ``...Dict`` is the schema object both mirror (``names``)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Required, NotRequired):
        return shape(args[0], names)
    if origin is pulumi.Output:
        return f"output[{shape(args[0], names)}]"
    if origin in (typing.Union, types.UnionType):
        members = [m for m in args if m is not type(None)]
        awaited = [m for m in members if typing.get_origin(m) is Awaitable]
        if awaited:  # pulumi.Input[T] = T | Awaitable[T] | Output[T]
            return f"input[{shape(typing.get_args(awaited[0])[0], names)}]"
        found = {shape(m, names) for m in members}
        return found.pop() if len(found) == 1 else "union[" + ",".join(sorted(found)) + "]"
    if origin in (list, Sequence, typing.Sequence):
        return f"list[{shape(args[0], names)}]"
    if origin in (dict, Mapping, typing.Mapping):
        return f"map[{shape(args[1], names)}]"
    if tp in MAPPING_OBJECTS:
        return MAPPING_OBJECTS[tp]
    if isinstance(tp, type) and tp in names:
        return f"object:{names[tp]}"
    if tp in (str, int, float, bool):
        return str(tp.__name__)
    return f"?{tp!r}"


def _default_text(value: Any) -> str:
    """How a description states a default: JSON for a value, a list as its entries."""
    if isinstance(value, list | tuple):
        return f"Default: `{', '.join(map(str, value))}`."
    return f"Default: {json.dumps(value)}."


def drift(pairs: Sequence[Mirror] | None = None) -> list[str]:
    """Every difference between the schema types and the Python component's arguments
    (none is the contract), and between the component's outputs here and there."""
    from iis_clientcert.components.client_cert_site import (  # noqa: PLC0415
        ClientCertSite as PythonSite,
    )

    pairs = mirrors() if pairs is None else pairs
    names: dict[type, str] = {}
    for m in pairs:
        names[m.schema] = names[m.python] = m.schema.__name__
        if m.defaults is not None:
            names[m.defaults] = m.schema.__name__
    found: list[str] = []
    for m in pairs:
        where = m.schema.__name__
        ours, theirs = _hints(m.schema), _hints(m.python)
        python_keys = set(theirs) - set(m.python_only)
        for key in sorted(python_keys - set(ours)):
            found.append(f"{where}: the Python component takes {key!r}, the schema does not")
        for key in sorted(set(ours) - python_keys):
            found.append(f"{where}: {key!r} is in the schema, not in the Python component")
        for key in sorted(set(m.python_only) - set(theirs)):
            found.append(f"{where}: python_only names {key!r}, which Python does not take")
        required = (_required(m.python) - set(m.python_only)) | set(m.required_here)
        if _required(m.schema) != required:
            found.append(
                f"{where}: required {sorted(_required(m.schema))} here, "
                f"{sorted(required)} in Python (with required_here)"
            )
        for key in sorted(set(ours) & python_keys):
            here, there = shape(ours[key], names), shape(theirs[key], names)
            if here != there:
                found.append(f"{where}.{key}: {here} here, {there} in Python")
        if m.defaults is not None:
            found.extend(_default_drift(m, set(ours) & python_keys))
    outputs = _own_hints(ClientCertSite)
    python_outputs = {
        k: v for k, v in _own_hints(PythonSite).items() if typing.get_origin(v) is pulumi.Output
    }
    if set(outputs) != set(python_outputs):
        found.append(
            f"ClientCertSite outputs: {sorted(outputs)} here, {sorted(python_outputs)} in Python"
        )
    for key in sorted(set(outputs) & set(python_outputs)):
        here, there = shape(outputs[key], names), shape(python_outputs[key], names)
        if here != there:
            found.append(f"ClientCertSite.{key}: {here} here, {there} in Python")
    return found


def _default_drift(m: Mirror, keys: set[str]) -> list[str]:
    """A Python default that is a value (not none, empty or required) is stated in the
    schema description as ``Default: <JSON>.`` (a list: ``Default: `a, b`.``); no other
    description states one."""
    assert m.defaults is not None
    found = []
    docs = field_docs(m.schema)
    for f in dataclasses.fields(m.defaults):
        if f.name not in keys:
            continue
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = None
        doc = docs.get(f.name, "")
        stated = "Default:" in doc
        if value in (None, "", [], {}) or f.name in _required(m.schema):
            if stated:
                found.append(f"{m.schema.__name__}.{f.name}: states a default Python has not")
        elif _default_text(value) not in " ".join(doc.split()):
            found.append(
                f"{m.schema.__name__}.{f.name}: the description must say "
                f"{_default_text(value)!r} (the Python default)"
            )
    return found


def field_docs(cls: type) -> dict[str, str]:
    """The string after each field of a class in this module (what the analyzer reads)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = after.value.value
    return docs
