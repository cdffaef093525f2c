"""ClientCertHost: what belongs to one IIS host, declared once, with one owner.

Trusted CA certificates, local accounts and server certificates live in the host's stores
and user database, not in a site: two sites that rely on one CA share one object. Declared
on the host they have one owner, sites refer to them by name (``ClientCertSiteArgs(host=...,
trusted_roots=["partner-ca"])``, mappings to an account by its name) and depend on them, and
removing a site never removes what another site still uses.

Declaring one certificate or account twice for a host (twice here, or here and in a
ClientCertSite of its own on the same endpoint) is refused naming both places, when the
values are known.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Required, TypedDict

import pulumi

from iis_clientcert import certs
from iis_clientcert.components.args import (
    ServerPfx,
    ServerPfxDict,
    SiteUser,
    SiteUserDict,
    TrustedCa,
    TrustedCaDict,
)
from iis_clientcert.components.checks import (
    ArgsError,
    authority_of,
    coerce,
    connection_fields,
    gate,
    is_output,
    names_list,
    plain_text,
    register,
    when_known,
)
from iis_clientcert.errors import CertificateError, ValidationError
from iis_clientcert.framework.inputs import ConnectionArgs, ConnectionArgsDict
from iis_clientcert.providers.local_user import LocalUser
from iis_clientcert.providers.server_certificate import ServerCertificate
from iis_clientcert.providers.trusted_root import TrustedRoot

KIND = "ClientCertHost"
TYPE = "iis-clientcert:index:ClientCertHost"


@dataclass
class ClientCertHostArgs:
    connection: pulumi.Input[ConnectionArgs | ConnectionArgsDict]
    # CA certificates (TrustedCa, or the certificate text alone, named by its thumbprint).
    trusted_roots: Sequence[TrustedCa | TrustedCaDict | pulumi.Input[str]] = field(
        default_factory=list
    )
    users: Sequence[SiteUser | SiteUserDict] = field(default_factory=list)
    server_certificates: Sequence[ServerPfx | ServerPfxDict] = field(default_factory=list)


class ClientCertHostArgsDict(TypedDict, total=False):
    connection: Required[pulumi.Input[ConnectionArgs | ConnectionArgsDict]]
    trusted_roots: Sequence[TrustedCa | TrustedCaDict | pulumi.Input[str]]
    users: Sequence[SiteUser | SiteUserDict]
    server_certificates: Sequence[ServerPfx | ServerPfxDict]


def _ca(value: Any, where: str, index: int) -> TrustedCa:
    prop = f"trusted_roots[{index}]"
    if isinstance(value, str) or is_output(value):
        value = TrustedCa(certificate=value)
    ca = coerce(TrustedCa, value, where, prop)
    if ca.name is None:
        text = plain_text(ca.certificate)
        if text is None:
            raise ArgsError(
                where,
                f"{prop}.name",
                None,
                "is required when the certificate is an Output",
                "Name it (TrustedCa(name=..., certificate=...)); sites refer to it by name",
            )
        try:
            ca.name = certs.load_certificate(text).thumbprint[:16].lower()
        except CertificateError as exc:
            raise ArgsError(where, prop, None, f"cannot be read ({exc.kind}): {exc}") from None
    if not isinstance(ca.name, str) or not ca.name:
        raise ArgsError(where, f"{prop}.name", ca.name, "must be a non-empty string")
    return ca


def _unique(where: str, prop: str, names: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name.lower() in seen:
            raise ArgsError(
                where,
                f"{prop}[{i}].name",
                name,
                f"is also the name of {prop}[{seen[name.lower()]}]",
                "Give each a name of its own",
            )
        seen[name.lower()] = i


def _check_host(where: str, view: dict[str, Any], reg: Any) -> dict[str, Any]:
    """The checks that need values: certificates readable, no certificate or account twice,
    and none of them declared by another component for this endpoint."""
    try:
        authority = str(view["authority"])
        reg.claim_host(authority, where)
        thumbprints: dict[str, str] = {}
        seen: dict[str, int] = {}
        for i, ca in enumerate(view["roots"]):
            try:
                info = certs.load_certificate(ca["certificate"])
            except CertificateError as exc:
                raise ArgsError(
                    where, f"trusted_roots[{i}]", None, f"cannot be read ({exc.kind}): {exc}"
                ) from None
            if info.thumbprint in seen:
                raise ArgsError(
                    where,
                    f"trusted_roots[{i}]",
                    f"{info.subject} ({info.thumbprint})",
                    f"is the same certificate as trusted_roots[{seen[info.thumbprint]}]",
                    "Declare each certificate once",
                )
            seen[info.thumbprint] = i
            thumbprints[ca["name"]] = info.thumbprint
            reg.claim_root(authority, info.thumbprint, info.subject, f"{where}: trusted_roots[{i}]")
        names: dict[str, int] = {}
        for i, user in enumerate(view["users"]):
            name = user["name"]
            if not isinstance(name, str) or not name.strip():
                raise ArgsError(where, f"users[{i}].name", name, "must be a non-empty string")
            if name.lower() in names:
                raise ArgsError(
                    where,
                    f"users[{i}].name",
                    name,
                    f"is the same account as users[{names[name.lower()]}]",
                    "Declare each account once",
                )
            names[name.lower()] = i
            reg.claim_user(authority, name, f"{where}: users[{i}]")
        return {"thumbprints": thumbprints, "accounts": [u["name"] for u in view["users"]]}
    except ValidationError as exc:
        raise ArgsError.of(exc) from None


def local_user(
    resource_name: str,
    connection: dict[str, Any],
    user: SiteUser,
    child: Callable[..., pulumi.ResourceOptions],
) -> LocalUser:
    """The LocalUser of an account (a host's, or a site's own)."""
    # The resource's own annotations are narrower than the Inputs it accepts (lists of
    # Inputs, Outputs of lists); Pulumi resolves both the same way.
    groups: Any = user.groups
    folder_access: Any = user.folder_access
    return LocalUser(
        resource_name,
        connection=connection,
        name=user.name,
        password=user.password,
        full_name=user.full_name,
        description=user.description,
        groups=groups,
        folder_access=folder_access,
        password_never_expires=user.password_never_expires,
        user_cannot_change_password=user.user_cannot_change_password,
        disabled=user.disabled,
        opts=child(aliases=user.aliases),
    )


@dataclass(frozen=True)
class HostRoot:
    name: str
    certificate: pulumi.Input[str]
    resource: TrustedRoot


@dataclass(frozen=True)
class HostUser:
    spec: SiteUser
    resource: LocalUser


class ClientCertHost(pulumi.ComponentResource):
    """The host-scoped objects of one IIS host: trusted CAs, local accounts, server
    certificates. Pass it to each ClientCertSite on the host (``host=``)."""

    endpoint: pulumi.Output[str]
    root_thumbprints: pulumi.Output[dict[str, str]]
    accounts: pulumi.Output[list[str]]
    server_thumbprints: pulumi.Output[dict[str, str]]

    def __init__(
        self,
        name: str,
        args: ClientCertHostArgs | ClientCertHostArgsDict,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        where = f"{KIND} {name!r}"
        try:
            spec = coerce(ClientCertHostArgs, args, where, "")
            connection = connection_fields(spec.connection, where)
            authority = authority_of(connection)
            cas = [_ca(v, where, i) for i, v in enumerate(spec.trusted_roots)]
            users = [coerce(SiteUser, u, where, f"users[{i}]") for i, u in enumerate(spec.users)]
            pfxs = [
                coerce(ServerPfx, p, where, f"server_certificates[{i}]")
                for i, p in enumerate(spec.server_certificates)
            ]
            reg = register()
            view = {
                "authority": authority,
                "roots": [{"name": ca.name, "certificate": ca.certificate} for ca in cas],
                "users": [{"name": u.name} for u in users],
            }
            checked = when_known(view, lambda v: _check_host(where, v, reg))
            # Names are resource names: unique now, even when the values come later.
            _unique(where, "trusted_roots", [str(ca.name) for ca in cas])
            _unique(where, "server_certificates", [p.name for p in pfxs])
        except ValidationError as exc:
            raise ArgsError.of(exc) from None
        super().__init__(TYPE, name, None, opts)
        self.resource_name = name
        self.connection = connection
        self.authority: pulumi.Input[str] = authority
        self.gate = gate(checked)
        waits = [self.gate] if self.gate is not None else []

        def child(*, aliases: Sequence[Any] = ()) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, depends_on=waits, aliases=list(aliases))

        self.roots: dict[str, HostRoot] = {}
        for ca in cas:
            assert ca.name is not None
            root = TrustedRoot(
                f"{name}-root-{ca.name}",
                connection=connection,
                certificate=ca.certificate,
                store=ca.store,
                opts=child(aliases=ca.aliases),
            )
            self.roots[ca.name] = HostRoot(ca.name, ca.certificate, root)
        self.users: list[HostUser] = [
            HostUser(
                user,
                local_user(f"{name}-user-{plain_text(user.name) or i}", connection, user, child),
            )
            for i, user in enumerate(users)
        ]
        self.server_certificates: dict[str, ServerCertificate] = {
            p.name: ServerCertificate(
                f"{name}-cert-{p.name}",
                connection=connection,
                pfx=p.pfx,
                password=p.password,
                opts=child(aliases=p.aliases),
            )
            for p in pfxs
        }

        self.endpoint = pulumi.Output.from_input(authority)
        self.root_thumbprints = pulumi.Output.all(
            **{n: r.resource.thumbprint for n, r in self.roots.items()}
        ).apply(dict)
        self.accounts = pulumi.Output.all(*[u.resource.name for u in self.users]).apply(list)
        self.server_thumbprints = pulumi.Output.all(
            **{n: c.thumbprint for n, c in self.server_certificates.items()}
        ).apply(dict)
        self.register_outputs(self.exports())

    def exports(self) -> dict[str, pulumi.Output[Any]]:
        """What other programs need (see ``HostExports``): export it, read it with a
        StackReference."""
        return {
            "endpoint": self.endpoint,
            "root_thumbprints": self.root_thumbprints,
            "accounts": self.accounts,
            "server_thumbprints": self.server_thumbprints,
        }

    # --- what sites use -----------------------------------------------------------------

    def root(self, name: str, where: str, prop: str) -> HostRoot:
        found = self.roots.get(name)
        if found is None:
            raise ArgsError(
                where,
                prop,
                name,
                f"is not a trusted CA of {KIND} {self.resource_name!r}",
                f"Use one of: {names_list(sorted(self.roots))}",
            )
        return found

    def server_certificate(self, name: str, where: str, prop: str) -> ServerCertificate:
        found = self.server_certificates.get(name)
        if found is None:
            raise ArgsError(
                where,
                prop,
                name,
                f"is not a server certificate of {KIND} {self.resource_name!r}",
                f"Use one of: {names_list(sorted(self.server_certificates))}",
            )
        return found
