"""The stack configuration of the iis-clientcert program, read into ClientCertSiteArgs.

Shape (namespace ``iis-clientcert``; see stacks/Pulumi.prod.yaml):

    hosts:       {name: {simulator: DIR} | {endpoint, transport, username, ca_bundle,
                                            client_cert, verify_tls, shell}}
    sites:       [{name, host, https, trusted_roots, users, one_to_one, many_to_one,
                   ssl_flags, anonymous_enabled, allow_untrusted_client_certificates}]
    passwords:   secret object: a user's name (or "<site>/<user>"), "<site>/pfx", a host's
                 name (its WinRM password) or "<host>/client_key"

Every error names the configuration key and the fix (a ``pulumi.RunError``: Pulumi prints
it as one line, without a traceback). Secrets are never read here: the ``passwords``
object's key names are, and each value leaves as a secret Output.

The sites list their CAs, accounts and PFX; ``StackConfig.program`` gives each host one
owner of them (a ClientCertHost): a CA or an account two sites of one host list is one
object on that host, kept while any site lists it. Aliases keep the resources of stacks
made when each site owned its own.
"""

from __future__ import annotations

import base64
import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from iis_clientcert import certs
from iis_clientcert.components import ServerPfx, TrustedCa, moved_from_site
from iis_clientcert.components.client_cert_host import ClientCertHostArgs
from iis_clientcert.components.client_cert_site import (
    ClientCertSiteArgs,
    HttpsEndpoint,
    ManyToOne,
    OneToOne,
    Rule,
    SiteUser,
)
from iis_clientcert.errors import CertificateError, IisClientCertError, UsageError
from iis_clientcert.framework.inputs import ConnectionArgs
from iis_clientcert.host import contract
from iis_clientcert.host.connection import simulator_connection_input
from iis_clientcert.providers.certificate_mapping import (
    SUB_FIELD_FIX,
    SUB_FIELD_PROBLEM,
    canonical_sub_field,
)

NAMESPACE = "iis-clientcert"

HOST_KEYS = (
    "simulator",
    "endpoint",
    "transport",
    "username",
    "ca_bundle",
    "client_cert",
    "verify_tls",
    "shell",
)
SITE_KEYS = (
    "name",
    "host",
    "https",
    "trusted_roots",
    "users",
    "one_to_one",
    "many_to_one",
    "ssl_flags",
    "anonymous_enabled",
    "allow_untrusted_client_certificates",
)
HTTPS_KEYS = ("pfx", "port", "ip", "host_name", "sni", "client_cert_negotiation")
USER_KEYS = ("name", "full_name", "description", "groups", "folder_access", "disabled")
ONE_KEYS = ("certificate", "user", "enabled")
MANY_KEYS = ("name", "user", "permission", "description", "enabled", "rules")
RULE_KEYS = ("sub_field", "match", "field", "case_sensitive")
SECRET_KEYS = ("password", "pfx_password", "client_key")


