"""ClientCertSites on one host, as ``sites.json`` beside the program lists them.

sites.json::

    [{"name": "shop", "site": "shop", "trusted_roots": [{"$config": "ca"}, ...]}, ...]

A trusted root is ``{"$config": key}`` (the config value ``key``) or ``{"$secret": key}``
(the secret one, an Output). The host is reached with the config values ``endpoint`` and
``password`` (secret).
"""

import json
from pathlib import Path
from typing import Any

import pulumi

from iis_clientcert import ClientCertSite, ClientCertSiteArgs, ConnectionArgs

config = pulumi.Config()
conn = ConnectionArgs(
    endpoint=config.require("endpoint"),
    transport="basic",
    username="admin",
    password=config.require_secret("password"),
)


def value(ref: dict[str, str]) -> Any:
    if "$secret" in ref:
        return config.require_secret(ref["$secret"])
    return config.require(ref["$config"])


for site in json.loads((Path(__file__).parent / "sites.json").read_text()):
    ClientCertSite(
        site["name"],
        ClientCertSiteArgs(
            connection=conn,
            site=site["site"],
            trusted_roots=[value(ref) for ref in site["trusted_roots"]],
        ),
    )
