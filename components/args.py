"""The parts of ClientCertSiteArgs and ClientCertHostArgs, in both styles Pulumi users
know: dataclasses and ``...Dict`` TypedDicts (like pulumi-command's ConnectionArgs |
ConnectionArgsDict). Every value a program could compute accepts a ``pulumi.Input``.

Lists themselves are plain (each entry becomes a resource, so their length is needed when
the program runs); their entries and every field inside may be Outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Required, TypedDict

import pulumi

# Earlier URNs of a resource (``pulumi.Alias`` or a URN), e.g. an account that moves from a
# ClientCertSite to a ClientCertHost (README, "Upgrading").
Aliases = Sequence["pulumi.Input[str] | pulumi.Alias"]


@dataclass
class SiteUser:
    """A local account that certificates map to."""

    name: pulumi.Input[str]
    password: pulumi.Input[str]
    full_name: pulumi.Input[str] | None = None
    description: pulumi.Input[str] | None = None
    groups: pulumi.Input[Sequence[pulumi.Input[str]]] = field(default_factory=list)
    # [{"path": "C:\\inetpub\\shop", "rights": "ReadAndExecute"}]: the site folder, as in
    # the classic step "give the mapped user read access to the content".
    folder_access: pulumi.Input[Sequence[pulumi.Input[Mapping[str, pulumi.Input[str]]]]] = field(
        default_factory=list
    )
    password_never_expires: pulumi.Input[bool] = True
    user_cannot_change_password: pulumi.Input[bool] = True
    disabled: pulumi.Input[bool] = False
    aliases: Aliases = field(default_factory=list)


class SiteUserDict(TypedDict, total=False):
    name: Required[pulumi.Input[str]]
    password: Required[pulumi.Input[str]]
    full_name: pulumi.Input[str] | None
    description: pulumi.Input[str] | None
    groups: pulumi.Input[Sequence[pulumi.Input[str]]]
    folder_access: pulumi.Input[Sequence[pulumi.Input[Mapping[str, pulumi.Input[str]]]]]
    password_never_expires: pulumi.Input[bool]
    user_cannot_change_password: pulumi.Input[bool]
    disabled: pulumi.Input[bool]
    aliases: Aliases


@dataclass
class OneToOne:
    """One client certificate (PEM, DER, base64 or PFX) logs on as one user (by name)."""

    certificate: pulumi.Input[str]
    user: pulumi.Input[str]
    enabled: pulumi.Input[bool] = True


class OneToOneDict(TypedDict, total=False):
    certificate: Required[pulumi.Input[str]]
    user: Required[pulumi.Input[str]]
    enabled: pulumi.Input[bool]


@dataclass
class Rule:
    sub_field: pulumi.Input[str]
    match: pulumi.Input[str]
    field: pulumi.Input[str] = "Subject"
    case_sensitive: pulumi.Input[bool] = True


class RuleDict(TypedDict, total=False):
    sub_field: Required[pulumi.Input[str]]
    match: Required[pulumi.Input[str]]
    field: pulumi.Input[str]
    case_sensitive: pulumi.Input[bool]


@dataclass
class ManyToOne:
    """Every trusted certificate matching all rules logs on as ``user`` (or is denied)."""

    name: pulumi.Input[str]
    rules: Sequence[Rule | RuleDict]
    user: pulumi.Input[str] | None = None
    permission: pulumi.Input[str] = "Allow"
    description: pulumi.Input[str] = ""
    enabled: pulumi.Input[bool] = True


class ManyToOneDict(TypedDict, total=False):
    name: Required[pulumi.Input[str]]
    rules: Required[Sequence[Rule | RuleDict]]
    user: pulumi.Input[str] | None
    permission: pulumi.Input[str]
    description: pulumi.Input[str]
    enabled: pulumi.Input[bool]


@dataclass
class HttpsEndpoint:
    """The https binding, and the server certificate it presents: a PFX given here (a site
    of its own), or ``certificate``, the name of a ClientCertHost's server certificate."""

    pfx: pulumi.Input[str] | None = None  # base64 text of the PFX, or a path to the file
    password: pulumi.Input[str] | None = None
    port: pulumi.Input[int] = 443
    ip: pulumi.Input[str] = "*"
    host_name: pulumi.Input[str] = ""
    sni: pulumi.Input[bool] = False
    client_cert_negotiation: pulumi.Input[bool] = True
    certificate: str | None = None


class HttpsEndpointDict(TypedDict, total=False):
    pfx: pulumi.Input[str] | None
    password: pulumi.Input[str] | None
    port: pulumi.Input[int]
    ip: pulumi.Input[str]
    host_name: pulumi.Input[str]
    sni: pulumi.Input[bool]
    client_cert_negotiation: pulumi.Input[bool]
    certificate: str | None


@dataclass
class TrustedCa:
    """A CA certificate a host trusts (a root in Root, an intermediate in CA).

    ``name`` is how sites refer to it and part of its resource name; it defaults to the
    start of the thumbprint, and is required when the certificate is an Output."""

    certificate: pulumi.Input[str]
    name: str | None = None
    store: pulumi.Input[str] = "auto"
    aliases: Aliases = field(default_factory=list)


class TrustedCaDict(TypedDict, total=False):
    certificate: Required[pulumi.Input[str]]
    name: str | None
    store: pulumi.Input[str]
    aliases: Aliases


@dataclass
class ServerPfx:
    """A server certificate (a PFX with its key) a host's https bindings present."""

    name: str
    pfx: pulumi.Input[str]
    password: pulumi.Input[str] | None = None
    aliases: Aliases = field(default_factory=list)


class ServerPfxDict(TypedDict, total=False):
    name: Required[str]
    pfx: Required[pulumi.Input[str]]
    password: pulumi.Input[str] | None
    aliases: Aliases
