"""Two IIS hosts, three sites, values that other resources compute.

What a larger program looks like: the hosts' WinRM endpoints and the CA certificates come
from elsewhere as Pulumi Outputs (a VM's address, a PKI resource's certificate; here they
are derived from configuration, web02's as secrets). Each host's CAs, accounts and server
certificate are declared once, on a ClientCertHost; the sites refer to them by name and
depend on them. On web01 two sites share the CA and the account: removing either site
leaves both in place for the other.

Configuration (``pulumi config set ...``):
    web01_endpoint, web01_username, web01_ca_bundle (path)   web01's WinRM endpoint
    web02_endpoint (secret), web02_username, web02_ca_bundle  web02's
    web01_password, web02_password (secrets)                  their WinRM passwords
    pki_dir      folder with ca.pem (web01's client CA), server.pfx, alice.pem
    web02_ca (secret)                                         PEM of web02's client CA
    pfx_password, alice_password, partner_password (secrets)
    sites        which sites to have (default: web01/shop,web01/intranet,web02/shop)
"""

from pathlib import Path

import pulumi

from iis_clientcert import (
    ClientCertHost,
    ClientCertHostArgs,
    ClientCertSite,
    ClientCertSiteArgs,
    ConnectionArgs,
    HttpsEndpoint,
    ManyToOne,
    OneToOne,
    Rule,
    ServerPfx,
    SiteUser,
    TrustedCa,
)

config = pulumi.Config()
pki = Path(config.require("pki_dir"))
wanted = set((config.get("sites") or "web01/shop,web01/intranet,web02/shop").split(","))


def computed(value: str) -> pulumi.Output[str]:
    """Stands in for another resource's output (known only once that resource exists)."""
    return pulumi.Output.from_input(value).apply(lambda v: v)


def connection(host: str, endpoint: pulumi.Input[str]) -> ConnectionArgs:
    return ConnectionArgs(
        endpoint=endpoint,
        transport="basic",
        username=config.require(f"{host}_username"),
        password=config.require_secret(f"{host}_password"),
        ca_bundle=Path(config.require(f"{host}_ca_bundle")).read_text(),
    )


server_pfx = ServerPfx(
    name="web", pfx=str(pki / "server.pfx"), password=config.require_secret("pfx_password")
)
web01 = ClientCertHost(
    "web01",
    ClientCertHostArgs(
        connection=connection("web01", computed(config.require("web01_endpoint"))),
        trusted_roots=[TrustedCa(name="corp", certificate=computed((pki / "ca.pem").read_text()))],
        users=[SiteUser(name="alice", password=config.require_secret("alice_password"))],
        server_certificates=[server_pfx],
    ),
)
web02 = ClientCertHost(
    "web02",
    {
        "connection": connection("web02", config.require_secret("web02_endpoint")),
        "trusted_roots": [{"name": "partner", "certificate": config.require_secret("web02_ca")}],
        "users": [{"name": "partner", "password": config.require_secret("partner_password")}],
        "server_certificates": [server_pfx],
    },
)
alice = (pki / "alice.pem").read_text()
sites: dict[str, ClientCertSite] = {}
if "web01/shop" in wanted:
    sites["web01/shop"] = ClientCertSite(
        "web01-shop",
        ClientCertSiteArgs(
            host=web01,
            site="shop",
            https=HttpsEndpoint(certificate="web", port=443),
            trusted_roots=["corp"],
            one_to_one=[OneToOne(certificate=alice, user="alice")],
        ),
    )
if "web01/intranet" in wanted:
    # The same CA and the same account as the shop: the host's, not this site's.
    sites["web01/intranet"] = ClientCertSite(
        "web01-intranet",
        ClientCertSiteArgs(
            host=web01,
            site="Default Web Site",
            https=HttpsEndpoint(certificate="web", port=8443),
            trusted_roots=["corp"],
            many_to_one=[
                ManyToOne(name="staff", user="alice", rules=[Rule(sub_field="O", match="Example")])
            ],
        ),
    )
if "web02/shop" in wanted:
    # Port 443 again: another host endpoint, no conflict.
    sites["web02/shop"] = ClientCertSite(
        "web02-shop",
        {
            "host": web02,
            "site": "shop",
            "https": {"certificate": "web", "port": 443},
            "one_to_one": [
                {"certificate": config.require_secret("partner_cert"), "user": "partner"}
            ],
        },
    )

pulumi.export("sites", {name: site.exports() for name, site in sites.items()})
pulumi.export("hosts", {"web01": web01.exports(), "web02": web02.exports()})