class ConfigError(IisClientCertError, pulumi.RunError, ValueError):
    """A mistake in the stack's configuration, naming the key and the fix: a RunError, so
    Pulumi prints it alone, no traceback."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key = key
        super().__init__(f"config {NAMESPACE}:{key}: {problem}. {fix}")


class Secrets:
    """The key names of the ``passwords`` object, and a way to get one value as a secret."""

    def __init__(self, names: set[str], value_of: Callable[[str], pulumi.Output[str]]) -> None:
        self._names = names
        self._value_of = value_of

    @classmethod
    def from_stack(cls, config: pulumi.Config) -> Secrets:
        raw = pulumi.runtime.get_config(f"{NAMESPACE}:passwords")
        try:
            names = set(json.loads(raw)) if raw else set()
        except (ValueError, TypeError):
            names = set()

        def value_of(name: str) -> pulumi.Output[str]:
            return config.require_secret_object("passwords").apply(lambda d: str(d[name]))

        return cls(names, value_of)

    def get(self, *names: str) -> pulumi.Output[str]:
        return self._value_of(self.key(*names))

    def key(self, *names: str) -> str:
        """The first of ``names`` that is set."""
        for name in names:
            if name in self._names:
                return name
        raise ConfigError(
            f"passwords.{names[0]}",
            "is not set" + (f" (nor passwords.{names[1]})" if len(names) > 1 else ""),
            f"Run: pulumi config set --secret --path 'passwords.{names[-1]}' <value>",
        )


def _object(key: str, value: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, "must be an object", "See stacks/Pulumi.prod.yaml for the shape.")
    for name in value:
        if name in SECRET_KEYS:
            raise ConfigError(
                f"{key}.{name}",
                "holds a secret in plain configuration",
                "Remove it and use: pulumi config set --secret --path 'passwords.<name>' <value>",
            )
        if name not in allowed:
            close = difflib.get_close_matches(str(name), allowed, n=1)
            hint = f"Did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{key}.{name}", "is not a known setting", hint + "Known: " + ", ".join(allowed)
            )
    return value


def _list(key: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(key, "must be a list", "Write it as a YAML list (- item).")
    return value


def _str(key: str, value: Any, default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "must be a non-empty string", "Set it.")
    return value


def _bool(key: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, not {value!r}", "Use true or false.")
    return value


def _int(key: str, value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(key, f"must be a port number, not {value!r}", "Use 1 to 65535.")
    return value


class StackConfig:
    """Turns the stack's configuration into connections and ClientCertSiteArgs."""

    def __init__(self, stack_dir: Path, secrets: Secrets) -> None:
        self.stack_dir = stack_dir
        self.secrets = secrets

    def read_text(self, key: str, value: Any) -> str:
        """A certificate or bundle inline (PEM/base64) or a file relative to stacks/."""
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                key, "must be a file path or inline PEM", "Give a path relative to stacks/."
            )
        if "-----BEGIN" in value or len(value) > 512:
            return value
        path = (self.stack_dir / value).resolve()
        if not path.is_file():
            raise ConfigError(key, f"file {value!r} not found (looked at {path})", "Fix the path.")
        data = path.read_bytes()
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            return base64.b64encode(data).decode("ascii")  # DER or PFX: on as base64

    def connection(self, name: str, value: Any) -> ConnectionArgs:
        key = f"hosts.{name}"
        spec = _object(key, value, HOST_KEYS)
        if "simulator" in spec:
            state = (self.stack_dir / _str(f"{key}.simulator", spec["simulator"])).resolve()
            try:
                return ConnectionArgs.from_dict(simulator_connection_input(state))
            except UsageError:
                raise ConfigError(
                    f"{key}.simulator",
                    f"no running simulator at {state}",
                    "Start it with `make demo`, or "
                    "`.venv/bin/python -m iis_clientcert_simulator serve "
                    f"--state-dir {state}`",
                ) from None
        endpoint = _str(f"{key}.endpoint", spec.get("endpoint"))
        transport = _str(f"{key}.transport", spec.get("transport"), "ntlm")
        args = ConnectionArgs(
            endpoint=endpoint,
            transport=transport,
            username=spec.get("username"),
            verify_tls=_bool(f"{key}.verify_tls", spec.get("verify_tls"), True),
            # powershell (5.1, default) or pwsh (PowerShell 7); the provider validates it.
            shell=spec.get("shell"),
        )
        if spec.get("ca_bundle"):
            args.ca_bundle = self.read_text(f"{key}.ca_bundle", spec["ca_bundle"])
        if transport == "certificate":
            args.client_cert_pem = self.read_text(f"{key}.client_cert", spec.get("client_cert"))
            args.client_key_pem = self.secrets.get(f"{name}/client_key")
        else:
            args.password = self.secrets.get(name)
        return args

    def site(
        self, index: int, value: Any, hosts: Mapping[str, ConnectionArgs]
    ) -> ClientCertSiteArgs:
        key = f"sites[{index}]"
        spec = _object(key, value, SITE_KEYS)
        site = _str(f"{key}.name", spec.get("name"))
        host = str(spec.get("host"))
        if host not in hosts:
            raise ConfigError(
                f"{key}.host", f"{host!r} is not under hosts", f"Use one of: {', '.join(hosts)}."
            )
        https = None
        if spec.get("https") is not None:
            h = _object(f"{key}.https", spec["https"], HTTPS_KEYS)
            https = HttpsEndpoint(
                pfx=self.read_text(f"{key}.https.pfx", h.get("pfx")),
                password=self.secrets.get(f"{site}/pfx"),
                port=_int(f"{key}.https.port", h.get("port"), 443),
                ip=_str(f"{key}.https.ip", h.get("ip"), "*"),
                host_name=str(h.get("host_name") or ""),
                sni=_bool(f"{key}.https.sni", h.get("sni"), False),
                client_cert_negotiation=_bool(
                    f"{key}.https.client_cert_negotiation", h.get("client_cert_negotiation"), True
                ),
            )
        return ClientCertSiteArgs(
            connection=hosts[host],
            site=site,
            https=https,
            trusted_roots=[
                self.read_text(f"{key}.trusted_roots[{j}]", r)
                for j, r in enumerate(_list(f"{key}.trusted_roots", spec.get("trusted_roots")))
            ],
            users=[
                self._user(f"{key}.users[{j}]", site, u)
                for j, u in enumerate(_list(f"{key}.users", spec.get("users")))
            ],
            one_to_one=[
                self._one(f"{key}.one_to_one[{j}]", o)
                for j, o in enumerate(_list(f"{key}.one_to_one", spec.get("one_to_one")))
            ],
            many_to_one=[
                self._many(f"{key}.many_to_one[{j}]", m)
                for j, m in enumerate(_list(f"{key}.many_to_one", spec.get("many_to_one")))
            ],
            ssl_flags=[
                _str(f"{key}.ssl_flags[{j}]", f)
                for j, f in enumerate(
                    _list(f"{key}.ssl_flags", spec.get("ssl_flags"))
                    or list(contract.DEFAULT_SSL_FLAGS)
                )
            ],
            anonymous_enabled=_bool(
                f"{key}.anonymous_enabled", spec.get("anonymous_enabled"), False
            ),
            allow_untrusted_client_certificates=_bool(
                f"{key}.allow_untrusted_client_certificates",
                spec.get("allow_untrusted_client_certificates"),
                False,
            ),
        )

    def _user(self, key: str, site: str, value: Any) -> SiteUser:
        u = _object(key, value, USER_KEYS)
        name = _str(f"{key}.name", u.get("name"))
        folders = []
        for j, f in enumerate(_list(f"{key}.folder_access", u.get("folder_access"))):
            entry = _object(f"{key}.folder_access[{j}]", f, ("path", "rights"))
            folders.append(
                {
                    "path": _str(f"{key}.folder_access[{j}].path", entry.get("path")),
                    "rights": _str(
                        f"{key}.folder_access[{j}].rights", entry.get("rights"), "ReadAndExecute"
                    ),
                }
            )
        return SiteUser(
            name=name,
            password=self.secrets.get(f"{site}/{name}", name),
            full_name=u.get("full_name"),
            description=u.get("description"),
            groups=[_str(f"{key}.groups", g) for g in _list(f"{key}.groups", u.get("groups"))],
            folder_access=folders,
            disabled=_bool(f"{key}.disabled", u.get("disabled"), False),
        )

    def _one(self, key: str, value: Any) -> OneToOne:
        o = _object(key, value, ONE_KEYS)
        return OneToOne(
            certificate=self.read_text(f"{key}.certificate", o.get("certificate")),
            user=_str(f"{key}.user", o.get("user")),
            enabled=_bool(f"{key}.enabled", o.get("enabled"), True),
        )

    def _many(self, key: str, value: Any) -> ManyToOne:
        m = _object(key, value, MANY_KEYS)
        rules = []
        for j, r in enumerate(_list(f"{key}.rules", m.get("rules"))):
            rule = _object(f"{key}.rules[{j}]", r, RULE_KEYS)
            sub = _str(f"{key}.rules[{j}].sub_field", rule.get("sub_field"))
            if canonical_sub_field(sub) is None:
                raise ConfigError(
                    f"{key}.rules[{j}].sub_field", f"{sub!r} {SUB_FIELD_PROBLEM}", SUB_FIELD_FIX
                )
            rules.append(
                Rule(
                    sub_field=sub,
                    match=_str(f"{key}.rules[{j}].match", rule.get("match")),
                    field=_str(f"{key}.rules[{j}].field", rule.get("field"), "Subject"),
                    case_sensitive=_bool(
                        f"{key}.rules[{j}].case_sensitive", rule.get("case_sensitive"), True
                    ),
                )
            )
        if not rules:
            raise ConfigError(
                f"{key}.rules",
                "is empty: what IIS does with a many-to-one mapping without rules is "
                "undocumented (every trusted certificate, or none)",
                "Give at least one rule, e.g. {field: Issuer, sub_field: CN, match: My CA}.",
            )
        user = m.get("user")
        return ManyToOne(
            name=_str(f"{key}.name", m.get("name")),
            rules=rules,
            user=_str(f"{key}.user", user) if user is not None else None,
            permission=_str(f"{key}.permission", m.get("permission"), "Allow"),
            description=str(m.get("description") or ""),
            enabled=_bool(f"{key}.enabled", m.get("enabled"), True),
        )

    def sites(self, hosts_value: Any, sites_value: Any) -> list[tuple[str, ClientCertSiteArgs]]:
        """(resource name, args) per site: the whole configuration, checked."""
        if not isinstance(hosts_value, Mapping) or not hosts_value:
            raise ConfigError("hosts", "is empty", "Describe at least one host (see stacks/).")
        hosts = {str(n): self.connection(str(n), spec) for n, spec in hosts_value.items()}
        specs = _list("sites", sites_value)
        if not specs:
            raise ConfigError("sites", "is empty", "Describe at least one site (see stacks/).")
        out = []
        for i, spec in enumerate(specs):
            args = self.site(i, spec, hosts)
            out.append((f"{spec['host']}-{args.site}", args))
        return out

    def program(self, hosts_value: Any, sites_value: Any) -> Program:
        """The whole configuration with one owner per host-scoped object: a ClientCertHost
        per host that has sites, holding every CA, account and PFX its sites list (each
        once), and the sites referring to them by name."""
        planned = Program()
        owners: dict[str, _HostPlan] = {}
        for resource_name, args in self.sites(hosts_value, sites_value):
            index = len(planned.sites)
            host = str(sites_value[index]["host"])
            owner = owners.setdefault(host, _HostPlan(host, args.connection))
            planned.sites.append(owner.take(index, resource_name, args, self.secrets))
        planned.hosts = {name: owner.args() for name, owner in owners.items()}
        return planned


