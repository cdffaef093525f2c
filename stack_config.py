"""The stack configuration of the iis-clientcert program, read into ClientCertSiteArgs.

Shape (namespace ``iis-clientcert``; see stacks/Pulumi.prod.yaml):

    hosts:       {name: {simulator: DIR} | {endpoint, transport, username, ca_bundle,
                                            client_cert, verify_tls}}
    sites:       [{name, host, https, trusted_roots, users, one_to_one, many_to_one,
                   ssl_flags, anonymous_enabled, allow_untrusted_client_certificates}]
    passwords:   secret object: a user's name (or "<site>/<user>"), "<site>/pfx", a host's
                 name (its WinRM password) or "<host>/client_key"

Every error names the configuration key and the fix. Secrets are never read here: the
``passwords`` object's key names are, and each value leaves as a secret Output.
"""

from __future__ import annotations

import base64
import difflib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pulumi

from iis_clientcert.components.client_cert_site import (
    ClientCertSiteArgs,
    HttpsEndpoint,
    ManyToOne,
    OneToOne,
    Rule,
    SiteUser,
)
from iis_clientcert.framework.inputs import ConnectionArgs
from iis_clientcert_simulator.endpoint import EndpointError, endpoint_connection

NAMESPACE = "iis-clientcert"

HOST_KEYS = (
    "simulator",
    "endpoint",
    "transport",
    "username",
    "ca_bundle",
    "client_cert",
    "verify_tls",
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


class ConfigError(ValueError):
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
        for name in names:
            if name in self._names:
                return self._value_of(name)
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
                return ConnectionArgs.from_dict(endpoint_connection(state))
            except EndpointError:
                raise ConfigError(
                    f"{key}.simulator",
                    f"no running simulator at {state}",
                    "Start it with `make demo`, or `.venv/bin/python -m simulator serve "
                    f"--state-dir {state}`",
                ) from None
        endpoint = _str(f"{key}.endpoint", spec.get("endpoint"))
        transport = _str(f"{key}.transport", spec.get("transport"), "ntlm")
        args = ConnectionArgs(
            endpoint=endpoint,
            transport=transport,
            username=spec.get("username"),
            verify_tls=_bool(f"{key}.verify_tls", spec.get("verify_tls"), True),
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
                    or ["Ssl", "SslNegotiateCert", "SslRequireCert"]
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
            rules.append(
                Rule(
                    sub_field=_str(f"{key}.rules[{j}].sub_field", rule.get("sub_field")),
                    match=_str(f"{key}.rules[{j}].match", rule.get("match")),
                    field=_str(f"{key}.rules[{j}].field", rule.get("field"), "Subject"),
                    case_sensitive=_bool(
                        f"{key}.rules[{j}].case_sensitive", rule.get("case_sensitive"), True
                    ),
                )
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
