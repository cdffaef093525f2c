"""The repository's program as it was before ClientCertHost: one ClientCertSite per
configured site, each with its own CAs, accounts and PFX (stack_config.py beside it)."""

from pathlib import Path

import pulumi

from iis_clientcert.components import ClientCertSite
from stack_config import NAMESPACE, Secrets, StackConfig

config = pulumi.Config(NAMESPACE)
reader = StackConfig(Path(__file__).resolve().parent / "stacks", Secrets.from_stack(config))
for name, args in reader.sites(config.get_object("hosts"), config.get_object("sites")):
    ClientCertSite(name, args)
