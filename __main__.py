"""The iis-clientcert program: one ClientCertSite per site in the stack's configuration.

The configuration's shape and its checks live in stack_config.py (beside this file); the stacks
in stacks/ are worked examples (dev: the embedded simulator; prod: a real host).
"""

from __future__ import annotations

from pathlib import Path

import pulumi

from iis_clientcert.components import ClientCertSite
from stack_config import NAMESPACE, Secrets, StackConfig

STACK_DIR = Path(__file__).resolve().parent / "stacks"


def main() -> None:
    config = pulumi.Config(NAMESPACE)
    reader = StackConfig(STACK_DIR, Secrets.from_stack(config))
    sites = [
        ClientCertSite(name, args)
        for name, args in reader.sites(config.get_object("hosts"), config.get_object("sites"))
    ]
    pulumi.export("https_urls", {s.resource_name: s.https_url for s in sites})
    pulumi.export("mapped_users", {s.resource_name: s.mapped_users for s in sites})


main()
