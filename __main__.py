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

from pathlib import Path

import pulumi

from components import ClientCertSite
from components.stack_config import NAMESPACE, Secrets, StackConfig

STACK_DIR = Path(__file__).resolve().parent / "stacks"


def main() -> None:
    config = pulumi.Config(NAMESPACE)
    reader = StackConfig(STACK_DIR, Secrets.from_stack(config))
    sites = [
        ClientCertSite(name, args)
        for name, args in reader.sites(config.get_object("hosts"), config.get_object("sites"))
    ]
    pulumi.export("https_urls", {s._name: s.https_url for s in sites})
    pulumi.export("mapped_users", {s._name: s.mapped_users for s in sites})


main()
