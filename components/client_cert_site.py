"""ClientCertSite: everything one IIS site needs for client-certificate authentication.

Composes the resources: trusted CA certificates, the local accounts certificates map to,
optionally the server certificate and https binding, sslFlags that require a client
certificate, anonymous access off, and the site's certificate mappings. Mappings name
users; the password comes from the user, so no password is written twice.

Everything that can be checked without a host is checked when the program runs, before
any resource is registered: a mapping to an undeclared user, a mapped certificate that
chains to none of the trusted roots, two sites on one port without SNI.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pulumi

from iis_clientcert import certs
from iis_clientcert.errors import CertificateError, ValidationError
from iis_clientcert.framework.inputs import ConnectionArgs, fields_of
from iis_clientcert.providers.anonymous_authentication import AnonymousAuthentication
from iis_clientcert.providers.certificate_mapping import CertificateMapping
from iis_clientcert.providers.https_binding import HttpsBinding
from iis_clientcert.providers.local_user import LocalUser
from iis_clientcert.providers.server_certificate import ServerCertificate
from iis_clientcert.providers.ssl_settings import DEFAULT_FLAGS, SslSettings
from iis_clientcert.providers.trusted_root import TrustedRoot

KIND = "ClientCertSite"


@dataclass
class SiteUser:
    """A local account that certificates map to."""

    name: str
    password: pulumi.Input[str]
    full_name: str | None = None
    description: str | None = None
    groups: list[str] = field(default_factory=list)
    # [{"path": "C:\\inetpub\\shop", "rights": "ReadAndExecute"}]: the site folder, as in
    # the classic step "give the mapped user read access to the content".
    folder_access: list[dict[str, str]] = field(default_factory=list)
    password_never_expires: bool = True
    user_cannot_change_password: bool = True
    disabled: bool = False


@dataclass
class OneToOne:
    """One client certificate (PEM, DER, base64 or PFX) logs on as one user."""

    certificate: str
    user: str
    enabled: bool = True


@dataclass
class Rule:
    sub_field: str
    match: str
    field: str = "Subject"
    case_sensitive: bool = True


@dataclass
class ManyToOne:
    """Every trusted certificate matching all rules logs on as ``user`` (or is denied)."""

    name: str
    rules: list[Rule]
    user: str | None = None
    permission: str = "Allow"
    description: str = ""
    enabled: bool = True


@dataclass
class HttpsEndpoint:
    """The server certificate (a PFX with its key) and the https binding that uses it."""

    pfx: str  # base64 text of the PFX, or a path to the .pfx file
    password: pulumi.Input[str]
    port: int = 443
    ip: str = "*"
    host_name: str = ""
    sni: bool = False
    client_cert_negotiation: bool = True


@dataclass
class ClientCertSiteArgs:
    connection: ConnectionArgs | dict[str, Any]
    site: str
    https: HttpsEndpoint | None = None
    trusted_roots: list[str] = field(default_factory=list)
    users: list[SiteUser] = field(default_factory=list)
    one_to_one: list[OneToOne] = field(default_factory=list)
    many_to_one: list[ManyToOne] = field(default_factory=list)
    ssl_flags: list[str] = field(default_factory=lambda: list(DEFAULT_FLAGS))
    anonymous_enabled: bool = False
    # A mapped certificate from a CA not in trusted_roots gets 403.16 unless the host
    # already trusts that CA some other way; say so explicitly to allow it.
    allow_untrusted_client_certificates: bool = False


# (endpoint host, ip, port) -> [(site, host_name, sni)]: bindings declared in this program.
_PORTS: dict[tuple[str, str, int], list[tuple[str, str, bool]]] = {}
_PORTS_LOCK = threading.Lock()


def _endpoint_host(connection: ConnectionArgs | dict[str, Any]) -> str:
    endpoint = connection.get("endpoint") if isinstance(connection, dict) else connection.endpoint
    if not isinstance(endpoint, str):
        return "?"  # an Output: the host is not known when the program runs
    return (urlsplit(endpoint).hostname or "?").lower()


def validate_site_args(name: str, args: ClientCertSiteArgs) -> dict[str, Any]:
    """Checks across the resources of one site; returns facts the component reuses."""
    where = f"{KIND} {name!r}"
    users = {u.name.lower(): u for u in args.users}
    if len(users) != len(args.users):
        raise ValidationError(where, "users", None, "lists the same user twice")
    for i, one in enumerate(args.one_to_one):
        if one.user.lower() not in users:
            raise ValidationError(
                where,
                f"one_to_one[{i}].user",
                one.user,
                "is not one of this site's users",
                "Declare the user under users (the mapping takes its password from there).",
            )
    for i, many in enumerate(args.many_to_one):
        if many.user is not None and many.user.lower() not in users:
            raise ValidationError(
                where,
                f"many_to_one[{i}].user",
                many.user,
                "is not one of this site's users",
                "Declare the user under users.",
            )
        if many.user is None and many.permission.lower() == "allow":
            raise ValidationError(
                where, f"many_to_one[{i}].user", None, "is required for an Allow mapping"
            )
    roots: list[certs.CertInfo] = []
    for i, pem in enumerate(args.trusted_roots):
        try:
            roots.append(certs.load_certificate(pem))
        except CertificateError as exc:
            raise ValidationError(
                where, f"trusted_roots[{i}]", None, f"cannot be read ({exc.kind}): {exc}"
            ) from None
    anchors = [r for r in roots if r.self_signed]
    intermediates = [r for r in roots if not r.self_signed]
    mapped: dict[str, str] = {}
    for i, one in enumerate(args.one_to_one):
        try:
            info = certs.load_certificate(one.certificate)
        except CertificateError as exc:
            raise ValidationError(
                where, f"one_to_one[{i}].certificate", None, f"cannot be read ({exc.kind}): {exc}"
            ) from None
        if info.thumbprint in mapped:
            raise ValidationError(
                where,
                f"one_to_one[{i}].certificate",
                info.thumbprint,
                f"is mapped twice (also by {mapped[info.thumbprint]})",
            )
        mapped[info.thumbprint] = f"one_to_one[{i}]"
        if not args.allow_untrusted_client_certificates:
            verdict = certs.verify_chain(
                info, anchors, intermediates, at=datetime.now(UTC), require_client_auth=False
            )
            if verdict.status in ("untrusted", "bad_signature"):
                raise ValidationError(
                    where,
                    f"one_to_one[{i}].certificate",
                    info.subject,
                    "does not chain to any of trusted_roots: IIS would answer 403.16",
                    "Add its issuing CA to trusted_roots, or set "
                    "allow_untrusted_client_certificates=True if the host trusts it already.",
                )
    if args.https is not None:
        host = _endpoint_host(args.connection)
        key = (host, args.https.ip, int(args.https.port))
        mine = (args.site, args.https.host_name, args.https.sni)
        with _PORTS_LOCK:
            others = [o for o in _PORTS.get(key, []) if o[0] != args.site]
            for other_site, other_host, other_sni in others:
                if not (args.https.sni and other_sni and args.https.host_name != other_host):
                    raise ValidationError(
                        where,
                        "https.port",
                        args.https.port,
                        f"is also bound by site {other_site!r} on {host} "
                        f"({args.https.ip}:{args.https.port}) without SNI: only one certificate "
                        "can answer there",
                        "Use another port, or SNI with distinct host names on both sites.",
                    )
            _PORTS.setdefault(key, []).append(mine)
    return {"mapped": mapped}


class ClientCertSite(pulumi.ComponentResource):
    """One IIS site configured for client-certificate authentication."""

    https_url: pulumi.Output[str | None]
    server_thumbprint: pulumi.Output[str | None]
    root_thumbprints: pulumi.Output[list[str]]
    mapped_users: pulumi.Output[dict[str, str]]

    def __init__(
        self, name: str, args: ClientCertSiteArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        validate_site_args(name, args)
        super().__init__("iis-clientcert:index:ClientCertSite", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        conn = args.connection

        roots = [
            TrustedRoot(f"{name}-root-{i}", connection=conn, certificate=pem, opts=child)
            for i, pem in enumerate(args.trusted_roots)
        ]
        users = {
            u.name.lower(): LocalUser(
                f"{name}-user-{u.name}",
                connection=conn,
                name=u.name,
                password=u.password,
                full_name=u.full_name,
                description=u.description,
                groups=u.groups,
                folder_access=u.folder_access,
                password_never_expires=u.password_never_expires,
                user_cannot_change_password=u.user_cannot_change_password,
                disabled=u.disabled,
                opts=child,
            )
            for u in args.users
        }
        declared = {u.name.lower(): u for u in args.users}

        https_url: pulumi.Input[str | None] = None
        server_thumbprint: pulumi.Input[str | None] = None
        binding: HttpsBinding | None = None
        if args.https is not None:
            server_cert = ServerCertificate(
                f"{name}-server-cert",
                connection=conn,
                pfx=args.https.pfx,
                password=args.https.password,
                opts=child,
            )
            binding = HttpsBinding(
                f"{name}-https",
                connection=conn,
                site=args.site,
                ip=args.https.ip,
                port=args.https.port,
                host_name=args.https.host_name,
                sni=args.https.sni,
                certificate_thumbprint=server_cert.thumbprint,
                client_cert_negotiation=args.https.client_cert_negotiation,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[server_cert]),
            )
            https_url = binding.url
            server_thumbprint = server_cert.thumbprint

        after_binding = [binding] if binding is not None else []
        SslSettings(
            f"{name}-ssl",
            connection=conn,
            site=args.site,
            flags=args.ssl_flags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=after_binding),
        )
        AnonymousAuthentication(
            f"{name}-anonymous",
            connection=conn,
            site=args.site,
            enabled=args.anonymous_enabled,
            opts=child,
        )

        mapped_user_names = {o.user.lower() for o in args.one_to_one} | {
            m.user.lower() for m in args.many_to_one if m.user
        }
        mapping: CertificateMapping | None = None
        if args.one_to_one or args.many_to_one:
            passwords = {declared[u].name: declared[u].password for u in sorted(mapped_user_names)}
            mapping = CertificateMapping(
                f"{name}-mapping",
                connection=conn,
                site=args.site,
                one_to_one=[
                    {
                        "certificate": o.certificate,
                        "user_name": declared[o.user.lower()].name,
                        "enabled": o.enabled,
                    }
                    for o in args.one_to_one
                ],
                many_to_one=[
                    {
                        "name": m.name,
                        "description": m.description,
                        "user_name": declared[m.user.lower()].name if m.user else "",
                        "permission": m.permission,
                        "enabled": m.enabled,
                        "rules": [fields_of(r) for r in m.rules],
                    }
                    for m in args.many_to_one
                ],
                passwords=passwords,
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[*roots, *[users[u] for u in sorted(mapped_user_names)]],
                ),
            )

        self.https_url = pulumi.Output.from_input(https_url)
        self.server_thumbprint = pulumi.Output.from_input(server_thumbprint)
        self.root_thumbprints = pulumi.Output.all(*[r.thumbprint for r in roots]).apply(list)
        self.mapped_users = (
            mapping.mapped_users if mapping is not None else pulumi.Output.from_input({})
        )
        self.register_outputs(
            {
                "https_url": self.https_url,
                "server_thumbprint": self.server_thumbprint,
                "root_thumbprints": self.root_thumbprints,
                "mapped_users": self.mapped_users,
            }
        )
