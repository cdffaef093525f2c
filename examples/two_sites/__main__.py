"""Embedding ClientCertSite in a larger program: two sites on one host.

A program of your own imports the component and uses it as often as it needs, on one or
many hosts. Here: the shop (one-to-one mapping, port 443) and the intranet site (a
many-to-one rule, port 8443) of one host, applied in parallel by the engine.

Configuration (``pulumi config set ...``):
    host_endpoint, host_username, host_ca_bundle (path)   the WinRM endpoint of the host
    host_password (secret)                                 its password
    pki_dir                                                folder with ca.pem, shop.pfx,
                                                           intranet.pfx, alice.pem
    pfx_password, alice_password, staff_password (secrets)
"""

from pathlib import Path

import pulumi

from iis_clientcert.components import (
    ClientCertSite,
    ClientCertSiteArgs,
    HttpsEndpoint,
    ManyToOne,
    OneToOne,
    Rule,
    SiteUser,
)
from iis_clientcert.framework.inputs import ConnectionArgs

config = pulumi.Config()
pki = Path(config.require("pki_dir"))
connection = ConnectionArgs(
    endpoint=config.require("host_endpoint"),
    transport=config.get("host_transport") or "basic",
    username=config.require("host_username"),
    password=config.require_secret("host_password"),
    ca_bundle=Path(config.require("host_ca_bundle")).read_text(),
)
ca = (pki / "ca.pem").read_text()

shop = ClientCertSite(
    "shop",
    ClientCertSiteArgs(
        connection=connection,
        site="shop",
        https=HttpsEndpoint(
            pfx=str(pki / "shop.pfx"), password=config.require_secret("pfx_password")
        ),
        # The host trusts the CA once; both sites rely on it.
        trusted_roots=[ca],
        users=[SiteUser(name="shop-alice", password=config.require_secret("alice_password"))],
        one_to_one=[OneToOne(certificate=(pki / "alice.pem").read_text(), user="shop-alice")],
    ),
)

intranet = ClientCertSite(
    "intranet",
    ClientCertSiteArgs(
        connection=connection,
        site="Default Web Site",
        https=HttpsEndpoint(
            pfx=str(pki / "intranet.pfx"), password=config.require_secret("pfx_password"), port=8443
        ),
        users=[SiteUser(name="intranet-staff", password=config.require_secret("staff_password"))],
        many_to_one=[
            ManyToOne(
                name="staff",
                user="intranet-staff",
                rules=[Rule(sub_field="O", match="Example Corp")],
            )
        ],
    ),
)

pulumi.export("shop_url", shop.https_url)
pulumi.export("intranet_url", intranet.https_url)
pulumi.export("shop_users", shop.mapped_users)
pulumi.export("intranet_users", intranet.mapped_users)
