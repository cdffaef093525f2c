"""The iis-clientcert program: per host of the stack's configuration one ClientCertHost (its
CAs, accounts and server certificates, each once), and one ClientCertSite per site.

The configuration's shape and its checks live in stack_config.py (beside this file); the
stacks in stacks/ are worked examples (dev: the embedded simulator; prod: a real host). A
mistake in the configuration ends the run with one line naming the key and the fix.
"""

from __future__ import annotations

from pathlib import Path

import pulumi

from iis_clientcert.components import ClientCertHost, ClientCertSite
from stack_config import NAMESPACE, Secrets, StackConfig

STACK_DIR = Path(__file__).resolve().parent / "stacks"


def main() -> None:
    config = pulumi.Config(NAMESPACE)
    reader = StackConfig(STACK_DIR, Secrets.from_stack(config))
    program = reader.program(config.get_object("hosts"), config.get_object("sites"))
    hosts = {name: ClientCertHost(name, args) for name, args in program.hosts.items()}
    sites: dict[str, ClientCertSite] = {}
    for plan in program.sites:
        plan.args.host = hosts[plan.host]
        sites[plan.resource_name] = ClientCertSite(plan.resource_name, plan.args)
    pulumi.export("https_urls", {name: s.https_url for name, s in sites.items()})
    pulumi.export("mapped_users", {name: s.mapped_users for name, s in sites.items()})
    # Typed outputs for other stacks (iis_clientcert.components.read_site / read_host).
    pulumi.export("sites", {name: s.exports() for name, s in sites.items()})
    pulumi.export("hosts", {name: h.exports() for name, h in hosts.items()})


main()
