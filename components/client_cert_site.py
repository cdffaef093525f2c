"""ClientCertSite: everything one IIS site needs for client-certificate authentication.

Composes the resources: sslFlags that require a client certificate, anonymous access off,
the site's certificate mappings and optionally its https binding; and, in the site's own
form, the trusted CA certificates, local accounts and server certificate it needs. Mappings
name users; the password comes from the user, so no password is written twice.

Two forms:
* ``host=ClientCertHost(...)``: the CAs, accounts and server certificates belong to the host
  (one owner per host), the site refers to them by name and depends on them.
* ``connection=...`` with ``trusted_roots``, ``users`` and ``https.pfx``: a site of its own
  (the original form, kept as it was). Another component declaring the same CA or account
  for the same endpoint is refused, naming both.

Checks across the resources (a mapping to an undeclared user, a mapped certificate that
chains to none of the trusted roots, a certificate mapped twice, two sites on one ip:port
of one host endpoint without SNI) run before anything is registered when the values are
plain, and when they resolve when they are Outputs (every child waits for them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Required, TypedDict

import pulumi

from iis_clientcert import certs
from iis_clientcert.components.args import (
    HttpsEndpoint,
    HttpsEndpointDict,
    ManyToOne,
    ManyToOneDict,
    OneToOne,
    OneToOneDict,
    Rule,
    SiteUser,
    SiteUserDict,
)
from iis_clientcert.components.checks import (
    ArgsError,
    Register,
    authority_of,
    coerce,
    connection_fields,
    gate,
    plain_text,
    register,
    when_known,
)
from iis_clientcert.components.client_cert_host import ClientCertHost, local_user
from iis_clientcert.errors import CertificateError, ValidationError
from iis_clientcert.framework.inputs import ConnectionArgs, ConnectionArgsDict, fields_of
from iis_clientcert.framework.resource import LEGACY_TYPE, type_token
from iis_clientcert.host import contract
from iis_clientcert.providers.anonymous_authentication import AnonymousAuthentication
from iis_clientcert.providers.certificate_mapping import (
    SUB_FIELD_FIX,
    SUB_FIELD_PROBLEM,
    CertificateMapping,
    canonical_sub_field,
    repeated_rdn_notes,
)
from iis_clientcert.providers.https_binding import HttpsBinding
from iis_clientcert.providers.local_user import LocalUser
from iis_clientcert.providers.server_certificate import ServerCertificate
from iis_clientcert.providers.ssl_settings import SslSettings
from iis_clientcert.providers.trusted_root import TrustedRoot

KIND = "ClientCertSite"
TYPE = "iis-clientcert:index:ClientCertSite"
# The type of every dynamic resource in the stacks made so far (aliases name it).

__all__ = [
    "ClientCertSite",
    "ClientCertSiteArgs",
    "ClientCertSiteArgsDict",
    "HttpsEndpoint",
    "ManyToOne",
    "OneToOne",
    "Rule",
    "SiteUser",
    "moved_from_site",
]


@dataclass
class ClientCertSiteArgs:
    # How to reach the host (a site of its own); or give ``host`` instead.
    connection: pulumi.Input[ConnectionArgs | ConnectionArgsDict] | None = None
    site: pulumi.Input[str] = ""
    https: HttpsEndpoint | HttpsEndpointDict | None = None
    # The CA certificates the site's clients chain to: certificate texts (a site of its
    # own), or names of the host's CAs (with ``host``; none named means all of them).
    trusted_roots: Sequence[pulumi.Input[str]] = field(default_factory=list)
    users: Sequence[SiteUser | SiteUserDict] = field(default_factory=list)
    one_to_one: Sequence[OneToOne | OneToOneDict] = field(default_factory=list)
    many_to_one: Sequence[ManyToOne | ManyToOneDict] = field(default_factory=list)
    ssl_flags: pulumi.Input[Sequence[pulumi.Input[str]]] = field(
        default_factory=lambda: list(contract.DEFAULT_SSL_FLAGS)
    )
    anonymous_enabled: pulumi.Input[bool] = False
    # A mapped certificate from a CA not in trusted_roots gets 403.16 unless the host
    # already trusts that CA some other way; say so explicitly to allow it.
    allow_untrusted_client_certificates: pulumi.Input[bool] = False
    # The ClientCertHost that owns the host's CAs, accounts and server certificates.
    host: ClientCertHost | None = None


class ClientCertSiteArgsDict(TypedDict, total=False):
    connection: pulumi.Input[ConnectionArgs | ConnectionArgsDict] | None
    site: Required[pulumi.Input[str]]
    https: HttpsEndpoint | HttpsEndpointDict | None
    trusted_roots: Sequence[pulumi.Input[str]]
    users: Sequence[SiteUser | SiteUserDict]
    one_to_one: Sequence[OneToOne | OneToOneDict]
    many_to_one: Sequence[ManyToOne | ManyToOneDict]
    ssl_flags: pulumi.Input[Sequence[pulumi.Input[str]]]
    anonymous_enabled: pulumi.Input[bool]
    allow_untrusted_client_certificates: pulumi.Input[bool]
    host: ClientCertHost | None


def moved_from_site(site: str, child: str, kind: str) -> list[pulumi.Output[str]]:
    """The URNs a resource of class ``kind`` had as the child ``child`` of the ClientCertSite
    named ``site``: aliases for a CA, account or server certificate that moves to a
    ClientCertHost, so an existing stack keeps the object (README, "Upgrading").

    Both types: a stack made before the resources had their own types holds the legacy one,
    and the engine matches an alias only as a whole URN (a type alias and a parent alias of
    one resource are not combined)."""
    parent = pulumi.create_urn(site, TYPE)
    return [
        pulumi.create_urn(child, type_, parent=parent) for type_ in (type_token(kind), LEGACY_TYPE)
    ]


# --- arguments -----------------------------------------------------------------------------


@dataclass
class _Root:
    certificate: pulumi.Input[str]
    prop: str  # where the site names it
    resource: TrustedRoot | None = None  # None until made (a site of its own)


@dataclass
class _Site:
    """The arguments in one shape: dict forms coerced, references to the host looked up."""

    args: ClientCertSiteArgs
    host: ClientCertHost | None
    connection: dict[str, Any]
    authority: pulumi.Input[str]
    https: HttpsEndpoint | None
    roots: list[_Root]
    users: list[SiteUser]
    one_to_one: list[OneToOne]
    many_to_one: list[ManyToOne]


def _site(where: str, value: Any) -> _Site:
    args = coerce(ClientCertSiteArgs, value, where, "")
    host = args.host
    https = coerce(HttpsEndpoint, args.https, where, "https") if args.https is not None else None
    users = [coerce(SiteUser, u, where, f"users[{i}]") for i, u in enumerate(args.users)]
    one_to_one = [
        coerce(OneToOne, o, where, f"one_to_one[{i}]") for i, o in enumerate(args.one_to_one)
    ]
    many_to_one = []
    for i, m in enumerate(args.many_to_one):
        many = coerce(ManyToOne, m, where, f"many_to_one[{i}]")
        many.rules = [
            coerce(Rule, r, where, f"many_to_one[{i}].rules[{j}]") for j, r in enumerate(many.rules)
        ]
        many_to_one.append(many)
    if host is None:
        if args.connection is None:
            raise ArgsError(
                where,
                "connection",
                None,
                "is required",
                "Give the host's connection, or host=ClientCertHost(...)",
            )
        connection = connection_fields(args.connection, where)
        authority = authority_of(connection)
        roots = [_Root(pem, f"trusted_roots[{i}]") for i, pem in enumerate(args.trusted_roots)]
        if https is not None and (https.pfx is None or https.certificate is not None):
            raise ArgsError(
                where,
                "https.pfx",
                None,
                "is required for a site of its own (https.certificate names a "
                "ClientCertHost's server certificate)",
                "Give pfx and password, or pass host=ClientCertHost(...)",
            )
        return _Site(
            args, None, connection, authority, https, roots, users, one_to_one, many_to_one
        )

    if not isinstance(host, ClientCertHost):
        raise ArgsError(where, "host", None, f"must be a ClientCertHost, not {type(host).__name__}")
    if args.connection is not None:
        raise ArgsError(
            where,
            "connection",
            None,
            "is given with host",
            "Leave it out: the site uses its ClientCertHost's connection",
        )
    if users:
        raise ArgsError(
            where,
            "users",
            None,
            "are declared on the ClientCertHost when the site has a host",
            f"Declare the accounts on ClientCertHost {host.resource_name!r}; map to them by name",
        )
    roots = []
    for i, ref in enumerate(args.trusted_roots):
        name = plain_text(ref)
        if name is None or "-----BEGIN" in name:
            raise ArgsError(
                where,
                f"trusted_roots[{i}]",
                None,
                "must name one of the host's CAs when the site has a host",
                f"Declare the certificate on ClientCertHost {host.resource_name!r} and name "
                "it here",
            )
        found = host.root(name, where, f"trusted_roots[{i}]")
        roots.append(_Root(found.certificate, f"trusted_roots[{i}]", found.resource))
    if not args.trusted_roots:
        roots = [
            _Root(r.certificate, f"{host.resource_name}.trusted_roots[{n}]", r.resource)
            for n, r in host.roots.items()
        ]
    if https is not None:
        if https.certificate is None or https.pfx is not None:
            raise ArgsError(
                where,
                "https.certificate",
                None,
                "must name a server certificate of the ClientCertHost when the site has a host",
                f"Declare the PFX on ClientCertHost {host.resource_name!r} (server_certificates) "
                "and name it here",
            )
        host.server_certificate(https.certificate, where, "https.certificate")
    return _Site(
        args, host, host.connection, host.authority, https, roots, [], one_to_one, many_to_one
    )


def _view(site: _Site) -> dict[str, Any]:
    """What the checks need (no passwords: the checks never see a secret they do not use)."""
    users: list[Any] = (
        [{"name": u.spec.name} for u in site.host.users]
        if site.host is not None
        else [{"name": u.name} for u in site.users]
    )
    https = site.https
    return {
        "site": site.args.site,
        "authority": site.authority,
        "host_form": site.host is not None,
        "roots": [{"certificate": r.certificate, "prop": r.prop} for r in site.roots],
        "users": users,
        "one_to_one": [{"certificate": o.certificate, "user": o.user} for o in site.one_to_one],
        "many_to_one": [
            {
                "user": m.user,
                "permission": m.permission,
                "rules": [
                    {"field": r.field, "sub_field": r.sub_field}
                    for r in m.rules
                    if isinstance(r, Rule)
                ],
            }
            for m in site.many_to_one
        ],
        "https": None
        if https is None
        else {"ip": https.ip, "port": https.port, "host_name": https.host_name, "sni": https.sni},
        "allow_untrusted": site.args.allow_untrusted_client_certificates,
    }


# --- checks that need values ---------------------------------------------------------------


def _check_site(where: str, view: dict[str, Any], reg: Register) -> dict[str, Any]:
    try:
        checked = _checks(where, view, reg)
    except ValidationError as exc:
        raise ArgsError.of(exc) from None
    for warning in checked["warnings"]:
        pulumi.log.warn(warning)
    return checked


def _port(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValidationError(KIND, "https.port", value, "must be a port number (1 to 65535)")
    return value


def _checks(where: str, view: dict[str, Any], reg: Register) -> dict[str, Any]:
    site = view["site"]
    if not isinstance(site, str) or not site.strip():
        raise ValidationError(where, "site", site or None, "is required (the IIS site's name)")
    authority = str(view["authority"])
    host_form = bool(view["host_form"])
    users: dict[str, str] = {}
    for i, user in enumerate(view["users"]):
        name = user["name"]
        if not isinstance(name, str) or not name.strip():
            raise ValidationError(where, f"users[{i}].name", name, "must be a non-empty string")
        if name.lower() in users:
            raise ValidationError(where, f"users[{i}].name", name, "lists the same user twice")
        users[name.lower()] = name
    whose, fix = (
        ("the host's accounts", "Declare the account on the ClientCertHost.")
        if host_form
        else (
            "this site's users",
            "Declare the user under users (the mapping takes its password from there).",
        )
    )
    for i, one in enumerate(view["one_to_one"]):
        if str(one["user"]).lower() not in users:
            raise ValidationError(
                where, f"one_to_one[{i}].user", one["user"], f"is not one of {whose}", fix
            )
    compared: list[tuple[str, str]] = []  # (field, sub-field) of every rule
    for i, many in enumerate(view["many_to_one"]):
        user = many["user"]
        if user and str(user).lower() not in users:
            raise ValidationError(
                where, f"many_to_one[{i}].user", user, f"is not one of {whose}", fix
            )
        if not user and str(many["permission"]).lower() == "allow":
            raise ValidationError(
                where, f"many_to_one[{i}].user", None, "is required for an Allow mapping"
            )
        if not many["rules"]:
            raise ValidationError(
                where,
                f"many_to_one[{i}].rules",
                None,
                "is empty: what IIS does with a many-to-one mapping without rules is "
                "undocumented (every trusted certificate, or none)",
                "Give at least one rule, e.g. the issuing CA's CN: "
                "Rule(field='Issuer', sub_field='CN', match='My CA').",
            )
        for j, rule in enumerate(many["rules"]):
            sub = canonical_sub_field(str(rule["sub_field"]))
            if sub is None:
                raise ValidationError(
                    where,
                    f"many_to_one[{i}].rules[{j}].sub_field",
                    rule["sub_field"],
                    SUB_FIELD_PROBLEM,
                    SUB_FIELD_FIX,
                )
            field_name = "Issuer" if str(rule["field"]).strip().lower() == "issuer" else "Subject"
            compared.append((field_name, sub))
    roots: list[tuple[str, certs.CertInfo]] = []
    for root in view["roots"]:
        try:
            roots.append((root["prop"], certs.load_certificate(root["certificate"])))
        except CertificateError as exc:
            raise ValidationError(
                where, root["prop"], None, f"cannot be read ({exc.kind}): {exc}"
            ) from None
    # Repeated RDNs the rules compare, in the certificates this site sees: its trusted
    # CAs (Issuer rules read their subject) and its one-to-one certificates.
    warnings: list[str] = []
    for prop, info in roots:
        warnings.extend(repeated_rdn_notes(f"{where}: {prop}", info, compared, as_issuer=True))
    anchors = [info for _, info in roots if info.self_signed]
    intermediates = [info for _, info in roots if not info.self_signed]
    mapped: dict[str, str] = {}
    for i, one in enumerate(view["one_to_one"]):
        prop = f"one_to_one[{i}].certificate"
        try:
            info = certs.load_certificate(one["certificate"])
        except CertificateError as exc:
            raise ValidationError(
                where, prop, None, f"cannot be read ({exc.kind}): {exc}"
            ) from None
        if info.thumbprint in mapped:
            raise ValidationError(
                where, prop, info.thumbprint, f"is mapped twice (also by {mapped[info.thumbprint]})"
            )
        mapped[info.thumbprint] = f"one_to_one[{i}]"
        warnings.extend(repeated_rdn_notes(f"{where}: {prop}", info, compared))
        if not view["allow_untrusted"]:
            verdict = certs.verify_chain(
                info, anchors, intermediates, at=datetime.now(UTC), require_client_auth=False
            )
            if verdict.status in ("untrusted", "bad_signature"):
                raise ValidationError(
                    where,
                    prop,
                    info.subject,
                    "does not chain to any of trusted_roots: IIS would answer 403.16",
                    (
                        "Declare its issuing CA on the ClientCertHost (and name it in "
                        "trusted_roots, if the site names any)"
                        if host_form
                        else "Add its issuing CA to trusted_roots"
                    )
                    + ", or set allow_untrusted_client_certificates=True if the host "
                    "trusts it already.",
                )
    # Last, once this site's own arguments are sound: what it claims on its host.
    reg.claim_site(authority, site, where)
    https = view["https"]
    if https is not None:
        reg.claim_port(
            authority,
            str(https["ip"] or "*"),
            _port(https["port"]),
            site,
            str(https["host_name"] or ""),
            bool(https["sni"]),
            where,
        )
    if not host_form:
        for prop, info in roots:
            reg.claim_root(authority, info.thumbprint, info.subject, f"{where}: {prop}")
        for i, user in enumerate(view["users"]):
            reg.claim_user(authority, user["name"], f"{where}: users[{i}]")
    return {"mapped": mapped, "warnings": warnings}


# --- the component ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _User:
    spec: SiteUser
    resource: LocalUser


class ClientCertSite(pulumi.ComponentResource):
    """One IIS site configured for client-certificate authentication."""

    resource_name: str  # the name it was created with (the key of the program's exports)
    host_endpoint: pulumi.Output[str]
    site_name: pulumi.Output[str]
    https_url: pulumi.Output[str | None]
    server_thumbprint: pulumi.Output[str | None]
    root_thumbprints: pulumi.Output[list[str]]
    mapped_users: pulumi.Output[dict[str, str]]
    accounts: pulumi.Output[list[str]]

    def __init__(
        self,
        name: str,
        args: ClientCertSiteArgs | ClientCertSiteArgsDict,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        where = f"{KIND} {name!r}"
        try:
            site = _site(where, args)
            reg = register()
            checked = when_known(_view(site), lambda view: _check_site(where, view, reg))
        except ValidationError as exc:
            raise ArgsError.of(exc) from None
        super().__init__(TYPE, name, None, opts)
        self.resource_name = name
        a = site.args
        conn = site.connection
        waits: list[Any] = [
            g for g in (gate(checked), site.host.gate if site.host else None) if g is not None
        ]

        def child(*after: Any, aliases: Sequence[Any] = ()) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(
                parent=self, depends_on=[*after, *waits], aliases=list(aliases)
            )

        # Host-scoped objects: the host's, or this site's own.
        users: list[_User]
        server_cert: ServerCertificate | None = None
        if site.host is not None:
            users = [_User(u.spec, u.resource) for u in site.host.users]
            if site.https is not None and site.https.certificate is not None:
                server_cert = site.host.server_certificates[site.https.certificate]
        else:
            for i, root in enumerate(site.roots):
                root.resource = TrustedRoot(
                    f"{name}-root-{i}", connection=conn, certificate=root.certificate, opts=child()
                )
            users = [
                _User(u, local_user(f"{name}-user-{plain_text(u.name) or i}", conn, u, child))
                for i, u in enumerate(site.users)
            ]
            if site.https is not None:
                server_cert = ServerCertificate(
                    f"{name}-server-cert",
                    connection=conn,
                    pfx=site.https.pfx,  # type: ignore[arg-type]  # checked in _site
                    password=site.https.password,
                    opts=child(),
                )
        roots = [r.resource for r in site.roots if r.resource is not None]

        https_url: pulumi.Input[str | None] = None
        server_thumbprint: pulumi.Input[str | None] = None
        binding: HttpsBinding | None = None
        if site.https is not None and server_cert is not None:
            binding = HttpsBinding(
                f"{name}-https",
                connection=conn,
                site=a.site,
                ip=site.https.ip,
                port=site.https.port,
                host_name=site.https.host_name,
                sni=site.https.sni,
                certificate_thumbprint=server_cert.thumbprint,
                client_cert_negotiation=site.https.client_cert_negotiation,
                opts=child(server_cert),
            )
            https_url = binding.url
            server_thumbprint = server_cert.thumbprint

        # Ordered only where IIS needs it: the binding after its server certificate (the
        # certificate must be in My), the mapping after the accounts it logs on as (it
        # checks their logons). sslFlags, anonymous access, the CAs and the mapping's
        # configuration need nothing else first, so they go in parallel: the critical path
        # of a site is two resources, not four (each resource is a read and a write).
        flags: Any = a.ssl_flags  # a list of Inputs, or an Output of a list
        SslSettings(
            f"{name}-ssl",
            connection=conn,
            site=a.site,
            flags=flags,
            opts=child(),
        )
        AnonymousAuthentication(
            f"{name}-anonymous",
            connection=conn,
            site=a.site,
            enabled=a.anonymous_enabled,
            opts=child(),
        )

        mapping: CertificateMapping | None = None
        if site.one_to_one or site.many_to_one:
            mapping = self._mapping(name, site, users, child)

        self.host_endpoint = pulumi.Output.from_input(site.authority)
        self.site_name = pulumi.Output.from_input(a.site)
        self.https_url = pulumi.Output.from_input(https_url)
        self.server_thumbprint = pulumi.Output.from_input(server_thumbprint)
        self.root_thumbprints = pulumi.Output.all(*[r.thumbprint for r in roots]).apply(list)
        self.mapped_users = (
            mapping.mapped_users if mapping is not None else pulumi.Output.from_input({})
        )
        self.accounts = self.mapped_users.apply(
            lambda m: sorted({u for u in (m or {}).values() if u})
        )
        self.register_outputs(self.exports())

    def exports(self) -> dict[str, pulumi.Output[Any]]:
        """What other programs need (see ``SiteExports``): export it, read it with a
        StackReference (``iis_clientcert.components.read_site``)."""
        return {
            "host": self.host_endpoint,
            "site": self.site_name,
            "url": self.https_url,
            "server_thumbprint": self.server_thumbprint,
            "root_thumbprints": self.root_thumbprints,
            "mapped_users": self.mapped_users,
            "accounts": self.accounts,
        }

    def _mapping(
        self,
        name: str,
        site: _Site,
        users: list[_User],
        child: Any,
    ) -> CertificateMapping:
        names: list[pulumi.Input[str]] = [u.spec.name for u in users]
        refs: list[pulumi.Input[str]] = [o.user for o in site.one_to_one] + [
            m.user for m in site.many_to_one if m.user is not None
        ]
        user_name: Any
        passwords: pulumi.Input[dict[str, Any]]
        needed: list[LocalUser]
        if all(isinstance(x, str) for x in [*names, *refs]):
            # All known now: the declared spelling of each name, and only the mapped users.
            by_lower = {str(u.spec.name).lower(): u for u in users}

            def user_name(ref: Any) -> Any:
                found = by_lower.get(str(ref).lower())
                return found.spec.name if found is not None else ref

            mapped = sorted({str(r).lower() for r in refs} & set(by_lower))
            passwords = {str(by_lower[k].spec.name): by_lower[k].spec.password for k in mapped}
            needed = [by_lower[k].resource for k in mapped]
        else:
            all_names = pulumi.Output.all(*names)

            def user_name(ref: Any) -> Any:
                return pulumi.Output.all(ref, all_names).apply(lambda v: _spelling(v[0], v[1]))

            specs = [u.spec for u in users]
            passwords = pulumi.Output.all(all_names, pulumi.Output.all(*refs)).apply(
                lambda v: pulumi.Output.from_input(
                    {
                        str(n): specs[i].password
                        for i, n in enumerate(v[0])
                        if str(n).lower() in {str(r).lower() for r in v[1] if r}
                    }
                )
            )
            needed = [u.resource for u in users]
        return CertificateMapping(
            f"{name}-mapping",
            connection=site.connection,
            site=site.args.site,
            one_to_one=[
                {"certificate": o.certificate, "user_name": user_name(o.user), "enabled": o.enabled}
                for o in site.one_to_one
            ],
            many_to_one=[
                {
                    "name": m.name,
                    "description": m.description,
                    "user_name": user_name(m.user) if m.user is not None else "",
                    "permission": m.permission,
                    "enabled": m.enabled,
                    "rules": [fields_of(r) for r in m.rules if isinstance(r, Rule)],
                }
                for m in site.many_to_one
            ],
            passwords=passwords,
            opts=child(*needed),
        )


def _spelling(ref: Any, names: list[Any]) -> Any:
    """The declared spelling of a user a mapping names (names compare case-insensitively)."""
    for name in names:
        if str(name).lower() == str(ref).lower():
            return name
    return ref
