"""The iis-clientcert program: one ClientCertSite per site in the stack's configuration.

Configuration (stacks/Pulumi.<env>.yaml, namespace ``iis-clientcert``):

    hosts:                       # name -> how to reach it
      sim: {simulator: ../.work/sim}          # the embedded simulator (its endpoint.json)
      web01:
        endpoint: https://web01.example.com:5986/wsman
        transport: ntlm                        # ntlm | kerberos | credssp | certificate | basic
        username: WEB01\\deployer
        ca_bundle: certs/web01-winrm-ca.pem    # file relative to stacks/, or inline PEM
    sites:
      - name: shop
        host: web01
        https: {pfx: certs/shop.pfx, port: 443, host_name: shop.example.com, sni: true}
        trusted_roots: [certs/partner-root.pem]
        users: [{name: shop-partner, folder_access: [{path: 'C:\\inetpub\\shop'}]}]
        one_to_one: [{certificate: certs/alice.pem, user: shop-partner}]
        many_to_one: [{name: partners, user: shop-partner,
                       rules: [{sub_field: O, match: 'Partner Ltd'}]}]
    passwords:                   # secrets only: pulumi config set --secret --path ...
      shop-partner: ...          # a user's password ("<site>/<user>" for one site only)
      shop/pfx: ...              # the PFX password of site "shop"
      web01: ...                 # the WinRM password of host "web01"

Every error names the configuration key and how to fix it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pulumi

from components import (
    ClientCertSite,
    ClientCertSiteArgs,
    HttpsEndpoint,
    ManyToOne,
    OneToOne,
    Rule,
    SiteUser,
)
from providers.resource_args import ConnectionArgs

NAMESPACE = "iis-clientcert"
STACK_DIR = Path(__file__).resolve().parent / "stacks"


class ConfigError(Exception):
    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"config {NAMESPACE}:{key}: {problem}. {fix}")


def read_text(key: str, value: Any) -> str:
    """A certificate or bundle given inline (PEM/base64) or as a file relative to stacks/."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            key, "must be a file path or inline PEM", "Give a path relative to stacks/."
        )
    if "-----BEGIN" in value or len(value) > 512:
        return value
    path = (STACK_DIR / value).resolve()
    if not path.is_file():
        raise ConfigError(key, f"file {value!r} not found (looked at {path})", "Fix the path.")
    data = path.read_bytes()
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii")  # DER or PFX: hand it on as base64


class Secrets:
    """The ``passwords`` secret object; values only ever leave as secret Outputs."""

    def __init__(self, config: pulumi.Config) -> None:
        self._config = config
        raw = pulumi.runtime.get_config(f"{NAMESPACE}:passwords")
        try:
            self._keys = set(json.loads(raw)) if raw else set()
        except (ValueError, TypeError):
            self._keys = set()

    def get(self, *names: str) -> pulumi.Output[str]:
        for name in names:
            if name in self._keys:
                return self._config.require_secret_object("passwords").apply(_picker(name))
        shown = " or ".join(f"passwords.{n}" for n in names)
        raise ConfigError(
            f"passwords.{names[0]}",
            "is not set",
            f"Run: pulumi config set --secret --path '{shown.split(' or ')[0]}' <value>",
        )


def _picker(name: str) -> Any:
    def pick(values: Any) -> str:
        return str(values[name])

    return pick


def connection_for(name: str, spec: Any, secrets: Secrets) -> ConnectionArgs:
    key = f"hosts.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(key, "must be an object", "See stacks/Pulumi.prod.yaml for the shape.")
    if "simulator" in spec:
        state = (STACK_DIR / str(spec["simulator"])).resolve()
        info_path = state / "endpoint.json"
        if not info_path.is_file():
            raise ConfigError(
                f"{key}.simulator",
                f"no running simulator at {state}",
                "Start it with `make demo` or `.venv/bin/python -m simulator serve "
                f"--state-dir {state}`.",
            )
        info = json.loads(info_path.read_text())
        return ConnectionArgs(
            endpoint=info["winrm_https_url"],
            transport="basic",
            username=info["username"],
            password=pulumi.Output.secret(info["password"]),
            ca_bundle=Path(info["ca_bundle"]).read_text(),
        )
    endpoint = spec.get("endpoint")
    if not isinstance(endpoint, str):
        raise ConfigError(f"{key}.endpoint", "is required", "e.g. https://web01:5986/wsman")
    transport = str(spec.get("transport", "ntlm"))
    args = ConnectionArgs(endpoint=endpoint, transport=transport, username=spec.get("username"))
    if spec.get("ca_bundle"):
        args.ca_bundle = read_text(f"{key}.ca_bundle", spec["ca_bundle"])
    if spec.get("verify_tls") is False:
        args.verify_tls = False
    if transport == "certificate":
        args.client_cert_pem = read_text(f"{key}.client_cert", spec.get("client_cert"))
        args.client_key_pem = secrets.get(f"{name}/client_key")
    else:
        args.password = secrets.get(name)
    return args