@dataclass
class SitePlan:
    resource_name: str
    host: str  # the key under hosts (and the ClientCertHost's name)
    args: ClientCertSiteArgs  # without host: the program passes the ClientCertHost


@dataclass
class Program:
    hosts: dict[str, ClientCertHostArgs] = field(default_factory=dict)
    sites: list[SitePlan] = field(default_factory=list)


@dataclass
class _Account:
    user: SiteUser
    key: str  # where it is declared first: sites[i].users[j]
    password_key: str
    groups: list[Any] = field(default_factory=list)
    folder_access: list[Any] = field(default_factory=list)


class _HostPlan:
    """Collects the host-scoped objects of one host's sites, each once, in config order
    (so the owner of each is deterministic)."""

    def __init__(self, name: str, connection: Any) -> None:
        self.name = name
        self.connection = connection
        self.roots: dict[str, TrustedCa] = {}  # thumbprint -> CA
        self.accounts: dict[str, _Account] = {}  # lower-cased name -> account
        self.pfxs: dict[str, ServerPfx] = {}  # PFX text -> server certificate

    def take(
        self, index: int, resource_name: str, args: ClientCertSiteArgs, secrets: Secrets
    ) -> SitePlan:
        key = f"sites[{index}]"
        site = str(args.site)
        names = []
        for j, text in enumerate(args.trusted_roots):
            try:
                thumbprint = certs.load_certificate(str(text)).thumbprint
            except CertificateError as exc:
                raise ConfigError(
                    f"{key}.trusted_roots[{j}]",
                    f"cannot be read ({exc.kind}): {exc}",
                    "Give a PEM, DER or base64 certificate file",
                ) from None
            ca = self.roots.get(thumbprint)
            if ca is None:
                # Named by the certificate, so no site's removal renames it.
                ca = self.roots[thumbprint] = TrustedCa(
                    certificate=text,
                    name=thumbprint[:16].lower(),
                    # Where it was when each site owned its CAs (the first site listing it).
                    aliases=moved_from_site(
                        resource_name, f"{resource_name}-root-{j}", "TrustedRoot"
                    ),
                )
            names.append(str(ca.name))
        for j, user in enumerate(args.users):
            assert isinstance(user, SiteUser)
            self._account(f"{key}.users[{j}]", site, resource_name, user, secrets)
        https = args.https
        if isinstance(https, HttpsEndpoint) and https.pfx is not None:
            text = str(https.pfx)
            pfx = self.pfxs.get(text)
            if pfx is None:
                pfx = self.pfxs[text] = ServerPfx(
                    name=site,
                    pfx=text,
                    password=https.password,
                    aliases=moved_from_site(
                        resource_name, f"{resource_name}-server-cert", "ServerCertificate"
                    ),
                )
            https.certificate, https.pfx, https.password = pfx.name, None, None
        args.connection = None
        args.users = []
        args.trusted_roots = names
        return SitePlan(resource_name, self.name, args)

    def _account(
        self, key: str, site: str, resource_name: str, user: SiteUser, secrets: Secrets
    ) -> None:
        name = str(user.name)
        password_key = secrets.key(f"{site}/{name}", name)
        found = self.accounts.get(name.lower())
        if found is None:
            self.accounts[name.lower()] = _Account(
                SiteUser(
                    name=name,
                    password=user.password,
                    full_name=user.full_name,
                    description=user.description,
                    disabled=user.disabled,
                    aliases=moved_from_site(
                        resource_name, f"{resource_name}-user-{name}", "LocalUser"
                    ),
                ),
                key,
                password_key,
                list(user.groups or []),  # type: ignore[arg-type]
                list(user.folder_access or []),  # type: ignore[arg-type]
            )
            return
        # One account on the host: it has one password and one description; what each site
        # needs of it (groups, folder access) adds up.
        if found.password_key != password_key:
            raise ConfigError(
                key,
                f"declares account {name!r} again ({found.key}) with another password "
                f"(passwords.{password_key}, there passwords.{found.password_key})",
                f"One account on a host has one password: set passwords.{name} and remove "
                "the site-specific ones",
            )
        for attr in ("full_name", "description", "disabled"):
            mine, theirs = getattr(user, attr), getattr(found.user, attr)
            if mine not in (None, theirs) and theirs is not None and mine != theirs:
                raise ConfigError(
                    f"{key}.{attr}",
                    f"is {mine!r}, but {found.key} declares account {name!r} with {theirs!r}",
                    "One account on a host: give it the same value in both places (or in one)",
                )
            if theirs is None and mine is not None:
                setattr(found.user, attr, mine)
        found.groups += [g for g in user.groups or [] if g not in found.groups]  # type: ignore[union-attr]
        found.folder_access += [
            f
            for f in user.folder_access or []  # type: ignore[union-attr]
            if f not in found.folder_access
        ]

    def args(self) -> ClientCertHostArgs:
        users = []
        for account in self.accounts.values():
            account.user.groups = account.groups
            account.user.folder_access = account.folder_access
            users.append(account.user)
        return ClientCertHostArgs(
            connection=self.connection,
            trusted_roots=list(self.roots.values()),
            users=users,
            server_certificates=list(self.pfxs.values()),
        )
