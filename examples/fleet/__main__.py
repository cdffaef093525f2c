"""A fleet: the same client-certificate site on every host of a map in the configuration.

One ClientCertHost per host (the client CA, the mapped account and the server certificate,
once per host) and one ClientCertSite on it. Every host's site binds port 443: the port
checks are per host endpoint (scheme, host and WinRM port), so many hosts, even behind one
name on different WinRM ports, do not conflict. The engine applies the hosts side by side
in one `pulumi up`, as far as its limits allow: their agents start one after another (README,
"Speed on real networks"); for many hosts, run host groups as parallel stacks
(examples/automation).

Configuration:
    hosts (object)   {name: {endpoint, username, ca_bundle (path)}}
    passwords (secret object)   {<host name>: WinRM password, "account": the account's,
                                 "pfx": the PFX's}
    site             the IIS site on every host (default: shop)
    pki_dir          folder with ca.pem, server.pfx, client.pem

Outputs: ``sites`` and ``hosts`` (one entry per host, see iis_clientcert.SiteExports and
HostExports), which other stacks read with a StackReference (examples/fleet_clients).
"""

from pathlib import Path
from typing import Any

import pulumi

from iis_clientcert import (
    ClientCertHost,
    ClientCertHostArgs,
    ClientCertSite,
    ClientCertSiteArgs,
    ConnectionArgs,
    HttpsEndpoint,
    OneToOne,
    ServerPfx,
    SiteUser,
    TrustedCa,
)

config = pulumi.Config()
inventory: dict[str, dict[str, Any]] = config.require_object("hosts")
passwords = config.require_secret_object("passwords")
site_name = config.get("site") or "shop"
pki = Path(config.require("pki_dir"))
client_ca = (pki / "ca.pem").read_text()
client_cert = (pki / "client.pem").read_text()


def secret(key: str) -> pulumi.Output[str]:
    return passwords.apply(lambda p: str(p[key]))


sites: dict[str, ClientCertSite] = {}
hosts: dict[str, ClientCertHost] = {}
# Every host first, then the sites: the engine checks resources in the order the program
# registers them, and each host's agent starts at its first call, so more hosts start
# early (16 hosts at 100 ms: 26-27 s against 30-32 s with each site after its host).
for name, spec in sorted(inventory.items()):
    hosts[name] = ClientCertHost(
        name,
        ClientCertHostArgs(
            connection=ConnectionArgs(
                endpoint=spec["endpoint"],
                transport=spec.get("transport", "basic"),
                username=spec["username"],
                password=secret(name),
                ca_bundle=Path(spec["ca_bundle"]).read_text(),
            ),
            trusted_roots=[TrustedCa(name="clients", certificate=client_ca)],
            users=[SiteUser(name="fleet-client", password=secret("account"))],
            server_certificates=[
                ServerPfx(name="web", pfx=str(pki / "server.pfx"), password=secret("pfx"))
            ],
        ),
    )
for name in sorted(inventory):
    sites[name] = ClientCertSite(
        f"{name}-{site_name}",
        ClientCertSiteArgs(
            host=hosts[name],
            site=site_name,
            https=HttpsEndpoint(certificate="web", port=443),
            one_to_one=[OneToOne(certificate=client_cert, user="fleet-client")],
        ),
    )

pulumi.export("sites", {name: site.exports() for name, site in sites.items()})
pulumi.export("hosts", {name: host.exports() for name, host in hosts.items()})