def site_args(
    index: int, spec: Any, hosts: dict[str, ConnectionArgs], secrets: Secrets
) -> ClientCertSiteArgs:
    key = f"sites[{index}]"
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ConfigError(
            f"{key}.name", "is required", "Name the IIS site as IIS Manager shows it."
        )
    site = spec["name"]
    host = spec.get("host")
    if host not in hosts:
        raise ConfigError(
            f"{key}.host",
            f"{host!r} is not under hosts",
            f"Use one of: {', '.join(hosts) or 'none'}.",
        )

    def user(j: int, u: Any) -> SiteUser:
        if not isinstance(u, dict) or not isinstance(u.get("name"), str):
            raise ConfigError(f"{key}.users[{j}].name", "is required", "Give the account name.")
        return SiteUser(
            name=u["name"],
            password=secrets.get(f"{site}/{u['name']}", u["name"]),
            full_name=u.get("full_name"),
            description=u.get("description"),
            groups=list(u.get("groups") or []),
            folder_access=[
                {"path": str(f["path"]), "rights": str(f.get("rights", "ReadAndExecute"))}
                for f in u.get("folder_access") or []
            ],
        )

    https = None
    if spec.get("https"):
        h = spec["https"]
        https = HttpsEndpoint(
            pfx=read_text(f"{key}.https.pfx", h.get("pfx")),
            password=secrets.get(f"{site}/pfx"),
            port=int(h.get("port", 443)),
            ip=str(h.get("ip", "*")),
            host_name=str(h.get("host_name", "")),
            sni=bool(h.get("sni", False)),
            client_cert_negotiation=bool(h.get("client_cert_negotiation", True)),
        )
    return ClientCertSiteArgs(
        connection=hosts[host],
        site=site,
        https=https,
        trusted_roots=[
            read_text(f"{key}.trusted_roots[{j}]", r)
            for j, r in enumerate(spec.get("trusted_roots") or [])
        ],
        users=[user(j, u) for j, u in enumerate(spec.get("users") or [])],
        one_to_one=[
            OneToOne(
                certificate=read_text(f"{key}.one_to_one[{j}].certificate", o.get("certificate")),
                user=str(o.get("user", "")),
                enabled=bool(o.get("enabled", True)),
            )
            for j, o in enumerate(spec.get("one_to_one") or [])
        ],
        many_to_one=[
            ManyToOne(
                name=str(m.get("name", "")),
                user=m.get("user"),
                permission=str(m.get("permission", "Allow")),
                description=str(m.get("description", "")),
                enabled=bool(m.get("enabled", True)),
                rules=[
                    Rule(
                        sub_field=str(r.get("sub_field", "")),
                        match=str(r.get("match", "")),
                        field=str(r.get("field", "Subject")),
                        case_sensitive=bool(r.get("case_sensitive", True)),
                    )
                    for r in m.get("rules") or []
                ],
            )
            for m in spec.get("many_to_one") or []
        ],
        ssl_flags=list(spec.get("ssl_flags") or ["Ssl", "SslNegotiateCert", "SslRequireCert"]),
        anonymous_enabled=bool(spec.get("anonymous_enabled", False)),
        allow_untrusted_client_certificates=bool(
            spec.get("allow_untrusted_client_certificates", False)
        ),
    )


def main() -> None:
    config = pulumi.Config(NAMESPACE)
    secrets = Secrets(config)
    host_specs = config.get_object("hosts") or {}
    if not isinstance(host_specs, dict) or not host_specs:
        raise ConfigError("hosts", "is empty", "Describe at least one host (see stacks/).")
    hosts = {name: connection_for(name, spec, secrets) for name, spec in host_specs.items()}
    site_specs = config.get_object("sites") or []
    if not isinstance(site_specs, list) or not site_specs:
        raise ConfigError("sites", "is empty", "Describe at least one site (see stacks/).")
    sites = []
    for i, spec in enumerate(site_specs):
        args = site_args(i, spec, hosts, secrets)
        sites.append(ClientCertSite(f"{spec.get('host')}-{args.site}", args))
    pulumi.export("https_urls", {s._name: s.https_url for s in sites})
    pulumi.export("mapped_users", {s._name: s.mapped_users for s in sites})


main()
